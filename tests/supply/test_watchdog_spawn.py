"""``Watchdog.spawn`` on its own, without a Supply: what the parent-side handle promises.

The Supply tests (test_watchdog.py) cover arming on open and disarming on
close; these cover the two ends a Supply only reaches when things go wrong:
asking the watchdog to secure the bench, and a watchdog that refuses to arm.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from harness.errors import HarnessError
from harness.watchdog import Watchdog, WatchdogConfig

from supplykit import records, sim_instrument, wait_gone


def config(tmp_path: Path, **changes) -> WatchdogConfig:
    resource, library = sim_instrument("keysight-e36300")
    values = dict(resource=resource, dialect="keysight-e36300", channel=1, visa_library=library,
                  parent_pid=os.getpid(), log_path=str(tmp_path / "supply.jsonl"), grace=5.0)
    values.update(changes)
    return WatchdogConfig(**values)


def test_close_with_apply_safe_makes_the_watchdog_secure_the_bench_and_exit(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    watchdog = Watchdog.spawn(cfg, "test supply")
    assert watchdog.alive
    assert watchdog.close(apply_safe=True) is True
    assert watchdog.process.returncode == 0
    mine = [r for r in records(Path(cfg.log_path)) if r["pid"] == watchdog.pid]
    assert any(r["kind"] == "watchdog" and r["detail"].startswith("parent asked for the safe state")
               for r in mine), mine
    assert any(r["kind"] == "write" and r["command"] == "OUTP OFF,(@1)" for r in mine)
    assert any(r["kind"] == "watchdog-safe" for r in mine)


def test_disarm_lets_it_exit_touching_nothing(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    watchdog = Watchdog.spawn(cfg, "test supply")
    assert watchdog.disarm() is True
    wait_gone(watchdog.pid, within=5)
    assert watchdog.process.returncode == 0
    assert not Path(cfg.log_path).exists()  # the watchdog wrote nothing: it never connected


def test_a_watchdog_that_cannot_arm_is_an_error_naming_the_supply(tmp_path: Path) -> None:
    cfg = config(tmp_path, dialect=str(tmp_path / "no-such-dialect.yaml"))
    # Killed once it answered: the exit status may be the kill's rather than its own 2.
    with pytest.raises(HarnessError, match=r"^test supply: watchdog did not arm \(said 'error: .+', exit "):
        Watchdog.spawn(cfg, "test supply")
