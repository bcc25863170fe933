"""The console capture file: what the device printed, when, readable by a person and lossless for a program.

When a night of power cycles goes wrong the capture file is the first thing
someone opens, often without the harness at hand, so it is plain UTF-8 text,
one record per line, in arrival order::

    <mono> <wall> <kind> <payload>

    5021.118734 2026-11-26T18:29:12.123+00:00 # opened /tmp/bench/uart
    5021.342001 2026-11-26T18:29:12.346+00:00 | simfw 1.0 variant=correct
    5021.342001 2026-11-26T18:29:12.346+00:00 ~ sim>\\x20
    5021.401277 2026-11-26T18:29:12.405+00:00 > connect 127.0.0.1 4433\\x0d\\x0a
    5021.977310 2026-11-26T18:29:12.981+00:00 # vanished: read failed: [Errno 5] Input/output error

``mono`` is the harness clock (:func:`harness.clock.now`, 6 decimals) so a
capture line sorts against power edges and handshakes; ``wall`` is ISO 8601
UTC for people.  ``kind`` says how the record ended on the wire, so the exact
byte stream can be rebuilt:

=====  ===============================================================
``|``  a line the device ended with ``\\r\\n`` (the usual case)
``:``  a line ended with a bare ``\\n``.  An *empty* ``:`` record right
       after a ``^`` record is the LF of a ``\\r\\n`` that arrived in two
       reads: the console ended the line at the CR (it cannot wait for a
       byte that may never come) and records the LF when it comes
``^``  a line ended with a bare ``\\r`` (a CR not followed by LF: CR-only
       devices, ``\\r\\x1b[K`` prompt redraws)
``~``  a partial line, no newline: flushed when the port vanished or the
       console closed, or cut off because ``expect`` matched it (a prompt)
``>``  bytes the harness sent, line ending included
``#``  an event of the console itself (opened, vanished, reopened,
       trigger fired, closed); the payload is free text
=====  ===============================================================

The payload is escaped so that any byte sequence survives: valid UTF-8 text is
kept as is, a backslash is written ``\\\\``, and control bytes (except tab),
DEL and every byte that is not part of valid UTF-8 are written ``\\xNN``.
A trailing space is escaped too, so a prompt like ``sim> `` stays visible.
:func:`read` undoes all of it.

Records are appended and flushed to the operating system after every chunk the
reader thread receives, so a test process that dies (even by SIGKILL) leaves
everything it received on disk.  The file is not fsync'ed: it survives the
death of the process, not of the host.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO, Iterator

from . import clock
from .shellclean import clean

LINE_CRLF = "|"
LINE_LF = ":"
LINE_CR = "^"
PARTIAL = "~"
SENT = ">"
EVENT = "#"

KINDS = (LINE_CRLF, LINE_LF, LINE_CR, PARTIAL, SENT, EVENT)
#: the kinds that hold received bytes
RECEIVED = (LINE_CRLF, LINE_LF, LINE_CR, PARTIAL)

# Bytes that can go to the file verbatim without a second look: printable
# ASCII except the backslash, and tab.  Anything else takes the slow path.
# (Deleting them with bytes.translate and finding nothing left is a few times
# faster per line than a regex search for the others.)
_VERBATIM = bytes(b for b in range(0x20, 0x7F) if b != 0x5C) + b"\t"
# After decoding with surrogateescape, bytes that were not valid UTF-8 show up
# as lone surrogates U+DC80..U+DCFF.
_ESCAPE_CHARS = re.compile("[\x00-\x08\x0a-\x1f\x7f\\\\\udc80-\udcff]")
_UNESCAPE = re.compile(rb"\\(\\|x[0-9a-fA-F]{2})")


def _escape_char(m: re.Match[str]) -> str:
    c = m.group(0)
    if c == "\\":
        return "\\\\"
    code = ord(c)
    if code >= 0xDC80:
        code -= 0xDC00
    return f"\\x{code:02x}"


def escape(raw: bytes) -> str:
    """Text for one payload: lossless, one physical line, UTF-8 kept readable."""
    if not raw.translate(None, _VERBATIM):
        text = raw.decode("ascii")
    else:
        text = _ESCAPE_CHARS.sub(_escape_char, raw.decode("utf-8", "surrogateescape"))
    if text.endswith(" "):
        # A trailing blank is invisible in an editor and easily stripped by
        # one: a prompt "sim> " must stay recognisable.
        text = text[:-1] + "\\x20"
    return text


def unescape(payload: str) -> bytes:
    """Inverse of :func:`escape`."""
    data = payload.encode("utf-8", "surrogateescape")

    def one(m: re.Match[bytes]) -> bytes:
        tok = m.group(1)
        return b"\\" if tok == b"\\" else bytes([int(tok[1:], 16)])

    return _UNESCAPE.sub(one, data)


def prefix(mono: float, wall: float) -> str:
    """The time columns; computed once per received chunk, shared by its lines."""
    return f"{mono:.6f} {clock.iso(wall)} "


@dataclass(frozen=True)
class Record:
    """One record read back from a capture file."""

    mono: float
    wall: float
    kind: str
    raw: bytes          # the bytes as they were on the wire, terminator included
    line_no: int        # line number in the capture file, for error messages

    @property
    def text(self) -> str:
        """What the console matched on, except the prompt (not recorded here) was not stripped.

        Decoded with replacement; escape sequences, CR and other control
        characters removed (:func:`harness.shellclean.clean`).
        """
        body = self.raw[:-1] if self.raw.endswith(b"\n") else self.raw
        return clean(body)


class CaptureWriter:
    """Appends records to a capture file; the caller serialises access (one lock)."""

    def __init__(self, path: Path | str):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # newline="\n": never translate; append: a second console (or a rerun)
        # on the same file adds to it instead of destroying evidence.
        self._file: IO[str] | None = open(self.path, "a", encoding="utf-8", newline="\n")

    def write(self, text: str) -> None:
        """Write already formatted records (see :func:`line_record`) and flush them."""
        if self._file is not None and text:
            self._file.write(text)
            self._file.flush()

    def event(self, mono: float, wall: float, message: str) -> None:
        self.write(f"{prefix(mono, wall)}{EVENT} {message.replace(chr(10), ' ')}\n")

    def sent(self, mono: float, wall: float, data: bytes) -> None:
        self.write(f"{prefix(mono, wall)}{SENT} {escape(data)}\n")

    def close(self) -> None:
        if self._file is not None:
            try:
                self._file.flush()
            finally:
                self._file.close()
                self._file = None


def line_record(pre: str, raw: bytes, partial: bool, cr_only: bool = False) -> str:
    """Format one received line (``raw`` without its ``\\n``) after the time prefix ``pre``.

    ``cr_only``: the line was ended by a bare CR (``raw`` ends with it).
    """
    if partial:
        return f"{pre}{PARTIAL} {escape(raw)}\n"
    if cr_only:
        body = raw[:-1] if raw.endswith(b"\r") else raw
        return f"{pre}{LINE_CR} {escape(body)}\n"
    if raw.endswith(b"\r"):
        return f"{pre}{LINE_CRLF} {escape(raw[:-1])}\n"
    return f"{pre}{LINE_LF} {escape(raw)}\n"


def read(path: Path | str) -> Iterator[Record]:
    """Parse a capture file back into records with their exact bytes.

    Raises ``ValueError`` naming the file and line for a malformed record, so
    a hand-edited or truncated capture fails clearly.  A last record cut off
    by a crash mid-write (no final newline) is returned as far as it goes.
    """
    with open(path, "r", encoding="utf-8", errors="surrogateescape", newline="\n") as f:
        for n, physical in enumerate(f, start=1):
            body = physical[:-1] if physical.endswith("\n") else physical
            parts = body.split(" ", 3)
            if len(parts) < 3 or parts[2] not in KINDS:
                raise ValueError(f"{path}:{n}: not a console capture record: {body[:80]!r}")
            try:
                mono = float(parts[0])
                wall = datetime.fromisoformat(parts[1]).timestamp()
            except ValueError as exc:
                raise ValueError(f"{path}:{n}: bad time stamp: {exc}") from None
            kind = parts[2]
            payload = parts[3] if len(parts) == 4 else ""
            if kind == EVENT:
                raw = payload.encode("utf-8", "surrogateescape")
            else:
                raw = unescape(payload)
                if kind == LINE_CRLF:
                    raw += b"\r\n"
                elif kind == LINE_LF:
                    raw += b"\n"
                elif kind == LINE_CR:
                    raw += b"\r"
            yield Record(mono, wall, kind, raw, n)


def received(path: Path | str) -> bytes:
    """The byte stream the console received, rebuilt from a capture file (gaps simply join)."""
    return b"".join(r.raw for r in read(path) if r.kind in RECEIVED)
