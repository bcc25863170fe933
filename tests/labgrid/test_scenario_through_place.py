"""resume_after_power_loss through a real labgrid place: the harness acquires it, reads the console through
the exporter's ser2net (RFC 2217), follows the port to its new TCP port after every power cut, and releases
the place at the end.

The simulated bench runs in ``cdc-wait`` UART mode (native USB CDC: the tty exists only while powered, and
the firmware prints nothing until the host opens the port, as Zephyr's CDC ACM samples wait for DTR), and an
exporter with udev-like path watching (lg_udev_exporter.py) serves it: every power cut stops its ser2net,
every power-up starts a new one on a new port, exactly what labgrid #1387 describes for a USB UART.
Power is the device file's VISA supply (the simulated SCPI supply), as in a lab with LAN supplies, or
(the last test) the place's own power switch, for labs without a programmable supply.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from harness.labgrid import CoordinatorClient

from lgkit import Lab, PowerSwitch, free_port

ROOT = Path(__file__).resolve().parents[2]
SIM = ROOT / "devices" / "sim.yaml"


def _place_device_file(tmp: Path, place: str, coordinator: str, workdir: Path) -> Path:
    """sim.yaml as a labgrid lab writes it: the console from the place, the supply over (simulated) LAN VISA."""
    text = SIM.read_text()
    # The exporter serves a fixed /dev path, so the simulated bench works in a folder the test chose.
    text = text.replace('"--workdir", "{bench_dir}"', f'"--workdir", "{workdir}"', 1)
    # Native USB CDC firmware that waits for the host (DTR) before it prints: what an exporter can serve.
    # One that prints at once loses its boot banner before the exporter serves the new port (README).
    text = text.replace('"--uart-mode", "{sim_uart_mode}"', '"--uart-mode", "cdc-wait"', 1)
    text = re.sub(r'(?m)^console:\n  url: "\{bench.uart\}"\n', "console:\n  native_usb: true\n", text, count=1)
    text = re.sub(r"(?m)^name: sim$", "name: sim-labgrid", text, count=1)
    text += f"\nlabgrid:\n  place: {place}\n  coordinator: \"{coordinator}\"\n"
    assert str(workdir) in text and "native_usb: true" in text and '"cdc-wait"' in text
    path = tmp / "sim-labgrid.yaml"
    path.write_text(text)
    return path


@pytest.fixture
def sim_place(lab: Lab, tmp_path: Path):
    """An exporter serving the simulated bench's UART path as the place ``rig-sim``."""
    workdir = tmp_path / "simbench"
    workdir.mkdir()
    dev = Path("/dev") / f"hil-lg-{os.getpid()}-sim"
    if dev.is_symlink():
        dev.unlink()
    os.symlink(workdir / "uart", dev)         # dangling until the simulated device is powered
    try:
        lab.start_exporter("sim", f"sim:\n  location: simulated bench\n  console:\n    cls: RawSerialPort\n"
                                  f"    port: {dev}\n    speed: 115200\n", watch_paths=True)
        lab.create_place("rig-sim", "sim/sim/*")
        yield "rig-sim", workdir
    finally:
        dev.unlink(missing_ok=True)


def test_resume_after_power_loss_through_a_labgrid_place(lab: Lab, sim_place, tmp_path: Path) -> None:
    place, workdir = sim_place
    device = _place_device_file(tmp_path, place, lab.address, workdir)
    run_dir = tmp_path / "runs"
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-c", str(ROOT / "pytest.ini"),
         "--rootdir", str(tmp_path), "--device", str(device),
         "--run-dir", str(run_dir), "--history", str(tmp_path / "history.jsonl"),
         "--lock-dir", str(tmp_path / "locks"), "-k", "tls1.3",
         str(ROOT / "scenarios" / "resume_after_power_loss.yaml")],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert "1 passed" in out
    # The console was read through the place's ser2net, and followed it to a new port after the power cut.
    events = (run_dir / "console.capture").read_text(errors="replace")
    ports = re.findall(r"(?:opened|reopened) rfc2217://127\.0\.0\.1:(\d+)", events)
    assert len(ports) >= 2, events[-3000:]
    assert len(set(ports)) >= 2, f"the console never moved to a new port: {ports}"
    # The verdict is the server's: the resumption after the cut (not the console's say-so).
    result = (run_dir / "resume_after_power_loss_tls1.3" / "timeline.txt").read_text()
    assert "PASS [resumed]" in result
    # Released at the end: the place is free for the next run.
    client = CoordinatorClient(lab.address)
    try:
        assert client.place(place).acquired in ("", None), client.place(place)
    finally:
        client.close()
    assert (run_dir / "labgrid-guard.log").exists()


class ScpiRelay:
    """A power switch in labgrid's ``simplerest`` protocol that switches the simulated supply's output.

    What a PDU outlet is to a real rig: on and off, nothing measured.  ``stuck_on`` models a relay that
    does not open (or a board fed through a second path): the device never loses power.
    """

    def __init__(self, scpi_port: int, *, stuck_on: bool = False):
        self.scpi = ("127.0.0.1", scpi_port)
        self.stuck_on = stuck_on
        self.http = PowerSwitch(act=lambda index, on: self.switch(on),
                                read=lambda index: self.scpi_query("OUTP? (@1)").strip() in ("1", "ON"))
        self.url, self.requests = self.http.url, self.http.requests

    def switch(self, on: bool) -> None:
        if on:
            self.scpi_send("VOLT 3.300,(@1)", "CURR 0.5000,(@1)", "OUTP ON,(@1)")
        elif not self.stuck_on:
            self.scpi_send("OUTP OFF,(@1)")

    def scpi_send(self, *commands: str) -> None:
        with socket.create_connection(self.scpi, timeout=5) as s:
            s.sendall("".join(c + "\n" for c in commands).encode())
            s.sendall(b"*OPC?\n")
            s.makefile().readline()

    def scpi_query(self, command: str) -> str:
        with socket.create_connection(self.scpi, timeout=5) as s:
            s.sendall((command + "\n").encode())
            return s.makefile().readline()

    def close(self) -> None:
        self.http.close()


def _switched_device_file(tmp: Path, place: str, coordinator: str, scpi_port: int) -> Path:
    """sim.yaml for a lab without a programmable supply: the place's power switch cuts the power."""
    text = SIM.read_text()
    text = text.replace('"--port", "0"', f'"--port", "{scpi_port}"', 1)
    text = re.sub(r"(?ms)^supply:\n.*?\n\n", "supply:\n  safe_state: {output: off}\n\n", text, count=1)
    text = re.sub(r"(?m)^name: sim$", "name: sim-switched", text, count=1)
    text += (f"\nlabgrid:\n  place: {place}\n  coordinator: \"{coordinator}\"\n  power: labgrid\n"
             f"  off_time: 0.5\n")
    assert f'"--port", "{scpi_port}"' in text and "dialect:" not in text
    path = tmp / "sim-switched.yaml"
    path.write_text(text)
    return path


@pytest.fixture(params=[False, True], ids=["relay", "stuck-relay"])
def switched_place(request: pytest.FixtureRequest, lab: Lab):
    """A place whose only resource is a power switch in front of the simulated supply."""
    scpi_port = free_port()
    relay = ScpiRelay(scpi_port, stuck_on=request.param)
    name = f"swp{'stuck' if request.param else 'ok'}"
    try:
        lab.start_exporter(name, f"{name}:\n  location: simulated bench\n  power:\n    cls: NetworkPowerPort\n"
                                 f"    model: simplerest\n    host: '{relay.url}'\n    index: 0\n")
        lab.create_place(f"rig-{name}", f"{name}/{name}/*")
        yield f"rig-{name}", scpi_port, relay
    finally:
        relay.close()


def test_power_through_the_places_switch_rests_on_the_reset_cause(lab: Lab, switched_place, tmp_path: Path) -> None:
    """A working relay: the scenario passes, and the verdict says the power loss rests on the power-on reset.
    A relay stuck closed (the device never loses power): the same scenario fails power-not-cut."""
    place, scpi_port, relay = switched_place
    device = _switched_device_file(tmp_path, place, lab.address, scpi_port)
    run_dir = tmp_path / "runs"
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-c", str(ROOT / "pytest.ini"),
         "--rootdir", str(tmp_path), "--device", str(device), "--run-dir", str(run_dir),
         "--history", str(tmp_path / "history.jsonl"), "--lock-dir", str(tmp_path / "locks"),
         "-k", "tls1.3", str(ROOT / "scenarios" / "resume_after_power_loss.yaml")],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    out = proc.stdout + proc.stderr
    timeline_path = run_dir / "resume_after_power_loss_tls1.3" / "timeline.txt"
    assert timeline_path.exists(), out[-4000:]
    timeline = timeline_path.read_text()
    assert any(r.endswith("/0") for r in relay.requests) and any(r.endswith("/1") for r in relay.requests)
    if not relay.stuck_on:
        assert proc.returncode == 0, out[-4000:]
        assert "PASS [resumed]" in timeline
        assert "power loss shown by the device's reset cause, power-on" in timeline
    else:
        # Told at the first cut, by the shell still answering: not a boot failure, not a pass.
        assert proc.returncode == 1, out[-4000:]
        assert "FAIL [power-not-cut]" in timeline, timeline[-3000:]
        assert "still answered on its console" in timeline
        assert "PASS [resumed]" not in timeline and "no-boot" not in timeline
    # The run ended with the switch off (the device file's safe state) and the place released.
    assert relay.requests[-1].endswith("/0") or relay.stuck_on, relay.requests
    client = CoordinatorClient(lab.address)
    try:
        assert client.place(place).acquired in ("", None)
    finally:
        client.close()
