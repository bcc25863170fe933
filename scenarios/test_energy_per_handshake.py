"""Charge drawn by a full and a resumed handshake, measured at the supply.

A Python scenario: a flow a scenario file cannot express (sampling the
supply's current while the device connects), written against the same
fixtures the files use.  Why it matters: the point of storing a session is
to save radio time and energy on a battery device; this measures that at the
supply, the way a bench engineer would, and records the figures as JUnit
properties.  It asserts only what is not timing-dependent: the supply sees
the radio drawing current during each connection, and the server confirms
the second connection after a power cut resumed.

The figures also go to ``<run_dir>/energy.json`` (:func:`_write_energy`),
which ``report.html`` and the history read: JUnit properties are seen only by
whoever opens the XML.
"""

from __future__ import annotations

import json
import statistics
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import pytest

from harness import clock
from harness.engine import SERVER_DEFAULTS


def _sample(supply, stop: threading.Event, out: list[tuple[float, float]]) -> None:
    while not stop.is_set():
        out.append((clock.now(), supply.measure_current()))


@dataclass
class Draw:
    """What one connection drew at the supply."""

    charge_mC: float
    peak_A: float
    seconds: float
    samples: int
    interval_ms: float     # median time between current samples: how fine the integral is


def _charge_during(rig, **connect) -> Draw:
    """The charge, peak current and time drawn while the device connects."""
    samples: list[tuple[float, float]] = []
    stop = threading.Event()
    sampler = threading.Thread(target=_sample, args=(rig.supply, stop, samples), daemon=True)
    sampler.start()
    try:
        attempt = rig.device.connect(rig.spec.server.reach_host, rig.server.port, sni=rig.server.names[0],
                                     **connect)
    finally:
        stop.set()
        sampler.join(5)
    assert attempt.ok, attempt.detail
    charge = sum((t2 - t1) * a1 for (t1, a1), (t2, _) in zip(samples, samples[1:]))
    gaps = [t2 - t1 for (t1, _), (t2, _) in zip(samples, samples[1:])] or [0.0]
    return Draw(charge_mC=charge * 1000, peak_A=max(a for _, a in samples),
                seconds=samples[-1][0] - samples[0][0], samples=len(samples),
                interval_ms=statistics.median(gaps) * 1000)


def _write_energy(path: Path, version: str, idle: float, full: Draw, resumed: Draw, first, second) -> None:
    """energy.json: the figures of this cell as data, for report.html and the nightly history.

    Written before the assertions, so a failing cell still leaves its figures;
    ``ok`` says whether they compare a full handshake with a resumption of it
    (readers use only those).
    """
    data = {
        "version": version, "negotiated": second.version, "idle_A": idle,
        "ok": bool(not first.resumed and second.resumed and second.resumed_from == first.id),
        "full": {**asdict(full), "handshake": first.id},
        "resumed": {**asdict(resumed), "handshake": second.id, "resumed_from": second.resumed_from},
        "saved": {"charge_mC": full.charge_mC - resumed.charge_mC, "seconds": full.seconds - resumed.seconds},
        "method": "supply current sampled back to back while the device connects, integrated over the connect",
    }
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


@pytest.mark.parametrize("version", ["tls1.2", "tls1.3"])
def test_energy_per_handshake(rig, run_dir, record_property, version: str) -> None:
    declared = rig.spec.firmware.versions
    if declared and version not in declared:
        pytest.skip(f"this cell needs {version}; {rig.spec.path} declares firmware.versions: [{', '.join(declared)}]")
    if not getattr(rig.supply, "measures", True):
        pytest.skip(f"charge is measured at the supply; {rig.spec.path} cuts power with a switch that measures "
                    "nothing (labgrid.power: labgrid)")
    rig.server.configure(**SERVER_DEFAULTS)
    dev = rig.device
    dev.power_off()
    dev.power_on()
    dev.command("erase_session")
    time.sleep(0.2)                       # let the erase's flash current settle
    idle = rig.supply.measure_current()
    mark = rig.server.mark()
    full = _charge_during(rig, version=version)
    first = rig.server.wait_for(since=mark, timeout=5)
    dev.power_cycle()
    mark = rig.server.mark()
    resumed = _charge_during(rig, version=version)
    second = rig.server.wait_for(since=mark, timeout=5)

    _write_energy(run_dir / "energy.json", version, idle, full, resumed, first, second)
    assert not first.resumed and second.resumed and second.resumed_from == first.id
    assert full.peak_A > idle and resumed.peak_A > idle, "the supply did not see the radio draw current"
    for name, value in (("full_mC", full.charge_mC), ("resumed_mC", resumed.charge_mC), ("full_s", full.seconds),
                        ("resumed_s", resumed.seconds), ("idle_A", idle)):
        record_property(f"{version}_{name}", round(value, 4))
    (run_dir / "energy.txt").write_text(
        f"{version}: idle {idle * 1000:.1f} mA; full handshake {full.charge_mC:.2f} mC in {full.seconds:.3f} s "
        f"(peak {full.peak_A * 1000:.0f} mA); resumed {resumed.charge_mC:.2f} mC in {resumed.seconds:.3f} s "
        f"(peak {resumed.peak_A * 1000:.0f} mA)\n")
