"""Triggers: an action at a precise line, for fault injection."""

from __future__ import annotations

import threading

import pytest

from consolekit import wait_until
from harness import consolefile
from harness.console import TriggerFailed


def test_trigger_fires_once_on_the_right_line(pty_device, console_factory):
    con = console_factory(pty_device.link)
    seen: list[int] = []
    trig = con.trigger(r"flash: writing slot (\w)", lambda: seen.append(len(con.lines)))
    lines = [f"app: line {i}" for i in range(40)]
    lines[25] = "flash: writing slot B seq 4 (2 pages)"
    lines[30] = "flash: writing slot A seq 5 (2 pages)"
    pty_device.write("".join(f"{t}\r\n" for t in lines).encode())
    firing = trig.wait(5)
    assert firing.line.text == lines[25]
    assert firing.due == firing.line.mono
    assert firing.line.mono <= firing.started <= firing.finished
    assert firing.error is None
    con.expect("line 39", timeout=5)
    assert len(trig.firings) == 1 and not trig.armed  # once=True: the second write is ignored
    assert seen and seen[0] >= 26  # the action ran after its line was recorded


def test_trigger_ignores_lines_before_it_was_set(pty_device, console_factory):
    con = console_factory(pty_device.link)
    pty_device.write(b"flash: writing old\r\n")
    con.expect("old", timeout=5)
    trig = con.trigger("flash: writing", lambda: None)
    pty_device.write(b"flash: writing new\r\n")
    assert trig.wait(5).line.text == "flash: writing new"


def test_trigger_repeating_with_delay(pty_device, console_factory):
    con = console_factory(pty_device.link)
    fired = threading.Event()
    count = []

    def action() -> None:
        count.append(1)
        if len(count) == 3:
            fired.set()

    trig = con.trigger("tick", action, delay=0.05, once=False)
    pty_device.write(b"tick 1\r\ntock\r\ntick 2\r\ntick 3\r\n")
    assert fired.wait(5)
    assert [f.line.text for f in trig.firings] == ["tick 1", "tick 2", "tick 3"]
    for f in trig.firings:
        assert f.due == pytest.approx(f.line.mono + 0.05)
        assert f.started >= f.due
    con.cancel(trig)
    pty_device.write(b"tick 4\r\n")
    con.expect("tick 4", timeout=5)
    assert len(trig.firings) == 3


def test_trigger_does_not_fire_on_partial_line(pty_device, console_factory):
    con = console_factory(pty_device.link)
    trig = con.trigger("flash: writing", lambda: None)
    pty_device.write(b"flash: writing")
    wait_until(lambda: con.pending == b"flash: writing", what="pending")
    con.expect("flash: writing", timeout=5)  # expect may cut the partial line off...
    pty_device.write(b" slot B\r\n")
    con.expect("slot B", timeout=5)
    assert not trig.fired                  # ...but triggers wait for complete lines


def test_failing_action_fails_next_expect(pty_device, console_factory, tmp_path):
    capture = tmp_path / "trig.txt"
    con = console_factory(pty_device.link, capture_path=capture)

    def cut_power() -> None:
        raise RuntimeError("supply not reachable")

    trig = con.trigger("flash: writing", cut_power)
    pty_device.write(b"flash: writing slot B\r\nflash: write done\r\n")
    trig.wait(5)
    assert "supply not reachable" in trig.firings[0].error
    with pytest.raises(TriggerFailed, match="supply not reachable"):
        con.expect("write done", timeout=5)
    events = [r.raw.decode() for r in consolefile.read(capture) if r.kind == consolefile.EVENT]
    assert any("fired" in e and "action failed" in e for e in events)


def test_trigger_action_can_cut_the_port(pty_device, console_factory):
    """The fault-injection shape: the action kills the 'device' (its port vanishes)."""
    con = console_factory(pty_device.link)
    trig = con.trigger("flash: writing", pty_device.vanish)
    pty_device.write(b"flash: writing slot B\r\n")
    trig.wait(5)
    wait_until(lambda: len(con.gaps) == 1, what="gap")
    assert con.gaps[0].start >= trig.firings[0].started


def test_slow_action_does_not_stop_the_capture(pty_device, console_factory):
    """A threaded action (a verified power-off takes a while) must not stall the reader:
    the device's last words before its port vanishes are exactly the evidence needed."""
    con = console_factory(pty_device.link)
    release = threading.Event()
    trig = con.trigger("flash: writing", lambda: release.wait(10))
    pty_device.write(b"flash: writing slot B\r\n")
    wait_until(lambda: trig.firings == [] and any("writing" in ln.text for ln in con.lines), what="line")
    pty_device.write(b"flash: write done slot B\r\nsession stored\r\n")
    con.expect("session stored", timeout=5)   # read while the action is still running
    assert not trig.fired
    release.set()
    trig.wait(5)


def test_inline_trigger_runs_in_the_reader_thread(pty_device, console_factory):
    con = console_factory(pty_device.link)
    where: list[str] = []
    trig = con.trigger("flash: writing", lambda: where.append(threading.current_thread().name), inline=True)
    pty_device.write(b"flash: writing slot B\r\n")
    firing = trig.wait(5)
    assert where and where[0].startswith("console-reader")
    assert firing.line.text == "flash: writing slot B"


def test_trigger_cancel_method(pty_device, console_factory):
    con = console_factory(pty_device.link)
    trig = con.trigger("boom", lambda: None, delay=5.0)
    pty_device.write(b"boom\r\n")
    con.expect("boom", timeout=5)
    trig.cancel()                   # the scheduled (delayed) firing is dropped too
    other = con.trigger("bang", lambda: None)
    pty_device.write(b"boom\r\nbang\r\n")
    other.wait(5)
    assert not trig.fired and not trig.armed
