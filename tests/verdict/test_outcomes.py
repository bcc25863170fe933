"""The registry of outcome codes against the README and against the verdict.

(a) The README's table is the registry's output: a code added, renamed or
re-explained in harness/outcomes.py and not pasted into the README fails
here, with the text to paste.  (b) Every code the verdict is said to find is
produced by hand-made evidence: a code no check can reach is dead, or the
check that should produce it has been lost.  The engine's codes are covered
by the engine's tests.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Callable

import pytest
from handmade import ON, ev, issued_before, rec

from harness import outcomes, verdict
from harness.outcomes import Code

README = Path(__file__).resolve().parents[2] / "README.md"


def verdict_section() -> str:
    text = README.read_text(encoding="utf-8")
    start = text.index("\n## The verdict\n")
    end = text.find("\n## ", start + 1)
    return text[start:end if end != -1 else len(text)]


def readme_table() -> str:
    rows = [ln for ln in verdict_section().splitlines() if ln.startswith("| code |") or
            (ln.startswith("|") and "`" in ln.split("|")[1]) or ln.startswith("|---")]
    return "\n".join(rows) + "\n"


def test_the_readme_table_is_the_registry() -> None:
    assert readme_table() == outcomes.markdown_table(), (
        "README.md section 'The verdict' is out of date: paste the output of `python -m harness.outcomes`")


def test_the_readme_lists_every_code_once_with_its_meaning() -> None:
    rows = [[cell.strip() for cell in ln.strip("|").split("|")] for ln in readme_table().splitlines()[2:]]
    listed = {re.sub(r"`", "", row[0]): row[1] for row in rows}
    assert len(rows) == len(listed) == len(Code)
    assert listed == {code.value: code.meaning for code in Code}


def test_the_table_marks_what_the_engine_finds() -> None:
    assert {code.found_by for code in Code} == {"verdict", "engine", "bench"}
    # Every bench error class of the harness has its code here, and nothing else is "bench".
    from harness import errors

    classes = [errors.SupplyUnreachable, errors.InstrumentError, errors.ConsoleLost, errors.ServerError,
               errors.BenchStartError, errors.RigBusy]
    assert {c.sub_code for c in classes} == set(outcomes.BENCH_CODES)
    table = outcomes.markdown_table()
    assert "| `not-stored` | the device never printed its session_stored line | session kept in RAM only | engine |" \
        in table.splitlines()


def test_codes_are_their_strings() -> None:
    assert Code.RESUMED == "resumed" and f"[{Code.STALE_SESSION}]" == "[stale-session]"
    assert outcomes.lookup("no-session-before-cut") is Code.NO_SESSION_BEFORE_CUT
    with pytest.raises(ValueError):
        outcomes.lookup("no-cut")


def _first(want: str, *more: dict, reason: str | None = None, mechanism: str | None = None) -> verdict.Verdict:
    return verdict.check_first_after(ev(issued_before(*more)), ON, want, reason, mechanism)


ABORTED = dict(version=None, offered={"ticket": "aa"}, rejected="rotated", error="client aborted")

#: for every code the verdict finds, one situation that produces it
REACHED: dict[Code, Callable[[], verdict.Verdict | None]] = {
    Code.RESUMED: lambda: verdict.resumed_across_power_loss(ev(issued_before(rec(2, 12.0, resumed=True, frm=1)))),
    Code.NO_POWER_CUT: lambda: verdict.resumed_across_power_loss(ev(issued_before(), cuts=[])),
    Code.POWER_NOT_CUT: lambda: verdict.resumed_across_power_loss(ev(issued_before(), volts=2.9)),
    Code.NO_BOOT: lambda: verdict.resumed_across_power_loss(ev(issued_before(), boot=False)),
    Code.NEVER_CONNECTED: lambda: verdict.resumed_across_power_loss(ev(issued_before())),
    Code.HANDSHAKE_FAILED: lambda: verdict.resumed_across_power_loss(
        ev(issued_before(rec(2, 12.0, version=None, error="bad certificate")))),
    Code.NO_SESSION_BEFORE_CUT: lambda: verdict.resumed_across_power_loss(ev([rec(2, 12.0)])),
    Code.NOTHING_OFFERED: lambda: verdict.resumed_across_power_loss(ev(issued_before(rec(2, 12.0)))),
    Code.STALE_SESSION: lambda: verdict.resumed_across_power_loss(
        ev([rec(1, 2.0, issued=["aa"]), rec(2, 5.0, issued=["bb"]), rec(3, 12.0, resumed=True, frm=1)])),
    Code.REFUSED: lambda: verdict.resumed_across_power_loss(
        ev(issued_before(rec(2, 12.0, offered={"psk": ["aa"]}, rejected="expired")))),
    Code.NO_FALLBACK: lambda: _first("refused", rec(2, 12.0, **ABORTED)),
    Code.WRONG_VERSION: lambda: verdict.version_truth(issued_before(), "tls1.2"),
    Code.FULL: lambda: _first("full", rec(2, 12.0)),
    Code.UNEXPECTED_RESUME: lambda: _first("full", rec(2, 12.0, resumed=True, frm=1)),
    Code.WRONG_REASON: lambda: _first("refused", rec(2, 12.0, offered={"psk": ["aa"]}, rejected="expired"),
                                      reason="rotated"),
    Code.WRONG_MECHANISM: lambda: _first("resumed", rec(2, 12.0, resumed=True, frm=1), mechanism="ticket"),
    Code.CONNECT_FAILED: lambda: verdict.failed_connect(ev(issued_before(rec(2, 12.0))), ON, "connect failed"),
    Code.NO_HANDSHAKE: lambda: verdict.no_handshake(ev(issued_before()), ON),
    Code.UNEXPECTED_HANDSHAKE: lambda: verdict.no_handshake(ev(issued_before(rec(2, 12.0))), ON),
}


def test_every_verdict_code_has_a_situation_that_produces_it() -> None:
    assert set(REACHED) == {code for code in Code if code.found_by == "verdict"}


@pytest.mark.parametrize("code", list(REACHED), ids=str)
def test_the_situation_produces_its_code(code: Code) -> None:
    judged = REACHED[code]()
    assert judged is not None and judged.code is code
    assert judged.ok == (code in (Code.RESUMED, Code.FULL, Code.NO_HANDSHAKE))
