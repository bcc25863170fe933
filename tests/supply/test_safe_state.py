"""Safe state whatever happens to the test process (simulated bench).

For each way a test process can end while it holds the supply ON, the
simulated supply must report ``OUTP? 0`` within 2 s, asked with plain pyvisa.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from supplykit import (ROOT, child_env, output_state, records, start_holder, stderr_path,
                       wait_gone, wait_output, watchdog_pids)


@pytest.fixture
def bench_off(simbench):
    """The bench with channel 1 known to be off before the test starts."""
    import pyvisa

    inst = pyvisa.ResourceManager("@py").open_resource(
        simbench.supply_resource, read_termination="\n", write_termination="\n")
    inst.write("OUTP OFF,(@1)")
    inst.close()
    return simbench


def _hold_then(bench, tmp_path: Path, mode: str, action) -> list[dict]:
    log_path = tmp_path / "supply.jsonl"
    holder = start_holder(bench.supply_resource, mode, log_path)
    try:
        assert output_state(bench.supply_resource) in ("1", "0")
        [watchdog] = watchdog_pids(log_path)
        action(holder)
        took = wait_output(bench.supply_resource, "0", within=2.0)
    finally:
        if holder.poll() is None:
            holder.kill()
        holder.wait()
    wait_gone(watchdog, within=10)
    print(f"{mode}: output off {took:.3f} s after the event; "
          f"stderr: {stderr_path(log_path).read_text().strip()[-300:]}")
    return records(log_path)


def test_exception_inside_with(bench_off, tmp_path: Path) -> None:
    recs = _hold_then(bench_off, tmp_path, "raise", lambda p: p.wait(timeout=10))
    assert any(r["kind"] == "safe" for r in recs)


def test_exception_with_the_supply_leaked(bench_off, tmp_path: Path) -> None:
    """No `with`, no close: only the watchdog can switch it off."""
    recs = _hold_then(bench_off, tmp_path, "leak", lambda p: p.wait(timeout=10))
    assert any(r["kind"] == "watchdog-safe" for r in recs)


def test_sigint_to_the_process_group(bench_off, tmp_path: Path) -> None:
    _hold_then(bench_off, tmp_path, "hold", lambda p: os.killpg(p.pid, signal.SIGINT))


def test_sigterm_to_the_process_group(bench_off, tmp_path: Path) -> None:
    recs = _hold_then(bench_off, tmp_path, "hold", lambda p: os.killpg(p.pid, signal.SIGTERM))
    assert any(r["kind"] == "watchdog-safe" for r in recs)


def test_sigkill(bench_off, tmp_path: Path) -> None:
    recs = _hold_then(bench_off, tmp_path, "hold", lambda p: p.kill())
    assert any(r["kind"] == "watchdog-safe" for r in recs)


@pytest.mark.parametrize("method", ["signal", "thread"])
def test_pytest_timeout_kill(bench_off, tmp_path: Path, method: str) -> None:
    """A child pytest whose test hangs holding the supply ON is killed by pytest-timeout.

    ``signal`` raises inside the test (the `with` unwinds); ``thread`` ends
    the process with os._exit (only the watchdog is left).
    """
    log_path = tmp_path / "supply.jsonl"
    test_file = tmp_path / "test_hangs.py"
    test_file.write_text(textwrap.dedent(f"""
        import time
        from harness.supply import Supply

        def test_hangs_holding_power():
            with Supply({bench_off.supply_resource!r}, "keysight-e36300",
                        log_path={str(log_path)!r}) as supply:
                supply.configure(voltage=3.3)
                supply.on(settle=False)
                time.sleep(60)
    """))
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--timeout=2",
         f"--timeout-method={method}", str(test_file)],
        cwd=str(tmp_path), env=child_env(), capture_output=True, timeout=60)
    assert proc.returncode != 0
    assert b"Timeout" in proc.stdout + proc.stderr
    took = wait_output(bench_off.supply_resource, "0", within=2.0)
    [watchdog] = watchdog_pids(log_path)
    wait_gone(watchdog, within=10)
    recs = records(log_path)
    assert any(r["kind"] == "on" for r in recs)
    if method == "thread":
        assert any(r["kind"] == "watchdog-safe" for r in recs)
    else:
        assert any(r["kind"] == "safe" for r in recs)
    print(f"pytest-timeout ({method}): off {took:.3f} s after the child exited, "
          f"child ran {time.monotonic() - started:.1f} s")
