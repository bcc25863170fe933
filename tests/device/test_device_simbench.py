"""The Device object end to end on the simulated bench, without pytest fixtures.

Built the way a script would build it (device file -> launcher -> supply,
console, device): power on and boot with reset cause, connect through the
device file's command, a power cut with verified discharge and the rail
measured before power returns, a brown-out, and commands the file does not
define.  The reference server is the judge of resumption here too.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from harness import devicefile
from harness.console import Console
from harness.device import Device
from harness.errors import HarnessError
from harness.launcher import launch
from harness.server import ReferenceServer, ServerConfig
from harness.supply import Supply

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def rig(tmp_path: Path):
    spec = devicefile.load(ROOT / "devices" / "sim.yaml")
    with ReferenceServer(ServerConfig(log_path=tmp_path / "hs.jsonl"), workdir=tmp_path / "srv") as server:
        values = {"run_dir": str(tmp_path), "bench_dir": str(tmp_path / "bench"), "python": sys.executable,
                  "server_ca": str(server.ca_path), "sim_variant": "correct", "sim_uart_mode": "stable"}
        argv = [devicefile.fill(a, values) for a in spec.bench.start]
        with launch(spec.bench, argv, tmp_path / "bench.log", env={"PYTHONPATH": str(ROOT)}) as bench:
            values["bench"] = bench.resources
            s = spec.supply
            with Supply(devicefile.fill(s.resource, values), s.dialect, s.channel,
                        log_path=tmp_path / "supply.jsonl", safe_state=s.safe_state) as supply, \
                    Console(devicefile.fill(spec.console.url, values), capture_path=tmp_path / "console") as con:
                supply.configure(voltage=s.voltage, current_limit=s.current_limit, ovp=s.ovp)
                yield Device(spec, supply, con, values), server, supply


def test_power_connect_cut_resume(rig) -> None:
    device, server, supply = rig
    boot = device.power_on()
    assert boot.cause == "power-on"
    first = device.connect("127.0.0.1", server.port, "tls1.3", "server.test")
    assert first.ok and first.groups["resumed"] == "no"
    cut = device.power_off()                      # verified discharge
    assert cut.verified and supply.measure_voltage() < device.spec.supply.discharge_below
    device.power_on()
    assert cut.on_mono is not None and cut.volts_before_on < device.spec.supply.discharge_below
    mark = server.mark()
    second = device.connect("127.0.0.1", server.port, "tls1.3", "server.test")
    record = server.wait_for(since=mark, timeout=5)
    assert second.ok and record.resumed and record.resumed_from == server.records()[0].id
    assert [b.cause for b in device.boots] == ["power-on", "power-on"]


def test_brownout_resets_with_brownout_cause(rig) -> None:
    device, server, supply = rig
    device.power_on()
    boot = device.brownout(1.8, 0.3)
    assert boot.cause == "brown-out"
    assert device.cuts[-1].kind == "brownout" and device.cuts[-1].volts_before_on < 2.5


def test_unknown_command_is_a_clear_error(rig) -> None:
    device, _, _ = rig
    with pytest.raises(HarnessError, match="has no firmware command 'format_flash'"):
        device.command("format_flash")
