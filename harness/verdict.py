"""The verdict: did the device resume, across the power loss, the session stored before it?

Ground truth comes from the reference server (handshake records) and the
supply (power cuts and the rail voltage), never from what the device says
about itself.  Console lines are used only to explain a failure: they are
evidence of *why*, not of *whether*.

``resumed=True`` is not enough.  The verdict follows lineage: the first
handshake after the cut must resume the session that the server issued most
recently before the cut.  Resuming an older one is reported as stale (the
firmware did not store renewed tickets).  When the device did not resume, the
verdict names the most likely cause from the evidence, in the order a
firmware engineer would check it: was power really cut, did the device boot,
did it connect, did it offer anything, what did the server say about it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Iterable, Sequence

from .clock import wall_from_mono

# Outcome codes: stable strings that tests, reports and the README table use.
PASS = "resumed"
STALE = "stale-session"
NOT_CUT = "power-not-cut"
NO_BOOT = "no-boot"
NO_CONNECT = "never-connected"
NOTHING_OFFERED = "nothing-offered"
REFUSED = "refused"
FAILED_HANDSHAKE = "handshake-failed"
FULL = "full"
NO_CUT = "no-power-cut"
UNEXPECTED_RESUME = "unexpected-resume"
WRONG_REASON = "wrong-reason"
NO_FALLBACK = "no-fallback"
CONNECT_FAILED = "connect-failed"
WRONG_MECHANISM = "wrong-mechanism"
WRONG_VERSION = "wrong-version"

#: the harness's version words -> the protocol names the server records
TLS_NAMES = {"tls1.2": "TLSv1.2", "tls1.3": "TLSv1.3"}


def _get(record: Any, name: str, default: Any = None) -> Any:
    if isinstance(record, dict):
        return record.get(name, default)
    return getattr(record, name, default)


def offered_anything(record: Any) -> bool:
    offered = _get(record, "offered") or {}
    return bool(_get(offered, "ticket") or _get(offered, "psk") or _get(offered, "session_id"))


def began(record: Any) -> float:
    """When the connection was accepted, on the harness clock."""
    return float(_get(record, "mono")) - float(_get(record, "duration_ms") or 0.0) / 1000.0


def offered_fps(record: Any) -> list[str]:
    offered = _get(record, "offered") or {}
    fps = list(_get(offered, "psk") or [])
    for key in ("ticket", "session_id"):
        if _get(offered, key):
            fps.append(_get(offered, key))
    return fps


def hhmmss(mono: float | None) -> str:
    if mono is None:
        return "?"
    wall = wall_from_mono(mono)
    return datetime.fromtimestamp(wall, tz=timezone.utc).strftime("%H:%M:%S.%f")[:-3]


def describe(record: Any) -> str:
    """One line per handshake, secrets replaced by fingerprints already in the record."""
    kind = _get(record, "mechanism") or ("resumed" if _get(record, "resumed") else "full")
    parts = [f"#{_get(record, 'id')} {hhmmss(_get(record, 'mono'))} {_get(record, 'version') or '-'} {kind}"]
    if _get(record, "resumed_from") is not None:
        parts.append(f"from #{_get(record, 'resumed_from')}")
    offered = offered_fps(record)
    parts.append("offered " + (",".join(offered) if offered else "nothing"))
    if _get(record, "rejected"):
        parts.append(f"refused: {_get(record, 'rejected')}")
    issued = _get(record, "issued") or []
    if issued:
        parts.append("issued " + ",".join(issued))
    if _get(record, "error"):
        parts.append(f"error: {_get(record, 'error')}")
        if _get(record, "client_versions"):
            parts.append(f"(device offered {'/'.join(_get(record, 'client_versions'))})")
    app = _get(record, "app") or []
    if app:
        more = f" +{len(app) - 2}" if len(app) > 2 else ""
        parts.append(f"| {_get(record, 'protocol')}: {'; '.join(app[:2])}{more}")
    return " ".join(parts)


@dataclass
class Evidence:
    """Everything on the one clock that a verdict may look at."""

    records: Sequence[Any]
    cuts: Sequence[Any] = ()
    boots: Sequence[Any] = ()
    lines: Sequence[Any] = ()
    connects: Sequence[Any] = ()
    session_stored: str | None = None
    brownout_threshold: float | None = None
    discharge_below: float | None = None

    def records_between(self, start: float | None, end: float | None = None) -> list[Any]:
        """Records whose connection *began* in [start, end).

        A record is stamped when its handshake ends; a connection cut by a
        power loss may only end (server timeout) after power is back, and
        must not count as the first handshake after the cut.
        """
        return [r for r in self.records
                if (start is None or began(r) >= start) and (end is None or began(r) < end)]

    def lines_between(self, start: float, end: float) -> list[Any]:
        return [ln for ln in self.lines if start <= ln.mono <= end]


@dataclass
class Verdict:
    ok: bool
    code: str
    summary: str
    cause: str = ""
    records: list[Any] = field(default_factory=list)
    lines: list[Any] = field(default_factory=list)

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


def aborted_refusal(record: Any) -> bool:
    """The client offered a session, the server refused it, and the client then aborted.

    Some TLS stacks (tlslite-ng's TLS 1.2 client among them) abort when the
    server does not accept the offered ticket instead of completing a full
    handshake; firmware built on them falls back on a second connection.
    The pair is one logical connection with a fallback, not a failure.
    """
    return bool(offered_anything(record) and not _get(record, "resumed") and _get(record, "rejected")
                and _get(record, "error"))


def _fallback_after(records: Sequence[Any], first: Any) -> Any | None:
    """The completed handshake that followed an aborted refusal, if any."""
    if not aborted_refusal(first):
        return None
    for r in records[1:]:
        if _get(r, "version") and not _get(r, "error"):
            return r if not _get(r, "resumed") else None
        if offered_anything(r):
            break
    return None


def session_before(records: Iterable[Any], before: float) -> Any | None:
    """The handshake whose session the device should hold at ``before``.

    The newest successful handshake before the cut issued the session to keep:
    either it issued tickets itself, or (a TLS 1.2 resumption without renewal)
    it re-used the session of the handshake it resumed from.
    """
    ok = [r for r in records if _get(r, "mono") < before and not _get(r, "error") and _get(r, "version")]
    if not ok:
        return None
    return ok[-1]


def _issuer(record: Any, by_id: dict[int, Any]) -> Any:
    """Follow a resumption without new tickets back to the handshake that issued its session."""
    seen = set()
    while (not _get(record, "issued") and _get(record, "resumed")
           and _get(record, "resumed_from") in by_id and _get(record, "id") not in seen):
        seen.add(_get(record, "id"))
        record = by_id[_get(record, "resumed_from")]
    return record


def _stored_after(ev: Evidence, start: float, end: float) -> Any | None:
    if not ev.session_stored:
        return None
    rx = re.compile(ev.session_stored)
    for ln in ev.lines_between(start, end):
        if rx.search(ln.text):
            return ln
    return None


def _context_lines(ev: Evidence, around: float, before: float = 3.0, after: float = 6.0, limit: int = 30) -> list[Any]:
    picked = ev.lines_between(around - before, around + after)
    return picked[-limit:]


def resumed_across_power_loss(ev: Evidence, cut_index: int = -1) -> Verdict:
    """The product's central claim, checked for one power cut (default: the last)."""
    cuts = [c for c in ev.cuts if _get(c, "on_mono") is not None]
    if not cuts:
        return Verdict(False, NO_CUT, "no completed power cut in this scenario: nothing to judge",
                       records=list(ev.records)[-5:])
    cut = cuts[cut_index]
    off, on = cut.off_mono, cut.on_mono
    by_id = {_get(r, "id"): r for r in ev.records}
    around = _context_lines(ev, off)
    before = ev.records_between(None, off)[-3:]
    after = ev.records_between(on)
    boots_after = [b for b in ev.boots if b.mono >= on]
    next_cut = next((c.off_mono for c in ev.cuts if c.off_mono > on), None)
    if next_cut is not None:
        after = [r for r in after if began(r) < next_cut]
        boots_after = [b for b in boots_after if b.mono < next_cut]
    when = f"the power cut at {hhmmss(off)}"

    # The device's own brown-out level is the honest threshold; without it a
    # switched-off rail is judged against the discharge threshold, and a dip
    # (brownout) cannot be judged from the rail at all, only from the reset.
    if ev.brownout_threshold is not None:
        threshold = ev.brownout_threshold
    else:
        threshold = ev.discharge_below if getattr(cut, "kind", "off") == "off" else None
    volts = getattr(cut, "volts_before_on", None)
    rail_high = volts is not None and threshold is not None and volts > threshold
    reset_seen = bool(boots_after)
    if not reset_seen and after and _get(after[0], "resumed") and not _get(after[0], "error"):
        # No reset and the device resumed: it kept running through the "cut".
        return Verdict(False, NOT_CUT, f"power was not really cut at {hhmmss(off)}: no reset was seen and the "
                       f"device resumed (handshake #{_get(after[0], 'id')}) from what it still had in RAM"
                       + (f"; the rail was at {volts:.2f} V when power came back" if volts is not None else ""),
                       cause="off time shorter than the rail's discharge: use a longer off time or verified "
                             "discharge", records=before + after[:2], lines=around)
    if rail_high:
        why = (f"the rail was still at {volts:.2f} V when power came back (the device resets below "
               f"{threshold:.2f} V)")
        if not reset_seen:
            why += ", and no reset was seen on the console"
        return Verdict(False, NOT_CUT,
                       f"power was not really cut at {hhmmss(off)}: {why}. A resumption now would prove "
                       "nothing about what the device kept in flash.",
                       cause="off time shorter than the rail's discharge: use a longer off time or verified "
                             "discharge", records=before + after[:2], lines=around)
    if not reset_seen:
        return Verdict(False, NO_BOOT, f"after {when} the device did not boot: no boot banner or reset cause "
                       "was seen after power came back",
                       cause="firmware crash or hang at boot (flash restore?), or the console does not reach "
                             "the device", records=before + after[:2], lines=_context_lines(ev, on, 1.0, 10.0))

    held = session_before(ev.records, off)
    expected = _issuer(held, by_id) if held is not None else None
    if not after:
        return Verdict(False, NO_CONNECT, f"after {when} the device never completed a connection to the "
                       "reference server", cause="no connect attempt reached the server (network, wrong "
                       "host/port in the device file, or the firmware failed before connecting)",
                       records=before, lines=_context_lines(ev, on, 0.5, 15.0))
    first = after[0]
    shown = before + after[:2]
    lines = around + [ln for ln in _context_lines(ev, on, 0.0, 8.0) if ln not in around]
    if _get(first, "error") and not _get(first, "version") and not aborted_refusal(first):
        return Verdict(False, FAILED_HANDSHAKE, f"after {when} the first handshake failed: {_get(first, 'error')}",
                       cause="the device aborted the handshake (certificate, version, or it gave up after a "
                             "refused session instead of falling back)", records=shown, lines=lines)
    if expected is None:
        return Verdict(False, NO_CUT, f"no session was issued before {when}: the scenario must connect "
                       "before cutting power", records=shown, lines=lines)
    exp_id = _get(expected, "id")
    exp_age = off - _get(expected, "mono")
    if _get(first, "resumed") and not _get(first, "error"):
        src = _get(first, "resumed_from")
        if src == exp_id:
            return Verdict(True, PASS, f"handshake #{_get(first, 'id')} after {when} resumed "
                           f"({_get(first, 'mechanism')}) the session issued by handshake #{exp_id}, "
                           f"which finished {exp_age:.1f} s before the cut", records=shown)
        return Verdict(False, STALE, f"handshake #{_get(first, 'id')} after {when} resumed an older session "
                       f"(from #{src}) instead of the newest one, issued by #{exp_id} "
                       f"{exp_age:.1f} s before the cut",
                       cause="renewed tickets were not stored: the firmware keeps the first ticket and ignores "
                             "the ones received after a resumption", records=shown, lines=lines)
    # Full handshake: explain why.
    if not offered_anything(first):
        stored = _stored_after(ev, _get(expected, "mono"), off)
        issued = ",".join(_get(expected, "issued") or []) or "a session"
        base = (f"after {when} the device offered no session (handshake #{_get(first, 'id')} was full); "
                f"before the cut it received {issued} in handshake #{exp_id} at {hhmmss(_get(expected, 'mono'))}")
        if ev.session_stored and stored is None:
            return Verdict(False, NOTHING_OFFERED, base + " and never printed that the session was stored",
                           cause="session not stored in non-volatile memory (kept only in RAM?)",
                           records=shown, lines=lines)
        return Verdict(False, NOTHING_OFFERED, base + (f"; it said the session was stored at {hhmmss(stored.mono)}"
                                                       if stored is not None else ""),
                       cause="session stored but not offered after boot: not restored from flash, rejected by "
                             "the firmware's own validity check (clock / ticket age), or erased",
                       records=shown, lines=lines)
    offered = set(offered_fps(first))
    newest = set(_get(expected, "issued") or [])
    reason = _get(first, "rejected")
    if newest and not offered & newest and reason in (None, "unknown", "expired"):
        older = [r for r in ev.records_between(None, _get(expected, "mono")) if offered & set(_get(r, "issued") or [])]
        if older:
            return Verdict(False, STALE, f"after {when} the device offered a ticket from handshake "
                           f"#{_get(older[-1], 'id')}, not the newest from #{exp_id}; the server refused it "
                           f"({reason})", cause="renewed tickets were not stored", records=shown, lines=lines)
    causes = {
        "expired": "the ticket's lifetime ran out while the device was off; the firmware must fall back to a "
                   "full handshake and store the new session",
        "rotated": "the server rotated its ticket keys; fall back and store the new session",
        "foreign": "the ticket came from another server (or another server instance)",
        "version": "the stored session's TLS version is not accepted by the server any more",
        "tickets-off": "the server no longer accepts tickets",
        "unknown": "the server does not know this session (cache flushed or evicted)",
    }
    return Verdict(False, REFUSED, f"after {when} the device offered a session but the server refused it "
                   f"({reason or 'no reason recorded'}); handshake #{_get(first, 'id')} was full",
                   cause=causes.get(reason or "", "server-side refusal"), records=shown, lines=lines)


def version_truth(records: Sequence[Any], asked: str | None) -> Verdict | None:
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
    for r in records:
        got = _get(r, "version")
        if got and got != want:
            return Verdict(False, WRONG_VERSION, f"handshake #{_get(r, 'id')} was {got}, but this step asks for "
                           f"{want}: a {want} result cannot be judged on a {got} handshake",
                           cause="the device did not get or did not honour the version: its shell may spell "
                                 "versions differently (firmware.version_tokens in the device file) or ignore "
                                 "the word, or its TLS stack lacks " + want + " (declare firmware.versions)",
                           records=list(records)[:3])
        offered = _get(r, "client_versions") or []
        if not got and offered and want not in offered:
            return Verdict(False, WRONG_VERSION, f"handshake #{_get(r, 'id')} failed: the device offered only "
                           f"{', '.join(offered)} but this step asks for {want} (server: {_get(r, 'error')})",
                           cause="the device's TLS stack lacks " + want + " or its shell did not pass the version "
                                 "on: declare firmware.versions / firmware.version_tokens in the device file",
                           records=list(records)[:3])
    return None


def failed_connect(ev: Evidence, since: float | None, detail: str) -> Verdict:
    """The device said its connection failed: what did the server see?"""
    after = ev.records_between(since)
    tail = [ln for ln in ev.lines if since is None or ln.mono >= since][:25]
    said = f"the device reported: {detail}"
    if not after:
        return Verdict(False, NO_CONNECT, f"the connection never reached the reference server ({said})",
                       cause="network or address problem, or the firmware failed before its ClientHello",
                       lines=tail)
    refused = [r for r in after if offered_anything(r) and not _get(r, "resumed") and _get(r, "rejected")]
    if refused and _get(refused[0], "rejected") in ("foreign", "unknown"):
        first = refused[0]
        return Verdict(False, REFUSED, f"the device offered {','.join(offered_fps(first))} in handshake "
                       f"#{_get(first, 'id')}, which this server never issued (refused: {_get(first, 'rejected')}), "
                       f"then the connection failed ({said})",
                       cause="a damaged or foreign session record was restored and offered",
                       records=after[:3], lines=tail)
    if refused:
        first = refused[0]
        completed = [r for r in after if _get(r, "version") and not _get(r, "error")]
        return Verdict(False, NO_FALLBACK,
                       f"the device offered its stored session in handshake #{_get(first, 'id')}, the server "
                       f"refused it ({_get(first, 'rejected')}), and the device gave up instead of completing a "
                       f"full handshake ({said}; {len(completed)} handshake(s) completed)",
                       cause="no fallback to a full handshake when the server refuses a stored session",
                       records=after[:3], lines=tail)
    first = after[0]
    return Verdict(False, CONNECT_FAILED, f"handshake #{_get(first, 'id')} did not lead to a working "
                   f"connection ({said}; server: {_get(first, 'error') or describe(first)})",
                   cause="see the server's error and the console", records=after[:3], lines=tail)


def check_first_after(ev: Evidence, since: float, want: str, reason: str | None = None,
                      mechanism: str | None = None) -> Verdict:
    """Simpler expectations on the first handshake after ``since``.

    ``want`` is one of ``full``, ``resumed``, ``nothing-offered``, ``refused``
    (optionally with ``reason``), ``connected``.
    """
    after = ev.records_between(since)
    if not after:
        return Verdict(False, NO_CONNECT, "no handshake reached the reference server",
                       lines=list(ev.lines)[-15:])
    first = after[0]
    shown = ev.records_between(None, since)[-2:] + after[:2]
    tail = [ln for ln in ev.lines if ln.mono >= since][:25]
    label = f"handshake #{_get(first, 'id')}"
    fallback = _fallback_after(after, first)
    if fallback is None and aborted_refusal(first) and want in ("refused", "full", "connected"):
        return Verdict(False, NO_FALLBACK, f"{label}: the server refused the offered session "
                       f"({_get(first, 'rejected')}) and the device aborted without completing a full handshake",
                       cause="no fallback to a full handshake when the server refuses a stored session",
                       records=shown, lines=tail)
    if fallback is not None:
        shown = shown + [fallback] if fallback not in shown else shown
        if want == "refused":
            got = _get(first, "rejected")
            if reason and got != reason:
                return Verdict(False, WRONG_REASON, f"{label} refused with reason {got!r}, expected {reason!r}",
                               records=shown)
            return Verdict(True, REFUSED, f"{label}: offer refused ({got}); the device fell back to a full "
                           f"handshake (#{_get(fallback, 'id')})", records=shown)
        if want in ("full", "connected"):
            label = f"handshake #{_get(fallback, 'id')} (fallback after #{_get(first, 'id')} was refused)"
            first = fallback
    if _get(first, "error") and not _get(first, "version") and not aborted_refusal(first):
        return Verdict(False, FAILED_HANDSHAKE, f"{label} failed: {_get(first, 'error')}", records=shown, lines=tail)
    if mechanism is not None and _get(first, "mechanism") != mechanism:
        return Verdict(False, WRONG_MECHANISM, f"{label} used {_get(first, 'mechanism')}, expected {mechanism}",
                       records=shown, lines=tail)
    resumed = bool(_get(first, "resumed"))
    if want == "connected":
        return Verdict(True, FULL if not resumed else PASS, f"{label} completed ({_get(first, 'mechanism')})",
                       records=shown)
    if want == "full":
        if resumed:
            return Verdict(False, UNEXPECTED_RESUME, f"{label} resumed (from #{_get(first, 'resumed_from')}) "
                           "but a full handshake was expected", records=shown, lines=tail)
        return Verdict(True, FULL, f"{label} was a full handshake", records=shown)
    if want == "resumed":
        if not resumed:
            why = "offered nothing" if not offered_anything(first) else f"refused: {_get(first, 'rejected')}"
            return Verdict(False, NOTHING_OFFERED if not offered_anything(first) else REFUSED,
                           f"{label} was full ({why}) but a resumption was expected", records=shown, lines=tail)
        return Verdict(True, PASS, f"{label} resumed ({_get(first, 'mechanism')}) from #{_get(first, 'resumed_from')}",
                       records=shown)
    if want == "consistent":
        # After a cut at an arbitrary point: resuming any session this server
        # issued is fine, so is a clean full handshake; offering something the
        # server does not recognise means the device restored a damaged record.
        if resumed and not _get(first, "error"):
            return Verdict(True, PASS, f"{label} resumed from #{_get(first, 'resumed_from')}", records=shown)
        if not offered_anything(first):
            return Verdict(True, FULL, f"{label}: nothing offered, clean full handshake", records=shown)
        if _get(first, "rejected") in ("foreign", "unknown"):
            return Verdict(False, REFUSED, f"{label}: the device offered {','.join(offered_fps(first))}, which this "
                           f"server never issued (refused: {_get(first, 'rejected')})",
                           cause="a damaged session record was restored and offered (torn write, no integrity "
                                 "check)", records=shown, lines=tail)
        return Verdict(True, REFUSED, f"{label}: offer refused ({_get(first, 'rejected')}), clean fallback",
                       records=shown)
    if want == "nothing-offered":
        if offered_anything(first):
            return Verdict(False, UNEXPECTED_RESUME if resumed else REFUSED,
                           f"{label}: the device offered {','.join(offered_fps(first))} but should have offered "
                           "nothing", cause="the firmware offered a stored session where it must not",
                           records=shown, lines=tail)
        return Verdict(True, FULL, f"{label}: nothing offered, full handshake", records=shown)
    if want == "refused":
        if resumed:
            return Verdict(False, UNEXPECTED_RESUME, f"{label} resumed but a refusal was expected", records=shown)
        if not offered_anything(first):
            return Verdict(False, NOTHING_OFFERED, f"{label}: the device offered nothing, so nothing was refused",
                           records=shown, lines=tail)
        got = _get(first, "rejected")
        if reason and got != reason:
            return Verdict(False, WRONG_REASON, f"{label} refused with reason {got!r}, expected {reason!r}",
                           records=shown)
        return Verdict(True, REFUSED, f"{label}: offer refused ({got}), full handshake", records=shown)
    raise ValueError(f"unknown expectation {want!r}")
