"""Triggers and guards on their own: lines handed in by the test, no port and no reader."""

from __future__ import annotations

import re
import threading

import pytest

from harness import clock
from harness.consolerecords import ConsoleError, ForbiddenOutput, Line, Trigger, TriggerFailed
from harness.consoletrig import Guards, Triggers


def line(text: str, end: int, mono: float | None = None) -> Line:
    return Line(clock.now() if mono is None else mono, 0.0, text, text.encode(), end - len(text) - 1, end)


class Recorder:
    """What the console would get from its triggers: capture events and queued errors."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.events: list[str] = []
        self.problems: list[ConsoleError] = []

    def triggers(self) -> Triggers:
        return Triggers("t", self.cond, lambda st, msg: self.events.append(msg), self.problems.append)


def test_guards_record_later_lines_and_raise_the_first_once() -> None:
    guards = Guards("g")
    g = guards.add(re.compile("panic"), since=10)
    guards.check([line("panic early", 10), line("ok", 20), line("panic: one", 30), line("panic: two", 40)])
    assert [ln.text for ln in g.hits] == ["panic: one", "panic: two"]
    with pytest.raises(ForbiddenOutput, match=r"console g: forbidden output matching 'panic' .*panic: one "
                                              r"\(and 1 more forbidden line\(s\)\)"):
        guards.raise_first()
    guards.raise_first()        # raised once
    guards.remove(g)
    guards.remove(g)            # removing twice is harmless
    guards.check([line("panic again", 50)])
    guards.raise_first()


def test_an_inline_trigger_is_handed_back_and_needs_no_thread() -> None:
    rec = Recorder()
    trigs = rec.triggers()
    ran: list[int] = []
    t = Trigger(re.compile("cut here"), lambda: ran.append(1), inline=True, since=5)
    with rec.cond:
        trigs.arm(t)
        items = trigs.match([line("cut here", 5), line("cut here", 20), line("cut here", 30)])
    assert trigs._thread is None
    [item] = items                          # once: the first line after ``since`` only
    assert item.line.end == 20 and trigs.armed == []
    trigs.execute(item)
    assert ran == [1] and t.fired and t.wait(0).line is item.line
    assert len(rec.events) == 1 and rec.events[0].startswith("trigger 'cut here' fired at ")


def test_a_failing_action_is_reported_to_the_console() -> None:
    rec = Recorder()
    trigs = rec.triggers()
    t = Trigger(re.compile("go"), lambda: 1 / 0, inline=True)
    with rec.cond:
        trigs.arm(t)
        [item] = trigs.match([line("go", 3)])
    trigs.execute(item)
    assert t.firings[0].error == "ZeroDivisionError: division by zero"
    [problem] = rec.problems
    assert isinstance(problem, TriggerFailed) and "trigger 'go' on line 'go' failed" in str(problem)
    assert rec.events[0].endswith(", action failed: ZeroDivisionError: division by zero")


def test_delayed_triggers_run_in_the_thread_in_due_order_and_cancel_drops_them() -> None:
    rec = Recorder()
    trigs = rec.triggers()
    order: list[str] = []
    done = threading.Event()
    base = clock.now()
    late = Trigger(re.compile("x"), lambda: (order.append("late"), done.set()), delay=0.10)
    soon = Trigger(re.compile("x"), lambda: order.append("soon"), delay=0.02)
    dropped = Trigger(re.compile("x"), lambda: order.append("dropped"), delay=60)
    with rec.cond:
        for t in (late, soon, dropped):
            trigs.arm(t)
        assert trigs.match([line("x", 2, mono=base)]) == []
    with trigs._tcond:
        assert any(s.trigger is dropped for s in trigs._sched)
    trigs.cancel(dropped)
    with trigs._tcond:
        assert all(s.trigger is not dropped for s in trigs._sched)
    assert done.wait(5)
    trigs.stop()
    trigs.join(timeout=5)
    assert order == ["soon", "late"] and not dropped.fired
    assert late.firings[0].due == pytest.approx(base + 0.10)
    assert late.firings[0].started >= base + 0.10


def test_a_guard_sees_a_panic_line_behind_line_noise() -> None:
    """A stray ESC before "panic" makes the cleaner eat the "p"; the guard still sees the line."""
    import re as _re

    from harness.consoletrig import Guards
    from harness.consolerecords import Line
    from harness.shellclean import clean

    raw = b"\x1bpanic: HardFault"
    line = Line(1.0, 1.0, clean(raw, None), raw, 0, len(raw) + 1)
    assert "panic" not in line.text           # what the cleaner makes of it
    guards = Guards("noise")
    guard = guards.add(_re.compile("panic"), 0)
    guards.check([line])
    assert guard.hits == [line]
