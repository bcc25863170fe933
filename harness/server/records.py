"""Handshake records: the server's testimony, in memory and as JSON lines.

Why both: tests query records in memory (``wait_for`` a resumed handshake),
while a lab running the server standalone, or a CI artifact read after a
failure, needs a log that survives the process.  Each record is written as
one JSON object per line and flushed at once, so a crash loses at most the
connection in flight and the file is valid line by line.  Records only ever
hold fingerprints (:func:`harness.fingerprint.fp`), never tickets or keys.
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
REJECTIONS = (None, "unknown", "expired", "rotated", "tickets-off", "version", "foreign")


@dataclass
class Offered:
    """Fingerprints of what the client offered for resumption."""

    ticket: str | None = None  # RFC 5077 ticket (TLS 1.2 style)
    psk: list[str] = field(default_factory=list)  # TLS 1.3 PSK identities, in order
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
    resumed_from: int | None = None
    rejected: str | None = None
    ticket_age_ms: int | None = None
    claimed_age_ms: int | None = None
    bytes_in: int = 0
    bytes_out: int = 0
    round_trips: int = 0
    duration_ms: float = 0.0
    error: str | None = None

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
            "resumed_from": self.resumed_from,
            "rejected": self.rejected,
            "ticket_age_ms": self.ticket_age_ms,
            "claimed_age_ms": self.claimed_age_ms,
            "bytes_in": self.bytes_in,
            "bytes_out": self.bytes_out,
            "round_trips": self.round_trips,
            "duration_ms": self.duration_ms,
            "error": self.error,
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
            return f"#{self.id} {self.peer} failed: {self.error}"
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
        return " ".join(parts)


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
        self._cond = threading.Condition()
        self._file: IO[str] | None = None
        self._listeners: list[Callable[[HandshakeRecord], None]] = []
        self._encode = json.JSONEncoder(separators=(",", ":"), check_circular=False).encode
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(path, "a", encoding="utf-8")

    def add_listener(self, fn: Callable[[HandshakeRecord], None]) -> None:
        self._listeners.append(fn)

    def append(self, record: HandshakeRecord) -> None:
        line = self._encode(record.to_dict()) if self._file else None
        with self._cond:
            self._records.append(record)
            if self._file is not None and line is not None:
                self._file.write(line + "\n")
                self._file.flush()
            self._cond.notify_all()
        for fn in self._listeners:
            try:
                fn(record)
            except Exception:  # a broken listener must not stop the server
                log.exception("handshake listener failed")

    def close(self) -> None:
        with self._cond:
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

        Raises :class:`RecordTimeout` naming what was seen, so a failing test
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
