"""report.html from a hand-made run: order, lineage arrows, old runs, summary, secrets, one inline plotly.js.

Fast: no bench, no browser; the page is read as text and its figures as the
JSON the page carries (what plotly.js draws).  tests/report/test_report_browser.py
opens the same kind of page in Chromium.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from reportkit import EXPECTED_ORDER, SECRET, T0, make_run, record

from harness import htmlreport
from harness.htmlreport import LANES, lineage_arrows, write_report

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    root = make_run(tmp_path_factory.mktemp("report") / "runs")
    out = write_report(root, meta={"rig": "bench-7", "seed": 42})
    return root, out.read_text(encoding="utf-8")


def figure(html: str, dir_name: str) -> dict[str, Any]:
    """The figure the page carries for one scenario (its JSON, as plotly.js receives it)."""
    anchor = "sc-" + re.sub(r"[^A-Za-z0-9_-]+", "_", dir_name)
    found = re.search(rf"<script type='application/json' id='plot-{re.escape(anchor)}-spec'>(.*?)</script>", html)
    assert found, f"no figure for {dir_name}"
    return json.loads(found.group(1))


def names(fig: dict[str, Any]) -> list[str]:
    return [t.get("name", "") for t in fig["data"]]


def test_written_where_asked(page: tuple[Path, str]) -> None:
    root, html = page
    assert (root / "report.html").exists()
    assert html.startswith("<!DOCTYPE html>")
    assert "bench-7" in html   # meta heads the page


def test_failures_first(page: tuple[Path, str]) -> None:
    _, html = page
    order = re.findall(r"<section class='scenario [^']*' id='[^']*' data-nodeid='([^']*)'", html)
    assert order == EXPECTED_ORDER


def test_arrow_from_issuing_handshake_to_resuming_one(page: tuple[Path, str]) -> None:
    _, html = page
    fig = figure(html, "resume_after_power_loss_tls1.2")
    arrows = [a for a in fig["layout"].get("annotations", []) if a.get("showarrow")]
    assert len(arrows) == 1
    a = arrows[0]
    # tail at #1 (full, 0.45 s), head at #2 (resumed, 1.5 s): the direction of the lineage
    assert (a["ax"], a["ay"]) == (pytest.approx(0.45), LANES.index("full"))
    assert (a["x"], a["y"]) == (pytest.approx(1.5), LANES.index("resumed"))
    assert a["axref"] == a["xref"] and a["ayref"] == a["yref"]   # both ends in data coordinates


def test_refused_offer_points_back_to_its_issuer(page: tuple[Path, str]) -> None:
    _, html = page
    fig = figure(html, "corrupted_session_record_tls1.2-1")
    arrows = [a for a in fig["layout"].get("annotations", []) if a.get("showarrow")]
    # No events.jsonl (an older run): the scenario starts at its first record, the supply's "on" 1 ms in.
    assert [(a["ax"], a["x"]) for a in arrows] == [(pytest.approx(0.449), pytest.approx(1.499))]
    assert "refused: expired" in arrows[0]["hovertext"]


def test_lineage_arrows_from_records() -> None:
    records = [record(1, T0, issued=["f1"]), record(2, T0 + 1, resumed=True, resumed_from=1, ticket="f1",
                                                       issued=["f2"]),
               record(3, T0 + 2, resumed=True, resumed_from=2, ticket="f2"),
               record(4, T0 + 3, resumed=True, resumed_from=99, ticket="elsewhere"),   # issuer in an earlier scenario
               record(5, T0 + 4, ticket="f1", rejected="expired")]
    got = [(a.src, a.dst, a.resumed) for a in lineage_arrows(records)]
    assert got == [(1, 2, True), (2, 3, True), (1, 5, False)]


def test_missing_rail_tolerated(page: tuple[Path, str]) -> None:
    _, html = page
    with_rail = names(figure(html, "resume_after_power_loss_tls1.2"))
    assert {"rail V", "rail A", "brown-out threshold 2.5 V", "discharged below 0.3 V"} <= set(with_rail)
    assert {"boot", "session write", "step", "power", "handshake full", "handshake resumed"} <= set(with_rail)
    without = names(figure(html, "corrupted_session_record_tls1.2-1"))   # no rail.jsonl, no events.jsonl
    assert "supply readings V" in without and not any(n.startswith("rail") for n in without)
    assert "handshake full" in without
    assert "supply readings only (no rail.jsonl)" in html


def test_power_cuts_shaded_on_the_time_axis(page: tuple[Path, str]) -> None:
    _, html = page
    for name in ("resume_after_power_loss_tls1.2", "corrupted_session_record_tls1.2-1"):  # events.jsonl, supply.jsonl
        rects = [s for s in figure(html, name)["layout"].get("shapes", []) if s.get("type") == "rect"]
        assert rects and {(round(s["x0"], 2), round(s["x1"], 2)) for s in rects} == {(0.8, 1.1)}


def test_summary(page: tuple[Path, str]) -> None:
    _, html = page
    assert "4 scenarios: <b>1 passed</b>, <b class='failtext'>2 failed</b> (verdicts)" in html
    assert "<b>1 bench errors</b> counted apart" in html
    # #1 #3 #4 #5 #6 full, #2 resumed; the bench error has none
    assert "6 completed: 5 full, 1 resumed (<b>16.7% resumed</b>)" in html
    codes = re.findall(r"<tr class='code-([a-z-]+)'><td>[^<]*</td><td><code>([a-z-]+)</code>", html)
    assert codes[:2] == [("failed", "nothing-offered"), ("failed", "refused")] or \
        codes[:2] == [("failed", "refused"), ("failed", "nothing-offered")]
    assert codes[2:] == [("bench-error", "supply-unreachable"), ("pass", "pass")]
    energy = re.findall(r"<tr class='cell' data-version='([^']+)'>.*?<b>([0-9.]+)</b>", html)
    assert energy == [("tls1.2", "18.00"), ("tls1.3", "18.00")]
    assert "attempts (1)" in html


def test_no_secrets_and_no_script_from_the_run(page: tuple[Path, str]) -> None:
    _, html = page
    assert SECRET not in html
    # A console line reading "</script><script>..." is text, in the table and in the figure's JSON.
    assert "</script><script>window.injected" not in html
    assert "&lt;/script&gt;&lt;script&gt;window.injected = 1;" in html


def test_plotly_inline_once_and_no_network(page: tuple[Path, str]) -> None:
    _, html = page
    assert html.count("Plotly.newPlot") == 1                  # the loader, once
    bundle = re.findall(r"plotly\.js v\d+\.\d+\.\d+", html)
    assert len(set(bundle)) == 1 and html.count("* plotly.js v") <= 1
    assert not re.search(r"<script[^>]+src=", html)
    # plotly.js names a CDN for geo maps' topojson (never fetched for these plots: the browser test
    # watches every request); nothing else in the page may point at a network.
    from plotly.offline import get_plotlyjs

    assert html.count(get_plotlyjs()) == 1
    rest = html.replace(get_plotlyjs(), "")
    assert "https://" not in rest and "http://" not in rest


def test_empty_run(tmp_path: Path) -> None:
    out = write_report(tmp_path)
    html = out.read_text(encoding="utf-8")
    assert "0 scenarios" in html and "<script>" not in html   # no plot, no plotly.js


def test_command_line(tmp_path: Path) -> None:
    root = make_run(tmp_path / "runs")
    out = tmp_path / "elsewhere" / "r.html"
    proc = subprocess.run([sys.executable, "-m", "harness.report", str(root), "-o", str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(out) and out.exists()
    # Run directories linked relative to the page where they can be, by absolute file URL where not.
    assert (root / "corrupted_session_record_tls1.2-1").resolve().as_uri() in out.read_text(encoding="utf-8")


def test_decimate_keeps_extremes() -> None:
    xs = [i / 1000 for i in range(100_000)]
    ys = [3.3] * 100_000
    ys[54_321] = 0.1   # a 1 ms dip
    dx, dy = htmlreport._decimate(xs, ys, 4000)
    assert len(dx) <= 4100 and min(dy) == 0.1 and max(dy) == 3.3
