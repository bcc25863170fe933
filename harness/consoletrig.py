"""What a console does when a line matches: triggers (fault injection) and guards (forbidden output).

Trigger actions run by default in a dedicated per-console thread, not in the
reader: an action such as ``supply.off()`` may wait a second for the rail to
discharge, and a reader blocked that long would lose the device's last words
when its port vanishes (the kernel discards unread input on hang-up; a pty
does the same).  ``trigger(..., inline=True)`` runs a quick action in the
reader itself, one thread wake-up sooner (see ``bench/trigger_latency.py``).

Triggers fire on complete (newline-terminated) lines only, because fault
injection must not race a half-received line; guards see cut-off partial
lines too.  Both are matched by the reader under the console's lock; a
guard's violation or a failed action is kept until the console's next
``expect``/``check`` raises it.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
from dataclasses import dataclass, field
from typing import Callable, Iterable, Pattern

from . import clock
from .consolerecords import ConsoleError, Firing, ForbiddenOutput, Guard, Line, Trigger, TriggerFailed

# One logger for the whole console, whichever part speaks.
log = logging.getLogger("harness.console")


@dataclass(order=True)
class Scheduled:
    """A firing that is due at ``due`` (``seq`` keeps equal times in match order)."""

    due: float
    seq: int
    trigger: Trigger = field(compare=False)
    line: Line = field(compare=False)


class Triggers:
    """The triggers of one console: matching, the schedule, and the thread that runs the actions.

    ``cond`` is the console's lock: the armed list and every firing record
    are read under it.  The schedule has its own lock: waking the trigger
    thread must not wait for the reader to finish writing the capture under
    the console's.  ``event`` writes a capture event and ``report`` queues
    an error for the console's next ``expect``/``check`` (both called with
    ``cond`` held).
    """

    def __init__(self, name: str, cond: threading.Condition, event: Callable[[clock.Stamp, str], None],
                 report: Callable[[ConsoleError], None]):
        self.name = name
        self._cond = cond
        self._event = event
        self._report = report
        self.armed: list[Trigger] = []
        self._tcond = threading.Condition(threading.Lock())
        self._sched: list[Scheduled] = []
        self._stopped = False
        self._seq = itertools.count()
        self._thread: threading.Thread | None = None

    def arm(self, trig: Trigger) -> None:
        """Add a trigger; start the thread on the first one that needs it. Console lock held."""
        self.armed.append(trig)
        if self._thread is None and not (trig.inline and trig.delay <= 0):
            self._thread = threading.Thread(target=self._loop, name=f"console-trigger {self.name}", daemon=True)
            self._thread.start()

    def cancel(self, trig: Trigger) -> None:
        """Disarm a trigger and drop its scheduled firings. Console lock NOT held."""
        with self._cond:
            trig.armed = False
            if trig in self.armed:
                self.armed.remove(trig)
        with self._tcond:
            self._sched = [s for s in self._sched if s.trigger is not trig]
            heapq.heapify(self._sched)

    def match(self, new: Iterable[Line]) -> list[Scheduled]:
        """Match triggers; schedule threaded ones, return inline ones for the reader to run. Console lock held."""
        now: list[Scheduled] = []
        for line in new:
            for t in self.armed:
                if t.armed and line.end > t.since and t.pattern.search(line.text):
                    if t.once:
                        t.armed = False
                    item = Scheduled(line.mono + t.delay, next(self._seq), t, line)
                    if t.inline and t.delay <= 0:
                        now.append(item)
                    else:
                        with self._tcond:
                            heapq.heappush(self._sched, item)
                            self._tcond.notify()
        self.armed = [t for t in self.armed if t.armed]
        return now

    def execute(self, item: Scheduled) -> None:
        """Run one action and record it (trigger thread, or reader for inline triggers). Console lock NOT held."""
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
                self._report(TriggerFailed(
                    f"console {self.name}: trigger {trig.pattern.pattern!r} on line "
                    f"{item.line.text!r} failed: {error}"))
            self._cond.notify_all()
        trig._done.set()
        log.info("console %s: trigger %r fired %.3f ms after its line", self.name,
                 trig.pattern.pattern, (started - item.line.mono) * 1e3)

    def stop(self) -> None:
        """Drop every scheduled firing and tell the thread to end (an action running completes)."""
        with self._tcond:
            self._stopped = True
            self._sched.clear()
            self._tcond.notify_all()

    def join(self, timeout: float) -> None:
        """Wait for the thread to end after :meth:`stop` (not from inside an action)."""
        tt = self._thread
        if tt is not None and tt.is_alive() and tt is not threading.current_thread():
            tt.join(timeout=timeout)
            if tt.is_alive():
                log.error("console %s: a trigger action is still running after %g s", self.name, timeout)

    def _loop(self) -> None:
        while True:
            with self._tcond:
                while True:
                    if self._stopped:
                        return
                    if self._sched:
                        wait = self._sched[0].due - clock.now()
                        if wait <= 0:
                            item = heapq.heappop(self._sched)
                            break
                        self._tcond.wait(wait)
                    else:
                        self._tcond.wait()
            self.execute(item)


def _in_noisy_raw(pattern: Pattern[str], line: Line) -> bool:
    """A stray ESC (UART noise at power-up) can make the cleaner drop what follows it: a guard
    must still see a panic line, so it also looks at the bytes as they came."""
    return b"\x1b" in line.raw and pattern.search(line.raw.decode("utf-8", "replace")) is not None


class Guards:
    """The forbidden-output guards of one console and the violations not raised yet. Console lock held."""

    def __init__(self, name: str):
        self.name = name
        self.active: list[Guard] = []
        self._violations: list[tuple[Guard, Line]] = []

    def add(self, pattern: Pattern[str], since: int) -> Guard:
        guard = Guard(pattern, since=since)
        self.active.append(guard)
        return guard

    def remove(self, guard: Guard) -> None:
        if guard in self.active:
            self.active.remove(guard)

    def check(self, new: Iterable[Line]) -> None:
        """Record every line of ``new`` that a guard forbids (it is raised later, by :meth:`raise_first`)."""
        for line in new:
            for g in self.active:
                if line.end > g.since and (g.pattern.search(line.text) or _in_noisy_raw(g.pattern, line)):
                    g.hits.append(line)
                    self._violations.append((g, line))
                    log.error("console %s: forbidden output %r: %s", self.name, g.pattern.pattern, line.text)

    def raise_first(self) -> None:
        """Raise :class:`ForbiddenOutput` for the first violation, counting the rest; then forget them all."""
        if self._violations:
            guard, line = self._violations[0]
            more = len(self._violations) - 1
            self._violations.clear()
            raise ForbiddenOutput(self.name, guard, line, more)
