"""The verdict: did the device resume, across the power loss, the session stored before it?

Ground truth comes from the reference server (handshake records) and the
supply (power cuts and the rail voltage), never from what the device says
about itself.  Console lines are used only to explain a failure: they are
evidence of *why*, not of *whether*.  One exception, said in every verdict
it touches: a power switch that measures nothing (a labgrid place's PDU
outlet) leaves no rail to read, so there the device's power-on reset is the
evidence that the power went (:func:`switch_without_power_on_reset`).

``resumed=True`` is not enough.  The verdict follows lineage: the first
handshake after the cut must resume the session that the server issued most
recently before the cut.  Resuming an older one is reported as stale (the
firmware did not store renewed tickets).  When the device did not resume, the
verdict names the most likely cause from the evidence, in the order a
firmware engineer would check it: was power really cut, did the device boot,
did it connect, did it offer anything, what did the server say about it.

How it is built (after OpenHTF's diagnosers): each of those questions is one
small function that returns a :class:`Verdict` when it can conclude and None
when the next question must be asked; :data:`CUT_CHECKS` and
:data:`FIRST_CHECKS` list them in the order they are asked, so a new cause is
one function and one place in a list.  Codes come from one registry
(:class:`harness.outcomes.Code`).  Records enter as the server's
:class:`HandshakeRecord` or as JSON lines read back; they are turned into
records once, where they enter (:class:`Evidence`, :func:`version_truth`),
and read as plain attributes after that.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping, Protocol, Sequence, Union

from . import fieldbugs
from .clock import hhmmss
from .outcomes import Code
from .server.records import HandshakeRecord

if TYPE_CHECKING:
    from .console import Line
    from .device import Boot, PowerCut

#: the harness's version words -> the protocol names the server records
TLS_NAMES = {"tls1.2": "TLSv1.2", "tls1.3": "TLSv1.3"}

#: a record as the server keeps it, or as a JSON line read back from its log
RecordLike = Union[HandshakeRecord, Mapping[str, Any]]

#: what each refusal reason the server records most likely means for the firmware
REFUSAL_CAUSES = {
    "expired": "the ticket's lifetime ran out while the device was off; the firmware must fall back to a "
               "full handshake and store the new session",
    "rotated": "the server rotated its ticket keys; fall back and store the new session",
    "foreign": "the ticket came from another server (or another server instance)",
    "version": "the stored session's TLS version is not accepted by the server any more",
    "tickets-off": "the server no longer accepts tickets",
    "unknown": "the server does not know this session (cache flushed or evicted)",
    "binder": fieldbugs.SECRET_MISSING,
    "finished": fieldbugs.SECRET_MISSING,
    "decrypt": "a damaged session record was restored and offered: the ticket carries this server's key name but "
               "does not decrypt (torn or flipped bytes, no integrity check such as a CRC)",
}

_NOT_CUT_CAUSE = "off time shorter than the rail's discharge: use a longer off time or verified discharge"
_NO_FALLBACK_CAUSE = "no fallback to a full handshake when the server refuses a stored session"


# -- records ------------------------------------------------------------------------

def as_record(record: RecordLike) -> HandshakeRecord:
    """One shape for every check: a JSON line read back becomes the record the server would hold."""
    if isinstance(record, HandshakeRecord):
        return record
    if isinstance(record, Mapping):
        return HandshakeRecord.from_dict(dict(record))
    raise TypeError(f"not a handshake record: {record!r}")


def as_records(records: Iterable[RecordLike]) -> list[HandshakeRecord]:
    return [as_record(r) for r in records]


def offered_anything(record: HandshakeRecord) -> bool:
    offered = record.offered
    return bool(offered.ticket or offered.psk or offered.session_id)


def completed(record: HandshakeRecord) -> bool:
    """A version was agreed and nothing went wrong: a session the device could keep."""
    return bool(record.version) and not record.error


def failed(record: HandshakeRecord) -> bool:
    """The handshake itself failed (no version agreed), as opposed to an error after it."""
    return bool(record.error) and not record.version


def began(record: HandshakeRecord) -> float:
    """When the connection was accepted, on the harness clock."""
    return record.began_mono


def offered_fps(record: HandshakeRecord) -> list[str]:
    offered = record.offered
    fps = list(offered.psk or [])
    for fp in (offered.ticket, offered.session_id):
        if fp:
            fps.append(fp)
    return fps


def describe(record: HandshakeRecord) -> str:
    """One line per handshake, secrets replaced by fingerprints already in the record."""
    kind = record.mechanism or ("resumed" if record.resumed else "full")
    parts = [f"#{record.id} {hhmmss(record.mono)} {record.version or '-'} {kind}"]
    if record.resumed_from is not None:
        parts.append(f"from #{record.resumed_from}")
    offered = offered_fps(record)
    parts.append("offered " + (",".join(offered) if offered else "nothing"))
    if record.rejected:
        parts.append(f"refused: {record.rejected}")
    issued = record.issued or []
    if issued:
        parts.append("issued " + ",".join(issued))
    if record.error:
        parts.append(f"error: {record.error}")
        if record.client_versions:
            parts.append(f"(device offered {'/'.join(record.client_versions)})")
    app = record.app or []
    if app:
        more = f" +{len(app) - 2}" if len(app) > 2 else ""
        parts.append(f"| {record.protocol}: {'; '.join(app[:2])}{more}")
    return " ".join(parts)


# -- evidence and verdicts ----------------------------------------------------------

@dataclass
class Evidence:
    """Everything on the one clock that a verdict may look at.

    ``records`` may be given as dicts (JSON lines read back); they are turned
    into :class:`HandshakeRecord` here, so no check meets two shapes.
    """

    records: Sequence[HandshakeRecord]
    cuts: Sequence[PowerCut] = ()
    boots: Sequence[Boot] = ()
    lines: Sequence[Line] = ()
    session_stored: str | None = None
    brownout_threshold: float | None = None
    discharge_below: float | None = None
    flash_write: str | None = None  # the device's "begins writing the session" line, when it prints one
    #: the records of the scenario's other reference servers, by name (who issued what a device offered)
    others: Mapping[str, Sequence[HandshakeRecord]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.records = as_records(self.records)
        self.others = {name: as_records(recs) for name, recs in self.others.items()}

    def issuer_of(self, record: HandshakeRecord) -> tuple[HandshakeRecord | None, str | None]:
        """The handshake that issued what ``record`` offered, and the other server's name if not this one."""
        offered = set(offered_fps(record))
        if not offered:
            return None, None
        for name, records in [(None, self.records), *self.others.items()]:
            for r in records:
                if offered & set(r.issued or []):
                    return r, name
        return None, None

    def records_between(self, start: float | None, end: float | None = None) -> list[HandshakeRecord]:
        """Records whose connection *began* in [start, end).

        A record is stamped when its handshake ends; a connection cut by a
        power loss may only end (server timeout) after power is back, and
        must not count as the first handshake after the cut.
        """
        return [r for r in self.records
                if (start is None or began(r) >= start) and (end is None or began(r) < end)]

    def lines_between(self, start: float, end: float) -> list[Line]:
        return [ln for ln in self.lines if start <= ln.mono <= end]


@dataclass
class Verdict:
    """A judgement with its code, the sentence a firmware engineer reads, and the evidence shown."""

    ok: bool
    code: Code
    summary: str
    cause: str = ""
    records: list[HandshakeRecord] = field(default_factory=list)
    lines: list[Any] = field(default_factory=list)

    def __post_init__(self) -> None:
        # Callers may still pass a code's string; a string outside the registry is a harness bug.
        self.code = Code(self.code)

    def explain(self) -> str:
        out = [f"{'PASS' if self.ok else 'FAIL'} [{self.code}]: {self.summary}"]
        if self.cause:
            out.append(f"most likely cause: {self.cause}")
        if self.records:
            out.append("handshakes (reference server):")
            out.extend(f"  {describe(r)}" for r in self.records)
        if self.lines:
            out.append("console around the cut:")
            out.extend(f"  {hhmmss(ln.mono)}  {ln.text}" for ln in self.lines)
        return "\n".join(out)

    def __str__(self) -> str:
        return self.explain()


def aborted_refusal(record: HandshakeRecord) -> bool:
    """The client offered a session, the server refused it, and the client then aborted.

    Some TLS stacks (tlslite-ng's TLS 1.2 client among them) abort when the
    server does not accept the offered ticket instead of completing a full
    handshake; firmware built on them falls back on a second connection.
    The pair is one logical connection with a fallback, not a failure.
    """
    return bool(offered_anything(record) and not record.resumed and record.rejected and record.error)


def _fallback_after(records: Sequence[HandshakeRecord], first: HandshakeRecord) -> HandshakeRecord | None:
    """The completed handshake that followed an aborted refusal, if any."""
    if not aborted_refusal(first):
        return None
    for r in records[1:]:
        if completed(r):
            return r if not r.resumed else None
        if offered_anything(r):
            break
    return None


def session_before(records: Iterable[HandshakeRecord], before: float) -> HandshakeRecord | None:
    """The handshake whose session the device should hold at ``before``.

    The newest successful handshake before the cut issued the session to keep:
    either it issued tickets itself, or (a TLS 1.2 resumption without renewal)
    it re-used the session of the handshake it resumed from.
    """
    ok = [r for r in records if r.mono < before and completed(r)]
    if not ok:
        return None
    return ok[-1]


def _issuer(record: HandshakeRecord, by_id: dict[int, HandshakeRecord]) -> HandshakeRecord:
    """Follow a resumption without new tickets back to the handshake that issued its session."""
    seen = set()
    while not record.issued and record.resumed and record.resumed_from in by_id and record.id not in seen:
        seen.add(record.id)
        record = by_id[record.resumed_from]
    return record


def _stored_after(ev: Evidence, start: float, end: float) -> Line | None:
    if not ev.session_stored:
        return None
    rx = re.compile(ev.session_stored)
    for ln in ev.lines_between(start, end):
        if rx.search(ln.text):
            return ln
    return None


def _context_lines(ev: Evidence, around: float, before: float = 3.0, after: float = 6.0,
                   limit: int = 30) -> list[Line]:
    picked = ev.lines_between(around - before, around + after)
    return picked[-limit:]


# -- the central verdict: one power cut, checked in order ---------------------------

@dataclass
class CutEvidence:
    """One completed power cut and the evidence around it, as the checks of the central verdict read it."""

    ev: Evidence
    off: float
    on: float
    kind: str                       # "off" (output switched off), "brownout", or "switched" (no meter)
    volts: float | None             # the rail just before power came back
    before: list[HandshakeRecord]   # the last three handshakes begun before the cut
    after: list[HandshakeRecord]    # handshakes begun after power came back, before any next cut
    boots: list[Boot]               # boots after power came back, before any next cut
    around: list[Line]              # console lines around the cut

    @classmethod
    def of(cls, ev: Evidence, cut_index: int = -1) -> CutEvidence | None:
        """The ``cut_index``-th completed cut (default: the last), or None when there is none."""
        cuts = [c for c in ev.cuts if c.on_mono is not None]
        if not cuts:
            return None
        cut = cuts[cut_index]
        off, on = cut.off_mono, cut.on_mono
        after = ev.records_between(on)
        boots = [b for b in ev.boots if b.mono >= on]
        next_cut = next((c.off_mono for c in ev.cuts if c.off_mono > on), None)
        if next_cut is not None:
            after = [r for r in after if began(r) < next_cut]
            boots = [b for b in boots if b.mono < next_cut]
        return cls(ev=ev, off=off, on=on, kind=cut.kind, volts=cut.volts_before_on,
                   before=ev.records_between(None, off)[-3:], after=after, boots=boots,
                   around=_context_lines(ev, off))

    @property
    def when(self) -> str:
        return f"the power cut at {hhmmss(self.off)}"

    @property
    def first(self) -> HandshakeRecord:
        """The first handshake after the cut (only asked once :func:`never_connected` has passed)."""
        return self.after[0]

    @property
    def shown(self) -> list[HandshakeRecord]:
        return self.before + self.after[:2]

    @cached_property
    def lines(self) -> list[Line]:
        """Console lines around the cut and after power came back."""
        return self.around + [ln for ln in _context_lines(self.ev, self.on, 0.0, 8.0) if ln not in self.around]

    @property
    def threshold(self) -> float | None:
        """The rail voltage below which the device surely reset.

        The device's own brown-out level is the honest threshold; without it a
        switched-off rail is judged against the discharge threshold, and a dip
        (brownout) cannot be judged from the rail at all, only from the reset.
        """
        if self.ev.brownout_threshold is not None:
            return self.ev.brownout_threshold
        return self.ev.discharge_below if self.kind == "off" else None

    @cached_property
    def expected(self) -> HandshakeRecord | None:
        """The handshake that issued the session the device should hold at the cut."""
        held = session_before(self.ev.records, self.off)
        if held is None:
            return None
        return _issuer(held, {r.id: r for r in self.ev.records})


def kept_running(cut: CutEvidence) -> Verdict | None:
    """No reset and a resumption: the device kept what it had in RAM through the "cut"."""
    if cut.boots or not cut.after or not cut.after[0].resumed or cut.after[0].error:
        return None
    rail = f"; the rail was at {cut.volts:.2f} V when power came back" if cut.volts is not None else ""
    return Verdict(False, Code.POWER_NOT_CUT, f"power was not really cut at {hhmmss(cut.off)}: no reset was seen and "
                   f"the device resumed (handshake #{cut.after[0].id}) from what it still had in RAM" + rail,
                   cause=_NOT_CUT_CAUSE, records=cut.shown, lines=cut.around)


def rail_stayed_up(cut: CutEvidence) -> Verdict | None:
    """The rail never fell below the level where the device resets: a resumption would prove nothing."""
    threshold = cut.threshold
    if cut.volts is None or threshold is None or not cut.volts > threshold:
        return None
    why = (f"the rail was still at {cut.volts:.2f} V when power came back (the device resets below "
           f"{threshold:.2f} V)")
    if not cut.boots:
        why += ", and no reset was seen on the console"
    return Verdict(False, Code.POWER_NOT_CUT,
                   f"power was not really cut at {hhmmss(cut.off)}: {why}. A resumption now would prove "
                   "nothing about what the device kept in flash.",
                   cause=_NOT_CUT_CAUSE, records=cut.shown, lines=cut.around)


#: reset causes that show the rail really went away (harness.device.POWER_LOSS_CAUSES says why not brown-out)
POWER_LOSS_CAUSES = ("power-on",)


def switch_without_power_on_reset(cut: CutEvidence) -> Verdict | None:
    """A power switch measures nothing: only a power-on (or brown-out) reset shows the power really went.

    A relay that did not open, a board fed through a second path (USB, a
    battery, a debug probe): the device then reboots for another reason or
    not at all, and a resumption would prove nothing about its flash.
    """
    if cut.kind != "switched" or not cut.boots:
        return None
    cause = cut.boots[0].cause
    if cause in POWER_LOSS_CAUSES:
        return None
    seen = f"its reset cause was {cause!r}" if cause else "it printed no reset cause"
    return Verdict(False, Code.POWER_NOT_CUT,
                   f"power loss not shown at {hhmmss(cut.off)}: the power switch measures nothing, and after it "
                   f"the device rebooted but {seen}, not a power-on reset. A resumption now would prove nothing "
                   "about what the device kept in flash.",
                   cause="the switch did not cut the device's supply (a second supply path: USB, a battery, a "
                         "debug probe), or the firmware's reset cause pattern misses the power-on reset",
                   records=cut.shown, lines=cut.around)


def on_switch(verdict: Verdict, cut: CutEvidence | None) -> Verdict:
    """A passing verdict on a cut by a switch without a meter says what the power loss rests on."""
    if verdict.ok and cut is not None and cut.kind == "switched" and cut.boots:
        verdict.summary += (f" (power loss shown by the device's reset cause, {cut.boots[0].cause}: the place's "
                            "power switch measures nothing)")
    return verdict


def did_not_boot(cut: CutEvidence) -> Verdict | None:
    if cut.boots:
        return None
    return Verdict(False, Code.NO_BOOT, f"after {cut.when} the device did not boot: no boot banner or reset cause "
                   "was seen after power came back",
                   cause="firmware crash or hang at boot (flash restore?), or the console does not reach "
                         "the device", records=cut.shown, lines=_context_lines(cut.ev, cut.on, 1.0, 10.0))


def never_connected(cut: CutEvidence) -> Verdict | None:
    if cut.after:
        return None
    return Verdict(False, Code.NEVER_CONNECTED, f"after {cut.when} the device never completed a connection to the "
                   "reference server", cause="no connect attempt reached the server (network, wrong "
                   "host/port in the device file, or the firmware failed before connecting)",
                   records=cut.before, lines=_context_lines(cut.ev, cut.on, 0.5, 15.0))


def failed_after_cut(cut: CutEvidence) -> Verdict | None:
    """The first handshake failed; an aborted refusal is judged later, as a refusal."""
    first = cut.first
    if not failed(first) or aborted_refusal(first):
        return None
    return Verdict(False, Code.HANDSHAKE_FAILED, f"after {cut.when} the first handshake failed: {first.error}",
                   cause="the device aborted the handshake (certificate, version, or it gave up after a "
                         "refused session instead of falling back)", records=cut.shown, lines=cut.lines)


def no_session_before(cut: CutEvidence) -> Verdict | None:
    """Nothing was issued before the cut: there was no session to keep, so nothing to judge."""
    if cut.expected is not None:
        return None
    return Verdict(False, Code.NO_SESSION_BEFORE_CUT, f"no session was issued before {cut.when}: the scenario "
                   "must connect before cutting power", records=cut.shown, lines=cut.lines)


def lineage(cut: CutEvidence) -> Verdict | None:
    """A resumption passes only if it resumed the newest session issued before the cut."""
    first, expected = cut.first, cut.expected
    if expected is None or not first.resumed or first.error:
        return None
    age = cut.off - expected.mono
    if first.resumed_from == expected.id:
        note = fieldbugs.age_mismatch(first)
        return Verdict(True, Code.RESUMED, f"handshake #{first.id} after {cut.when} resumed "
                       f"({first.mechanism}) the session issued by handshake #{expected.id}, "
                       f"which finished {age:.1f} s before the cut" + (f" (note: {note})" if note else ""),
                       records=cut.shown)
    return Verdict(False, Code.STALE_SESSION, f"handshake #{first.id} after {cut.when} resumed an older session "
                   f"(from #{first.resumed_from}) instead of the newest one, issued by #{expected.id} "
                   f"{age:.1f} s before the cut",
                   cause="renewed tickets were not stored: the firmware keeps the first ticket and ignores "
                         "the ones received after a resumption", records=cut.shown, lines=cut.lines)


def nothing_offered(cut: CutEvidence) -> Verdict | None:
    """A full handshake without an offer: did the device ever say it stored the session?"""
    first, expected = cut.first, cut.expected
    if expected is None or offered_anything(first):
        return None
    ev = cut.ev
    stored = _stored_after(ev, expected.mono, cut.off)
    issued = ",".join(expected.issued or []) or "a session"
    base = (f"after {cut.when} the device offered no session (handshake #{first.id} was full); "
            f"before the cut it received {issued} in handshake #{expected.id} at {hhmmss(expected.mono)}")
    early = fieldbugs.stored_too_early(ev.lines, expected, cut.off, ev.flash_write, ev.session_stored)
    if ev.session_stored and stored is None:
        ignored = _tickets_ignored_before(ev, cut.off)
        cause = ignored or "session not stored in non-volatile memory (kept only in RAM?)"
        if not ignored and fieldbugs.sent_tickets(expected) and expected.version == "TLSv1.3":
            cause += ("; or its TLS stack never takes TLS 1.3 tickets in (a reconnect without power loss tells "
                      "the two apart: soft_reconnect_and_power_loss)")
        return Verdict(False, Code.NOTHING_OFFERED, base + " and never printed that the session was stored",
                       cause=cause, records=cut.shown, lines=cut.lines)
    said = f"; it said the session was stored at {hhmmss(stored.mono)}" if stored is not None else ""
    cause = early or fieldbugs.uptime_age(expected, first, ev.boots) or \
        "session stored but not offered after boot: not restored from flash, rejected by the firmware's own " \
        "validity check (clock / ticket age), or erased"
    return Verdict(False, Code.NOTHING_OFFERED, base + said, cause=cause, records=cut.shown, lines=cut.lines)


def _tickets_ignored_before(ev: Evidence, until: float) -> str | None:
    """Earlier in the scenario, a reconnect without power loss offered nothing after TLS 1.3 tickets were sent.

    A firmware that keeps its session only in RAM resumes on such a
    reconnect; one whose stack drops the tickets has nothing to offer even
    then.  Any such pair before ``until`` tells, not only the last one.
    """
    done = [r for r in ev.records_between(None, until) if completed(r)]
    for issuer, nxt in zip(done, done[1:]):
        if issuer.version != "TLSv1.3" or not fieldbugs.sent_tickets(issuer) or offered_anything(nxt):
            continue
        if any(issuer.mono < b.mono < began(nxt) for b in ev.boots):
            continue
        return fieldbugs.ticketless_store(ev.lines, issuer, began(nxt), ev.flash_write, ev.session_stored)
    return None


def stale_offer(cut: CutEvidence) -> Verdict | None:
    """The device offered a ticket older than the newest one issued, and the server refused it."""
    first, expected = cut.first, cut.expected
    if expected is None:
        return None
    offered = set(offered_fps(first))
    newest = set(expected.issued or [])
    reason = first.rejected
    if not newest or offered & newest or reason not in (None, "unknown", "expired"):
        return None
    older = [r for r in cut.ev.records_between(None, expected.mono) if offered & set(r.issued or [])]
    if not older:
        return None
    return Verdict(False, Code.STALE_SESSION, f"after {cut.when} the device offered a ticket from handshake "
                   f"#{older[-1].id}, not the newest from #{expected.id}; the server refused it "
                   f"({reason})", cause="renewed tickets were not stored", records=cut.shown, lines=cut.lines)


def refused(cut: CutEvidence) -> Verdict:
    """What is left once every other check passed: the device offered, the server refused."""
    first = cut.first
    reason = first.rejected
    how = "failed" if first.error else "was full"
    return Verdict(False, Code.REFUSED, f"after {cut.when} the device offered a session but the server refused it "
                   f"({reason or 'no reason recorded'}); handshake #{first.id} {how}",
                   cause=refusal_cause(cut.ev, first), records=cut.shown, lines=cut.lines)


def refusal_cause(ev: Evidence, record: HandshakeRecord) -> str:
    """Why an offer was refused, most precise first: its secret, the wrong server, then the server's reason."""
    issuer, elsewhere = ev.issuer_of(record)
    return fieldbugs.secret_missing(record, issuer) or \
        (fieldbugs.wrong_server(record, issuer, elsewhere) if elsewhere else None) or \
        REFUSAL_CAUSES.get(record.rejected or "", "server-side refusal")


#: the questions of the central verdict, in the order a firmware engineer asks them; :func:`refused` concludes
CUT_CHECKS: tuple[Callable[[CutEvidence], Verdict | None], ...] = (
    kept_running, rail_stayed_up, switch_without_power_on_reset, did_not_boot, never_connected, failed_after_cut,
    no_session_before, lineage, nothing_offered, stale_offer,
)


def first_verdict(checks: Sequence[Callable[[Any], "Verdict | None"]], evidence: Any) -> Verdict | None:
    """Run the checks in order; the first that concludes is the verdict (a diagnoser chain)."""
    for check in checks:
        judged = check(evidence)
        if judged is not None:
            return judged
    return None


def resumed_across_power_loss(ev: Evidence, cut_index: int = -1) -> Verdict:
    """The product's central claim, checked for one power cut (default: the last)."""
    cut = CutEvidence.of(ev, cut_index)
    if cut is None:
        return Verdict(False, Code.NO_POWER_CUT, "no completed power cut in this scenario: nothing to judge",
                       records=list(ev.records)[-5:])
    return on_switch(first_verdict(CUT_CHECKS, cut) or refused(cut), cut)


def resumed_last_stored(ev: Evidence, cut_index: int = -1) -> Verdict:
    """After a cut inside a session write: the newest session the device had finished storing, or a newer one.

    The central verdict asks for the newest session issued before the cut.
    A cut inside the write of that session may fairly leave the device with
    the one before it, which A/B slots keep, so the older session is
    accepted, but only while the device had *not* printed its session_stored
    line for the newer one before the cut, and only if it had printed it for
    the older one.  Anything else is judged as the central verdict judges it.
    """
    judged = resumed_across_power_loss(ev, cut_index)
    cut = CutEvidence.of(ev, cut_index)
    if judged.code != Code.STALE_SESSION or not ev.session_stored or cut is None or not cut.after:
        return judged
    first, expected = cut.first, cut.expected
    if expected is None or _stored_after(ev, expected.mono, cut.off) is not None:
        return judged  # the newer session was stored before the cut: an older one is stale
    held = session_before(ev.records, began(expected))
    prev = _issuer(held, {r.id: r for r in ev.records}) if held is not None else None
    if prev is None or first.resumed_from != prev.id or _stored_after(ev, prev.mono, began(expected)) is None:
        return judged
    return on_switch(Verdict(True, Code.RESUMED, f"handshake #{first.id} after {cut.when} resumed the session "
                             f"issued by #{prev.id}, the last one the device had finished storing: power was cut "
                             f"before it said the newer session (#{expected.id}) was stored", records=cut.shown), cut)


def power_not_cut(ev: Evidence, cut_index: int = -1) -> Verdict:
    """``expect_server: power_not_cut``: passes only when the central verdict refuses to call the cut a power loss.

    The judgement harness/engine.py makes inline today, word for word, kept
    here so that it is tested with the other verdicts and the engine can call it.
    """
    inner = resumed_across_power_loss(ev, cut_index)
    if inner.code == Code.POWER_NOT_CUT:
        return Verdict(True, inner.code, f"the verdict says: {inner.summary}", records=inner.records,
                       lines=inner.lines)
    return Verdict(False, inner.code, "expected the verdict to say that power was not really cut, but it said: "
                   f"{inner.summary}", records=inner.records, lines=inner.lines)


def no_handshake(ev: Evidence, since: float) -> Verdict:
    """``expect_server: no_handshake``: nothing may reach the server after ``since`` (as engine.py judges it)."""
    seen = ev.records_between(since)
    if not seen:
        return Verdict(True, Code.NO_HANDSHAKE, "no handshake reached the server", records=[])
    return Verdict(False, Code.UNEXPECTED_HANDSHAKE, f"{len(seen)} handshake(s) reached the server", records=seen[:3])


# -- version truth and failed connects ----------------------------------------------

def version_truth(records: Iterable[RecordLike], asked: str | None) -> Verdict | None:
    """A cell that names a TLS version never passes on another one.

    Returns a failing verdict when a handshake since the connect completed in
    another version than ``asked`` (``tls1.2``/``tls1.3``; ``auto`` or None
    asks for nothing), or failed because the device never offered the asked
    version (its ClientHello's versions, recorded by the server).  None when
    the records are consistent with what was asked.
    """
    want = TLS_NAMES.get(asked or "")
    if want is None:
        return None
    records = as_records(records)
    for r in records:
        got = r.version
        if got and got != want:
            return Verdict(False, Code.WRONG_VERSION, f"handshake #{r.id} was {got}, but this step asks for "
                           f"{want}: a {want} result cannot be judged on a {got} handshake",
                           cause="the device did not get or did not honour the version: its shell may spell "
                                 "versions differently (firmware.version_tokens in the device file) or ignore "
                                 "the word, or its TLS stack lacks " + want + " (declare firmware.versions)",
                           records=records[:3])
        offered = r.client_versions or []
        if not got and offered and want not in offered:
            return Verdict(False, Code.WRONG_VERSION, f"handshake #{r.id} failed: the device offered only "
                           f"{', '.join(offered)} but this step asks for {want} (server: {r.error})",
                           cause="the device's TLS stack lacks " + want + " or its shell did not pass the version "
                                 "on: declare firmware.versions / firmware.version_tokens in the device file",
                           records=records[:3])
    return None


def failed_connect(ev: Evidence, since: float | None, detail: str) -> Verdict:
    """The device said its connection failed: what did the server see?"""
    after = ev.records_between(since)
    tail = [ln for ln in ev.lines if since is None or ln.mono >= since][:25]
    said = f"the device reported: {detail}"
    if not after:
        return Verdict(False, Code.NEVER_CONNECTED, f"the connection never reached the reference server ({said})",
                       cause="network or address problem, or the firmware failed before its ClientHello",
                       lines=tail)
    refusals = [r for r in after if offered_anything(r) and not r.resumed and r.rejected]
    if refusals and refusals[0].rejected in NEVER_ISSUED:
        first = refusals[0]
        return Verdict(False, Code.REFUSED, f"the device offered {','.join(offered_fps(first))} in handshake "
                       f"#{first.id}, which this server never issued (refused: {first.rejected}), "
                       f"then the connection failed ({said})",
                       cause="a damaged or foreign session record was restored and offered",
                       records=after[:3], lines=tail)
    if refusals:
        first = refusals[0]
        done = [r for r in after if completed(r)]
        secret = fieldbugs.secret_missing(first, ev.issuer_of(first)[0])
        return Verdict(False, Code.NO_FALLBACK,
                       f"the device offered its stored session in handshake #{first.id}, the server "
                       f"refused it ({first.rejected}), and the device gave up instead of completing a "
                       f"full handshake ({said}; {len(done)} handshake(s) completed)",
                       cause=_NO_FALLBACK_CAUSE + (f"; and {secret}" if secret else ""), records=after[:3],
                       lines=tail)
    first = after[0]
    return Verdict(False, Code.CONNECT_FAILED, f"handshake #{first.id} did not lead to a working "
                   f"connection ({said}; server: {first.error or describe(first)})",
                   cause="see the server's error and the console", records=after[:3], lines=tail)


# -- simpler expectations on the first handshake after a connect ---------------------

#: refusals of a ticket this server never issued (as the bytes stand): damaged, or someone else's
NEVER_ISSUED = ("foreign", "unknown", "decrypt")
#: refusals that mean the offered record was not what the server issued: damaged (or foreign) bytes
DAMAGED = NEVER_ISSUED + ("binder", "finished")
#: expectations a fallback to a full handshake meets: an abort after a refused offer, with no fallback, fails them
_NEED_FALLBACK = ("refused", "full", "connected")
#: expectations judged on the fallback handshake rather than on the aborted one before it
_JUDGE_FALLBACK = ("full", "connected")


@dataclass
class FirstAfter:
    """The first handshake after a connect, and what an expectation on it reads."""

    want: str                          # the expectation, as scenario files name it (``nothing_offered``)
    reason: str | None                 # the refusal reason a ``refused`` expectation asks for
    mechanism: str | None              # the mechanism asked for, if any
    offer: HandshakeRecord             # the first handshake after the connect
    fallback: HandshakeRecord | None   # the full handshake after ``offer`` was refused and aborted
    first: HandshakeRecord             # the handshake judged: ``offer``, or ``fallback`` for full/connected
    label: str
    shown: list[HandshakeRecord]
    tail: list[Line]
    ev: Evidence

    @classmethod
    def of(cls, ev: Evidence, since: float, want: str, reason: str | None = None,
           mechanism: str | None = None) -> FirstAfter | None:
        """None when no handshake began after ``since``."""
        after = ev.records_between(since)
        if not after:
            return None
        offer = after[0]
        shown = ev.records_between(None, since)[-2:] + after[:2]
        fallback = _fallback_after(after, offer)
        first, label = offer, f"handshake #{offer.id}"
        if fallback is not None:
            shown = shown + [fallback] if fallback not in shown else shown
            if want in _JUDGE_FALLBACK:
                first, label = fallback, f"handshake #{fallback.id} (fallback after #{offer.id} was refused)"
        tail = [ln for ln in ev.lines if ln.mono >= since][:25]
        return cls(want=want, reason=reason, mechanism=mechanism, offer=offer, fallback=fallback, first=first,
                   label=label, shown=shown, tail=tail, ev=ev)

    def why_nothing_offered(self) -> str | None:
        """On a reconnect without a reset in between: did the TLS 1.3 tickets of the last handshake go missing?"""
        ev, start = self.ev, began(self.first)
        before = [r for r in ev.records if began(r) < start and completed(r)]
        if not before or any(before[-1].mono < b.mono < start for b in ev.boots):
            return None
        return fieldbugs.ticketless_store(ev.lines, before[-1], start, ev.flash_write, ev.session_stored)

    def why_refused(self, record: HandshakeRecord) -> str:
        return refusal_cause(self.ev, record)


def _wrong_reason(seen: FirstAfter, got: str | None) -> Verdict:
    return Verdict(False, Code.WRONG_REASON, f"{seen.label} refused with reason {got!r}, expected {seen.reason!r}",
                   records=seen.shown)


def aborted_without_fallback(seen: FirstAfter) -> Verdict | None:
    """The offer was refused and the device aborted, with no full handshake after it."""
    if seen.fallback is not None or not aborted_refusal(seen.offer) or seen.want not in _NEED_FALLBACK:
        return None
    return Verdict(False, Code.NO_FALLBACK, f"{seen.label}: the server refused the offered session "
                   f"({seen.offer.rejected}) and the device aborted without completing a full handshake",
                   cause=_NO_FALLBACK_CAUSE, records=seen.shown, lines=seen.tail)


def refused_then_fell_back(seen: FirstAfter) -> Verdict | None:
    """``refused`` met by an aborted refusal and a fallback connection: the refusal is judged."""
    if seen.fallback is None or seen.want != "refused":
        return None
    got = seen.offer.rejected
    if seen.reason and got != seen.reason:
        return _wrong_reason(seen, got)
    return Verdict(True, Code.REFUSED, f"{seen.label}: offer refused ({got}); the device fell back to a full "
                   f"handshake (#{seen.fallback.id})", records=seen.shown)


def handshake_failed(seen: FirstAfter) -> Verdict | None:
    first = seen.first
    if not failed(first) or aborted_refusal(first):
        return None
    return Verdict(False, Code.HANDSHAKE_FAILED, f"{seen.label} failed: {first.error}", records=seen.shown,
                   lines=seen.tail)


def wrong_mechanism(seen: FirstAfter) -> Verdict | None:
    if seen.mechanism is None or seen.first.mechanism == seen.mechanism:
        return None
    return Verdict(False, Code.WRONG_MECHANISM, f"{seen.label} used {seen.first.mechanism}, expected "
                   f"{seen.mechanism}", records=seen.shown, lines=seen.tail)


#: questions asked before any expectation judges the first handshake, in order
FIRST_CHECKS: tuple[Callable[[FirstAfter], Verdict | None], ...] = (
    aborted_without_fallback, refused_then_fell_back, handshake_failed, wrong_mechanism,
)


def expect_connected(seen: FirstAfter) -> Verdict:
    first = seen.first
    return Verdict(True, Code.RESUMED if first.resumed else Code.FULL, f"{seen.label} completed ({first.mechanism})",
                   records=seen.shown)


def expect_full(seen: FirstAfter) -> Verdict:
    first = seen.first
    if first.resumed:
        return Verdict(False, Code.UNEXPECTED_RESUME, f"{seen.label} resumed (from #{first.resumed_from}) "
                       "but a full handshake was expected", records=seen.shown, lines=seen.tail)
    return Verdict(True, Code.FULL, f"{seen.label} was a full handshake", records=seen.shown)


def expect_resumed(seen: FirstAfter) -> Verdict:
    first = seen.first
    if not first.resumed:
        offered = offered_anything(first)
        why = f"refused: {first.rejected}" if offered else "offered nothing"
        cause = seen.why_refused(first) if offered else (seen.why_nothing_offered() or "")
        return Verdict(False, Code.REFUSED if offered else Code.NOTHING_OFFERED,
                       f"{seen.label} was full ({why}) but a resumption was expected", cause=cause,
                       records=seen.shown, lines=seen.tail)
    return Verdict(True, Code.RESUMED, f"{seen.label} resumed ({first.mechanism}) from #{first.resumed_from}",
                   records=seen.shown)


def expect_consistent(seen: FirstAfter) -> Verdict:
    """After a cut at an arbitrary point: resuming any session this server issued is fine, so is a clean full
    handshake; offering something the server does not recognise means the device restored a damaged record."""
    first = seen.first
    if first.resumed and not first.error:
        return Verdict(True, Code.RESUMED, f"{seen.label} resumed from #{first.resumed_from}", records=seen.shown)
    if not offered_anything(first):
        return Verdict(True, Code.FULL, f"{seen.label}: nothing offered, clean full handshake", records=seen.shown)
    if first.rejected in DAMAGED:
        never_issued = first.rejected in NEVER_ISSUED
        what = "which this server never issued" if never_issued else "whose secret does not go with its ticket"
        cause = "a damaged session record was restored and offered (torn write, no integrity check)" \
            if never_issued else seen.why_refused(first)
        return Verdict(False, Code.REFUSED, f"{seen.label}: the device offered {','.join(offered_fps(first))}, {what} "
                       f"(refused: {first.rejected})", cause=cause, records=seen.shown, lines=seen.tail)
    return Verdict(True, Code.REFUSED, f"{seen.label}: offer refused ({first.rejected}), clean fallback",
                   records=seen.shown)


def expect_nothing_offered(seen: FirstAfter) -> Verdict:
    first = seen.first
    if offered_anything(first):
        issuer, elsewhere = seen.ev.issuer_of(first)
        cause = fieldbugs.wrong_server(first, issuer, elsewhere) or "the firmware offered a stored session where " \
            "it must not"
        return Verdict(False, Code.UNEXPECTED_RESUME if first.resumed else Code.REFUSED,
                       f"{seen.label}: the device offered {','.join(offered_fps(first))} but should have offered "
                       "nothing", cause=cause, records=seen.shown, lines=seen.tail)
    return Verdict(True, Code.FULL, f"{seen.label}: nothing offered, full handshake", records=seen.shown)


def expect_refused(seen: FirstAfter) -> Verdict:
    first = seen.first
    if first.resumed:
        return Verdict(False, Code.UNEXPECTED_RESUME, f"{seen.label} resumed but a refusal was expected",
                       records=seen.shown)
    if not offered_anything(first):
        return Verdict(False, Code.NOTHING_OFFERED, f"{seen.label}: the device offered nothing, so nothing was "
                       "refused", records=seen.shown, lines=seen.tail)
    got = first.rejected
    if seen.reason and got != seen.reason:
        return _wrong_reason(seen, got)
    return Verdict(True, Code.REFUSED, f"{seen.label}: offer refused ({got}), full handshake", records=seen.shown)


#: each expectation on the first handshake after a connect, by its scenario-file name
FIRST_AFTER: dict[str, Callable[[FirstAfter], Verdict]] = {
    "full": expect_full,
    "resumed": expect_resumed,
    "nothing_offered": expect_nothing_offered,
    "refused": expect_refused,
    "connected": expect_connected,
    "consistent": expect_consistent,
}


def check_first_after(ev: Evidence, since: float, want: str, reason: str | None = None,
                      mechanism: str | None = None) -> Verdict:
    """Simpler expectations on the first handshake after ``since``.

    ``want`` is a key of :data:`FIRST_AFTER`, spelt with ``_`` or ``-``
    (``nothing-offered``); ``reason`` applies to ``refused``.
    """
    name = want.replace("-", "_")
    seen = FirstAfter.of(ev, since, name, reason, mechanism)
    if seen is None:
        return Verdict(False, Code.NEVER_CONNECTED, "no handshake reached the reference server",
                       lines=list(ev.lines)[-15:])
    judged = first_verdict(FIRST_CHECKS, seen)
    if judged is not None:
        return judged
    judge = FIRST_AFTER.get(name)
    if judge is None:
        raise ValueError(f"unknown expectation {want!r}")
    return judge(seen)


class Judge(Protocol):
    """How the engine calls an expectation of :data:`EXPECTATIONS`."""

    def __call__(self, ev: Evidence, since: float, reason: str | None = None,
                 mechanism: str | None = None) -> Verdict: ...


def _first_after(name: str) -> Judge:
    def judge(ev: Evidence, since: float, reason: str | None = None, mechanism: str | None = None) -> Verdict:
        return check_first_after(ev, since, name, reason, mechanism)

    judge.__name__ = judge.__qualname__ = f"check_first_after[{name}]"
    return judge


#: ``expect_server`` outcomes judged on the first handshake after the last connect, by scenario-file name:
#: ``EXPECTATIONS["refused"](ev, since, reason, mechanism)``
EXPECTATIONS: dict[str, Judge] = {name: _first_after(name) for name in FIRST_AFTER}
