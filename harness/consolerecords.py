"""What a console hands out: its records (lines, matches, gaps, trigger firings) and its errors.

They live apart from :class:`harness.console.Console` because every part of
the console (port, line assembly, triggers and guards) makes or raises them,
and the console imports those parts, so they cannot import it.  Users
import them from :mod:`harness.console`, which re-exports every one; their
``__module__`` says so too, so a traceback or a pytest summary still names
``harness.console.ConsoleTimeout``.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field
from typing import Callable, Pattern, Sequence

from .consolefile import escape
from .errors import BenchTimeout, HarnessError

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


for _public in (Line, EchoLine, LineMatch, Gap, Firing, Trigger, Guard,
                ConsoleError, ConsoleGone, ForbiddenOutput, TriggerFailed, ConsoleTimeout):
    _public.__module__ = "harness.console"
del _public
