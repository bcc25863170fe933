"""How the firmware's console looks: echo, prompt, colour, line ends, log prefixes.

Why this exists: the harness is judged on real firmware, and real consoles
differ in exactly these ways.  ESP-IDF prints ``I (1234) tag: text`` wrapped
in ANSI colours, Zephyr ``[00:00:01.234,000] <inf> tag: text``; some shells
echo what is typed and some do not (so the answer follows the prompt on the
same line); line ends are CRLF, LF or a bare CR.  Each of these is a switch
here, so a test can prove the harness copes with every combination while
the default (``sim`` shell, CRLF, bare text, no colour) stays byte for byte
what the emulated firmware always printed.

Nothing here knows about TLS or flash: the shell hands over text and a
level, this module decides the bytes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from enum import Enum
from typing import Callable

SHELLS = ("sim", "plain")
EOLS: dict[str, tuple[str, ...]] = {
    "crlf": ("\r\n",),
    "lf": ("\n",),
    "cr": ("\r",),
    "mixed": ("\r\n", "\n", "\r"),  # cycled line by line, deterministically
}
LOG_FORMATS = ("sim", "espidf", "zephyr")

# ESP-IDF's LOG_COLOR_* (components/log/include/esp_log_color.h) and
# LOG_RESET_COLOR; Zephyr's shell colours its prompt bold green and resets
# with the short form ``ESC [ m``.
RESET = "\x1b[0m"
PROMPT_COLOR = "\x1b[1;32m"
PROMPT_RESET = "\x1b[m"
ERASE_LINE = "\r\x1b[K"  # cursor to column 0, erase to end of line
ERASE_EVERY = 2          # an erase-line precedes every second prompt


class Level(Enum):
    """Log level of one console line: decides the prefix letter and colour."""

    INFO = ("I", "inf", "\x1b[0;32m")
    WARN = ("W", "wrn", "\x1b[0;33m")
    ERROR = ("E", "err", "\x1b[0;31m")

    @property
    def letter(self) -> str:
        return self.value[0]

    @property
    def zephyr(self) -> str:
        return self.value[1]

    @property
    def color(self) -> str:
        return self.value[2]


@dataclass
class Style:
    """The console decoration of one power-on (counters restart at boot, like RAM)."""

    shell: str = "sim"
    prompt: str = "sim> "
    color: bool = False
    eol: str = "crlf"
    log_format: str = "sim"
    tag: str = "fw"
    clock: Callable[[], float] = time.monotonic
    booted: float = field(default=-1.0)
    _ends: int = 0
    _prompts: int = 0

    def __post_init__(self) -> None:
        if self.shell not in SHELLS:
            raise ValueError(f"unknown shell style {self.shell!r} (known: {', '.join(SHELLS)})")
        if self.eol not in EOLS:
            raise ValueError(f"unknown line end {self.eol!r} (known: {', '.join(EOLS)})")
        if self.log_format not in LOG_FORMATS:
            raise ValueError(f"unknown log format {self.log_format!r} (known: {', '.join(LOG_FORMATS)})")
        if self.booted < 0:
            self.booted = self.clock()

    @property
    def echo(self) -> bool:
        """Does the shell echo typed characters (``sim``) or stay silent (``plain``)?"""
        return self.shell == "sim"

    def line_end(self) -> str:
        """The next line terminator (``mixed`` cycles CRLF, LF, CR)."""
        ends = EOLS[self.eol]
        end = ends[self._ends % len(ends)]
        self._ends += 1
        return end

    def prefix(self, level: Level) -> str:
        """The log prefix as the firmware's logging framework prints it."""
        if self.log_format == "sim":
            return ""
        elapsed = max(0.0, self.clock() - self.booted)
        if self.log_format == "espidf":
            return f"{level.letter} ({int(elapsed * 1000)}) {self.tag}: "
        us = int(elapsed * 1_000_000)
        secs, us = divmod(us, 1_000_000)
        mins, secs = divmod(secs, 60)
        hours, mins = divmod(mins, 60)
        return f"[{hours:02}:{mins:02}:{secs:02}.{us // 1000:03},{us % 1000:03}] <{level.zephyr}> {self.tag}: "

    def line(self, text: str, level: Level = Level.INFO) -> str:
        """One complete output line: prefix, text, colour, terminator."""
        body = self.prefix(level) + text
        if self.color:
            body = level.color + body + RESET
        return body + self.line_end()

    def prompt_text(self) -> str:
        """The prompt; with colour, bold green and now and then an erase-line first."""
        self._prompts += 1
        if not self.color:
            return self.prompt
        text = PROMPT_COLOR + self.prompt + PROMPT_RESET
        if self._prompts % ERASE_EVERY == 0:
            text = ERASE_LINE + text
        return text


@dataclass
class LineEditor:
    """Turns UART input bytes into echo text and completed command lines.

    Like a real MCU shell: printable characters are echoed as they arrive
    (if the shell echoes at all), backspace erases, ``\\r``, ``\\n`` or
    ``\\r\\n`` ends a line (also when split across reads), other control
    bytes (line noise) are dropped, over-long input is cut at ``max_line``.
    """

    style: Style
    max_line: int = 256
    buffer: bytearray = field(default_factory=bytearray)
    _after_cr: bool = False

    def feed(self, data: bytes) -> list[tuple[str, str]]:
        """Actions in order: ``("echo", text)`` to write, ``("line", text)`` to run."""
        actions: list[tuple[str, str]] = []
        echo = bytearray()
        for byte in data:
            if byte in (0x0D, 0x0A):
                if self._after_cr and byte == 0x0A and not self.buffer:
                    self._after_cr = False
                    continue
                self._after_cr = byte == 0x0D
                if self.style.echo:
                    echo += self.style.line_end().encode()
                    actions.append(("echo", echo.decode("utf-8", "replace")))
                echo.clear()
                actions.append(("line", self.buffer.decode("utf-8", "replace").strip()))
                self.buffer.clear()
                continue
            self._after_cr = False
            if byte in (0x08, 0x7F):
                if self.buffer:
                    self.buffer.pop()
                    echo += b"\b \b"
            elif byte >= 0x20 and len(self.buffer) < self.max_line:
                self.buffer.append(byte)
                echo.append(byte if byte < 0x7F else ord("?"))
        if echo and self.style.echo:
            actions.append(("echo", echo.decode("utf-8", "replace")))
        return actions

    def pending(self) -> str:
        """What has been typed on the current line so far, as it was echoed."""
        return "".join(chr(b) if b < 0x7F else "?" for b in self.buffer)
