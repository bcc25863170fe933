"""A port that vanishes and comes back (USB CDC re-enumeration on power loss)."""

from __future__ import annotations

import os
import tty

import pytest

from consolekit import wait_until
from harness import consolefile

CYCLES = 20
LINES_PER_CYCLE = 25


@pytest.mark.timeout(60)
def test_twenty_vanish_cycles_every_gap_recorded_no_line_lost(pty_device, console_factory, tmp_path):
    """Each cycle: numbered lines while present, then the pty closes and the symlink goes.

    Half of each cycle's lines are written the instant the new pty appears,
    before the console can have reopened it: they wait in the kernel buffer,
    and must not be flushed away by the reopen.
    """
    capture = tmp_path / "vanish.txt"
    con = console_factory(pty_device.link, capture_path=capture)
    sent: list[str] = []
    stream = b""
    n = 0
    for cycle in range(CYCLES):
        if cycle:
            pty_device.appear()
        for half in range(2):
            chunk = b""
            for _ in range(LINES_PER_CYCLE // 2 + half):
                text = f"cycle {cycle:02d} line {n:05d} " + "x" * (n % 37)
                sent.append(text)
                chunk += text.encode() + b"\r\n"
                n += 1
            pty_device.write(chunk)
            stream += chunk
        # "while present": the device lives until its last line has been read,
        # as a real one does until the power is cut.
        con.expect(f"line {n - 1:05d} ", timeout=10)
        pty_device.vanish()
        wait_until(lambda: len(con.gaps) == cycle + 1 and not con.present, what=f"gap {cycle + 1}")
    gaps = con.gaps
    assert len(gaps) == CYCLES
    for i, gap in enumerate(gaps[:-1]):
        assert gap.end is not None and gap.start < gap.end < gaps[i + 1].start
    assert gaps[-1].end is None  # still gone
    received = [ln.text for ln in con.lines]
    assert received == sent  # in order, none lost, none doubled
    assert consolefile.received(capture) == stream
    kinds = [r.kind for r in consolefile.read(capture)]
    assert kinds.count(consolefile.EVENT) >= 1 + 2 * CYCLES - 1  # opened, 20 vanished, 19 reopened


def test_lines_stamped_inside_presence_windows(pty_device, console_factory):
    con = console_factory(pty_device.link)
    pty_device.write(b"before\r\n")
    before = con.expect("before", timeout=5).line
    pty_device.vanish()
    wait_until(lambda: not con.present, what="gap")
    pty_device.appear()
    pty_device.write(b"after\r\n")
    after = con.expect("after", timeout=10).line
    (gap,) = con.gaps
    assert before.mono <= gap.start < gap.end <= after.mono


def test_partial_line_flushed_at_vanish_does_not_join_next_boot(pty_device, console_factory):
    con = console_factory(pty_device.link)
    mark = con.mark()
    pty_device.write(b"sim> flash: wri")
    wait_until(lambda: con.pending == b"sim> flash: wri", what="pending")
    pty_device.vanish()
    wait_until(lambda: not con.present, what="gap")
    pty_device.appear()
    pty_device.write(b"\xff\x00simfw 1.0\r\n")
    m = con.expect("simfw", timeout=10, since=mark)
    assert m.line.raw == b"\xff\x00simfw 1.0\r"
    cut = [ln for ln in con.lines if ln.partial]
    assert [ln.raw for ln in cut] == [b"sim> flash: wri"]


def test_path_repointed_while_old_pty_still_open(pty_device, console_factory, tmp_path):
    """A bench that keeps the old pty open but points the link at a new one is followed too."""
    con = console_factory(pty_device.link, presence_check=0.05)
    pty_device.write(b"old\r\n")
    con.expect("old", timeout=5)
    master, slave = os.openpty()
    tty.setraw(slave)
    try:
        tmp = tmp_path / "uart.tmp"
        os.symlink(os.ttyname(slave), tmp)
        os.replace(tmp, pty_device.link)
        wait_until(lambda: len(con.gaps) == 1 and con.present, what="switch to the new pty")
        assert "another device" in con.gaps[0].reason or "disappeared" in con.gaps[0].reason
        os.write(master, b"new\r\n")
        assert con.expect("new", timeout=5).line.text == "new"
    finally:
        os.close(master)
        os.close(slave)


def test_no_reopen_records_open_gap_and_stops(pty_device, console_factory):
    from harness.console import ConsoleError

    con = console_factory(pty_device.link, reopen=False)
    pty_device.vanish()
    wait_until(lambda: len(con.gaps) == 1, what="gap")
    pty_device.appear()
    with pytest.raises(ConsoleError, match="reopen disabled"):
        con.expect("anything", timeout=5)
    assert con.gaps[0].end is None and not con.present
