"""report.html in a real browser: it loads with no error of any kind, every scenario has its section and plot.

Headless Chromium (the system's) over the DevTools pipe (browserkit.py):
uncaught exceptions, console.error, browser-side errors and every network
request are collected while the page loads and draws all its plots.

* The hand-made run (reportkit.py) first, and twice broken on purpose: a
  page with a script that throws, and a page with a section cut out, must
  both be caught, or the check proves nothing.
* Then the product itself: the default suite on the simulated bench with
  the torn-write firmware (failures included), in a child pytest run once
  per module, its report opened, checked against the run's own JUnit XML,
  and its screenshot saved with the run (``report.png``).
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Iterator

import pytest
from browserkit import Chromium, check_report, find_chromium
from reportkit import EXPECTED_ORDER, make_run

from harness import history
from harness.htmlreport import write_report

#: the firmware variant whose run the report is checked on (tests/conftest.py: SHARED_VARIANT): it fails the
#: corrupted-record and cut-in-a-write scenarios and passes the others, so the page has failures first
VARIANT = "torn-write"


@pytest.fixture(scope="module")
def browser() -> Iterator[Chromium]:
    binary = find_chromium()
    if binary is None:
        pytest.fail("these tests need Chromium (Debian/Ubuntu: apt-get install chromium)")
    with Chromium(binary) as chromium:
        yield chromium


@pytest.fixture(scope="module")
def handmade(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = make_run(tmp_path_factory.mktemp("report") / "runs")
    write_report(root)
    return root


def test_handmade_report_loads_clean(browser: Chromium, handmade: Path) -> None:
    problems, check = check_report(browser, handmade / "report.html", set(EXPECTED_ORDER),
                                   screenshot=handmade / "report.png")
    assert problems == []
    assert [s["nodeid"] for s in check.dom["sections"]] == EXPECTED_ORDER
    assert check.dom["energy"] == ["tls1.2", "tls1.3"]
    assert (handmade / "report.png").read_bytes().startswith(b"\x89PNG")


def test_a_broken_page_is_caught(browser: Chromium, handmade: Path, tmp_path: Path) -> None:
    """One broken page, three ways (one page load: each costs seconds of plotly.js parsing)."""
    page = tmp_path / "report.html"
    html = (handmade / "report.html").read_text(encoding="utf-8")
    html = html.replace("<body>", "<body><script>undefinedFunctionOfTheReport();</script>"
                                  "<script>console.error('drawn wrong')</script>"
                                  "<img src='http://127.0.0.1:9/logo.png'>", 1)
    page.write_text(html, encoding="utf-8")
    problems, _ = check_report(browser, page, set(EXPECTED_ORDER))
    assert any("JavaScript exception" in p and "undefinedFunctionOfTheReport" in p for p in problems), problems
    assert any("console.error" in p and "drawn wrong" in p for p in problems), problems
    assert any(p.startswith("network request") and "127.0.0.1:9" in p for p in problems), problems


def test_a_missing_section_is_caught(browser: Chromium, handmade: Path, tmp_path: Path) -> None:
    page = tmp_path / "report.html"
    html = (handmade / "report.html").read_text(encoding="utf-8")
    gone = EXPECTED_ORDER[1]
    html, n = re.subn(r"<section class='scenario [^']*' id='[^']*' data-nodeid='" + re.escape(gone)
                      + r"'.*?</section>", "", html, count=1, flags=re.S)
    assert n == 1
    page.write_text(html, encoding="utf-8")
    problems, _ = check_report(browser, page, set(EXPECTED_ORDER))
    assert problems == [f"missing section: {gone}"]


# -- the product: a real run of the default suite -------------------------------------

@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_suite_report_in_browser(browser: Chromium, torn_write_suite: tuple[Path, dict]) -> None:
    """The report the plugin wrote at the end of the run (tests/conftest.py runs it once for two tests)."""
    root, junit = torn_write_suite
    page = root / "report.html"
    assert page.exists(), "the plugin did not write report.html at the end of the run"
    began = time.monotonic()
    write_report(root, out=root / "rebuilt.html", meta={"variant": VARIANT})
    built = time.monotonic() - began
    results = history.read_results(root)
    expected = {r["nodeid"] for r in results}
    # Every scenario-file test of the run has its result.json, so its section is expected.
    scenario_tests = {name for name in junit if not name.startswith("test_")}
    assert {n.split("::")[-1] for n in expected} == scenario_tests
    problems, check = check_report(browser, page, expected, screenshot=root / "report.png")
    assert problems == []
    # The page's verdict codes are the run's: each failure's section shows the code its JUnit message gives.
    codes = {s["nodeid"].split("::")[-1]: s["code"] for s in check.dom["sections"]}
    for name, outcome in junit.items():
        found = re.search(r"FAIL \[([a-z-]+)\]", outcome.message)
        if outcome.outcome == "failed" and found and name in codes:
            assert codes[name] == found.group(1), name
    assert any(o.outcome == "failed" for o in junit.values()), f"{VARIANT} must fail some scenario"
    outcomes = [s["outcome"] for s in check.dom["sections"]]
    assert outcomes == sorted(outcomes, key=lambda o: o != "failed"), "failures first"
    assert set(check.dom["energy"]) == {"tls1.2", "tls1.3"}, "energy.json of both versions in the summary"
    assert (root / "report.png").read_bytes().startswith(b"\x89PNG")
    size = page.stat().st_size
    print(f"report {page}: {size} bytes, {len(expected)} sections, built in {built:.1f} s, "
          f"loaded and drawn in {check.seconds:.1f} s")
