"""Causes that name the field bug, from evidence on the one clock.

Why a module of its own: the verdict's codes say *what* the server saw
(nothing offered, refused); the firmware engineer wants to know *which
mistake* produced it, and the ones real stacks' users keep reporting leave
fingerprints the harness holds anyway: when the device printed that it
stored the session, when the server sent each ticket, when the device
booted, what the server recognised in an offer, which server issued it.
Each function here reads that evidence and returns a sentence naming the
bug with the moments that prove it, or None when the evidence does not
prove it; the verdict (``harness/verdict.py``) keeps its codes and uses
these sentences as its ``cause``.

Only what the evidence proves is claimed.  Console lines are stamped when
they reach the harness, later than the device printed them, so "the
device began storing before the server sent the ticket" is proof (the line
can only be late, the ticket cannot be early), while the reverse order
proves nothing and is reported as the two possibilities it leaves.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Iterable, Sequence

from .clock import hhmmss
from .server.records import HandshakeRecord

if TYPE_CHECKING:
    from .consolerecords import Line
    from .device import Boot

#: a renewed TLS 1.3 session is only as good as the ticket inside it: how to store it
STORE_AFTER_TICKET = ("in TLS 1.3 the ticket arrives after the handshake, so store the session once the stack "
                      "has taken in a NewSessionTicket (and again for every renewed one)")
#: why a TLS 1.3 client can drop every ticket on the floor
TICKETS_IGNORED = ("Mbed TLS 3.6.1 and later ignore TLS 1.3 NewSessionTicket unless the application calls "
                   "mbedtls_ssl_conf_tls13_enable_signal_new_session_tickets(); other stacks need the ticket "
                   "callback or a read after the handshake")
#: what a refusal after the server recognised its own ticket means
SECRET_MISSING = ("ticket stored without its secret: a ticket is useless without the session's secret "
                  "(OpenSSL #17501); persist the whole session (mbedtls_ssl_session_save, "
                  "wolfSSL_i2d_SSL_SESSION), not the ticket alone, or the record was damaged in flash and "
                  "restored without an integrity check")
#: claimed and measured TLS 1.3 ticket ages further apart than this are worth a sentence
AGE_SLACK_MS = 1000


def _matching(lines: Iterable[Line], pattern: str | None, start: float, end: float) -> list[Line]:
    if not pattern:
        return []
    rx = re.compile(pattern)
    return [ln for ln in lines if start <= ln.mono <= end and rx.search(ln.text)]


def sent_tickets(record: HandshakeRecord) -> list[float]:
    """When the server sent this handshake's tickets (empty for old records that lack the field)."""
    return sorted(getattr(record, "tickets_sent_mono", None) or [])


def stored_too_early(lines: Sequence[Line], issuer: HandshakeRecord, until: float,
                     flash_write: str | None, session_stored: str | None) -> str | None:
    """The device began storing before the server had sent a single ticket of that connection.

    Proof, not guesswork: a console line is stamped when it reaches the
    harness, so the device printed it even earlier; a ticket cannot reach a
    device before the server sends it.  The store must also not have been
    repeated after the ticket (a firmware that stores twice is fine).
    """
    sent = sent_tickets(issuer)
    if issuer.version != "TLSv1.3" or not sent:
        return None
    starts = _matching(lines, flash_write or session_stored, issuer.began_mono, until)
    if not starts or starts[0].mono >= sent[0] or any(ln.mono >= sent[0] for ln in starts):
        return None
    line = starts[0]
    gap = (sent[0] - line.mono) * 1000.0
    return (f"session stored before the ticket arrived: the device printed '{line.text}' at "
            f"{hhmmss(line.mono)}, {gap:.0f} ms before the server sent the first ticket of handshake "
            f"#{issuer.id} at {hhmmss(sent[0])}, and stored nothing after it: the stored TLS 1.3 session "
            f"holds no ticket; {STORE_AFTER_TICKET}")


def ticketless_store(lines: Sequence[Line], issuer: HandshakeRecord, until: float,
                     flash_write: str | None, session_stored: str | None) -> str | None:
    """TLS 1.3 tickets were sent but what the device kept held none: which of the two bugs, if the clock can tell."""
    early = stored_too_early(lines, issuer, until, flash_write, session_stored)
    if early:
        return early
    sent = sent_tickets(issuer)
    if issuer.version != "TLSv1.3" or not sent:
        return None
    stored = _matching(lines, session_stored, issuer.began_mono, until)
    count = f"{len(sent)} ticket(s) in handshake #{issuer.id} (the first at {hhmmss(sent[0])})"
    if session_stored and not stored:
        return (f"tickets never taken in, or the session never kept: the server sent {count}, and the device "
                f"neither stored a session nor offered one on a reconnect without power loss (a firmware "
                f"keeping it only in RAM would have): its TLS stack ignores the tickets ({TICKETS_IGNORED}), "
                f"or the application never keeps the session")
    if stored:
        return (f"the device printed '{stored[-1].text}' at {hhmmss(stored[-1].mono)}, after the server sent "
                f"{count}, yet offered nothing on a reconnect without power loss: what it stored held no ticket "
                f"(taken before the stack read it, or a stack that ignores tickets: {TICKETS_IGNORED}), or it "
                f"does not offer what it stored; a server that sends its tickets late "
                f"(server: {{ticket_delay: 0.3}}) shows a store made too early")
    return (f"the server sent {count} and the device offered nothing on a reconnect without power loss: its "
            f"stack ignores the tickets ({TICKETS_IGNORED}), it keeps the session before the ticket arrives "
            f"({STORE_AFTER_TICKET}), or it does not offer what it keeps")


def uptime_age(issuer: HandshakeRecord, first: HandshakeRecord, boots: Sequence[Boot]) -> str | None:
    """After a reset, would a ticket age counted from boot be negative?  Then say so, with both ages.

    The device's clock is not visible, but its boots are: a ticket received
    U1 s after one boot and offered U2 s after the next looks U2 - U1 s old
    to a clock that restarts at boot, while the server measures the truth.
    """
    sent = sent_tickets(issuer) or [float(issuer.mono)]
    before = [b for b in boots if b.mono <= sent[0]]
    after = [b for b in boots if b.mono <= first.began_mono and b.mono > sent[0]]
    if issuer.version != "TLSv1.3" or not before or not after:
        return None
    at_ticket = sent[0] - before[-1].mono
    at_offer = first.began_mono - after[-1].mono
    if at_offer >= at_ticket:
        return None
    real = first.began_mono - sent[0]
    return (f"session stored but not offered after boot: not restored, erased, or judged invalid by the "
            f"firmware. A ticket age from uptime does exactly this: the ticket arrived {at_ticket:.1f} s after "
            f"the device booted at {hhmmss(before[-1].mono)} and handshake #{first.id} began {at_offer:.1f} s "
            f"after the boot at {hhmmss(after[-1].mono)}, so to a clock that restarts at boot the ticket was "
            f"{(at_offer - at_ticket) * 1000:.0f} ms old (from the future) while the server measured "
            f"{real * 1000:.0f} ms: keep the ticket's receive time on a clock that survives power loss (RTC). "
            f"So does a TLS 1.3 session stored before its ticket arrived (tls13_tickets_arrive_late tells "
            f"the two apart)")


def age_mismatch(record: HandshakeRecord) -> str | None:
    """A TLS 1.3 offer whose claimed ticket age is far from what the server measured."""
    claimed, measured = record.claimed_age_ms, record.ticket_age_ms
    if claimed is None or measured is None:
        return None
    if abs(claimed - measured) <= max(AGE_SLACK_MS, measured // 10):
        return None
    return (f"the device claimed a ticket age of {claimed} ms where the server measured {measured} ms: its "
            f"clock for ticket ages is {'behind' if claimed < measured else 'ahead'} (uptime instead of an "
            f"RTC, or an RTC set wrong)")


def secret_missing(record: HandshakeRecord, issuer: HandshakeRecord | None) -> str | None:
    """The server recognised its own ticket and the binder or Finished still failed."""
    if record.rejected not in ("binder", "finished"):
        return None
    what = "PSK binder" if record.rejected == "binder" else "Finished message"
    origin = f" issued in handshake #{issuer.id} at {hhmmss(issuer.mono)}" if issuer is not None else ""
    return (f"the server recognised the ticket{origin}, but the {what} did not verify, so the secret the "
            f"device restored is not the one that goes with it: {SECRET_MISSING}")


def wrong_server(record: HandshakeRecord, issuer: HandshakeRecord | None, issuer_server: str | None) -> str | None:
    """The device offered a session to a server name other than the one that issued it."""
    if issuer is None:
        return None
    given = record.sni or "(no server name)"
    issued_for = issuer.sni or "(no server name)"
    if given == issued_for and issuer_server is None:
        return None
    where = f" by the reference server '{issuer_server}'" if issuer_server else ""
    return (f"session restored for the wrong server: the device offered to {given} the session issued for "
            f"{issued_for}{where} in handshake #{issuer.id}; a stored session belongs to the server name it "
            f"was issued for: keep the name with it and offer it only to that name")
