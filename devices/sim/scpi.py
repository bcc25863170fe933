"""A small SCPI engine: header matching, parameters, a real error queue.

Why a real parser and not a dict of strings: the harness's supply driver is
data driven (dialect files) and must meet what a real instrument does with
short/long forms, optional nodes, channel lists and, above all, errors.  A
bad command must land in the error queue with the standard code, exactly
as on a Keysight, so ``SYST:ERR?`` checks in the driver are exercised.

Standard codes used (IEEE 488.2 / SCPI-99):
-100 Command error, -101 Invalid character, -102 Syntax error,
-104 Data type error, -108 Parameter not allowed, -109 Missing parameter,
-113 Undefined header, -221 Settings conflict, -222 Data out of range,
-223 Too much data, -224 Illegal parameter value, -310 System error,
-350 Queue overflow.
"""

from __future__ import annotations

import logging
import re
from collections import deque
from dataclasses import dataclass, field
from typing import Callable

log = logging.getLogger(__name__)

QUEUE_DEPTH = 20
MAX_LINE = 1024

ERRORS = {
    -100: "Command error", -101: "Invalid character", -102: "Syntax error",
    -104: "Data type error", -108: "Parameter not allowed", -109: "Missing parameter",
    -113: "Undefined header", -221: "Settings conflict", -222: "Data out of range",
    -223: "Too much data", -224: "Illegal parameter value", -310: "System error",
    -350: "Queue overflow",
}


class ScpiError(Exception):
    """Raised by handlers; becomes an error-queue entry, never a crash."""

    def __init__(self, code: int, detail: str = ""):
        self.code = code
        self.detail = detail
        super().__init__(self.text)

    @property
    def text(self) -> str:
        base = ERRORS.get(self.code, "Error")
        return f"{base}; {self.detail}" if self.detail else base


@dataclass
class ErrorQueue:
    """FIFO of (code, text); overflow replaces the newest entry with -350."""

    depth: int = QUEUE_DEPTH
    items: deque = field(default_factory=deque)

    def push(self, code: int, text: str) -> None:
        log.info("error queue: %d,%s", code, text)
        if len(self.items) >= self.depth:
            self.items[-1] = (-350, ERRORS[-350])
            return
        self.items.append((code, text))

    def pop(self) -> str:
        if not self.items:
            return '+0,"No error"'
        code, text = self.items.popleft()
        return f'{code:+d},"{text}"'

    def clear(self) -> None:
        self.items.clear()


@dataclass(frozen=True)
class Node:
    short: str
    long: str
    optional: bool

    def matches(self, word: str) -> bool:
        w = word.upper()
        return w == self.short or w == self.long


def compile_pattern(pattern: str) -> list[Node]:
    """``[SOURce:]VOLTage[:LEVel]`` -> nodes; short form = the capitals."""
    nodes: list[Node] = []
    for opt, plain in re.findall(r"\[:?([A-Za-z]+):?\]|:?([A-Za-z]+)", pattern):
        word = opt or plain
        short = "".join(ch for ch in word if ch.isupper())
        nodes.append(Node(short, word.upper(), bool(opt)))
    return nodes


def match(nodes: list[Node], words: list[str]) -> bool:
    if not words:
        return all(n.optional for n in nodes)
    if not nodes:
        return False
    head = nodes[0]
    if head.matches(words[0]) and match(nodes[1:], words[1:]):
        return True
    return head.optional and match(nodes[1:], words)


@dataclass
class Command:
    """One table row: a header pattern, query or not, and its handler."""

    pattern: str
    query: bool
    handler: Callable[[list[str]], str | None]
    nodes: list[Node] = field(init=False)

    def __post_init__(self) -> None:
        self.nodes = [] if self.pattern.startswith("*") else compile_pattern(self.pattern)


HEADER_RE = re.compile(r"^:?[A-Za-z][A-Za-z0-9]*(:[A-Za-z][A-Za-z0-9]*)*\??$")


def split_params(text: str) -> list[str]:
    """Comma-separated parameters; a channel list ``(@1,2)`` stays one item."""
    params: list[str] = []
    depth = 0
    cur = ""
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth < 0:
                raise ScpiError(-102, "unbalanced parenthesis")
        if ch == "," and depth == 0:
            params.append(cur.strip())
            cur = ""
        else:
            cur += ch
    if depth:
        raise ScpiError(-102, "unbalanced parenthesis")
    params.append(cur.strip())
    if any(p == "" for p in params):
        raise ScpiError(-102, "empty parameter")
    return params


@dataclass
class Parser:
    """Dispatches lines to a command table and keeps the error queue."""

    commands: list[Command]
    errors: ErrorQueue = field(default_factory=ErrorQueue)

    def execute(self, raw: bytes) -> str | None:
        """Run one line (possibly ``;``-joined commands); return the reply or None."""
        if len(raw) > MAX_LINE:
            self.errors.push(-223, ERRORS[-223])
            return None
        try:
            text = raw.decode("ascii")
        except UnicodeDecodeError:
            self.errors.push(-101, ERRORS[-101])
            return None
        if any(ord(ch) < 32 and ch not in "\t" for ch in text) or "\x7f" in text:
            self.errors.push(-101, ERRORS[-101])
            return None
        replies: list[str] = []
        for part in text.split(";"):
            part = part.strip()
            if not part:
                continue
            try:
                reply = self._one(part)
            except ScpiError as exc:
                self.errors.push(exc.code, exc.text)
                break  # SCPI: the rest of the line is not executed after an error
            if reply is not None:
                replies.append(reply)
        return ";".join(replies) if replies else None

    def _one(self, part: str) -> str | None:
        header, _, rest = part.partition(" ")
        header = header.strip()
        rest = rest.strip()
        if header.startswith("*"):
            name = header.upper()
            query = name.endswith("?")
            candidates = [c for c in self.commands if c.pattern == name]
        else:
            if not HEADER_RE.match(header):
                raise ScpiError(-102 if re.search(r"[^A-Za-z0-9:?]", header) else -113,
                                f"'{header[:30]}'" if header.isprintable() else "")
            query = header.endswith("?")
            words = header.rstrip("?").lstrip(":").split(":")
            candidates = [c for c in self.commands if c.query == query and match(c.nodes, words)]
        candidates = [c for c in candidates if c.query == query]
        if not candidates:
            raise ScpiError(-113, f"'{header[:30]}'")
        params = split_params(rest) if rest else []
        return candidates[0].handler(params)


# ------------------------------------------------------------ parameter helpers
def number(text: str, lo: float, hi: float, default: float) -> float:
    """A numeric parameter with MIN/MAX/DEF; out of range -> -222."""
    t = text.strip().upper()
    if t in ("MIN", "MINIMUM"):
        return lo
    if t in ("MAX", "MAXIMUM"):
        return hi
    if t in ("DEF", "DEFAULT"):
        return default
    m = re.fullmatch(r"([-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?)\s*(V|A|MV|MA)?", t)
    if not m:
        raise ScpiError(-104, f"not a number: '{text[:20]}'")
    value = float(m.group(1))
    if m.group(5) in ("MV", "MA"):
        value /= 1000.0
    if not lo <= value <= hi:
        raise ScpiError(-222, f"{value:g} not in {lo:g}..{hi:g}")
    return value


def boolean(text: str) -> bool:
    t = text.strip().upper()
    if t in ("ON", "1"):
        return True
    if t in ("OFF", "0"):
        return False
    raise ScpiError(-224, f"expected ON|OFF|1|0, got '{text[:20]}'")


def channel_list(text: str, count: int) -> list[int]:
    """``(@1)``, ``(@1,3)``, ``(@1:3)`` -> channel numbers, checked."""
    m = re.fullmatch(r"\(@([0-9,:\s]+)\)", text.strip())
    if not m:
        raise ScpiError(-104, f"not a channel list: '{text[:20]}'")
    result: list[int] = []
    for item in m.group(1).split(","):
        item = item.strip()
        if ":" in item:
            a, _, b = item.partition(":")
            if not (a.strip().isdigit() and b.strip().isdigit()):
                raise ScpiError(-102, "bad channel range")
            result.extend(range(int(a), int(b) + 1))
        elif item.isdigit():
            result.append(int(item))
        else:
            raise ScpiError(-102, "bad channel list")
    if not result or any(not 1 <= ch <= count for ch in result):
        raise ScpiError(-222, f"channel not in 1..{count}")
    return result


def fmt(value: float) -> str:
    """Keysight's reply format for numbers: ``+3.30000000E+00``."""
    return f"{value:+.8E}"
