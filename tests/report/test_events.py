"""events.jsonl: boots, cuts, session writes, steps and the supply's thresholds as data in the run directory.

The report draws them on the time axis; until they were written, they
existed only as prose in timeline.txt.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

from harness.device import Boot, Device, PowerCut, SessionWrite
from harness.report import write_run_dir


def line(mono: float, text: str) -> SimpleNamespace:
    return SimpleNamespace(mono=mono, wall=1.7e9 + mono, text=text)


def device(flash_write: str | None, session_stored: str | None, lines: list[SimpleNamespace]) -> Device:
    spec = SimpleNamespace(firmware=SimpleNamespace(flash_write=flash_write, session_stored=session_stored))
    return Device(spec, supply=None, console=SimpleNamespace(lines=lines))  # type: ignore[arg-type]


def test_session_writes_in_the_window() -> None:
    lines = [line(1.0, "flash: writing slot A seq 1 (312 bytes)"), line(1.1, "session stored"),
             line(2.0, "tls: offering ticket"), line(5.0, "flash: writing slot B seq 2 (318 bytes)")]
    dev = device(r"^flash: writing slot \S+ seq \d+ \((?P<bytes>\d+) bytes\)", r"^session stored$", lines)
    assert dev.session_writes(0.5, 3.0) == [
        SessionWrite(mono=1.0, text="flash: writing slot A seq 1 (312 bytes)", kind="flash_write", bytes=312),
        SessionWrite(mono=1.1, text="session stored", kind="session_stored", bytes=None)]
    assert dev.stored_sizes(0.5, 6.0) == [312, 318]   # the same lines, the same patterns


def test_session_writes_without_patterns() -> None:
    assert device(None, None, [line(1.0, "session stored")]).session_writes(0, 9) == []


def test_write_run_dir_writes_events(tmp_path: Path) -> None:
    run_dir = tmp_path / "scenario"
    supply_spec = SimpleNamespace(voltage=3.3, brownout_threshold=2.5, discharge_below=0.3, current_limit=0.5)
    write_run_dir(run_dir, nodeid="s.yaml::s", start=10.0, end=14.0, records=[],
                  lines=[line(10.5, "ready")], supply_events=[], steps=iter([(10.0, "power_on"), (12.0, "connect")]),
                  cuts=iter([PowerCut(off_mono=11.0, on_mono=11.4, volts_before_on=0.2, verified=True)]),
                  boots=iter([Boot(mono=10.5, cause="power-on", line="reset cause: power-on")]),
                  verdict_text="PASS [resumed]: ok", outcome="passed",
                  session_writes=[SessionWrite(mono=12.5, text="session stored", kind="session_stored")],
                  supply_spec=supply_spec)
    rows = [json.loads(x) for x in (run_dir / "events.jsonl").read_text().splitlines()]
    assert rows == [
        {"type": "scenario", "nodeid": "s.yaml::s", "start": 10.0, "end": 14.0},
        {"type": "limits", "voltage": 3.3, "brownout_threshold": 2.5, "discharge_below": 0.3},
        {"type": "step", "mono": 10.0, "text": "power_on"},
        {"type": "step", "mono": 12.0, "text": "connect"},
        {"type": "boot", "mono": 10.5, "cause": "power-on", "line": "reset cause: power-on"},
        {"type": "cut", "off_mono": 11.0, "on_mono": 11.4, "volts_before_on": 0.2, "kind": "off", "verified": True},
        {"type": "session_write", "mono": 12.5, "text": "session stored", "bytes": None, "kind": "session_stored"}]
    # Iterators given for steps, cuts and boots still reach the timeline (read once, used twice).
    timeline = (run_dir / "timeline.txt").read_text()
    assert "power_on" in timeline and "booted, reset cause power-on" in timeline and "power back after" in timeline


def test_write_run_dir_without_the_new_arguments(tmp_path: Path) -> None:
    """Callers that pass neither still get events.jsonl (no limits line, no writes)."""
    write_run_dir(tmp_path, nodeid="n", start=0.0, end=1.0, records=[], lines=[], supply_events=[], steps=[],
                  cuts=[], boots=[], verdict_text="", outcome="passed")
    rows = [json.loads(x) for x in (tmp_path / "events.jsonl").read_text().splitlines()]
    assert [r["type"] for r in rows] == ["scenario"]
