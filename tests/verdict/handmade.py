"""Hand-made evidence for the verdict's tests: records as the reference server writes them, one power cut.

Why a module apart: the checks are tested one by one (test_verdict_checks.py)
and every code is shown reachable (test_outcomes.py) from the same small
vocabulary, so a test reads as the situation it stages.  The cut is always
off at 10 s and back at 11 s; a boot at 11.5 s unless told otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from harness import verdict
from harness.device import Boot, PowerCut

OFF, ON = 10.0, 11.0


@dataclass
class Line:
    mono: float
    wall: float
    text: str


def rec(id: int, mono: float, *, resumed: bool = False, frm: int | None = None, issued=(), offered=None,
        rejected=None, version="TLSv1.3", error=None, **more: Any) -> dict[str, Any]:
    """One handshake record as a JSON line: the shape a lab reads back from handshakes.jsonl."""
    return {"id": id, "mono": mono, "time": "", "peer": "192.0.2.1:40000", "version": version,
            "resumed": resumed, "mechanism": ("psk" if version == "TLSv1.3" else "ticket") if resumed else "full",
            "resumed_from": frm, "issued": list(issued), "rejected": rejected, "error": error,
            "offered": offered or {"ticket": None, "psk": [], "session_id": None}, **more}


def ev(records, *, volts: float | None = 0.1, boot: bool = True, lines=(), cuts=None, kind: str = "off",
       brownout_threshold: float | None = 2.5, session_stored: str | None = "^session stored$") -> verdict.Evidence:
    if cuts is None:
        cuts = [PowerCut(off_mono=OFF, on_mono=ON, volts_before_on=volts, verified=True, kind=kind)]
    boots = [Boot(11.5, "power-on", "reset cause: power-on")] if boot else []
    return verdict.Evidence(records=records, cuts=cuts, boots=boots,
                            lines=[Line(m, m, t) for m, t in lines], session_stored=session_stored,
                            brownout_threshold=brownout_threshold, discharge_below=0.3)


def cut(records, **kw: Any) -> verdict.CutEvidence:
    """The one cut of :func:`ev`, as the central verdict's checks see it."""
    found = verdict.CutEvidence.of(ev(records, **kw))
    assert found is not None
    return found


def first_after(records, want: str, *, since: float = ON, reason: str | None = None,
                mechanism: str | None = None) -> verdict.FirstAfter:
    """The first handshake after ``since``, as an expectation's checks see it."""
    found = verdict.FirstAfter.of(ev(records), since, want, reason, mechanism)
    assert found is not None
    return found


def issued_before(*more: dict[str, Any]) -> list[dict[str, Any]]:
    """A session issued at 5 s (handshake #1, ticket ``aa``), then ``more``."""
    return [rec(1, 5.0, issued=["aa"]), *more]
