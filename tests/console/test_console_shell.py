"""Real firmware shells through a real Console on a pty: colours, prompts, echo, CR-only lines."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from consolekit import wait_until
from harness import consolefile
from harness.console import ConsoleTimeout, ForbiddenOutput
from harness.fingerprint import fp

PROMPT = b"\x1b[1;32mdev$ \x1b[m"                       # how a Zephyr-like shell draws it
ANSWER = b"\x1b[0;32mI (5) fw: session erased\x1b[0m\r\n"  # ESP-IDF log colours
ERASED = r"^I \(\d+\) fw: session erased$"


def _later(delay: float, fn, *args) -> threading.Timer:
    t = threading.Timer(delay, fn, args=args)
    t.start()
    return t


def test_answer_after_prompt_matches_whatever_the_delay(pty_device, console_factory):
    """No race: glued to a pending prompt, or after a prompt that sat idle past partial_idle.

    0 ms: prompt and answer in one read.  Under partial_idle (50 ms): the
    answer joins the pending prompt.  Over it: ``expect`` has already looked
    at the idle prompt (and must not take it).  "cut": ``mark()`` closed the
    idle prompt into a line of its own first.
    """
    con = console_factory(pty_device.link, prompt="dev$ ", partial_idle=0.05)
    delays: list[float | str] = [0.0, 0.01, 0.2, 0.002, 0.06, "cut"] * 5
    for i, delay in enumerate(delays):
        if delay == 0.0:
            pty_device.write(PROMPT + ANSWER)
            timer = None
        elif delay == "cut":
            pty_device.write(PROMPT)
            wait_until(lambda: con.pending == PROMPT, what="pending prompt")
            time.sleep(con.partial_idle * 1.5)
            con.mark()
            assert con.pending == b"" and con.lines[-1].partial and con.lines[-1].text == ""
            timer = _later(0.0, pty_device.write, ANSWER)
        else:
            pty_device.write(PROMPT)
            timer = _later(float(delay), pty_device.write, ANSWER)
        m = con.expect(ERASED, timeout=5)
        if timer is not None:
            timer.join()
        assert m.line.text == "I (5) fw: session erased", (i, delay, m.line)
        assert not m.line.partial and m.line.raw.endswith(ANSWER[:-1])
    assert con.pending == b""


def test_prompt_only_partial_line_is_never_an_answer(pty_device, console_factory):
    con = console_factory(pty_device.link, prompt="dev$ ", partial_idle=0.02)
    pty_device.write(b"boot done\r\n" + PROMPT)
    con.expect("^boot done$", timeout=5)
    wait_until(lambda: con.pending == PROMPT, what="pending prompt")
    # patterns that match an empty text must not take the bare prompt, idle or not
    with pytest.raises(ConsoleTimeout):
        con.expect([r"^$", r".*"], timeout=0.2)
    mark = con.mark()                       # cuts it: a partial line with empty text
    cut = con.lines[-1]
    assert cut.partial and cut.raw == PROMPT and cut.text == ""
    with pytest.raises(ConsoleTimeout):
        con.expect(r"^\s*$", timeout=0.1, since=cut.start)
    pty_device.write(b"\x1b[0;33mW (9) wifi: retry\x1b[0m\r\n")
    assert con.expect(r".*", timeout=5, since=mark).line.text == "W (9) wifi: retry"


def test_partial_line_matched_on_cleaned_text(pty_device, console_factory):
    """A prompt-like question without newline still matches after partial_idle, escapes removed."""
    con = console_factory(pty_device.link, prompt="dev$ ")
    pty_device.write(b"dev$ \x1b[1mPassword: \x1b[0m")
    m = con.expect(r"^Password: $", timeout=5)
    assert m.line.partial and m.line.raw == b"dev$ \x1b[1mPassword: \x1b[0m"


def test_echoing_shell_echo_is_blanked_answer_kept(pty_device, console_factory):
    con = console_factory(pty_device.link, prompt="dev$ ")
    pty_device.write(PROMPT)
    wait_until(lambda: con.pending == PROMPT, what="prompt")
    con.send("erase")
    assert pty_device.read(7) == b"erase\r\n"
    pty_device.write(b"erase\r\n" + ANSWER + PROMPT)
    # "erase" would match the echo itself if it were not blanked
    m = con.expect("erase", timeout=5)
    assert m.line.text == "I (5) fw: session erased"
    echo = [ln for ln in con.lines if ln.echo]
    assert len(echo) == 1 and echo[0].text == "" and echo[0].raw.endswith(b"erase\r")
    # positions stay exact and monotonic: the echo is still a line
    ends = [ln.end for ln in con.lines]
    assert ends == sorted(ends) and all(a.end <= b.start for a, b in zip(con.lines, con.lines[1:]))


def test_echo_on_the_prompt_line_is_blanked(pty_device, console_factory):
    """The sim-like shell: prompt, then the echo on the same line, answer below."""
    con = console_factory(pty_device.link, prompt="dev$ ")
    con.send("session")
    pty_device.write(PROMPT + b"session\r\nsession: none\r\n")
    assert con.expect(r"^session", timeout=5).line.text == "session: none"
    (echo,) = [ln for ln in con.lines if ln.echo]
    assert echo.raw == PROMPT + b"session\r"


def test_non_echoing_shell_keeps_every_answer(pty_device, console_factory):
    con = console_factory(pty_device.link, prompt="dev$ ")
    con.send("session")
    pty_device.write(PROMPT + b"session: none\r\n")
    assert con.expect(r"^session: none$", timeout=5).line.text == "session: none"
    assert not any(ln.echo for ln in con.lines)


def test_one_echo_per_send_and_only_within_the_window(pty_device, console_factory):
    con = console_factory(pty_device.link)
    con.send("x")
    pty_device.write(b"x\r\nx\r\n")          # echo, then an answer that happens to read the same
    m = con.expect(r"^x$", timeout=5)
    assert m.line is con.lines[1] and con.lines[0].echo
    con.send("ping")
    pty_device.write(b"a\r\nb\r\nc\r\nd\r\nping\r\n")   # too late to be the echo: a line of its own
    assert con.expect(r"^ping$", timeout=5).line.text == "ping"
    assert [ln.text for ln in con.lines[2:]] == ["a", "b", "c", "d", "ping"]


def test_echo_of_a_command_does_not_trip_a_guard(pty_device, console_factory):
    con = console_factory(pty_device.link)
    con.forbid("panic")
    con.send("test panic")
    pty_device.write(b"test panic\r\nok\r\n")
    con.expect("^ok$", timeout=5)
    con.check()
    pty_device.write(b"\x1b[0;31mE (7) panic\x1b[0m\r\n")
    with pytest.raises(ForbiddenOutput, match="panic"):
        con.expect("never", timeout=5)


def test_cr_only_device_lines_match_at_once(pty_device, console_factory, tmp_path: Path):
    capture = tmp_path / "cr.txt"
    con = console_factory(pty_device.link, capture_path=capture, partial_idle=60)
    fired: list[str] = []
    con.trigger(r"^I \(1\) app: ready$", lambda: fired.append("cut"), inline=True)
    stream = b"boot\rI (1) app: ready\r"
    pty_device.write(stream)
    # partial_idle=60: only a complete line can match within the timeout
    m = con.expect(r"^I \(1\) app: ready$", timeout=5)
    assert not m.line.partial and m.line.raw == b"I (1) app: ready\r"
    assert [ln.text for ln in con.lines] == ["boot", "I (1) app: ready"]
    wait_until(lambda: fired == ["cut"], what="trigger on a CR-ended line")  # runs after the reader's lock
    con.close()
    recs = [r for r in consolefile.read(capture) if r.kind in consolefile.RECEIVED]
    assert [r.kind for r in recs] == [consolefile.LINE_CR, consolefile.LINE_CR]
    assert consolefile.received(capture) == stream


def test_crlf_split_across_reads_is_one_line_end(pty_device, console_factory, tmp_path: Path):
    capture = tmp_path / "split.txt"
    con = console_factory(pty_device.link, capture_path=capture)
    pty_device.write(b"one\r")
    wait_until(lambda: [ln.text for ln in con.lines] == ["one"], what="line ended at its CR")
    pty_device.write(b"\ntwo\r\n")
    con.expect("^two$", timeout=5)
    lines = con.lines
    assert [ln.text for ln in lines] == ["one", "two"]              # no empty line between
    assert (lines[0].start, lines[0].end, lines[1].start, lines[1].end) == (0, 4, 5, 10)
    assert con.position == 10
    con.close()
    assert consolefile.received(capture) == b"one\r\ntwo\r\n"


def test_mixed_endings_and_prompt_redraw_round_trip_the_capture(pty_device, console_factory, tmp_path: Path):
    capture = tmp_path / "mixed.txt"
    con = console_factory(pty_device.link, capture_path=capture, prompt="uart:~$ ")
    stream = (b"crlf\r\nlf\ncr\r"
              b"\x1b[1;32muart:~$ \x1b[m\r\x1b[K\x1b[0;32m<inf> app: session stored\x1b[0m\r\n"
              b"\xff\xfe not utf-8 \\x41\r\n"
              b"\x1b[1;32muart:~$ \x1b[m")
    pty_device.write(stream)
    con.expect(r"not utf-8", timeout=5)
    texts = [ln.text for ln in con.lines]
    assert texts == ["crlf", "lf", "cr", "", "<inf> app: session stored", "\ufffd\ufffd not utf-8 \\x41"]
    assert con.lines[4].raw == b"\x1b[K\x1b[0;32m<inf> app: session stored\x1b[0m\r"
    con.close()
    kinds = [r.kind for r in consolefile.read(capture) if r.kind in consolefile.RECEIVED]
    C = consolefile
    assert kinds == [C.LINE_CRLF, C.LINE_LF, C.LINE_CR, C.LINE_CR, C.LINE_CRLF, C.LINE_CRLF, C.PARTIAL]
    assert consolefile.received(capture) == stream
    text = capture.read_text(encoding="utf-8")
    assert "^ \\x1b[1;32muart:~$ \\x1b[m\n" in text        # readable, escape codes visible
    # Record.text is the cleaned text without prompt removal
    assert [r.text for r in consolefile.read(capture) if r.kind == C.LINE_CR] == ["cr", "uart:~$ "]


def test_redaction_before_cleaning_and_partial_matching(pty_device, console_factory, tmp_path: Path):
    secret = "5f0e3a9d7c41b2e8" * 6
    con = console_factory(pty_device.link, redact=[r"(?<=secret: )[0-9a-f]{96}"], prompt="dev$ ")
    pty_device.write(f"\x1b[0;36mdev$ secret: {secret}\x1b[0m\r\ndev$ secret: {secret}".encode())
    first = con.expect(r"^secret: (\S+)", timeout=5)
    assert first.match.group(1) == "<redacted" and secret not in first.line.text
    second = con.expect(r"^secret: (\S+ \S+)$", timeout=5)          # the pending partial line
    assert second.line.partial and second.match.group(1) == f"<redacted {fp(secret.encode())}>"
    con.close()
    assert secret not in (tmp_path / "capture0.txt").read_text()


def test_greedy_redaction_keeps_the_line_end(pty_device, console_factory, tmp_path: Path):
    """A ``.*`` redact pattern (ESP-IDF device file) takes the secret, not the CR that ends the line."""
    capture = tmp_path / "greedy.txt"
    con = console_factory(pty_device.link, capture_path=capture, redact=[r"(?<=ticket: ).*"])
    pty_device.write(b"ticket: 0011\rticket: 2233\r\nok\r\n")
    con.expect("^ok$", timeout=5)
    assert [ln.raw[-1:] for ln in con.lines] == [b"\r", b"\r", b"\r"]
    assert con.lines[0].text == f"ticket: <redacted {fp(b'0011')}>"
    con.close()
    kinds = [r.kind for r in consolefile.read(capture) if r.kind in consolefile.RECEIVED]
    assert kinds == [consolefile.LINE_CR, consolefile.LINE_CRLF, consolefile.LINE_CRLF]
    assert b"0011" not in capture.read_bytes() and b"2233" not in capture.read_bytes()


@pytest.mark.timeout(60)
def test_simulated_shell_with_prompt_and_echo(tmp_path, console_factory):
    """The emulated firmware (prompt "sim> ", echo on the prompt line, CR LF) with its prompt configured."""
    sim = pytest.importorskip("devices.sim")
    SimBench = getattr(sim, "SimBench", None)
    if SimBench is None:  # pragma: no cover - the bench is written in parallel
        pytest.skip("devices.sim has no SimBench yet")
    from harness.console import EchoLine
    from harness.supply import Supply

    with SimBench(workdir=tmp_path / "bench", tau=0.02) as bench, \
            Supply(bench.supply_resource, "keysight-e36300", watchdog=False) as supply:
        supply.configure(voltage=3.3, current_limit=0.5)
        con = console_factory(bench.uart_path, prompt="sim> ")
        supply.on()
        con.expect(r"^ready$", timeout=15)
        for command, answer in [("session", r"^session: none$"), ("erase", r"^session erased$"),
                                ("session", r"^session: none$")]:
            mark = con.mark()
            con.send(command)
            assert con.expect(answer, timeout=5).line.text == answer.strip("^$")
            echoes = [ln for ln in con.since(mark) if ln.echo]
            assert len(echoes) == 1 and isinstance(echoes[0], EchoLine)
            assert echoes[0].raw.endswith(command.encode() + b"\r")
