"""The Keysight dialect end to end on the simulated bench (rail physics included)."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.errors import InstrumentError
from harness.supply import DischargeError, Supply

from supplykit import records, wait_gone


@pytest.fixture
def supply(simbench, tmp_path: Path):
    with Supply(simbench.supply_resource, "keysight-e36300", channel=1,
                log_path=tmp_path / "supply.jsonl") as s:
        s.configure(voltage=3.3, current_limit=0.5)
        yield s
        s.safe()


def test_identify(supply: Supply) -> None:
    assert "E36312A" in supply.identify()


def test_on_settles_and_off_is_verified_by_measurement(supply: Supply) -> None:
    on = supply.on(settle=True, tolerance=0.1, timeout=2.0)
    assert supply.measure_voltage() == pytest.approx(3.3, abs=0.1)
    assert supply.output_state() is True
    off = supply.off(discharge_below=0.3, timeout=5.0)
    discharged = [e for e in supply.events if e.kind == "discharged"][-1]
    assert on.mono < off.mono < discharged.mono
    assert discharged.volts < 0.3
    assert supply.output_state() is False


def test_discharge_error_when_the_off_time_is_too_short(supply: Supply) -> None:
    supply.on(settle=True)
    with pytest.raises(DischargeError) as info:
        supply.off(discharge_below=0.3, timeout=0.02)
    err = info.value
    assert err.volts > 0.3 and err.waited >= 0.02
    assert f"{err.volts:.3f} V" in str(err) and "waited" in str(err)


def test_discharge_error_when_the_threshold_is_too_low(supply: Supply) -> None:
    supply.on(settle=True)
    with pytest.raises(DischargeError) as info:
        supply.off(discharge_below=0.0005, timeout=0.3)
    err = info.value
    assert err.threshold == 0.0005 and 0.0005 <= err.volts < 3.3
    assert "still at" in str(err) and "to fall below" in str(err)


def test_cycle_puts_off_before_on(supply: Supply) -> None:
    supply.on(settle=True)
    off, on = supply.cycle(off_time=0.05, discharge_below=0.3)
    assert off.mono < on.mono
    assert on.mono - off.mono >= 0.05


def test_brown_out_dip_with_set_voltage(supply: Supply) -> None:
    supply.on(settle=True)
    dip = supply.set_voltage(2.0)
    assert dip.kind == "voltage" and dip.volts == 2.0
    assert _wait_for(supply, lambda v: v < 2.1)
    supply.set_voltage(3.3)
    assert _wait_for(supply, lambda v: abs(v - 3.3) < 0.1)
    assert [e.volts for e in supply.events if e.kind == "voltage"][-2:] == [2.0, 3.3]


def test_refused_command_raises_with_the_instruments_text(supply: Supply) -> None:
    with pytest.raises(InstrumentError) as info:
        supply.configure(voltage=99.0)
    assert info.value.command == "VOLT 99.000,(@1)"
    assert info.value.text.startswith("-2"), info.value.text  # e.g. -222,"Data out of range"
    assert '"' in info.value.text


def test_log_and_watchdog_lifecycle(simbench, tmp_path: Path) -> None:
    log_path = tmp_path / "supply.jsonl"
    with Supply(simbench.supply_resource, "keysight-e36300", log_path=log_path) as s:
        pid = s.watchdog_pid
        s.configure(voltage=3.3)
        s.on(settle=True)
        s.off(discharge_below=0.3)
    wait_gone(pid, within=5)
    kinds = [r["kind"] for r in records(log_path)]
    for kind in ("open", "watchdog-armed", "voltage", "on", "measure", "off", "discharged",
                 "close"):
        assert kind in kinds, kind
    assert "watchdog-safe" not in kinds


def _wait_for(supply: Supply, predicate, within: float = 2.0) -> bool:
    import time

    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if predicate(supply.measure_voltage()):
            return True
        time.sleep(0.01)
    return False
