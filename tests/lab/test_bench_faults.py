"""Bench faults are told apart from device bugs: each injected fault gives its bench-error sub-code.

Each test runs a child pytest (what a lab runs) over two scenarios on the
simulated bench with one fault injected at a fixed event
(devices/sim/faults.py): the first scenario meets the fault, the second runs
after it.  Asserted for every fault: the first is a pytest *error* (JUnit
``<error>``, never ``<failure>``) whose message starts with ``BENCH ERROR
[sub-code]``; the supply's own log shows its output switched off after the
fault before it was ever switched on again (or the run says loudly that it
could not be made safe); the second scenario passes once the fault has
cleared.  The device is the correct firmware throughout: any verdict about
it would be a false fail.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
from labkit import device_file, output_after_fault, run

pytestmark = pytest.mark.slow


def _bench_error(case, sub_code: str) -> None:
    assert case.outcome == "error", (case.outcome, case.message)
    assert f"BENCH ERROR [{sub_code}]" in case.message, case.message


def _safe_before_next_on(run_) -> None:
    states = output_after_fault(run_)
    assert "OFF" in states, states
    first_on = states.index("ON") if "ON" in states else len(states)
    assert states.index("OFF") < first_on, states


def test_scpi_link_drops_mid_scenario_and_comes_back(tmp_path: Path) -> None:
    # flash #1 is the erase that prepares the scenario; #2 the session write after the first connect
    child = run(tmp_path, device_file(tmp_path, "scpi-drop@flash#2:down=2"))
    _bench_error(child.cases["a_first"], "supply-unreachable")
    assert child.cases["b_second"].outcome == "passed", child.cases["b_second"].message
    _safe_before_next_on(child)
    assert child.result("a_first")["kind"] == "bench-error"
    assert "1 passed, 0 failed (device verdicts), 1 bench errors" in child.stdout
    assert "SUPPLY NOT CONFIRMED SAFE" not in child.stdout


def test_scpi_link_gone_for_good_is_said_loudly(tmp_path: Path) -> None:
    child = run(tmp_path, device_file(tmp_path, "scpi-drop@flash#2"))
    _bench_error(child.cases["a_first"], "supply-unreachable")
    _bench_error(child.cases["b_second"], "supply-unreachable")
    assert "SUPPLY NOT CONFIRMED SAFE" in child.stdout, child.stdout[-3000:]
    assert output_after_fault(child) == [], "nobody could reach the supply, yet its output changed"


def test_supply_trips_at_power_on(tmp_path: Path) -> None:
    # on #1 powers the device up to erase its session, #2 starts the scenario, #3 is the power cycle's
    child = run(tmp_path, device_file(tmp_path, "trip@on#3"))
    case = child.cases["a_first"]
    _bench_error(case, "supply-error")
    assert "over-voltage protection tripped at power-on" in case.message     # the instrument's own words
    assert "power_cycle" in case.message
    assert child.cases["b_second"].outcome == "passed", child.cases["b_second"].message
    assert output_after_fault(child)[:2] == ["TRIP", "OFF"]


def test_uart_vanishes_and_returns_later(tmp_path: Path) -> None:
    """A USB hub drops the adapter at the second boot: the device is fine, the console is lost."""
    child = run(tmp_path, device_file(tmp_path, "uart-gone@boot#2:down=2", boot_timeout=5))
    case = child.cases["a_first"]
    _bench_error(case, "console-lost")
    assert "vanished and did not come back" in case.message
    assert child.cases["b_second"].outcome == "passed", child.cases["b_second"].message
    _safe_before_next_on(child)


def test_uart_native_usb_absence_is_the_devices(tmp_path: Path) -> None:
    """The same absence on a device whose port is its own USB is the device's failure to boot: a verdict."""
    dev = device_file(tmp_path, "uart-gone@boot#2", boot_timeout=5)
    dev.write_text(dev.read_text().replace('  line_ending: "\\r\\n"\n', '  line_ending: "\\r\\n"\n  native_usb: true\n'))
    assert "native_usb: true" in dev.read_text()
    child = run(tmp_path, dev, scenarios=("a_first",))
    case = child.cases["a_first"]
    assert case.outcome == "failed", (case.outcome, case.message)
    assert "FAIL [no-boot]" in case.message, case.message


def test_bench_process_dies(tmp_path: Path) -> None:
    child = run(tmp_path, device_file(tmp_path, "exit@flash#2"))
    case = child.cases["a_first"]
    _bench_error(case, "bench-start")
    assert "exited with code 3 during the run" in case.message
    assert child.cases["b_second"].outcome == "passed", child.cases["b_second"].message
    assert "bench faults met: 1, recovered: 1" in child.stdout


def test_reference_server_port_taken(tmp_path: Path) -> None:
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen(1)
    port = holder.getsockname()[1]
    try:
        child = run(tmp_path, device_file(tmp_path, port=port))
    finally:
        holder.close()
    for case in child.cases.values():
        _bench_error(case, "server-error")
        assert f"cannot listen on 127.0.0.1:{port}" in case.message
    assert not (child.run_root / "supply.jsonl").exists(), "the supply was driven although the run could not start"
    # The port is free again: the next run works.
    (tmp_path / "again").mkdir()
    again = run(tmp_path / "again", device_file(tmp_path, port=port))
    assert {c.outcome for c in again.cases.values()} == {"passed"}


def test_retry_after_a_transient_bench_fault(tmp_path: Path) -> None:
    child = run(tmp_path, device_file(tmp_path, "scpi-drop@flash#2:down=2"), "--bench-retries", "1")
    case = child.cases["a_first"]
    assert case.outcome == "passed", case.message
    assert case.properties["attempt-1"].startswith("bench-error [supply-unreachable]"), case.properties
    assert case.properties["attempts"] == "2"
    result = child.result("a_first")
    assert result["attempts"][0]["code"] == "supply-unreachable" and result["outcome"] == "passed"
    assert (child.run_root / "a_first" / "attempt-1" / "result.json").exists()
    assert "retried after a bench error: 1 scenarios, 1 of them reached a verdict" in child.stdout
    assert child.cases["b_second"].outcome == "passed"
    # The lost attempt is kept, but counted nowhere: the run had two scenarios and both passed.
    assert "scenarios: 2 run, 2 passed, 0 failed (device verdicts), 0 bench errors" in child.stdout
    tonight = json.loads((child.run_root.parent / "history.jsonl").read_text().splitlines()[-1])
    assert (tonight["scenarios"], tonight["passed"], tonight["bench_errors"]) == (2, 2, 0), tonight
    assert tonight["counts"] == {"resumed": 2}, tonight


def test_a_device_verdict_is_never_retried(tmp_path: Path) -> None:
    child = run(tmp_path, device_file(tmp_path), "--bench-retries", "2", "--sim-variant", "ram-only",
                scenarios=("a_first",))
    case = child.cases["a_first"]
    assert case.outcome == "failed" and "FAIL [nothing-offered]" in case.message, case.message
    assert "attempt-1" not in case.properties and child.result("a_first")["attempts"] == []
    assert "console around the cut:" in case.message          # the CI page shows the console
