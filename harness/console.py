"""The device's serial console: every line timestamped, captured, and matchable across power loss.

A firmware console is the harness's witness of what the device *thinks* it did
("flash: write done", "offering ticket ...").  Three things make that witness
unreliable on a real bench, and this module exists to handle them:

* **The port vanishes.**  A board powered through its own USB connector
  re-enumerates on every power cut: the tty disappears (reads fail with EIO,
  ``/dev/serial/by-id/...`` goes away) and a new one appears at power-up.  The
  reader thread records a :class:`Gap` on the harness clock, polls until the
  same URL opens again and carries on; the test does nothing.
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
fire on complete (newline-terminated) lines only, because fault injection
must not race a half-received line.

Trigger actions run by default in a dedicated per-console thread, not in the
reader: an action such as ``supply.off()`` may wait a second for the rail to
discharge, and a reader blocked that long would lose the device's last words
when its port vanishes (the kernel discards unread input on hang-up; a pty
does the same).  ``trigger(..., inline=True)`` runs a quick action in the
reader itself, one thread wake-up sooner (see ``bench/trigger_latency.py``).

Sending while the port is gone raises :class:`ConsoleGone` at once, or after
waiting up to ``wait`` seconds for the port to return (``send(..., wait=5)``).

Real shells are not clean (colour codes, CR-only line ends, a prompt the
answer lands on, an echo or none): lines are cut at LF, CR LF and bare CR and
their ``text`` is cleaned by :mod:`harness.shellclean` (escapes removed, the
``prompt`` stripped from the start) before anything matches it.  A prompt-only
partial line is never matched, so a ``^`` anchor holds however the prompt and
the answer were timed.  The echo of a sent command (the first of the next
``_ECHO_WINDOW`` lines whose text equals it) is kept as an :class:`EchoLine`
with empty text; :meth:`Console.expect` skips it.
"""

from __future__ import annotations

import bisect
import errno
import heapq
import itertools
import logging
import os
import re
import select
import stat
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Iterable, Pattern, Sequence, Union

import serial

from . import clock
from .fingerprint import fp
from .consolefile import CaptureWriter, escape, line_record, prefix
from .errors import BenchTimeout, HarnessError
from .shellclean import LineSplitter, ShellCleaner

try:  # POSIX only: the fast read path for local ttys
    from serial.serialposix import Serial as _PosixSerial
except ImportError:  # pragma: no cover - Windows
    _PosixSerial = None  # type: ignore[assignment,misc]

log = logging.getLogger(__name__)
line_log = logging.getLogger(__name__ + ".lines")

PatternLike = Union[str, Pattern[str]]

_READ_SIZE = 65536
# A "line" longer than this (binary noise, a wrong baud rate) is cut into
# partial lines, so memory and matching cost stay bounded.
_MAX_LINE = 65536
_SHOW_LINES = 10
# A command's echo is looked for in this many lines after the send: a shell
# that does not echo loses at most a line equal to the command, and only then.
_ECHO_WINDOW = 4


# --------------------------------------------------------------------- records


@dataclass(frozen=True, slots=True)
class Line:
    """One line of device output on the harness clock.

    ``mono``/``wall`` are taken when the read that completed the line returned
    (for a partial line: when its last byte arrived).  ``text`` is for
    matching: decoded as UTF-8 with replacement characters, escape sequences
    and control characters removed, the console's prompt stripped from the
    start (:mod:`harness.shellclean`).  ``raw`` is exactly what came over the
    wire (after redaction), without the final ``\\n``: a CR LF or bare-CR
    line keeps its ``\\r``.  ``start``/``end`` are stream positions,
    comparable with marks.  ``echo`` is true for the shell's echo of a
    command the harness sent (an :class:`EchoLine`).
    """

    mono: float
    wall: float
    text: str
    raw: bytes = b""
    start: int = 0
    end: int = 0
    partial: bool = False

    @property
    def echo(self) -> bool:
        """Whether this is the shell's echo of a sent command (see :class:`EchoLine`)."""
        return False


@dataclass(frozen=True, slots=True)
class EchoLine(Line):
    """The shell's echo of a command the harness sent: ``text`` empty, ``raw`` as received.

    Kept as a line so positions and the capture stay exact; ``expect`` skips
    it, and guards and triggers see only its empty text.  A subclass, not a
    field: a frozen dataclass pays for every field of every line in the
    reader's hot loop, and echoes are rare.
    """

    @property
    def echo(self) -> bool:
        return True


@dataclass(frozen=True)
class LineMatch:
    """What :meth:`Console.expect` found; ``index`` says which of several patterns matched."""

    line: Line
    match: re.Match[str]
    index: int = 0


@dataclass
class Gap:
    """An interval (harness clock) during which the port was not there.

    ``end`` is None while the port is still absent.  Output the device
    produced inside a gap is lost by nature (there was no port to read).
    """

    start: float
    end: float | None = None
    reason: str = ""

    @property
    def duration(self) -> float | None:
        return None if self.end is None else self.end - self.start


@dataclass(frozen=True)
class Firing:
    """One run of a trigger action: when the line came, when it was due, when it ran."""

    line: Line
    due: float          # line.mono + delay
    started: float      # clock.now() just before action()
    finished: float     # clock.now() just after it returned (or raised)
    error: str | None = None


@dataclass(eq=False)
class Trigger:
    """Run ``action()`` when a line matches ``pattern`` (see :meth:`Console.trigger`)."""

    pattern: Pattern[str]
    action: Callable[[], object]
    delay: float = 0.0
    once: bool = True
    inline: bool = False
    since: int = 0
    armed: bool = True
    firings: list[Firing] = field(default_factory=list)
    _done: threading.Event = field(default_factory=threading.Event, repr=False)
    _cancel: Callable[[], None] | None = field(default=None, repr=False)

    def cancel(self) -> None:
        """Disarm; a firing already scheduled (delay) is dropped, one running completes."""
        if self._cancel is not None:
            self._cancel()
        else:
            self.armed = False

    def wait(self, timeout: float) -> Firing:
        """Block until the action has run once (returns its first firing)."""
        if not self._done.wait(timeout):
            raise BenchTimeout(f"trigger {self.pattern.pattern!r} did not fire within {timeout:.2f} s")
        return self.firings[0]

    @property
    def fired(self) -> bool:
        return bool(self.firings)


@dataclass(eq=False)
class Guard:
    """A pattern that must not appear (see :meth:`Console.forbid`)."""

    pattern: Pattern[str]
    since: int
    hits: list[Line] = field(default_factory=list)


# ---------------------------------------------------------------------- errors


class ConsoleError(HarnessError):
    """The console cannot do what was asked (port gone, closed, broken URL)."""


class ConsoleGone(ConsoleError):
    """Tried to send while the port was absent."""


class ForbiddenOutput(ConsoleError):
    """A guarded pattern (panic, assert) appeared in the device output."""

    def __init__(self, console: str, guard: Guard, line: Line, more: int = 0):
        self.guard = guard
        self.line = line
        extra = f" (and {more} more forbidden line(s))" if more else ""
        super().__init__(f"console {console}: forbidden output matching {guard.pattern.pattern!r} "
                         f"at {line.mono:.6f}: {escape(line.raw)!s}{extra}")


class TriggerFailed(ConsoleError):
    """A trigger action raised: the fault was not injected as planned."""


class ConsoleTimeout(BenchTimeout):
    """``expect`` saw no matching line in time; the message says what it did see."""

    def __init__(self, message: str, patterns: Sequence[str], timeout: float, present: bool,
                 last_lines: Sequence[Line]):
        self.patterns = list(patterns)
        self.timeout = timeout
        self.present = present
        self.last_lines = list(last_lines)
        super().__init__(message)


# --------------------------------------------------------------------- console


class _Vanished(Exception):
    """Internal: the port went away (read error, EOF, path gone)."""


@dataclass(order=True)
class _Scheduled:
    due: float
    seq: int
    trigger: Trigger = field(compare=False)
    line: Line = field(compare=False)


@dataclass
class _Echo:
    """A sent command whose echo may still arrive within ``left`` lines."""

    text: str
    left: int = _ECHO_WINDOW


def _compile(pattern: PatternLike | Sequence[PatternLike]) -> list[Pattern[str]]:
    if isinstance(pattern, (str, re.Pattern)):
        pattern = [pattern]
    out = []
    for p in pattern:
        out.append(p if isinstance(p, re.Pattern) else re.compile(p))
    if not out:
        raise ValueError("expect needs at least one pattern")
    return out


def _local_path(url: str) -> bool:
    return "://" not in url


class Console:
    """A serial console read by one background thread (see the module docstring).

    ``url`` is anything :func:`serial.serial_for_url` opens: ``/dev/ttyUSB0``,
    ``/dev/serial/by-id/usb-...``, ``rfc2217://host:port``,
    ``socket://host:port``.  The port is opened at once; if it is absent and
    ``reopen`` is true the console starts inside a gap and opens it when it
    appears (a board whose USB port exists only while powered), otherwise
    :class:`ConsoleError` is raised.  ``prompt`` is the shell's prompt (the
    device file's ``firmware.prompt``), stripped from the start of every line.
    """

    def __init__(self, url: str, baudrate: int = 115200, capture_path: Path | str | None = None,
                 reopen: bool = True, *, line_ending: str = "\r\n", char_delay: float = 0.0,
                 partial_idle: float = 0.05, poll_interval: float = 0.02, presence_check: float = 0.25,
                 write_timeout: float = 2.0, name: str | None = None, redact: Sequence[str] = (),
                 prompt: str | None = None):
        self.url = str(url)
        self.baudrate = baudrate
        self.reopen = reopen
        self.line_ending = line_ending
        self.char_delay = char_delay
        self.partial_idle = partial_idle
        self.poll_interval = poll_interval
        self.presence_check = presence_check
        self.write_timeout = write_timeout
        self.name = name or self.url
        self.capture_path = Path(capture_path) if capture_path is not None else None
        #: patterns for secrets a firmware may print (an Mbed TLS debug dump of
        #: the master secret): replaced before a line is stored, matched or
        #: captured, so they never reach a log, report or exception
        self._redact = [re.compile(p.encode("utf-8")) for p in redact]
        self.prompt = prompt
        self._clean = ShellCleaner(prompt)
        self._splitter = LineSplitter()
        self._echoes: list[_Echo] = []              # commands sent whose echo may still come

        self._cond = threading.Condition()          # guards everything below
        self._port_lock = threading.Lock()          # port object vs. writers
        self._lines: list[Line] = []
        self._gaps: list[Gap] = []
        self._pos = 0                               # bytes received so far
        self._mark = 0
        self._pending = b""
        self._pending_start = 0
        self._last_rx = clock.stamp()
        self._guards: list[Guard] = []
        self._violations: list[tuple[Guard, Line]] = []
        self._triggers: list[Trigger] = []
        self._problems: list[ConsoleError] = []     # trigger failures, reader crash
        self._port: serial.SerialBase | None = None
        self._rdev: int | None = None
        self._present = False
        self._opens = 0
        self._closed = False
        self._reader_alive = False
        self._stop = threading.Event()
        # The trigger schedule has its own lock: waking the trigger thread must
        # not wait for the reader to finish writing the capture under _cond.
        self._tcond = threading.Condition(threading.Lock())
        self._sched: list[_Scheduled] = []
        self._tstop = False
        self._sched_seq = itertools.count()
        self._trigger_thread: threading.Thread | None = None
        self._capture = CaptureWriter(self.capture_path) if self.capture_path is not None else None

        try:
            port = self._open_port()
        except ValueError as exc:
            self._close_capture("open failed")
            raise ConsoleError(f"console {self.name}: cannot use URL {self.url!r}: {exc}") from None
        except (serial.SerialException, OSError) as exc:
            if not reopen:
                self._close_capture("open failed")
                raise ConsoleError(f"console {self.name}: cannot open {self.url}: {exc}") from None
            st = clock.stamp()
            # INFO, not WARNING: on a board whose USB port exists only while
            # powered this is the normal start.
            log.info("console %s: port not present yet (%s); waiting for it", self.name, exc)
            with self._cond:
                self._gaps.append(Gap(st.mono, None, f"absent at open: {exc}"))
                self._event(st, f"absent at open, waiting for it: {exc}")
        else:
            self._attach(port, clock.stamp())
        self._reader_alive = True
        self._reader = threading.Thread(target=self._run, name=f"console-reader {self.name}", daemon=True)
        self._reader.start()

    # ------------------------------------------------------------ public API

    def __enter__(self) -> Console:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Console({self.url!r}, present={self._present}, lines={len(self._lines)})"

    @property
    def present(self) -> bool:
        """Whether the port is open right now."""
        return self._present

    @property
    def position(self) -> int:
        """Bytes received so far (the stream position a mark would take now)."""
        with self._cond:
            return self._pos

    @property
    def lines(self) -> list[Line]:
        """A snapshot of every complete (or cut-off partial) line received so far."""
        with self._cond:
            return list(self._lines)

    @property
    def gaps(self) -> list[Gap]:
        """A snapshot of the gaps; the last one has ``end=None`` while the port is absent."""
        with self._cond:
            return [replace(g) for g in self._gaps]

    @property
    def pending(self) -> bytes:
        """Bytes of the current, not yet terminated line."""
        with self._cond:
            return self._pending

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
            self._mark = self._pos
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
            checked = -1            # _pos when the idle partial line last failed to match
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
                if self._pending and self._pos > start and checked != self._pos:
                    ready_at = self._last_rx.mono + self.partial_idle
                    if now >= ready_at:
                        found = self._match_partial(pats)
                        if found is not None:
                            return found
                        checked = self._pos
                    else:
                        wake = min(wake, ready_at)
                if now >= deadline:
                    raise self._timeout_error(pats, timeout, start)
                if self._closed or not self._reader_alive:
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
            g = Guard(_compile(pattern)[0], since=self._pos)
            self._guards.append(g)
            return g

    def allow(self, guard: Guard) -> None:
        """Remove a guard set by :meth:`forbid`."""
        with self._cond:
            if guard in self._guards:
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
            if self._closed:
                raise ConsoleError(f"console {self.name} is closed")
            t.since = self._pos
            self._triggers.append(t)
            if self._trigger_thread is None and not (inline and t.delay <= 0):
                self._trigger_thread = threading.Thread(target=self._trigger_loop,
                                                        name=f"console-trigger {self.name}", daemon=True)
                self._trigger_thread.start()
        return t

    def cancel(self, trig: Trigger) -> None:
        """Disarm a trigger; a firing already scheduled (delay) is dropped."""
        with self._cond:
            trig.armed = False
            if trig in self._triggers:
                self._triggers.remove(trig)
        with self._tcond:
            self._sched = [s for s in self._sched if s.trigger is not trig]
            heapq.heapify(self._sched)

    def wait_present(self, timeout: float) -> None:
        """Block until the port is open (after a power-up re-enumeration)."""
        deadline = clock.now() + timeout
        with self._cond:
            while not self._present:
                left = deadline - clock.now()
                if left <= 0:
                    raise ConsoleTimeout(f"console {self.name}: port {self.url} did not appear within "
                                         f"{timeout:.1f} s ({self._presence_text()})", [], timeout, False,
                                         self._lines[-_SHOW_LINES:])
                if self._closed:
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
        if wait > 0 and not self._present:
            try:
                self.wait_present(wait)
            except ConsoleTimeout:
                pass
        with self._cond:
            self._cut_idle_partial()
        with self._port_lock:
            port = self._port
            if port is None or not self._present:
                raise ConsoleGone(f"console {self.name}: cannot send {data!r}: port {self.url} is not "
                                  f"present ({self._presence_text()})")
            st = clock.stamp()
            with self._cond:
                self._await_echo(line)
            try:
                if delay > 0:
                    for i in range(len(data)):
                        port.write(data[i:i + 1])
                        port.flush()
                        time.sleep(delay)
                else:
                    port.write(data)
            except serial.SerialTimeoutException as exc:
                raise ConsoleError(f"console {self.name}: sending {data!r} timed out after "
                                   f"{self.write_timeout:.1f} s (device not reading?): {exc}") from None
            except (serial.SerialException, OSError) as exc:
                raise ConsoleGone(f"console {self.name}: sending {data!r} failed, port {self.url} "
                                  f"went away: {exc}") from None
        with self._cond:
            if self._capture is not None:
                self._capture.sent(st.mono, st.wall, data)
        line_log.debug("%s > %r", self.name, data)

    def _await_echo(self, line: str | bytes) -> None:
        """Expect the shell to echo ``line`` within the next lines (see :meth:`_take_echoes`). Lock held."""
        said = self._clean(line.encode("utf-8") if isinstance(line, str) else bytes(line)).strip()
        if said:
            self._echoes.append(_Echo(said))

    def close(self) -> None:
        """Stop the threads, close the port, flush a pending partial line, close the capture file."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            self._cond.notify_all()
        with self._tcond:
            self._tstop = True
            self._sched.clear()
            self._tcond.notify_all()
        self._stop.set()
        if self._reader.is_alive() and self._reader is not threading.current_thread():
            self._reader.join(timeout=5.0)
            if self._reader.is_alive():
                log.error("console %s: reader thread did not stop", self.name)
        tt = self._trigger_thread
        if tt is not None and tt.is_alive() and tt is not threading.current_thread():
            tt.join(timeout=5.0)
            if tt.is_alive():
                log.error("console %s: a trigger action is still running after 5 s", self.name)
        self._detach()
        st = clock.stamp()
        with self._cond:
            self._flush_partial(st)
            self._reader_alive = False
            self._cond.notify_all()
        self._close_capture("closed")
        log.info("console %s closed (%d lines, %d gaps)", self.name, len(self._lines), len(self._gaps))

    # --------------------------------------------------------- port handling

    def _open_port(self) -> serial.SerialBase:
        """Open the URL without pyserial's input flush.

        pyserial empties the input buffer on open.  On a port that just
        re-appeared, that buffer holds the boot banner the device printed
        while we were polling, so the flush would lose exactly the lines a
        power-loss test needs.  Instance attributes shadow the methods open()
        calls for the duration of the open.
        """
        port = serial.serial_for_url(self.url, baudrate=self.baudrate, timeout=self.poll_interval,
                                     write_timeout=self.write_timeout, do_not_open=True)
        noop = lambda: None  # noqa: E731
        port._reset_input_buffer = noop  # type: ignore[attr-defined]
        port.reset_input_buffer = noop  # type: ignore[method-assign]
        try:
            try:
                port.open()
            except NotImplementedError:
                # rfc2217:// has no write timeout; a blocked write there is
                # bounded by the TCP connection instead.
                port.write_timeout = None
                port.open()
        finally:
            for attr in ("_reset_input_buffer", "reset_input_buffer"):
                port.__dict__.pop(attr, None)
        if not (_PosixSerial is not None and isinstance(port, _PosixSerial)) and hasattr(port, "fileno"):
            try:
                port.fileno()
                port.timeout = 0        # select() waits, read() just drains
            except Exception:
                pass
        return port

    def _attach(self, port: serial.SerialBase, st: clock.Stamp) -> None:
        rdev = None
        if _local_path(self.url) and getattr(port, "fd", None) is not None:
            try:
                rdev = os.fstat(port.fd).st_rdev  # type: ignore[attr-defined]
            except OSError:
                rdev = None
        with self._port_lock:
            self._port = port
            self._rdev = rdev
        with self._cond:
            self._present = True
            self._opens += 1
            if self._gaps and self._gaps[-1].end is None:
                gap = self._gaps[-1]
                gap.end = st.mono
                self._event(st, f"reopened {self.url} after {gap.end - gap.start:.3f} s")
                log.info("console %s: port back after %.3f s", self.name, gap.end - gap.start)
            else:
                self._event(st, f"opened {self.url} at {self.baudrate} baud")
                log.info("console %s: opened", self.name)
            self._cond.notify_all()

    def _detach(self) -> None:
        with self._port_lock:
            port, self._port = self._port, None
            self._present = False
        if port is not None:
            try:
                port.close()
            except Exception as exc:  # a vanished port may fail to close cleanly
                log.debug("console %s: close after vanish: %s", self.name, exc)

    def _vanished(self, reason: str) -> None:
        st = clock.stamp()
        self._detach()
        with self._cond:
            self._flush_partial(self._last_rx)
            self._splitter.reset()          # an LF after the gap is a line of its own
            self._echoes.clear()            # a command sent before the gap will not be echoed
            self._gaps.append(Gap(st.mono, None, reason))
            self._event(st, f"vanished: {reason}")
            self._cond.notify_all()
        log.warning("console %s: port vanished (%s)%s", self.name, reason,
                    "; polling for it" if self.reopen else "; reopen disabled")

    def _try_reopen(self) -> bool:
        if _local_path(self.url) and not os.path.exists(self.url):
            return False
        try:
            port = self._open_port()
        except (serial.SerialException, OSError, ValueError) as exc:
            log.debug("console %s: reopen failed: %s", self.name, exc)
            return False
        self._attach(port, clock.stamp())
        return True

    def _path_problem(self) -> str | None:
        """Why the path no longer leads to the tty we hold, if it does not."""
        if self._rdev is None:
            return None
        try:
            st = os.stat(self.url)
        except FileNotFoundError:
            return f"{self.url} disappeared"
        except OSError as exc:
            return f"{self.url}: {exc}"
        if stat.S_ISCHR(st.st_mode) and st.st_rdev != self._rdev:
            return f"{self.url} now leads to another device"
        return None

    # ------------------------------------------------------------ reader

    def _read_chunk(self, port: serial.SerialBase, wait: float) -> bytes:
        """Return what arrives within ``wait`` seconds (b"" if nothing); raise _Vanished."""
        if _PosixSerial is not None and isinstance(port, _PosixSerial):
            # Straight to the fd: pyserial's read(n) waits for n bytes, and
            # read(in_waiting) needs an ioctl plus a first 1-byte read.  One
            # select + one read gives the chunk the moment it lands.
            fd = port.fd
            try:
                ready, _, _ = select.select([fd], [], [], wait)
                if not ready:
                    return b""
                data = os.read(fd, _READ_SIZE)
            except BlockingIOError:
                return b""
            except InterruptedError:
                return b""
            except OSError as exc:
                if exc.errno in (errno.EAGAIN, errno.EINTR):
                    return b""
                raise _Vanished(f"read failed: {exc}") from None
            if not data:
                raise _Vanished("end of file (device disconnected)")
            return data
        try:
            if port.timeout == 0:
                ready, _, _ = select.select([port.fileno()], [], [], wait)
                if not ready:
                    return b""
                data = port.read(_READ_SIZE)
                if not data:
                    raise _Vanished("end of stream")
                return data
            return port.read(max(1, min(port.in_waiting, _READ_SIZE)))
        except (serial.SerialException, OSError, ValueError) as exc:
            raise _Vanished(f"read failed: {exc}") from None

    def _run(self) -> None:
        last_check = clock.now()
        try:
            while not self._stop.is_set():
                port = self._port
                if port is None:
                    if not self.reopen:
                        break
                    if not self._try_reopen():
                        # A local path costs one stat() per poll; a network URL
                        # costs a TCP connect, so poll it less eagerly.
                        self._stop.wait(self.poll_interval if _local_path(self.url)
                                        else max(self.poll_interval, 0.1))
                    last_check = clock.now()
                    continue
                try:
                    data = self._read_chunk(port, self.poll_interval)
                except _Vanished as exc:
                    if self._stop.is_set():
                        break
                    self._vanished(str(exc))
                    continue
                if data:
                    self._feed(data, clock.stamp())
                    continue
                now = clock.now()
                if now - last_check >= self.presence_check:
                    last_check = now
                    problem = self._path_problem()
                    if problem is not None:
                        self._drain(port)
                        self._vanished(problem)
        except Exception as exc:  # a bug must not silently stop the capture
            log.exception("console %s: reader thread crashed", self.name)
            with self._cond:
                self._problems.append(ConsoleError(f"console {self.name}: reader thread crashed: {exc!r}"))
        finally:
            with self._cond:
                self._reader_alive = False
                self._cond.notify_all()

    def _drain(self, port: serial.SerialBase) -> None:
        """Read what is left before giving up a port whose path went away."""
        try:
            while True:
                data = self._read_chunk(port, 0.0)
                if not data:
                    return
                self._feed(data, clock.stamp())
        except _Vanished:
            return

    def _feed(self, data: bytes, st: clock.Stamp) -> None:
        """Split a received chunk into lines; guards, triggers, capture; wake waiters."""
        with self._cond:
            if self._pending:
                buf = self._pending + data
                pos = self._pending_start
            else:
                buf = data
                pos = self._pos
            self._pos += len(data)
            self._last_rx = st
            skipped, parts, cr_only, tail = self._splitter.split(buf)
            run_now: list[_Scheduled] = []
            if skipped:     # the LF of a CR LF whose CR ended the last read: no line of its own
                pos += skipped
                if self._capture is not None:
                    self._capture.write(line_record(prefix(st.mono, st.wall), b"", False))
            if parts:
                mono, wall = st.mono, st.wall
                new = []
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
                if self._triggers:
                    run_now = self._fire(new)
                if self._guards:
                    self._guard(new)
                self._lines.extend(new)
                if self._capture is not None:
                    pre = prefix(mono, wall)
                    if cr_only is None:
                        self._capture.write("".join([line_record(pre, ln.raw, False) for ln in new]))
                    else:
                        self._capture.write("".join([line_record(pre, ln.raw, False, cr)
                                                     for ln, cr in zip(new, cr_only)]))
                if line_log.isEnabledFor(logging.DEBUG):
                    for ln in new:
                        line_log.debug("%s | %s", self.name, ln.text)
            self._pending = tail
            self._pending_start = pos
            if len(tail) > _MAX_LINE:
                self._flush_partial(st)
            self._cond.notify_all()
        for item in run_now:      # inline triggers: outside the lock, before the next read
            self._execute(item)

    def _fire(self, new: Iterable[Line]) -> list[_Scheduled]:
        """Match triggers; schedule threaded ones, return inline ones for the reader to run. Lock held."""
        now: list[_Scheduled] = []
        for line in new:
            for t in self._triggers:
                if t.armed and line.end > t.since and t.pattern.search(line.text):
                    if t.once:
                        t.armed = False
                    item = _Scheduled(line.mono + t.delay, next(self._sched_seq), t, line)
                    if t.inline and t.delay <= 0:
                        now.append(item)
                    else:
                        with self._tcond:
                            heapq.heappush(self._sched, item)
                            self._tcond.notify()
        self._triggers = [t for t in self._triggers if t.armed]
        return now

    def _guard(self, new: Iterable[Line]) -> None:
        for line in new:
            for g in self._guards:
                if line.end > g.since and g.pattern.search(line.text):
                    g.hits.append(line)
                    self._violations.append((g, line))
                    log.error("console %s: forbidden output %r: %s", self.name, g.pattern.pattern, line.text)

    def _take_echoes(self, new: list[Line]) -> list[Line]:
        """Blank the echo of each sent command among ``new`` (one per send, within the window). Lock held."""
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

    def _flush_partial(self, st: clock.Stamp) -> Line | None:
        """Turn the pending bytes into a partial Line (port vanished / closing / matched). Lock held."""
        if not self._pending:
            return None
        raw = self._scrub(self._pending) if self._redact else self._pending
        line = Line(st.mono, st.wall, self._clean(raw), raw, self._pending_start, self._pos, True)
        if self._echoes:
            (line,) = self._take_echoes([line])
        self._pending = b""
        self._pending_start = self._pos
        if self._guards:
            self._guard([line])
        self._lines.append(line)
        if self._capture is not None:
            self._capture.write(line_record(prefix(st.mono, st.wall), raw, True))
        return line

    def _cut_idle_partial(self) -> None:
        """Close a pending partial line nobody is still writing to (a prompt). Lock held."""
        if self._pending and clock.now() - self._last_rx.mono >= self.partial_idle:
            self._flush_partial(self._last_rx)

    def _match_partial(self, pats: Sequence[Pattern[str]]) -> LineMatch | None:
        """Match the idle pending line, cleaned; a bare prompt or a command's echo is no answer."""
        raw = self._scrub(self._pending) if self._redact else self._pending
        text = self._clean(raw)
        if not text or any(e.text == text.strip() for e in self._echoes):
            return None
        for i, p in enumerate(pats):
            m = p.search(text)
            if m is not None:
                line = self._flush_partial(self._last_rx)
                assert line is not None
                self._mark = max(self._mark, line.end)
                return LineMatch(line, m, i)
        return None

    # ------------------------------------------------------------ triggers

    def _trigger_loop(self) -> None:
        while True:
            with self._tcond:
                while True:
                    if self._tstop:
                        return
                    if self._sched:
                        wait = self._sched[0].due - clock.now()
                        if wait <= 0:
                            item = heapq.heappop(self._sched)
                            break
                        self._tcond.wait(wait)
                    else:
                        self._tcond.wait()
            self._execute(item)

    def _execute(self, item: _Scheduled) -> None:
        """Run one action and record it (trigger thread, or reader for inline triggers). Lock NOT held."""
        trig = item.trigger
        started = clock.now()
        error = None
        try:
            trig.action()
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
            log.error("console %s: trigger %r action failed: %s", self.name, trig.pattern.pattern, error)
        finished = clock.now()
        firing = Firing(item.line, item.due, started, finished, error)
        with self._cond:
            trig.firings.append(firing)
            self._event(clock.stamp(), f"trigger {trig.pattern.pattern!r} fired at {started:.6f} "
                                       f"({(started - item.line.mono) * 1e3:.3f} ms after the line)"
                                       + (f", action failed: {error}" if error else ""))
            if error:
                self._problems.append(TriggerFailed(
                    f"console {self.name}: trigger {trig.pattern.pattern!r} on line "
                    f"{item.line.text!r} failed: {error}"))
            self._cond.notify_all()
        trig._done.set()
        log.info("console %s: trigger %r fired %.3f ms after its line", self.name,
                 trig.pattern.pattern, (started - item.line.mono) * 1e3)

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
        if self._violations:
            guard, line = self._violations[0]
            more = len(self._violations) - 1
            self._violations.clear()
            raise ForbiddenOutput(self.name, guard, line, more)
        if self._problems:
            problem = self._problems.pop(0)
            raise problem

    def _presence_text(self) -> str:
        gaps = len(self._gaps)
        if self._present:
            return f"port present, opened {self._opens} time(s), {gaps} gap(s)"
        if self._closed:
            return "console closed"
        if self._gaps and self._gaps[-1].end is None:
            g = self._gaps[-1]
            return (f"port ABSENT for the last {clock.now() - g.start:.2f} s ({g.reason}); "
                    + ("polling for it to come back" if self.reopen else "reopen disabled"))
        return "port ABSENT"

    def _tail_text(self, start: int) -> str:
        shown = self._lines[-_SHOW_LINES:]
        after = len(self._lines) - self._first_after(start)
        out = [f"{after} line(s) arrived after the mark; last {len(shown)} of {len(self._lines)} received:"]
        for ln in shown:
            flag = " " if ln.end > start else "-"
            body = escape(ln.raw[:-1] if ln.raw.endswith(b"\r") else ln.raw)
            out.append(f"  {flag} {ln.mono:.6f} {body}{' (partial)' if ln.partial else ''}")
        if self._pending:
            out.append(f"  + pending, no newline yet: {escape(self._pending)}")
        if not shown and not self._pending:
            out.append("  (nothing)")
        return "\n".join(out)

    def _timeout_error(self, pats: Sequence[Pattern[str]], timeout: float, start: int) -> ConsoleTimeout:
        names = [p.pattern for p in pats]
        what = " or ".join(repr(n) for n in names)
        msg = (f"console {self.name}: no line matching {what} within {timeout:.2f} s after mark {start}\n"
               f"{self._presence_text()}\n{self._tail_text(start)}")
        return ConsoleTimeout(msg, names, timeout, self._present, self._lines[-_SHOW_LINES:])

    def _dead_message(self, pats: Sequence[Pattern[str]]) -> str:
        what = " or ".join(repr(p.pattern) for p in pats)
        state = "closed" if self._closed else "no longer reading (port gone and reopen disabled)"
        return f"console {self.name} is {state}; cannot wait for {what}\n{self._tail_text(self._mark)}"
