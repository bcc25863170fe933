"""Handshake records: the server's testimony, in memory and as JSON lines.

Why both: tests query records in memory (``wait_for`` a resumed handshake),
while a lab running the server standalone, or a CI artifact read after a
failure, needs a log that survives the process.  Each record is written as
one JSON object per line and flushed at once, so a crash loses at most the
connections in flight and the file is valid line by line.  Records only ever
hold fingerprints (:func:`harness.fingerprint.fp`), never tickets or keys.

Two moments in a connection's life, on purpose:

* **The handshake ends.**  The record is complete as evidence and is
  published in memory at once (``records()``, ``wait_for()``, listeners):
  a device that keeps its MQTT connection for an hour must not hide its
  handshake for an hour.  A failed handshake is also final at this moment.
* **The connection ends.**  The application fields (``app``, ``app_end``,
  ``closed_mono``, application byte counts) are complete; only now is the
  record written to the JSON-lines file, so each line carries them, and
  the "closed" listeners run.  Records still open when the log closes
  (server stopped) are written then.

The application fields, and ``tickets_sent_mono`` (the server's last flight
leaves just after the record is published), change after publication, under
the log's lock (:meth:`RecordLog.update`), and ``wait_for`` looks again at
records it has already seen when one changes, so ``wait_for(lambda r:
r.app_end)`` works.  If the server ends a connection with tickets still to
go (``ticket_delay``), its file line waits for them.
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import IO, Any, Callable

from harness import clock
from harness.errors import BenchTimeout

log = logging.getLogger(__name__)

MECHANISMS = ("full", "ticket", "session-id", "psk")
#: Why an offer did not resume.  The first six: the server did not take it (a full handshake followed,
#: or the handshake failed for another reason).  ``decrypt``: the ticket carries this server's current
#: key name but is not one it issued (damaged bytes: OpenSSL's HMAC check fails, a full handshake
#: follows).  ``binder`` and ``finished``: the server took its own session and the handshake then
#: failed because the client does not hold the session's secret (the TLS 1.3 PSK binder did not
#: verify; the TLS 1.2 Finished exchange of an abbreviated handshake failed).
REJECTIONS = (None, "unknown", "expired", "rotated", "tickets-off", "version", "foreign", "decrypt", "binder",
              "finished")


#: Last entry of ``Offered.psk`` when the client offered more PSK identities than the record keeps.
PSK_MORE = "+more"


@dataclass
class Offered:
    """Fingerprints of what the client offered for resumption."""

    ticket: str | None = None  # RFC 5077 ticket (TLS 1.2 style)
    #: TLS 1.3 PSK identities, in order: the first 16 (clienthello.MAX_PSK_IDENTITIES), then PSK_MORE if
    #: there were more (a record's size must not grow with what a client sends)
    psk: list[str] = field(default_factory=list)
    session_id: str | None = None  # only when it is a resumption offer, not 1.3 compat noise


@dataclass
class HandshakeRecord:
    """One connection as the server saw it (see the README for every field)."""

    id: int
    mono: float  # harness clock when the handshake ended (done or failed)
    time: str  # the same moment, ISO 8601 UTC
    peer: str
    sni: str | None = None
    version: str | None = None
    cipher: str | None = None
    resumed: bool = False
    mechanism: str | None = None
    offered: Offered = field(default_factory=Offered)
    issued: list[str] = field(default_factory=list)
    #: harness clock when each ticket of ``issued`` (same order) was handed to the socket; filled in as
    #: they go out (after the record is published for TLS 1.3), shorter than ``issued`` if the
    #: connection ended before some left
    tickets_sent_mono: list[float] = field(default_factory=list)
    resumed_from: int | None = None
    rejected: str | None = None
    ticket_age_ms: int | None = None
    claimed_age_ms: int | None = None
    bytes_in: int = 0
    bytes_out: int = 0
    round_trips: int = 0
    duration_ms: float = 0.0
    error: str | None = None  # the handshake failed (version is then None); never set after it
    client_versions: list[str] = field(default_factory=list)  # offered in the ClientHello, ascending
    protocol: str | None = None  # application protocol the server spoke (None: no handshake)
    app: list[str] = field(default_factory=list)  # application messages seen, short text, capped
    app_end: str | None = None  # how the application phase ended (None while the connection is open)
    app_bytes_in: int = 0  # bytes on the wire after the handshake
    app_bytes_out: int = 0
    closed_mono: float | None = None  # harness clock when the connection ended

    @property
    def began_mono(self) -> float:
        """When the connection was accepted, on the harness clock (``mono`` marks the handshake's end)."""
        return float(self.mono) - float(self.duration_ms or 0.0) / 1000.0

    def to_dict(self) -> dict[str, Any]:
        # Hand-written: dataclasses.asdict deep-copies every field and costs
        # more than the rest of a resumed handshake's bookkeeping.
        o = self.offered
        return {
            "id": self.id,
            "mono": self.mono,
            "time": self.time,
            "peer": self.peer,
            "sni": self.sni,
            "version": self.version,
            "cipher": self.cipher,
            "resumed": self.resumed,
            "mechanism": self.mechanism,
            "offered": {"ticket": o.ticket, "psk": list(o.psk), "session_id": o.session_id},
            "issued": list(self.issued),
            "tickets_sent_mono": list(self.tickets_sent_mono),
            "resumed_from": self.resumed_from,
            "rejected": self.rejected,
            "ticket_age_ms": self.ticket_age_ms,
            "claimed_age_ms": self.claimed_age_ms,
            "bytes_in": self.bytes_in,
            "bytes_out": self.bytes_out,
            "round_trips": self.round_trips,
            "duration_ms": self.duration_ms,
            "error": self.error,
            "client_versions": list(self.client_versions),
            "protocol": self.protocol,
            "app": list(self.app),
            "app_end": self.app_end,
            "app_bytes_in": self.app_bytes_in,
            "app_bytes_out": self.app_bytes_out,
            "closed_mono": self.closed_mono,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "HandshakeRecord":
        known = {f.name for f in fields(cls)}
        kw = {k: v for k, v in data.items() if k in known}
        kw["offered"] = Offered(**kw.get("offered") or {})
        return cls(**kw)

    def summary(self) -> str:
        """One readable line: what a person watching the standalone server wants."""
        if self.error and not self.version:
            offered = f" (client offered {', '.join(self.client_versions)})" if self.client_versions else ""
            return f"#{self.id} {self.peer} failed: {self.error}{offered}"
        how = f"resumed ({self.mechanism} from #{self.resumed_from})" if self.resumed else "full"
        parts = [f"#{self.id}", self.peer, self.version or "?", self.cipher or "?", how]
        if self.sni:
            parts.append(f"sni={self.sni}")
        if self.rejected:
            parts.append(f"refused offer: {self.rejected}")
        if self.issued:
            parts.append(f"issued {len(self.issued)}")
        if self.ticket_age_ms is not None:
            parts.append(f"age {self.ticket_age_ms} ms (client says {self.claimed_age_ms})")
        parts.append(f"{self.duration_ms:.1f} ms")
        if self.error:
            parts.append(f"error: {self.error}")
        if self.protocol:
            parts.append("| " + self.app_summary())
        return " ".join(parts)

    def app_summary(self) -> str:
        """The application phase in a few words: first and last message, and how it ended."""
        text = f"{self.protocol}:"
        if not self.app:
            text += " no messages"
        elif len(self.app) == 1:
            text += f" {self.app[0]}"
        else:
            text += f" {self.app[0]} .. {self.app[-1]} ({len(self.app)} entries)"
        text += f"; {self.app_end}" if self.app_end else "; open"
        if self.app_bytes_in or self.app_bytes_out:
            text += f" (app bytes in/out {self.app_bytes_in}/{self.app_bytes_out})"
        return text


class RecordTimeout(BenchTimeout):
    """No record matched in time; the message lists the records seen instead."""

    def __init__(self, wanted: str, timeout: float, seen: list[HandshakeRecord]):
        self.wanted = wanted
        self.seen = seen
        lines = "\n".join("  " + r.summary() for r in seen) or "  (no handshakes at all)"
        super().__init__(
            f"no handshake matching {wanted} within {timeout:g} s; the server saw {len(seen)}:\n{lines}"
        )


Predicate = Callable[[HandshakeRecord], bool]


class RecordLog:
    """Thread-safe list of records with an optional JSON-lines file and listeners."""

    def __init__(self, path: Path | None = None):
        self.path = path
        self._records: list[HandshakeRecord] = []
        self._open: dict[int, HandshakeRecord] = {}  # published, not yet written (connection open)
        self._changes = 0  # bumped when a published record changes: wait_for looks again
        self._cond = threading.Condition()
        self._file: IO[str] | None = None
        self._listeners: list[Callable[[HandshakeRecord], None]] = []
        self._closed_listeners: list[Callable[[HandshakeRecord], None]] = []
        self._encode = json.JSONEncoder(separators=(",", ":"), check_circular=False).encode
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(path, "a", encoding="utf-8")

    def add_listener(self, fn: Callable[[HandshakeRecord], None]) -> None:
        """``fn(record)`` when a record is published (handshake done or failed)."""
        self._listeners.append(fn)

    def add_closed_listener(self, fn: Callable[[HandshakeRecord], None]) -> None:
        """``fn(record)`` when the connection of a completed handshake ends (app fields final)."""
        self._closed_listeners.append(fn)

    def append(self, record: HandshakeRecord, *, final: bool = True) -> None:
        """Publish ``record``; ``final=False`` keeps it out of the file until :meth:`update` ends it."""
        with self._cond:
            self._records.append(record)
            if final:
                self._write(record)
            else:
                self._open[id(record)] = record
            self._cond.notify_all()
        self._notify(self._listeners, record)

    def update(self, record: HandshakeRecord, *, final: bool = False, **changes: Any) -> None:
        """Change fields of a published record; ``final=True`` writes it and runs "closed" listeners."""
        with self._cond:
            for name, value in changes.items():
                setattr(record, name, value)
            self._changes += 1
            was_open = self._open.pop(id(record), None) is not None if final else False
            if was_open:
                self._write(record)
            self._cond.notify_all()
        if was_open:
            self._notify(self._closed_listeners, record)

    def _write(self, record: HandshakeRecord) -> None:
        if self._file is not None:
            self._file.write(self._encode(record.to_dict()) + "\n")
            self._file.flush()

    @staticmethod
    def _notify(listeners: list[Callable[[HandshakeRecord], None]], record: HandshakeRecord) -> None:
        for fn in listeners:
            try:
                fn(record)
            except Exception:  # a broken listener must not stop the server
                log.exception("handshake listener failed")

    def close(self) -> None:
        """Write the records whose connection never ended (e.g. the loop did not stop), then close."""
        with self._cond:
            for record in sorted(self._open.values(), key=lambda r: r.id):
                self._write(record)
            self._open.clear()
            if self._file is not None:
                self._file.close()
                self._file = None

    # --- query API -----------------------------------------------------------

    def records(self) -> list[HandshakeRecord]:
        with self._cond:
            return list(self._records)

    def mark(self) -> int:
        """A position: ``since(mark)`` returns the records added after this call."""
        with self._cond:
            return len(self._records)

    def since(self, mark: int) -> list[HandshakeRecord]:
        with self._cond:
            return self._records[mark:]

    def wait_for(
        self,
        predicate: Predicate | None = None,
        *,
        timeout: float = 10.0,
        since: int | None = None,
        **fields_: Any,
    ) -> HandshakeRecord:
        """First record after ``since`` (default: all) matching ``predicate`` and fields.

        Records already seen are looked at again when one of them changes
        (application fields fill in after the handshake), so a predicate
        on ``app_end`` waits for the connection to end.  Raises :class:`RecordTimeout` naming what was seen, so a failing test
        shows "the server saw a full handshake, offer refused: expired".
        """
        unknown = set(fields_) - _FIELD_NAMES
        if unknown:
            raise TypeError(f"HandshakeRecord has no field(s) {', '.join(sorted(unknown))}")
        start = 0 if since is None else since
        wanted = _describe(predicate, fields_)
        deadline = clock.now() + timeout
        with self._cond:
            pos = start
            changes = self._changes
            while True:
                while pos < len(self._records):
                    rec = self._records[pos]
                    pos += 1
                    if _matches(rec, predicate, fields_):
                        return rec
                left = deadline - clock.now()
                if left <= 0:
                    raise RecordTimeout(wanted, timeout, self._records[start:])
                self._cond.wait(left)
                if self._changes != changes:
                    changes, pos = self._changes, start


_FIELD_NAMES = frozenset(f.name for f in fields(HandshakeRecord))


def _matches(rec: HandshakeRecord, predicate: Predicate | None, want: dict[str, Any]) -> bool:
    for key, value in want.items():
        if getattr(rec, key) != value:
            return False
    return predicate is None or bool(predicate(rec))


def _describe(predicate: Predicate | None, want: dict[str, Any]) -> str:
    parts = [f"{k}={v!r}" for k, v in want.items()]
    if predicate is not None:
        parts.append(getattr(predicate, "__name__", "predicate"))
    return " and ".join(parts) or "anything"
