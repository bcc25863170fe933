"""Charge drawn by a full and a resumed handshake, measured at the supply.

A Python scenario: a flow a scenario file cannot express (sampling the
supply's current while the device connects), written against the same
fixtures the files use.  Why it matters: the point of storing a session is
to save radio time and energy on a battery device; this measures that at the
supply, the way a bench engineer would, and records the figures as JUnit
properties.  It asserts only what is not timing-dependent: the supply sees
the radio drawing current during each connection, and the server confirms
the second connection after a power cut resumed.
"""

from __future__ import annotations

import threading
import time

import pytest

from harness import clock
from harness.engine import SERVER_DEFAULTS


def _sample(supply, stop: threading.Event, out: list[tuple[float, float]]) -> None:
    while not stop.is_set():
        out.append((clock.now(), supply.measure_current()))


def _charge_during(rig, **connect) -> tuple[float, float, float]:
    """(charge in mC, peak A, seconds) drawn while the device connects."""
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
    return charge * 1000, max(a for _, a in samples), samples[-1][0] - samples[0][0]


@pytest.mark.parametrize("version", ["tls1.2", "tls1.3"])
def test_energy_per_handshake(rig, run_dir, record_property, version: str) -> None:
    declared = rig.spec.firmware.versions
    if declared and version not in declared:
        pytest.skip(f"this cell needs {version}; {rig.spec.path} declares firmware.versions: [{', '.join(declared)}]")
    rig.server.configure(**SERVER_DEFAULTS)
    dev = rig.device
    dev.power_off()
    dev.power_on()
    dev.command("erase_session")
    time.sleep(0.2)                       # let the erase's flash current settle
    idle = rig.supply.measure_current()
    mark = rig.server.mark()
    full_mc, full_peak, full_s = _charge_during(rig, version=version)
    first = rig.server.wait_for(since=mark, timeout=5)
    dev.power_cycle()
    mark = rig.server.mark()
    resumed_mc, resumed_peak, resumed_s = _charge_during(rig, version=version)
    second = rig.server.wait_for(since=mark, timeout=5)

    assert not first.resumed and second.resumed and second.resumed_from == first.id
    assert full_peak > idle and resumed_peak > idle, "the supply did not see the radio draw current"
    for name, value in (("full_mC", full_mc), ("resumed_mC", resumed_mc), ("full_s", full_s),
                        ("resumed_s", resumed_s), ("idle_A", idle)):
        record_property(f"{version}_{name}", round(value, 4))
    (run_dir / "energy.txt").write_text(
        f"{version}: idle {idle * 1000:.1f} mA; full handshake {full_mc:.2f} mC in {full_s:.3f} s "
        f"(peak {full_peak * 1000:.0f} mA); resumed {resumed_mc:.2f} mC in {resumed_s:.3f} s "
        f"(peak {resumed_peak * 1000:.0f} mA)\n")
