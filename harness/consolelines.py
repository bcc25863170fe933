"""Line assembly for the console: received bytes in, stamped and cleaned :class:`Line` records out.

Real shells are not clean (colour codes, CR-only line ends, a prompt the
answer lands on, an echo or none): lines are cut at LF, CR LF and bare CR and
their ``text`` is cleaned by :mod:`harness.shellclean` (escapes removed, the
``prompt`` stripped from the start) before anything matches it.  A prompt-only
partial line is never matched, so a ``^`` anchor holds however the prompt and
the answer were timed.  The echo of a sent command (the first of the next
``_ECHO_WINDOW`` lines whose text equals it) is kept as an :class:`EchoLine`
with empty text; :meth:`Console.expect` skips it.

Output without a newline (a ``sim> `` prompt) stays pending and joins the
bytes that follow, until the console cuts it off as a partial line (see
:mod:`harness.console` for when).  Secrets matched by the console's
``redact`` patterns are replaced by their fingerprint here, before a line is
stored, matched or captured.

Pure bookkeeping: no port, no thread, no lock of its own.  The console calls
every method with its lock held, and decides what happens to the lines
(triggers, guards, capture).
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from typing import Sequence

from . import clock
from .consolerecords import EchoLine, Line
from .fingerprint import fp
from .shellclean import LineSplitter, ShellCleaner

# A "line" longer than this (binary noise, a wrong baud rate) is cut into
# partial lines, so memory and matching cost stay bounded.
_MAX_LINE = 65536
# A command's echo is looked for in this many lines after the send: a shell
# that does not echo loses at most a line equal to the command, and only then.
_ECHO_WINDOW = 4


@dataclass
class _Echo:
    """A sent command whose echo may still arrive within ``left`` lines."""

    text: str
    left: int = _ECHO_WINDOW


class LineAssembler:
    """The stream of one console cut into lines; owns the stream position and the pending partial line.

    ``pos`` counts every byte received (it keeps growing across gaps);
    ``pending`` holds the bytes of the line not yet terminated, which began
    at ``pending_start``; ``last_rx`` stamps the latest read.
    """

    def __init__(self, prompt: str | None = None, redact: Sequence[str] = ()):
        #: patterns for secrets a firmware may print (an Mbed TLS debug dump of
        #: the master secret): replaced before a line is stored, matched or
        #: captured, so they never reach a log, report or exception
        self._redact = [re.compile(p.encode("utf-8")) for p in redact]
        self._clean = ShellCleaner(prompt)
        self._splitter = LineSplitter()
        self._echoes: list[_Echo] = []              # commands sent whose echo may still come
        self.pos = 0
        self.pending = b""
        self.pending_start = 0
        self.last_rx = clock.stamp()

    @property
    def overlong(self) -> bool:
        """Whether the pending line has outgrown the longest line kept whole."""
        return len(self.pending) > _MAX_LINE

    def feed(self, data: bytes, st: clock.Stamp) -> tuple[int, list[Line], list[bool] | None]:
        """Take a received chunk: ``(skipped, lines, cr_only)`` as :meth:`LineSplitter.split` has them.

        ``lines`` are the lines the chunk completed, cleaned, echoes blanked.
        ``skipped`` (the LF of a CR LF split across reads) and ``cr_only`` are
        for the capture, which records how each line ended.
        """
        if self.pending:
            buf = self.pending + data
            pos = self.pending_start
        else:
            buf = data
            pos = self.pos
        self.pos += len(data)
        self.last_rx = st
        skipped, parts, cr_only, tail = self._splitter.split(buf)
        pos += skipped      # the LF of a CR LF whose CR ended the last read: no line of its own
        new = []
        if parts:
            mono, wall = st.mono, st.wall
            raws = [self._scrub(raw) for raw in parts] if self._redact else parts
            texts = self._clean.many(raws, buf)
            ends = itertools.repeat(False) if cr_only is None else cr_only
            for got, raw, text, cr in zip(parts, raws, texts, ends):
                # stream positions count the bytes as received (a bare CR has no LF)
                end = pos + len(got) + (not cr)
                new.append(Line(mono, wall, text, raw, pos, end, False))
                pos = end
            if self._echoes:
                new = self._take_echoes(new)
        self.pending = tail
        self.pending_start = pos
        return skipped, new, cr_only

    def cut(self, st: clock.Stamp) -> Line | None:
        """Turn the pending bytes into a partial line stamped ``st`` (None if nothing is pending)."""
        if not self.pending:
            return None
        raw = self._scrub(self.pending) if self._redact else self.pending
        line = Line(st.mono, st.wall, self._clean(raw), raw, self.pending_start, self.pos, True)
        if self._echoes:
            (line,) = self._take_echoes([line])
        self.pending = b""
        self.pending_start = self.pos
        return line

    def pending_answer(self) -> str | None:
        """The cleaned text of the pending bytes, or None if that is a bare prompt or an awaited echo."""
        raw = self._scrub(self.pending) if self._redact else self.pending
        text = self._clean(raw)
        if not text or any(e.text == text.strip() for e in self._echoes):
            return None
        return text

    def await_echo(self, line: str | bytes) -> None:
        """Expect the shell to echo ``line`` within the next lines (see :meth:`_take_echoes`)."""
        said = self._clean(line.encode("utf-8") if isinstance(line, str) else bytes(line)).strip()
        if said:
            self._echoes.append(_Echo(said))

    def restart(self) -> None:
        """The stream broke (port gone): an LF after it is a line of its own, and no echo will come."""
        self._splitter.reset()
        self._echoes.clear()

    def _take_echoes(self, new: list[Line]) -> list[Line]:
        """Blank the echo of each sent command among ``new`` (one per send, within the window)."""
        out = []
        for ln in new:
            if self._echoes:
                said = ln.text.strip()
                hit = next((e for e in self._echoes if e.text == said), None)
                if hit is not None:
                    self._echoes.remove(hit)
                    ln = EchoLine(ln.mono, ln.wall, "", ln.raw, ln.start, ln.end, ln.partial)
                for e in self._echoes:
                    e.left -= 1
                self._echoes = [e for e in self._echoes if e.left > 0]
            out.append(ln)
        return out

    def _scrub(self, raw: bytes) -> bytes:
        """Replace every redact match by its fingerprint: still traceable, no longer secret.

        A line's final CR is its terminator, not content: a ``.*`` pattern
        must not take it (the capture records how the line ended).
        """
        if raw.endswith(b"\r"):
            return self._scrub(raw[:-1]) + b"\r"
        for rx in self._redact:
            raw = rx.sub(lambda m: f"<redacted {fp(m.group(0))}>".encode(), raw)
        return raw
