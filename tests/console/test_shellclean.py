"""The shell-output cleaner and line splitter on their own: no port, no clock."""

from __future__ import annotations

import logging
import random
import re

import pytest

from harness.shellclean import ESCAPE, LineSplitter, ShellCleaner, clean, strip_escapes

# ------------------------------------------------------------------ escapes


@pytest.mark.parametrize("raw, text", [
    # ESP-IDF log colours
    (b"\x1b[0;32mI (123) fw: session stored\x1b[0m\r", "I (123) fw: session stored"),
    (b"\x1b[1;31mE (9) tls: handshake failed\x1b[m", "E (9) tls: handshake failed"),
    # cursor control: erase line, column, position, hide cursor, DEC private modes
    (b"\x1b[K\x1b[2K\x1b[1G\x1b[10;20Hx\x1b[?25l\x1b[?2004h", "x"),
    # CSI with intermediate bytes (DECSCUSR "ESC [ 2 SP q")
    (b"a\x1b[2 qb", "ab"),
    # OSC window title, BEL- and ST-terminated; unterminated up to the end of the line
    (b"\x1b]0;dev: ~\x07ok", "ok"),
    (b"\x1b]8;;http://x\x1b\\link\x1b]8;;\x1b\\", "link"),
    (b"before\x1b]0;title never ends", "before"),
    # DCS string command
    (b"\x1bPq#0;2;0;0;0\x1b\\after", "after"),
    # two-byte ESC x, and ESC ( B charset selection
    (b"\x1b7saved\x1b8\x1b(B\x1bM", "saved"),
    # a lone ESC, a CSI cut off by the end of the line
    (b"tail\x1b", "tail"),
    (b"tail\x1b[0;3", "tail"),
    # other control characters go, TAB stays
    (b"a\x00b\x07c\td\x7f\x0ce", "abc\tde"),
    # not UTF-8: replacement characters, never an exception
    (b"\xff\x1b[0m\xfe", "\ufffd\ufffd"),
    (b"", ""),
    (b"\r", ""),
])
def test_escape_and_control_removal(raw: bytes, text: str) -> None:
    assert clean(raw) == text


def test_backspace_erases_the_character_before_it() -> None:
    # A line editor's "\b \b" after a typo: the echo reads as what the shell received.
    assert clean(b"erq\b \base") == "erase"
    assert clean(b"ab\bc") == "ac"
    assert clean(b"\b\bx") == "x"


def test_escape_regex_takes_csi_whole_not_as_two_byte_sequence() -> None:
    assert [m.group(0) for m in ESCAPE.finditer("\x1b[38;5;208mX\x1b[0m")] == ["\x1b[38;5;208m", "\x1b[0m"]
    assert strip_escapes("\x1b[38;5;208mX") == "X"


# ------------------------------------------------------------------- prompt


@pytest.mark.parametrize("prompt, raw, text", [
    ("dev$ ", b"dev$ I session erased\r", "I session erased"),
    ("dev$ ", b"dev$ dev$ dev$ answer", "answer"),
    ("dev$ ", b"dev$", ""),                              # the prompt alone, trailing blank trimmed
    ("dev$ ", b"dev$\tanswer", "answer"),
    ("dev$ ", b"dev$x", "dev$x"),                        # "dev$ " needs a blank after "dev$"
    ("dev$ ", b"answer dev$ ", "answer dev$ "),          # only at the start
    ("dev$ ", b"  dev$ answer", "  dev$ answer"),
    (">", b">help", "help"),                             # no trailing blank configured: none needed
    (">", b"> > help", "help"),
    ("uart:~$ ", b"\x1b[1;32muart:~$ \x1b[m\x1b[0;32mI (5) fw: x\x1b[0m", "I (5) fw: x"),
    # the configured prompt carries its own colour codes
    ("\x1b[1;32mdev$ \x1b[m", b"\x1b[1;32mdev$ \x1b[mdev$ ok", "ok"),
    # a prompt redrawn with cursor codes on the same line
    ("dev$ ", b"dev$ \x1b[2K\x1b[1Gdev$ answer", "answer"),
    (None, b"dev$ answer", "dev$ answer"),
    ("a.c", b"abc x", "abc x"),                          # matched literally, not as a regex
])
def test_prompt_removed_from_line_start(prompt: str | None, raw: bytes, text: str) -> None:
    assert clean(raw, prompt) == text
    assert ShellCleaner(prompt).many([raw], raw) == [text]


def test_prompt_of_only_escape_codes_strips_nothing(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="harness.shellclean"):
        c = ShellCleaner("\x1b[0m ")
    assert c.core == "" and c(b"\x1b[0m answer") == " answer"
    assert "no prompt is stripped" in caplog.text


def test_many_agrees_with_one_line_at_a_time() -> None:
    """The per-chunk fast path must give exactly what the per-line cleaner gives."""
    rnd = random.Random(7)
    alphabet = [b"a", b"Z", b" ", b"\t", b"dev$ ", b"dev$", b"\x1b[0;32m", b"\x1b[K", b"\x1b]0;t\x07", b"\x1b",
                b"\x07", b"\b", b"\x00", b"\xff", "é".encode(), b"[", b"\\"]
    c = ShellCleaner("dev$ ")
    for _ in range(300):
        lines = [b"".join(rnd.choice(alphabet) for _ in range(rnd.randrange(0, 12))) + rnd.choice([b"", b"\r"])
                 for _ in range(rnd.randrange(1, 8))]
        chunk = b"\n".join(lines) + b"\n"
        assert c.many(lines, chunk) == [c(raw) for raw in lines]
        # with no rare control byte in the chunk the fast comprehension runs: same answers
        plain = [re.sub(rb"[\x00\x07\x08]", b"", raw) for raw in lines]
        assert c.many(plain, b"\n".join(plain)) == [c(raw) for raw in plain]


# ----------------------------------------------------------------- splitter


def test_split_lf_crlf_and_bare_cr() -> None:
    sp = LineSplitter()
    assert sp.split(b"a\r\nb\nc\rd\r\ne") == (0, [b"a\r", b"b", b"c\r", b"d\r"], [False, False, True, False], b"e")
    assert not sp.after_cr
    # a clean stream takes the fast path: no per-line flags
    assert sp.split(b"x\r\ny\n") == (0, [b"x\r", b"y"], None, b"")


def test_cr_only_device() -> None:
    sp = LineSplitter()
    assert sp.split(b"boot\rready\rsim") == (0, [b"boot\r", b"ready\r"], [True, True], b"sim")


def test_crlf_split_across_two_reads_is_one_line_end() -> None:
    sp = LineSplitter()
    assert sp.split(b"one\r") == (0, [b"one\r"], [True], b"")     # ended at once: no waiting for a byte
    assert sp.after_cr
    assert sp.split(b"\ntwo\r\n") == (1, [b"two\r"], None, b"")    # its LF is skipped, not an empty line
    assert not sp.after_cr
    # CR then CR LF: an empty CR LF line after the CR line
    assert sp.split(b"x\r") == (0, [b"x\r"], [True], b"")
    assert sp.split(b"\r\n") == (0, [b"\r"], None, b"")
    # after a reset (the port vanished) an LF is a line end of its own
    sp.split(b"y\r")
    sp.reset()
    assert sp.split(b"\n") == (0, [b""], None, b"")


def test_prompt_redraw_splits_at_the_cr() -> None:
    sp = LineSplitter()
    _, lines, cr_only, tail = sp.split(b"dev$ \r\x1b[Kdev$ ")
    assert lines == [b"dev$ \r"] and cr_only == [True] and tail == b"\x1b[Kdev$ "
    assert [clean(raw, "dev$ ") for raw in lines + [tail]] == ["", ""]


def _reference_lines(stream: bytes) -> list[bytes]:
    """Every line end is LF, CR LF or bare CR; the line's text is what lies between."""
    return re.split(rb"\r\n|\r|\n", stream)[:-1]


@pytest.mark.parametrize("seed", range(5))
def test_any_chunking_gives_the_same_lines_and_exact_bytes(seed: int) -> None:
    rnd = random.Random(seed)
    stream = b"".join(rnd.choice([b"a", b"bc", b"\r", b"\n", b"\r\n", b"\x1b[K", b" "]) for _ in range(3000))
    stream += b"\n"
    sp = LineSplitter()
    got: list[bytes] = []
    rebuilt = b""
    pending = b""
    i = 0
    while i < len(stream):
        n = rnd.randrange(1, 40)
        chunk, i = stream[i:i + n], i + n
        skipped, lines, cr_only, pending = sp.split(pending + chunk)
        rebuilt += b"\n" * skipped
        for k, raw in enumerate(lines):
            cr = cr_only is not None and cr_only[k]
            assert b"\r" not in raw[:-1] and b"\n" not in raw
            assert raw.endswith(b"\r") or not cr
            got.append(raw[:-1] if raw.endswith(b"\r") else raw)
            rebuilt += raw if cr else raw + b"\n"
        assert b"\r" not in pending
    assert pending == b""
    assert got == _reference_lines(stream)
    assert rebuilt == stream
