"""Line assembly on its own: bytes in, stamped lines out, no port and no thread."""

from __future__ import annotations

from harness import clock
from harness.consolelines import LineAssembler
from harness.consolerecords import EchoLine


def test_pending_bytes_join_the_next_read_and_positions_count_every_byte() -> None:
    asm = LineAssembler()
    assert asm.feed(b"ab", clock.stamp()) == (0, [], None)
    assert (asm.pos, asm.pending, asm.pending_start) == (2, b"ab", 0)
    st = clock.stamp()
    skipped, lines, cr_only = asm.feed(b"c\r\nd", st)
    assert (skipped, cr_only) == (0, None)
    [line] = lines
    assert (line.text, line.raw, line.start, line.end, line.partial) == ("abc", b"abc\r", 0, 5, False)
    assert (line.mono, line.wall) == (st.mono, st.wall)
    assert (asm.pos, asm.pending, asm.pending_start, asm.last_rx) == (6, b"d", 5, st)


def test_a_cr_lf_split_across_reads_is_one_line_end_until_the_stream_restarts() -> None:
    asm = LineAssembler()
    _, [x], cr_only = asm.feed(b"x\r", clock.stamp())
    assert cr_only == [True] and (x.text, x.end) == ("x", 2)
    skipped, [y], _ = asm.feed(b"\ny\n", clock.stamp())
    assert skipped == 1 and (y.text, y.start, y.end) == ("y", 3, 5)
    asm.feed(b"z\r", clock.stamp())
    asm.restart()           # the port vanished: the LF after it is a line of its own
    skipped, [empty], _ = asm.feed(b"\n", clock.stamp())
    assert skipped == 0 and (empty.text, empty.raw, empty.start, empty.end) == ("", b"", 7, 8)


def test_cut_turns_the_pending_bytes_into_a_partial_line() -> None:
    asm = LineAssembler(prompt="dev$ ")
    assert asm.cut(clock.stamp()) is None
    asm.feed(b"ok\ndev$ ", clock.stamp())
    assert asm.pending_answer() is None             # a bare prompt is no answer
    asm.feed(b"answ", clock.stamp())
    assert asm.pending_answer() == "answ"
    st = clock.stamp()
    line = asm.cut(st)
    assert line is not None
    assert (line.text, line.raw, line.start, line.end, line.partial, line.mono) == ("answ", b"dev$ answ", 3, 12,
                                                                                   True, st.mono)
    assert (asm.pending, asm.pending_start, asm.pos) == (b"", 12, 12)


def test_the_echo_of_a_sent_command_is_blanked_once_within_the_window() -> None:
    asm = LineAssembler()
    asm.await_echo("status")
    asm.feed(b"status", clock.stamp())
    assert asm.pending_answer() is None             # the echo still pending is no answer either
    _, lines, _ = asm.feed(b"\r\nstatus\r\n", clock.stamp())
    assert isinstance(lines[0], EchoLine) and lines[0].echo and not lines[1].echo
    assert [ln.text for ln in lines] == ["", "status"]
    assert lines[0].raw == b"status\r"
    asm.await_echo("reboot")
    _, lines, _ = asm.feed(b"a\nb\nc\nd\nreboot\n", clock.stamp())
    assert [ln.text for ln in lines] == ["a", "b", "c", "d", "reboot"]     # past the window: a real line


def test_redaction_fingerprints_secrets_and_keeps_the_final_cr() -> None:
    asm = LineAssembler(redact=[r"master=\w+", "key=.*"])
    _, [a, b], _ = asm.feed(b"master=00aa11 ok\r\nkey=s3cret\r\n", clock.stamp())
    assert a.raw.startswith(b"<redacted ") and a.raw.endswith(b"> ok\r") and b"00aa11" not in a.raw
    assert b.raw.startswith(b"<redacted ") and b.raw.endswith(b">\r") and b"s3cret" not in b.raw
    asm.feed(b"key=pending", clock.stamp())
    line = asm.cut(clock.stamp())
    assert line is not None and b"pending" not in line.raw


def test_an_overlong_pending_line_is_reported() -> None:
    asm = LineAssembler()
    asm.feed(b"x" * 65536, clock.stamp())
    assert not asm.overlong
    asm.feed(b"x", clock.stamp())
    assert asm.overlong
