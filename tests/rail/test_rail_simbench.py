"""The rail sampler on the simulated bench: what it sees, and that it stays out of the edges' way.

Built the way a script builds a bench (device file -> :class:`harness.bench.Bench`:
the bench process, supply, console and device, as the plugin does), so the
sampler meets the same driver, lock and console trigger thread as in a
scenario.  The simulated supply's rail decays after output off (tau 0.1 s)
and its current follows the firmware's state (radio while connecting).
One child pytest run checks the plugin's wiring: a scenario's run
directory gets ``rail.jsonl``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from harness import clock, devicefile
from harness.bench import Bench
from harness.rail import RailSampler, cut_pending
from harness.server import ReferenceServer, ServerConfig

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def rig(tmp_path: Path):
    spec = devicefile.load(ROOT / "devices" / "sim.yaml")
    with ReferenceServer(ServerConfig(log_path=tmp_path / "hs.jsonl"), workdir=tmp_path / "srv") as server:
        values = {"run_dir": str(tmp_path), "bench_dir": str(tmp_path / "bench"), "python": sys.executable,
                  "server_ca": str(server.ca_path), "sim_variant": "correct", "sim_uart_mode": "stable"}
        with Bench(spec, values, tmp_path, env={"PYTHONPATH": str(ROOT)}, servers={"primary": server},
                   watchdog=False) as bench:
            yield bench.device, server, bench.supply


def test_rail_falls_after_off_and_current_rises_while_connecting(rig, tmp_path: Path) -> None:
    device, server, supply = rig
    path = tmp_path / "rail.jsonl"
    with RailSampler(supply, rate=50, path=path, pause_when=lambda: cut_pending(device)) as rail:
        device.power_on()
        idle = rail.samples[-1].amps
        attempt = device.connect("127.0.0.1", server.port, "tls1.3", "server.test")
        assert attempt.ok
        cut = device.power_off()                  # verified discharge: the foreground polls meanwhile
    off = cut.off_mono
    during = rail.between(attempt.start_mono, attempt.end_mono)
    assert during and max(s.amps for s in during) > idle + 0.05, (idle, [s.amps for s in during])
    before = rail.between(off - 0.5, off)
    after = rail.between(off, off + 1.0)
    assert before and min(s.volts for s in before) > 3.0
    volts = [s.volts for s in after]
    assert volts and volts[0] > volts[-1] and volts[-1] < device.spec.supply.discharge_below, volts
    assert max(b - a for a, b in zip(volts, volts[1:])) < 0.05     # falling, not bouncing
    assert rail.counts.failed == 0
    on_file = [json.loads(raw) for raw in path.read_text().splitlines()]
    assert len(on_file) == rail.counts.taken and all(list(r) == ["mono", "volts", "amps"] for r in on_file)
    # The sampler's MEAS traffic is kept out of the supply log; the edges are in it.
    log = (tmp_path / "supply.jsonl").read_text()
    assert "rail-sampling-start" in log and '"kind": "off"' in log
    assert log.count("MEAS:CURR?") == 0


def test_no_query_in_flight_across_an_armed_cut(rig) -> None:
    """From arming to firing, the sampler starts no query, so none is in flight when the cut fires.

    (A query that started before the cut was armed may still be in flight
    when arming returns: the one query the design concedes.)
    """
    device, server, supply = rig
    with RailSampler(supply, rate=200, pause_when=lambda: cut_pending(device)) as rail:
        device.power_on()
        armed_at = clock.now()
        device.arm_cut(device.spec.firmware.flash_write, 0.0, "the flash write")
        device.connect("127.0.0.1", server.port, "tls1.3", "server.test")
        device.settle_cut()
    edge = next(e for e in supply.events if e.kind == "off" and e.mono > armed_at)   # the cut, not settle_cut's
    assert armed_at < edge.mono and rail.counts.paused > 0 and rail.counts.failed == 0
    assert not [s for s in rail.samples if armed_at <= s.mono - s.span / 2 <= edge.mono]
    assert not [s for s in rail.samples if s.mono - s.span / 2 <= edge.mono <= s.mono + s.span / 2]
    assert rail.between(edge.mono, edge.mono + 1.0), "the rail after the cut is sampled again"


def test_a_foreground_sampling_loop_and_the_sampler_both_go_on(rig) -> None:
    """As scenarios/test_energy_per_handshake.py does: back-to-back measure_current while connecting."""
    device, server, supply = rig
    device.power_on()
    stop = threading.Event()
    mine: list[float] = []

    def loop() -> None:
        while not stop.is_set():
            mine.append(supply.measure_current())

    with RailSampler(supply, rate=50) as rail:
        t = threading.Thread(target=loop)
        t.start()
        try:
            assert device.connect("127.0.0.1", server.port, "tls1.2", "server.test").ok
        finally:
            stop.set()
            t.join(5)
        stop.clear()
        before = rail.counts.taken
        threading.Event().wait(0.3)             # the loop over: the sampler has the supply again
    assert len(mine) > 50 and max(mine) > 0.1
    assert rail.counts.failed == 0 and rail.counts.taken > before


def test_scenario_run_dir_gets_rail_jsonl(tmp_path: Path) -> None:
    """The plugin runs the sampler for the scenario: its run directory has the samples on the one clock."""
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--run-dir",
                           str(tmp_path / "runs"), "scenarios/first_boot_full_handshake.yaml", "-k", "tls1.3"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    run = tmp_path / "runs" / "first_boot_full_handshake_tls1.3"
    rows = [json.loads(raw) for raw in (run / "rail.jsonl").read_text().splitlines()]
    start, end = (lambda r: (r["start"], r["end"]))(
        next(json.loads(raw) for raw in (run / "events.jsonl").read_text().splitlines()
             if json.loads(raw)["type"] == "scenario"))
    inside = [r for r in rows if start <= r["mono"] <= end]
    assert all(list(r) == ["mono", "volts", "amps"] for r in rows)
    assert len(inside) >= 0.5 * 10 * (end - start), (len(inside), end - start)   # the default 10 Hz, roughly
    assert max(r["volts"] for r in inside) > 3.0
