"""The device's serial console: every line timestamped, captured, and matchable across power loss.

A firmware console is the harness's witness of what the device *thinks* it did
("flash: write done", "offering ticket ...").  Three things make that witness
unreliable on a real bench, and this module exists to handle them:

* **The port vanishes.**  A board powered through its own USB connector
  re-enumerates on every power cut.  The reader records a :class:`Gap` on
  the harness clock and reopens the same URL when it returns; the test does
  nothing (:mod:`harness.consoleport`).
* **Stale output.**  "ready" printed before a power cut must not satisfy a wait
  for "ready" after it.  :meth:`Console.mark` and the console's current mark
  (advanced past each successful match, like pexpect) bound what
  :meth:`Console.expect` may match.
* **Dying test processes.**  Every line is appended to a capture file and
  flushed as it arrives (format in :mod:`harness.consolefile`).

Positions and marks are byte offsets in everything received since the console
was created (a counter that keeps growing across gaps).  A line belongs
*after* a mark if its last byte arrived after it.

Partial lines: output without a newline (a ``sim> `` prompt) stays pending and
joins the bytes that follow.  ``expect`` may match a pending partial line once
no byte has arrived for ``partial_idle`` seconds (default 50 ms); when it does,
the partial line is cut off and becomes a :class:`Line` with ``partial=True``.
The idle wait keeps ``expect("connect ok resumed=\\w+")`` from matching a line
the UART is still delivering.  Guards see cut-off partial lines too; triggers
fire on complete lines only (:mod:`harness.consoletrig`).

Sending while the port is gone raises :class:`ConsoleGone` at once, or after
waiting up to ``wait`` seconds for the port to return (``send(..., wait=5)``).

:class:`Console` is the one thing users hold; each job it does lives in a
part of its own, all sharing the console's lock:

* :mod:`harness.consoleport`: the port, its gaps, the reader loop's I/O.
* :mod:`harness.consolelines`: bytes into clean lines (line ends, partial
  lines, prompt, echo, redaction).
* :mod:`harness.consoletrig`: triggers and guards.
* :mod:`harness.consolerecords`: the records and errors, re-exported here.
"""

from __future__ import annotations

import bisect
import logging
import re
import threading
from dataclasses import replace
from pathlib import Path
from typing import Callable, Generic, Pattern, Sequence, TypeVar, Union

from . import clock
from .consolefile import CaptureWriter, escape, line_record, prefix
from .consolelines import LineAssembler
from .consoleport import ConsolePort
from .consolerecords import (ConsoleError, ConsoleGone, ConsoleTimeout, EchoLine, Firing, ForbiddenOutput,
                             Gap, Guard, Line, LineMatch, Trigger, TriggerFailed)
from .consoletrig import Guards, Scheduled, Triggers

__all__ = ["Console", "ConsoleError", "ConsoleGone", "ConsoleTimeout", "EchoLine", "Firing", "ForbiddenOutput",
           "Gap", "Guard", "Line", "LineMatch", "PatternLike", "Trigger", "TriggerFailed"]

log = logging.getLogger(__name__)
line_log = logging.getLogger(__name__ + ".lines")

PatternLike = Union[str, Pattern[str]]

_SHOW_LINES = 10

T = TypeVar("T")


def _compile(pattern: PatternLike | Sequence[PatternLike]) -> list[Pattern[str]]:
    if isinstance(pattern, (str, re.Pattern)):
        pattern = [pattern]
    out = []
    for p in pattern:
        out.append(p if isinstance(p, re.Pattern) else re.compile(p))
    if not out:
        raise ValueError("expect needs at least one pattern")
    return out


class _Setting(Generic[T]):
    """A Console attribute kept by the part(s) that use it, read and set on the Console as before.

    Setting it on the Console sets it on every part named, so a part never
    works from a stale copy.
    """

    def __init__(self, *parts: str):
        self.parts = parts

    def __set_name__(self, owner: type, attr: str) -> None:
        self.attr = attr

    def __get__(self, obj: object, owner: type | None = None) -> T:
        if obj is None:
            return self  # type: ignore[return-value]  # on the class: the descriptor itself
        return getattr(getattr(obj, self.parts[0]), self.attr)  # type: ignore[no-any-return]

    def __set__(self, obj: object, value: T) -> None:
        for part in self.parts:
            setattr(getattr(obj, part), self.attr, value)


class Console:
    """A serial console read by one background thread (see the module docstring).

    ``url`` is anything :func:`serial.serial_for_url` opens: ``/dev/ttyUSB0``,
    ``/dev/serial/by-id/usb-...``, ``rfc2217://host:port``,
    ``socket://host:port``.  The port is opened at once; if it is absent and
    ``reopen`` is true the console starts inside a gap and opens it when it
    appears (a board whose USB port exists only while powered), otherwise
    :class:`ConsoleError` is raised.  ``prompt`` is the shell's prompt (the
    device file's ``firmware.prompt``), stripped from the start of every line.
    ``resolve`` gives the URL afresh before each reopen (a labgrid place's
    console moves to a new TCP port when its USB UART re-enumerates).
    """

    url = _Setting[str]("_io")
    baudrate = _Setting[int]("_io")
    reopen = _Setting[bool]("_io")
    poll_interval = _Setting[float]("_io")
    presence_check = _Setting[float]("_io")
    write_timeout = _Setting[float]("_io")
    name = _Setting[str]("_io", "_trig", "_guards")

    def __init__(self, url: str, baudrate: int = 115200, capture_path: Path | str | None = None,
                 reopen: bool = True, *, line_ending: str = "\r\n", char_delay: float = 0.0,
                 partial_idle: float = 0.05, poll_interval: float = 0.02, presence_check: float = 0.25,
                 write_timeout: float = 2.0, name: str | None = None, redact: Sequence[str] = (),
                 prompt: str | None = None, resolve: Callable[[], str] | None = None):
        self._cond = threading.Condition()          # guards the state of the console and its parts
        self._io = ConsolePort(str(url), baudrate, name=name or str(url), reopen=reopen,
                               poll_interval=poll_interval, presence_check=presence_check,
                               write_timeout=write_timeout, cond=self._cond, feed=self._feed,
                               interrupted=self._interrupted, event=self._event, resolve=resolve)
        self.line_ending = line_ending
        self.char_delay = char_delay
        self.partial_idle = partial_idle
        self.capture_path = Path(capture_path) if capture_path is not None else None
        self._asm = LineAssembler(prompt, redact)
        self.prompt = prompt
        self._lines: list[Line] = []
        self._mark = 0
        self._problems: list[ConsoleError] = []     # trigger failures, reader crash
        self._guards = Guards(self.name)
        self._trig = Triggers(self.name, self._cond, self._event, self._problems.append)
        self._reader_alive = False
        self._stop = threading.Event()
        self._capture = CaptureWriter(self.capture_path) if self.capture_path is not None else None
        try:
            self._io.start()
        except ConsoleError:
            self._close_capture("open failed")
            raise
        self._reader_alive = True
        self._reader = threading.Thread(target=self._run, name=f"console-reader {self.name}", daemon=True)
        self._reader.start()

    # ------------------------------------------------------------ public API

    def __enter__(self) -> Console:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Console({self.url!r}, present={self._io.present}, lines={len(self._lines)})"

    @property
    def closed(self) -> bool:
        """Whether this console was closed (by us, or its reader gave up): it will read nothing more."""
        return self._io.closed or not self._reader_alive

    @property
    def present(self) -> bool:
        """Whether the port is open right now."""
        return self._io.present

    @property
    def position(self) -> int:
        """Bytes received so far (the stream position a mark would take now)."""
        with self._cond:
            return self._asm.pos

    @property
    def lines(self) -> list[Line]:
        """A snapshot of every complete (or cut-off partial) line received so far."""
        with self._cond:
            return list(self._lines)

    @property
    def gaps(self) -> list[Gap]:
        """A snapshot of the gaps; the last one has ``end=None`` while the port is absent."""
        with self._cond:
            return [replace(g) for g in self._io.gaps]

    @property
    def pending(self) -> bytes:
        """Bytes of the current, not yet terminated line."""
        with self._cond:
            return self._asm.pending

    def since(self, mark: int) -> list[Line]:
        """Lines whose last byte arrived after ``mark``."""
        with self._cond:
            return self._lines[self._first_after(mark):]

    def mark(self) -> int:
        """Start a new "from now on": later :meth:`expect` calls see only output after this point.

        Returns the position, usable as ``since=`` for several waits on the
        same window (boot lines in any order).  An idle partial line (a
        prompt) is closed first, so what the device prints next starts a new
        line; bytes of a partial line still arriving stay pending.
        """
        with self._cond:
            self._cut_idle_partial()
            self._mark = self._asm.pos
            return self._mark

    def expect(self, pattern: PatternLike | Sequence[PatternLike], timeout: float = 10.0,
               since: int | None = None) -> LineMatch:
        """Wait for the first line after the mark that matches (``re.search``) one of the patterns.

        ``since`` defaults to the console's current mark; after a match the
        current mark moves past the matched line, so successive expects walk
        forward through the output.  Raises :class:`ConsoleTimeout`,
        :class:`ForbiddenOutput` (a guard fired, even while waiting) or
        :class:`TriggerFailed`.
        """
        pats = _compile(pattern)
        deadline = clock.now() + timeout
        with self._cond:
            start = self._mark if since is None else since
            idx = self._first_after(start)
            checked = -1            # position when the idle partial line last failed to match
            while True:
                self._raise_problems()
                while idx < len(self._lines):
                    line = self._lines[idx]
                    idx += 1
                    if line.echo or (line.partial and not line.text):
                        continue        # a command's echo, a cut-off bare prompt: never an answer
                    for i, p in enumerate(pats):
                        m = p.search(line.text)
                        if m is not None:
                            self._mark = max(self._mark, line.end)
                            return LineMatch(line, m, i)
                now = clock.now()
                wake = deadline
                if self._asm.pending and self._asm.pos > start and checked != self._asm.pos:
                    ready_at = self._asm.last_rx.mono + self.partial_idle
                    if now >= ready_at:
                        found = self._match_partial(pats)
                        if found is not None:
                            return found
                        checked = self._asm.pos
                    else:
                        wake = min(wake, ready_at)
                if now >= deadline:
                    raise self._timeout_error(pats, timeout, start)
                if self._io.closed or not self._reader_alive:
                    raise ConsoleError(self._dead_message(pats))
                self._cond.wait(max(0.0, wake - now))

    def check(self) -> None:
        """Raise now if a guard fired or a trigger action failed since the last check."""
        with self._cond:
            self._raise_problems()

    def forbid(self, pattern: PatternLike) -> Guard:
        """Fail the next :meth:`expect`/:meth:`check` if a later line matches ``pattern``.

        For output that means the run is already lost (``panic``,
        ``assert``, ``HardFault``): failing at once, naming the line, beats a
        timeout half a minute later.  A violation is raised once.
        """
        with self._cond:
            return self._guards.add(_compile(pattern)[0], since=self._asm.pos)

    def allow(self, guard: Guard) -> None:
        """Remove a guard set by :meth:`forbid`."""
        with self._cond:
            self._guards.remove(guard)

    def trigger(self, pattern: PatternLike, action: Callable[[], object], delay: float = 0.0,
                once: bool = True, inline: bool = False) -> Trigger:
        """Run ``action()`` when a later complete line matches: fault injection at a precise point.

        The action runs in this console's trigger thread ``delay`` seconds
        after the line's arrival stamp (not after the match was noticed);
        actions run one at a time, in due order.  Each run is recorded in
        ``Trigger.firings``; an action that raises fails the next
        :meth:`expect`/:meth:`check` with :class:`TriggerFailed`.

        ``inline=True`` (with no delay) runs the action in the reader thread
        itself, right after the chunk holding the line was recorded: one
        thread wake-up less, so a tighter worst case under CPU load.  Only
        for actions that return within about a millisecond (an ``OUTP OFF``
        without discharge wait): the port is not read while it runs, and a
        port that vanishes meanwhile takes its unread bytes with it.
        """
        t = Trigger(_compile(pattern)[0], action, float(delay), once, inline)
        t._cancel = lambda: self.cancel(t)
        with self._cond:
            if self._io.closed:
                raise ConsoleError(f"console {self.name} is closed")
            t.since = self._asm.pos
            self._trig.arm(t)
        return t

    def cancel(self, trig: Trigger) -> None:
        """Disarm a trigger; a firing already scheduled (delay) is dropped."""
        self._trig.cancel(trig)

    def wait_present(self, timeout: float) -> None:
        """Block until the port is open (after a power-up re-enumeration)."""
        deadline = clock.now() + timeout
        with self._cond:
            while not self._io.present:
                left = deadline - clock.now()
                if left <= 0:
                    raise ConsoleTimeout(f"console {self.name}: port {self.url} did not appear within "
                                         f"{timeout:.1f} s ({self._io.presence_text()})", [], timeout, False,
                                         self._lines[-_SHOW_LINES:])
                if self._io.closed:
                    raise ConsoleError(f"console {self.name} is closed")
                self._cond.wait(left)

    def send(self, line: str | bytes, *, end: str | None = None, char_delay: float | None = None,
             wait: float = 0.0) -> None:
        """Write ``line`` plus the line ending (``end`` or the console's ``line_ending``).

        ``char_delay`` (default: the console's) paces the bytes: UART shells
        without flow control drop input that comes faster than they poll.
        If the port is absent, wait up to ``wait`` seconds for it, then raise
        :class:`ConsoleGone`.  An idle partial line (the prompt) is closed
        first: the answer starts a line of its own, so ``^``-anchored
        patterns work whether or not the shell echoes.  The echo of ``line``
        (the first of the next few lines whose text equals it) is kept as an
        :class:`EchoLine` with empty text, so no pattern or guard takes it.
        """
        data = line.encode("utf-8") if isinstance(line, str) else bytes(line)
        data += (self.line_ending if end is None else end).encode("utf-8")
        delay = self.char_delay if char_delay is None else char_delay
        if wait > 0 and not self._io.present:
            try:
                self.wait_present(wait)
            except ConsoleTimeout:
                pass
        with self._cond:
            self._cut_idle_partial()
        st = self._io.write(data, delay, before=lambda: self._await_echo(line))
        with self._cond:
            if self._capture is not None:
                self._capture.sent(st.mono, st.wall, data)
        line_log.debug("%s > %r", self.name, data)

    def close(self) -> None:
        """Stop the threads, close the port, flush a pending partial line, close the capture file."""
        with self._cond:
            if self._io.closed:
                return
            self._io.closed = True
            self._cond.notify_all()
        self._trig.stop()
        self._stop.set()
        if self._reader.is_alive() and self._reader is not threading.current_thread():
            self._reader.join(timeout=5.0)
            if self._reader.is_alive():
                log.error("console %s: reader thread did not stop", self.name)
        self._trig.join(timeout=5.0)
        self._io.detach()
        st = clock.stamp()
        with self._cond:
            self._flush_partial(st)
            self._reader_alive = False
            self._cond.notify_all()
        self._close_capture("closed")
        log.info("console %s closed (%d lines, %d gaps)", self.name, len(self._lines), len(self._io.gaps))

    # ------------------------------------------------------------ reader

    def _run(self) -> None:
        try:
            self._io.watch(self._stop)
        except Exception as exc:  # a bug must not silently stop the capture
            log.exception("console %s: reader thread crashed", self.name)
            with self._cond:
                self._problems.append(ConsoleError(f"console {self.name}: reader thread crashed: {exc!r}"))
        finally:
            with self._cond:
                self._reader_alive = False
                self._cond.notify_all()

    def _feed(self, data: bytes, st: clock.Stamp) -> None:
        """Record a received chunk's lines: triggers, guards, capture; wake waiters. Lock NOT held."""
        with self._cond:
            skipped, new, cr_only = self._asm.feed(data, st)
            run_now: list[Scheduled] = []
            if skipped and self._capture is not None:
                # the LF of a CR LF whose CR ended the last read: an empty record, no line
                self._capture.write(line_record(prefix(st.mono, st.wall), b"", False))
            if new:
                if self._trig.armed:
                    run_now = self._trig.match(new)
                if self._guards.active:
                    self._guards.check(new)
                self._lines.extend(new)
                if self._capture is not None:
                    pre = prefix(st.mono, st.wall)
                    if cr_only is None:
                        self._capture.write("".join([line_record(pre, ln.raw, False) for ln in new]))
                    else:
                        self._capture.write("".join([line_record(pre, ln.raw, False, cr)
                                                     for ln, cr in zip(new, cr_only)]))
                if line_log.isEnabledFor(logging.DEBUG):
                    for ln in new:
                        line_log.debug("%s | %s", self.name, ln.text)
            if self._asm.overlong:
                self._flush_partial(st)
            self._cond.notify_all()
        for item in run_now:      # inline triggers: outside the lock, before the next read
            self._trig.execute(item)

    def _interrupted(self) -> None:
        """The port vanished: end the partial line where its last byte came. Lock held."""
        self._flush_partial(self._asm.last_rx)
        self._asm.restart()

    def _await_echo(self, line: str | bytes) -> None:
        with self._cond:
            self._asm.await_echo(line)

    def _flush_partial(self, st: clock.Stamp) -> Line | None:
        """Turn the pending bytes into a partial Line (port vanished / closing / matched). Lock held."""
        line = self._asm.cut(st)
        if line is None:
            return None
        if self._guards.active:
            self._guards.check([line])
        self._lines.append(line)
        if self._capture is not None:
            self._capture.write(line_record(prefix(st.mono, st.wall), line.raw, True))
        return line

    def _cut_idle_partial(self) -> None:
        """Close a pending partial line nobody is still writing to (a prompt). Lock held."""
        if self._asm.pending and clock.now() - self._asm.last_rx.mono >= self.partial_idle:
            self._flush_partial(self._asm.last_rx)

    def _match_partial(self, pats: Sequence[Pattern[str]]) -> LineMatch | None:
        """Match the idle pending line, cleaned; a bare prompt or a command's echo is no answer."""
        text = self._asm.pending_answer()
        if text is None:
            return None
        for i, p in enumerate(pats):
            m = p.search(text)
            if m is not None:
                line = self._flush_partial(self._asm.last_rx)
                assert line is not None
                self._mark = max(self._mark, line.end)
                return LineMatch(line, m, i)
        return None

    # ------------------------------------------------------------ helpers (lock held)

    def _first_after(self, mark: int) -> int:
        return bisect.bisect_right(self._lines, mark, key=lambda ln: ln.end)

    def _event(self, st: clock.Stamp, message: str) -> None:
        if self._capture is not None:
            self._capture.event(st.mono, st.wall, message)

    def _close_capture(self, why: str) -> None:
        with self._cond:
            if self._capture is not None:
                self._event(clock.stamp(), why)
                self._capture.close()
                self._capture = None

    def _raise_problems(self) -> None:
        self._guards.raise_first()
        if self._problems:
            problem = self._problems.pop(0)
            raise problem

    def _tail_text(self, start: int) -> str:
        shown = self._lines[-_SHOW_LINES:]
        after = len(self._lines) - self._first_after(start)
        out = [f"{after} line(s) arrived after the mark; last {len(shown)} of {len(self._lines)} received:"]
        for ln in shown:
            flag = " " if ln.end > start else "-"
            body = escape(ln.raw[:-1] if ln.raw.endswith(b"\r") else ln.raw)
            out.append(f"  {flag} {ln.mono:.6f} {body}{' (partial)' if ln.partial else ''}")
        if self._asm.pending:
            out.append(f"  + pending, no newline yet: {escape(self._asm.pending)}")
        if not shown and not self._asm.pending:
            out.append("  (nothing)")
        return "\n".join(out)

    def _timeout_error(self, pats: Sequence[Pattern[str]], timeout: float, start: int) -> ConsoleTimeout:
        names = [p.pattern for p in pats]
        what = " or ".join(repr(n) for n in names)
        msg = (f"console {self.name}: no line matching {what} within {timeout:.2f} s after mark {start}\n"
               f"{self._io.presence_text()}\n{self._tail_text(start)}")
        return ConsoleTimeout(msg, names, timeout, self._io.present, self._lines[-_SHOW_LINES:])

    def _dead_message(self, pats: Sequence[Pattern[str]]) -> str:
        what = " or ".join(repr(p.pattern) for p in pats)
        state = "closed" if self._io.closed else "no longer reading (port gone and reopen disabled)"
        return f"console {self.name} is {state}; cannot wait for {what}\n{self._tail_text(self._mark)}"
