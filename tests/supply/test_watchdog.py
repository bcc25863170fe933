"""The watchdog process, against pyvisa-sim (no bench needed).

A pyvisa-sim instrument lives inside one process, so the watchdog secures
its own copy: these tests prove the arming, disarming, reconnecting and
logging; the bench tests (test_safe_state.py) prove the supply really ends
up off.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from harness.errors import HarnessError
from harness.supply import Supply

from supplykit import (ROOT, child_env, records, sim_instrument, start_holder, wait_gone,
                       watchdog_pids)


def test_normal_close_disarms_the_watchdog(tmp_path: Path) -> None:
    resource, library = sim_instrument("keysight-e36300")
    log_path = tmp_path / "supply.jsonl"
    with Supply(resource, "keysight-e36300", visa_library=library, log_path=log_path) as supply:
        pid = supply.watchdog_pid
        assert pid is not None and os.path.exists(f"/proc/{pid}")
        supply.configure(voltage=3.3)
        supply.on(settle=False)
    assert supply.watchdog_pid is None
    wait_gone(pid, within=5)
    kinds = [r["kind"] for r in records(log_path)]
    assert "watchdog-armed" in kinds and "watchdog-safe" not in kinds


def test_sigkill_of_the_holder_makes_the_watchdog_reconnect_and_secure(tmp_path: Path) -> None:
    resource, library = sim_instrument("keysight-e36300")
    log_path = tmp_path / "supply.jsonl"
    holder = start_holder(resource, "hold", log_path, visa_library=library)
    try:
        [watchdog] = watchdog_pids(log_path)
        holder.kill()
    finally:
        holder.kill()
        holder.wait()
    wait_gone(watchdog, within=10)
    recs = records(log_path)
    mine = [r for r in recs if r["pid"] == watchdog]
    assert any(r["kind"] == "watchdog" and "parent" in r["detail"] for r in mine), mine
    assert any(r["kind"] == "write" and r["command"] == "OUTP OFF,(@1)" for r in mine)
    assert any(r["kind"] == "watchdog-safe" for r in mine)
    # The power-off is on the same clock, after the holder's "on".
    on = max(r["mono"] for r in recs if r["kind"] == "on")
    safe = [r["mono"] for r in mine if r["kind"] == "safe"]
    assert safe and safe[0] > on


def test_ctrl_c_to_the_test_process_group_does_not_reach_the_watchdog(tmp_path: Path) -> None:
    resource, library = sim_instrument("keysight-e36300")
    log_path = tmp_path / "supply.jsonl"
    holder = start_holder(resource, "hold", log_path, visa_library=library)
    try:
        [watchdog] = watchdog_pids(log_path)
        os.killpg(holder.pid, signal.SIGINT)
        assert holder.wait(timeout=10) != 0
    finally:
        holder.kill()
        holder.wait()
    wait_gone(watchdog, within=10)
    recs = records(log_path)
    # The holder unwound its `with` (safe state, front panel local) and disarmed.
    assert any(r["kind"] == "safe" and r["pid"] == holder.pid for r in recs)
    assert not any(r["pid"] == watchdog and r["kind"] == "watchdog-safe" for r in recs)


def test_watchdog_that_cannot_start_is_an_error_not_a_hang(tmp_path: Path) -> None:
    resource, library = sim_instrument("keysight-e36300")
    supply = Supply(resource, "keysight-e36300", visa_library=library)
    proc = subprocess.run([sys.executable, "-m", "harness.watchdog"], input=b"{not json}\n",
                          capture_output=True, env=child_env(), cwd=str(ROOT), timeout=30)
    assert proc.returncode == 2 and proc.stdout.startswith(b"error:")
    supply.watchdog_grace = 0.5
    config = supply.watchdog_config()
    assert config["dialect"].endswith("keysight-e36300.yaml") and config["channel"] == 1
