"""resume_after_power_loss through a real labgrid place: the harness acquires it, reads the console through
the exporter's ser2net (RFC 2217), follows the port to its new TCP port after every power cut, and releases
the place at the end.

The simulated bench runs in ``vanish`` UART mode (native USB CDC: the tty exists only while powered), and an
exporter with udev-like path watching (lg_udev_exporter.py) serves it: every power cut stops its ser2net,
every power-up starts a new one on a new port, exactly what labgrid #1387 describes for a USB UART.
Power is the device file's VISA supply (the simulated SCPI supply), as in a lab with LAN supplies.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from harness.labgrid import CoordinatorClient

from lgkit import Lab

ROOT = Path(__file__).resolve().parents[2]
SIM = ROOT / "devices" / "sim.yaml"


def _place_device_file(tmp: Path, place: str, coordinator: str, workdir: Path) -> Path:
    """sim.yaml as a labgrid lab writes it: the console from the place, the supply over (simulated) LAN VISA."""
    text = SIM.read_text()
    # The exporter serves a fixed /dev path, so the simulated bench works in a folder the test chose.
    text = text.replace('"--workdir", "{bench_dir}"', f'"--workdir", "{workdir}"', 1)
    text = text.replace('"--uart-mode", "{sim_uart_mode}"', '"--uart-mode", "vanish"', 1)
    text = re.sub(r'(?m)^console:\n  url: "\{bench.uart\}"\n', "console:\n  native_usb: true\n", text, count=1)
    text = re.sub(r"(?m)^name: sim$", "name: sim-labgrid", text, count=1)
    text += f"\nlabgrid:\n  place: {place}\n  coordinator: \"{coordinator}\"\n"
    assert str(workdir) in text and "native_usb: true" in text and '"vanish"' in text
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
         "--lock-dir", str(tmp_path / "locks"), "-k", "tls1.3", str(ROOT / "scenarios" / "resume_after_power_loss.yaml")],
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
