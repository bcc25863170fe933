"""expect, marks, partial lines, timeouts, guards, send: against a real pty."""

from __future__ import annotations

import threading

import pytest

from consolekit import wait_until
from harness.console import ConsoleError, ConsoleGone, ConsoleTimeout, ForbiddenOutput
from harness.errors import BenchTimeout, HarnessError


def test_expect_returns_line_with_stamp_and_match(pty_device, console_factory):
    con = console_factory(pty_device.link)
    pty_device.write(b"boot 1\r\nreset cause: brown-out\r\n")
    m = con.expect(r"reset cause: (?P<cause>[\w-]+)", timeout=5)
    assert m.match.group("cause") == "brown-out"
    assert m.line.text == "reset cause: brown-out"
    assert m.line.raw == b"reset cause: brown-out\r"
    assert not m.line.partial
    assert m.line.mono > 0 and m.line.wall > 1e9


def test_mark_hides_stale_output(pty_device, console_factory):
    con = console_factory(pty_device.link)
    pty_device.write(b"ready\r\n")
    con.expect("ready", timeout=5)
    pty_device.write(b"ready\r\nother\r\n")
    wait_until(lambda: any(ln.text == "other" for ln in con.lines), what="'other'")
    mark = con.mark()  # e.g. just before a power cycle
    with pytest.raises(ConsoleTimeout):
        con.expect("ready", timeout=0.2)
    pty_device.write(b"ready again\r\n")
    m = con.expect("ready", timeout=5)
    assert m.line.text == "ready again"
    assert m.line.end > mark
    # An explicit since looks again at the same window: two boot lines, any order.
    assert con.expect("again", timeout=1, since=mark).line is m.line


def test_current_mark_walks_forward_like_pexpect(pty_device, console_factory):
    con = console_factory(pty_device.link)
    pty_device.write(b"n 1\r\nn 2\r\nn 3\r\n")
    got = [con.expect(r"n (\d)", timeout=5).match.group(1) for _ in range(3)]
    assert got == ["1", "2", "3"]
    with pytest.raises(ConsoleTimeout):
        con.expect(r"n \d", timeout=0.1)


def test_several_patterns_report_which_matched(pty_device, console_factory):
    con = console_factory(pty_device.link)
    pty_device.write(b"connect failed: timeout\r\n")
    m = con.expect([r"connect ok", r"connect failed: (\w+)"], timeout=5)
    assert m.index == 1 and m.match.group(1) == "timeout"


def test_partial_prompt_matches_after_idle_and_is_cut_off(pty_device, console_factory):
    con = console_factory(pty_device.link, partial_idle=0.05)
    pty_device.write(b"ready\r\nsim> ")
    m = con.expect(r"^sim> $", timeout=5)
    assert m.line.partial and m.line.raw == b"sim> "
    # What follows the prompt (the echo of a command) is a new line.
    pty_device.write(b"help\r\n")
    assert con.expect("help", timeout=5).line.text == "help"
    # A prompt received before a mark is not matched after it.
    pty_device.write(b"sim> ")
    wait_until(lambda: con.pending == b"sim> ", what="pending prompt")
    con.mark()
    with pytest.raises(ConsoleTimeout):
        con.expect("sim>", timeout=0.2)


def test_partial_line_not_matched_if_pattern_needs_the_rest(pty_device, console_factory):
    con = console_factory(pty_device.link)
    pty_device.write(b"connect ok resu")
    with pytest.raises(ConsoleTimeout):
        con.expect(r"resumed=(yes|no)", timeout=0.2)
    pty_device.write(b"med=yes\r\n")
    m = con.expect(r"connect ok resumed=(yes|no)", timeout=5)
    assert m.match.group(1) == "yes" and not m.line.partial


def test_timeout_message_port_present(pty_device, console_factory):
    con = console_factory(pty_device.link, name="dut")
    pty_device.write(b"".join(b"line %d\r\n" % i for i in range(15)) + b"sim> ")
    con.expect("line 14", timeout=5)
    with pytest.raises(ConsoleTimeout) as ei:
        con.expect(r"connect ok", timeout=0.1)
    err = ei.value
    assert isinstance(err, BenchTimeout) and isinstance(err, HarnessError)
    text = str(err)
    assert "'connect ok'" in text and "0.10 s" in text
    assert "port present" in text
    assert "line 14" in text and "line 5" in text and "line 4" not in text  # the last ten
    assert "pending, no newline yet: sim>\\x20" in text
    assert err.present is True and len(err.last_lines) == 10


def test_timeout_message_port_absent(pty_device, console_factory):
    con = console_factory(pty_device.link)
    pty_device.write(b"flash: writing slot B\r\n")
    con.expect("flash", timeout=5)
    pty_device.vanish()
    wait_until(lambda: not con.present, what="gap")
    with pytest.raises(ConsoleTimeout) as ei:
        con.expect("write done", timeout=0.1)
    text = str(ei.value)
    assert "port ABSENT" in text and "polling for it" in text
    assert "flash: writing slot B" in text
    assert ei.value.present is False


def test_forbid_fails_next_expect_with_the_line(pty_device, console_factory):
    con = console_factory(pty_device.link)
    pty_device.write(b"panic: before the guard\r\n")
    con.expect("before the guard", timeout=5)
    guard = con.forbid(r"panic|assert")
    pty_device.write(b"working\r\nASSERT no\r\nassert failed: flash.c:42\r\nready\r\n")
    with pytest.raises(ForbiddenOutput) as ei:
        con.expect("ready", timeout=5)
    assert "assert failed: flash.c:42" in str(ei.value)
    assert ei.value.line.text == "assert failed: flash.c:42"
    assert guard.hits == [ei.value.line]
    # Raised once; the test may go on (e.g. to collect evidence).
    assert con.expect("ready", timeout=5).line.text == "ready"
    # A guard also interrupts a wait in progress instead of running into the timeout.
    t = threading.Timer(0.1, pty_device.write, args=(b"kernel panic\r\n",))
    t.start()
    with pytest.raises(ForbiddenOutput):
        con.expect("never printed", timeout=30)
    t.join()
    con.allow(guard)
    pty_device.write(b"panic: allowed now\r\n")
    con.expect("allowed now", timeout=5)
    con.check()


def test_check_raises_for_guard(pty_device, console_factory):
    con = console_factory(pty_device.link)
    con.forbid("Guru Meditation")
    pty_device.write(b"Guru Meditation Error: Core 0 panic'ed\r\nok\r\n")
    wait_until(lambda: any(ln.text == "ok" for ln in con.lines), what="ok")
    with pytest.raises(ForbiddenOutput, match="Guru Meditation Error"):
        con.check()
    con.check()


def test_non_utf8_bytes_never_break_matching(pty_device, console_factory):
    con = console_factory(pty_device.link)
    noise = bytes(range(256)).replace(b"\n", b"")
    pty_device.write(b"\xff\x00\xf8\x80\xfe" + b"simfw 1.0\r\n" + noise + b" tail\r\n" + b"\x1b[31mred\x1b[0m \xc3\xa9t\xc3\xa9\r\n")
    assert con.expect(r"simfw 1\.0", timeout=5).line.raw.startswith(b"\xff\x00")
    m = con.expect("tail", timeout=5)
    # The noise holds a bare CR (0x0d), which ends a line as on a CR-only device.
    cr = noise.index(b"\r") + 1
    assert m.line.raw == noise[cr:] + b" tail\r"
    assert con.lines[1].raw == noise[:cr]
    assert "\ufffd" in m.line.text and "\r" not in m.line.text
    assert con.expect("red", timeout=5).line.text.endswith("été")


def test_send_line_ending_and_char_delay(pty_device, console_factory):
    con = console_factory(pty_device.link, line_ending="\r")
    con.send("help")
    assert pty_device.read(5) == b"help\r"
    con.send("clock", end="\n", char_delay=0.002)
    assert pty_device.read(6) == b"clock\n"
    con.send(b"\x03", end="")
    assert pty_device.read(1) == b"\x03"


def test_send_while_absent_raises_or_waits(pty_device, console_factory):
    con = console_factory(pty_device.link)
    pty_device.vanish()
    wait_until(lambda: not con.present, what="gap")
    with pytest.raises(ConsoleGone, match="not present"):
        con.send("help")
    t = threading.Timer(0.1, pty_device.appear)
    t.start()
    con.send("help", wait=10)
    t.join()
    assert pty_device.read(6) == b"help\r\n"


def test_absent_at_open_then_appears(tmp_path, console_factory):
    from consolekit import PtyDevice

    link = tmp_path / "late"
    con = console_factory(link)
    assert not con.present
    assert con.gaps[0].reason.startswith("absent at open")
    dev = PtyDevice(link)
    try:
        con.wait_present(10)
        dev.write(b"hello\r\n")
        assert con.expect("hello", timeout=5).line.text == "hello"
        assert con.gaps[0].end is not None
    finally:
        dev.close()


def test_open_errors_are_clear(tmp_path):
    from harness.console import Console

    with pytest.raises(ConsoleError, match="cannot open"):
        Console(str(tmp_path / "nothing"), reopen=False)
    with pytest.raises(ConsoleError, match="cannot use URL"):
        Console("nosuchproto://x")


def test_close_joins_threads_and_is_idempotent(pty_device, console_factory):
    con = console_factory(pty_device.link)
    con.trigger("x", lambda: None)
    pty_device.write(b"partial")
    wait_until(lambda: con.pending == b"partial", what="pending")
    con.close()
    con.close()
    assert not any(t.name.startswith("console-") and con.name in t.name and t.is_alive()
                   for t in threading.enumerate())
    assert not con.present
    assert con.lines[-1].partial and con.lines[-1].raw == b"partial"
    with pytest.raises(ConsoleError, match="closed"):
        con.expect("x", timeout=1)
    with pytest.raises(ConsoleGone):
        con.send("x")


def test_context_manager(pty_device, tmp_path):
    from harness.console import Console

    with Console(str(pty_device.link), capture_path=tmp_path / "c.txt") as con:
        pty_device.write(b"hi\r\n")
        con.expect("hi", timeout=5)
    assert not con.present


def test_two_threads_wait_independently(pty_device, console_factory):
    con = console_factory(pty_device.link)
    mark = con.mark()
    results: dict[str, str] = {}

    def waiter(pat: str) -> None:
        results[pat] = con.expect(pat, timeout=10, since=mark).line.text

    threads = [threading.Thread(target=waiter, args=(p,)) for p in ("alpha", "beta")]
    for t in threads:
        t.start()
    pty_device.write(b"beta 2\r\nalpha 1\r\n")
    for t in threads:
        t.join()
    assert results == {"alpha": "alpha 1", "beta": "beta 2"}


def test_idle_prompt_is_closed_by_mark_and_send(pty_device, console_factory):
    con = console_factory(pty_device.link)
    pty_device.write(b"ready\r\nsim> ")
    con.expect("ready", timeout=5)
    wait_until(lambda: con.pending == b"sim> ", what="prompt")
    # once the prompt has been idle for partial_idle, send() closes it
    _let_idle(con)
    con.send("session")
    assert pty_device.read(9) == b"session\r\n"
    pty_device.write(b"session: none\r\nsim> ")
    assert con.expect(r"^session: (\w+)$", timeout=5).match.group(1) == "none"
    wait_until(lambda: con.pending == b"sim> ", what="prompt")
    _let_idle(con)
    mark = con.mark()
    pty_device.write(b"clock: 2026-11-26T18:00:00Z\r\n")
    assert con.expect(r"^clock: ", timeout=5, since=mark).line.text.startswith("clock: ")
    assert [ln.text for ln in con.lines if ln.partial] == ["sim> ", "sim> "]


def _let_idle(con) -> None:
    """The prompt's last byte arrived before we saw it pending: waiting partial_idle from now is enough."""
    import time

    time.sleep(con.partial_idle * 1.2)


def test_endless_line_is_cut_into_partial_lines(pty_device, console_factory):
    """A wrong baud rate produces noise without newlines: memory and matching stay bounded."""
    con = console_factory(pty_device.link)
    # Neither LF nor CR: a bare CR ends a line too, and this noise must have no line end.
    noise = bytes((i * 7 + 1) % 256 for i in range(200_000)).replace(b"\n", b".").replace(b"\r", b".")
    pty_device.write(noise + b"\r\nok\r\n")
    con.expect("^ok$", timeout=10)
    assert b"".join(ln.raw + (b"" if ln.partial else b"\n") for ln in con.lines) == noise + b"\r\nok\r\n"
    assert max(len(ln.raw) for ln in con.lines) <= 65536 + 65536
