"""The nightly history: three runs appended, a torn last line survived, the trend's values in run order."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest
from reportkit import T0, record, scenario

from harness import history

ROOT = Path(__file__).resolve().parents[2]
META = {"rig": "rack-2", "device_file": "devices/sim.yaml", "device_hash": "sha256:ab12", "firmware_version": None,
        "harness_version": "0.1.0"}


def night(root: Path, resumed: int, failed_codes: list[str], saved: float | None) -> Path:
    """A run root with one passing scenario of 1 full + ``resumed`` resumptions, failures by code, energy."""
    root.mkdir(parents=True)
    recs = [record(1, T0 + 0.1, issued=["a"], nbytes=2000)]
    recs += [record(2 + i, T0 + 1 + i, resumed=True, resumed_from=1, ticket="a", nbytes=800) for i in range(resumed)]
    scenario(root, "resume", "s.yaml::resume", outcome="passed", verdict="PASS [resumed]: ok", records=recs)
    for i, code in enumerate(failed_codes):
        scenario(root, f"bad{i}", f"s.yaml::bad[{i}]", outcome="failed", verdict=f"x: FAIL [{code}]: no",
                 records=[record(50 + i, T0 + 0.2, nbytes=2000)])
    if saved is not None:
        d = root / "energy"
        d.mkdir()
        (d / "energy.json").write_text(json.dumps({"version": "tls1.3", "ok": True, "idle_A": 0.02,
                                                   "full": {"charge_mC": 20.0}, "resumed": {"charge_mC": 20 - saved},
                                                   "saved": {"charge_mC": saved, "seconds": 0.2}}))
    return root


@pytest.fixture
def three_nights(tmp_path: Path) -> tuple[Path, list[history.HistoryEntry]]:
    path = tmp_path / "runs" / "history.jsonl"
    entries = []
    for date, resumed, codes, saved, seed in (("2026-11-28", 3, [], 12.0, 1),
                                              ("2026-11-29", 1, ["nothing-offered", "refused"], None, 2),
                                              ("2026-11-30", 2, ["refused"], 10.0, 3)):
        entry = history.entry_from_run(night(tmp_path / date, resumed, codes, saved), {**META, "date": date,
                                                                                      "seed": seed})
        history.append(path, entry)
        entries.append(entry)
    return path, entries


def test_entry_figures(three_nights: tuple[Path, list[history.HistoryEntry]]) -> None:
    _, (first, second, _) = three_nights
    assert first.counts == {"pass": 1} and first.failed == 0
    assert second.counts == {"nothing-offered": 1, "pass": 1, "refused": 1} and second.failed == 2
    assert first.resumption_rate == pytest.approx(3 / 4)
    assert second.resumption_rate == pytest.approx(1 / 4)     # 1 resumed of 4 (1 + 2 failures' full ones + 1)
    assert first.median_saved_bytes == 1200 and first.median_saved_ms == pytest.approx(15.0)
    assert first.median_saved_mC == 12.0 and second.median_saved_mC is None
    assert (first.rig, first.device_hash, first.seed, first.firmware_version) == ("rack-2", "sha256:ab12", 1, None)


def test_trend_values_per_run_in_order(three_nights: tuple[Path, list[history.HistoryEntry]]) -> None:
    path, _ = three_nights
    data = history.trend_data(history.load(path))
    assert data.labels == ["2026-11-28 rack-2 #1", "2026-11-29 rack-2 #2", "2026-11-30 rack-2 #3"]
    assert data.resumption_pct == [75.0, 25.0, 50.0]
    assert data.counts == {"nothing-offered": [0, 1, 0], "pass": [1, 1, 1], "refused": [0, 1, 1]}
    assert data.saved_bytes == [1200, 1200, 1200]
    assert data.saved_mC == [12.0, None, 10.0]
    assert history.trend_data(history.load(path), last=2).labels[0].startswith("2026-11-29")


def test_torn_last_line_tolerated(three_nights: tuple[Path, list[history.HistoryEntry]],
                                  caplog: pytest.LogCaptureFixture) -> None:
    path, entries = three_nights
    with open(path, "a", encoding="utf-8") as f:      # a run killed while appending
        f.write('{"date": "2026-12-01", "counts": {"pa')
    with caplog.at_level(logging.WARNING, logger="harness.history"):
        loaded = history.load(path)
    assert [e.date for e in loaded] == ["2026-11-28", "2026-11-29", "2026-11-30"]
    assert f"{path}:4: history line skipped" in caplog.text
    # The next night appends after the torn line, not onto it.
    history.append(path, entries[0])
    assert [e.date for e in history.load(path)] == ["2026-11-28", "2026-11-29", "2026-11-30", "2026-11-28"]


def test_bad_lines_anywhere_skipped(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "h.jsonl"
    path.write_text('{"date": "a"}\n[1, 2]\n\n{"no_date": 1}\n{"date": "b", "new_field_of_a_later_harness": 1}\n')
    with caplog.at_level(logging.WARNING, logger="harness.history"):
        assert [e.date for e in history.load(path)] == ["a", "b"]
    assert f"{path}:2:" in caplog.text and f"{path}:4:" in caplog.text
    assert history.load(tmp_path / "none.jsonl") == []


def test_trend_figure(three_nights: tuple[Path, list[history.HistoryEntry]]) -> None:
    path, _ = three_nights
    fig = history.trend_figure(history.load(path))
    got = {t.name: list(t.y) for t in fig.data}
    assert got["resumed %"] == [75.0, 25.0, 50.0]
    assert got["refused"] == [0, 1, 1] and got["mC saved (energy scenario)"] == [12.0, None, 10.0]


def test_trend_page_from_the_command_line(three_nights: tuple[Path, list[history.HistoryEntry]]) -> None:
    path, _ = three_nights
    proc = subprocess.run([sys.executable, "-m", "harness.report", "--history", str(path.parent)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = Path(proc.stdout.strip())
    assert out == path.parent / "trends.html"
    html = out.read_text(encoding="utf-8")
    assert "3 runs in" in html and "2026-11-29 rack-2 #2" in html


def test_report_shows_the_trend(three_nights: tuple[Path, list[history.HistoryEntry]], tmp_path: Path) -> None:
    from harness.htmlreport import write_report

    path, _ = three_nights
    html = write_report(tmp_path / "2026-11-30", history=path).read_text(encoding="utf-8")
    assert "Trend: the last runs" in html and "id='trend-spec'" in html
