"""Turn what a firmware shell prints into the text a pattern can match.

Device files describe answers as clean lines (``^I session erased$``), but
real shells are not clean, and the dirt differs from one firmware to the next
(DESIGN.md principle 7, "right for devices we have never seen"):

* Zephyr and ESP-IDF colour their logs and prompts with ANSI escape
  sequences (``\\x1b[0;32mI (123) fw: ...\\x1b[0m``) and redraw the prompt
  with cursor control (``\\r\\x1b[K``).
* Line ends are CR LF, LF, or a bare CR, sometimes mixed in one stream.
* A shell prints its prompt without a newline, and when it does not echo the
  command the answer lands on the prompt's line: ``dev$ I session erased``.
  Whether that glued line used to match ``^I session erased`` depended on
  whether the prompt had been idle long enough to be cut off first: a race.
  Removing the prompt from the start of every line makes the answer the same
  text however the bytes were timed.

Everything here is pure (no port, no clock) so each rule is unit tested on
its own; :class:`harness.console.Console` calls it for every line.  The rules:

1. The line is decoded as UTF-8 with replacement characters.
2. Escape sequences go: CSI (``ESC [ params intermediates final``), OSC and
   the other string commands (``ESC ] ... BEL`` or ``... ESC \\``; DCS, SOS,
   PM, APC likewise; one not terminated within the line is dropped to its
   end), two-byte ``ESC x`` sequences (with intermediates: ``ESC ( B``), and
   a CSI cut off by the end of the line.
3. A backspace erases the character before it: what a line editor's
   ``\\b \\b`` means, so an echo with a corrected typo reads as what the shell
   received.  (A terminal only moves the cursor; for matching, erasing is
   the better reading.)
4. Every other control character goes except TAB (CR, BEL, a lone ESC ...).
5. With a prompt configured, the prompt is removed from the start of the line,
   as often as it repeats (``dev$ dev$ answer`` -> ``answer``).  The prompt is
   matched literally after its own escape codes are removed; trailing
   whitespace in it is a tolerance, not a requirement: prompt ``"dev$ "``
   also strips ``dev$`` followed by any blanks or by the end of the line.

Lines are cut by :class:`LineSplitter` at LF, CR LF and a bare CR (a CR not
followed by LF ends a line; one whose LF arrives in the next read is still a
single line end).

Cost: the reader cleans a whole received chunk at once
(:meth:`ShellCleaner.many`): one scan of the chunk for control bytes other
than CR, LF, TAB and ESC; then a line without ESC that does not start with
the prompt is just decoded, as before cleaning existed.  Everything else
takes the slow path above.
"""

from __future__ import annotations

import functools
import logging
import re

log = logging.getLogger(__name__)

#: One escape sequence (see rule 2 of the module docstring).  Alternatives
#: are tried in order, so the CSI forms come before the two-byte form that
#: would otherwise take ``ESC [`` alone.
ESCAPE = re.compile(
    r"\x1b\[[0-?]*[ -/]*[@-~]"                       # CSI: colour, cursor, erase
    r"|\x1b[\]PX^_][^\x07\x1b]*(?:\x07|\x1b\\|$)"     # OSC, DCS, SOS, PM, APC up to BEL / ST / end of line
    r"|\x1b\[[0-?]*[ -/]*$"                          # CSI cut off by the end of the line
    r"|\x1b[ -/]*[0-~]"                              # ESC x, ESC ( B, ...
)
#: Control characters left after escape removal; TAB stays (it is text).
CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
# The fast-path test on raw bytes: any control byte except TAB.  The final
# byte of a line may be its CR and is not looked at.
_CONTROL_BYTES = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
# Control bytes other than TAB, LF, CR and ESC: if a whole chunk has none,
# a line needs the slow path only if it holds an ESC (one memchr).
_RARE_CONTROLS = bytes(b for b in [*range(0x20), 0x7F] if b not in b"\t\n\r\x1b")


def strip_escapes(text: str) -> str:
    """Rules 2-4: escape sequences, backspaces and control characters removed."""
    if "\x1b" in text:
        text = ESCAPE.sub("", text)
    if "\b" in text:
        out: list[str] = []
        for ch in text:
            if ch == "\b":
                if out:
                    out.pop()
            else:
                out.append(ch)
        text = "".join(out)
    return CONTROL.sub("", text)


class ShellCleaner:
    """Cleans lines for one shell: ``cleaner(raw) -> text`` (see the module docstring).

    ``prompt`` is the device file's ``firmware.prompt`` (may carry its own
    escape codes); None or a prompt that cleans to nothing strips no prompt.
    """

    __slots__ = ("prompt", "core", "_prompt_rx")

    def __init__(self, prompt: str | None = None):
        self.prompt = prompt
        prompt = prompt or ""
        core = strip_escapes(prompt).rstrip()
        if prompt and not core:
            log.warning("shell prompt %r is only blanks and escape codes: no prompt is stripped", prompt)
        #: the prompt as it appears in cleaned text, trailing blanks removed
        self.core = core
        self._prompt_rx: re.Pattern[str] | None = None
        if core:
            # A prompt configured with a trailing blank needs a blank (or the
            # end of the line) after it, so "dev$ " does not eat "dev$x".
            after = r"(?:[ \t]+|$)" if prompt != prompt.rstrip() else r"[ \t]*"
            self._prompt_rx = re.compile(f"(?:{re.escape(core)}{after})+")

    def __call__(self, raw: bytes) -> str:
        """The matchable text of one line (``raw`` may end with its CR; no LF inside)."""
        n = len(raw) - 1 if raw.endswith(b"\r") else len(raw)
        if _CONTROL_BYTES.search(raw, 0, n) is None:
            text = raw.decode("utf-8", "replace")
            if n != len(raw):
                text = text[:-1]
        else:
            text = strip_escapes(raw.decode("utf-8", "replace"))
        if self.core and text.startswith(self.core):
            return self.strip_prompt(text)
        return text

    def many(self, lines: list[bytes], chunk: bytes) -> list[str]:
        """The texts of ``lines`` cut from ``chunk`` by :class:`LineSplitter` (a CR only at a line's end).

        The reader's hot path: one scan of the chunk for rare control bytes
        instead of one regex search per line, so a clean log costs a decode.
        """
        if len(chunk.translate(None, _RARE_CONTROLS)) != len(chunk):
            return [self(raw) for raw in lines]
        slow = self._slow
        # 27 in raw (ESC as an int) is a plain memchr; b"\x1b" in raw costs several times more
        texts = [slow(raw) if 27 in raw else raw.decode("utf-8", "replace").rstrip("\r") for raw in lines]
        core = self.core
        if core:
            strip = self.strip_prompt
            texts = [strip(t) if t.startswith(core) else t for t in texts]
        return texts

    def _slow(self, raw: bytes) -> str:
        return strip_escapes(raw.decode("utf-8", "replace"))

    def strip_prompt(self, text: str) -> str:
        """Rule 5 on already cleaned text: every prompt at the start removed."""
        if self._prompt_rx is None:
            return text
        m = self._prompt_rx.match(text)
        return text[m.end():] if m else text


@functools.lru_cache(maxsize=32)
def cleaner(prompt: str | None = None) -> ShellCleaner:
    """A shared :class:`ShellCleaner` per prompt."""
    return ShellCleaner(prompt)


def clean(raw: bytes, prompt: str | None = None) -> str:
    """The matchable text of one line of shell output (see the module docstring)."""
    return cleaner(prompt)(raw)


class LineSplitter:
    """Cuts received bytes into lines at LF, CR LF and a bare CR.

    A bare CR ends a line at once, so a device that ends lines with CR alone
    has its lines matched (and triggers fired) without waiting for the next
    byte.  When a read ends with that CR, :attr:`after_cr` remembers it: if
    the next read starts with LF, that LF completes the same line end (a CR LF
    split across two reads) and is skipped instead of making an empty line.
    The caller calls :meth:`reset` when the stream is interrupted (the port
    vanished): an LF after a reconnection is a line of its own.
    """

    __slots__ = ("after_cr",)

    def __init__(self) -> None:
        self.after_cr = False

    def reset(self) -> None:
        self.after_cr = False

    def split(self, buf: bytes) -> tuple[int, list[bytes], list[bool] | None, bytes]:
        """Split ``buf`` (pending bytes + a new read) into ``(skipped, lines, cr_only, tail)``.

        ``skipped`` is 1 when ``buf`` began with the LF of a CR LF whose CR
        ended the previous read (that byte belongs to no line), else 0.
        ``lines`` are the complete lines, each as received without its LF: a
        CR LF line or a bare-CR line keeps its CR.  ``cr_only[i]`` says line
        ``i`` was ended by a bare CR; None means every line ended with LF (the
        fast path).  ``tail`` is the unterminated rest; it never holds a CR.
        """
        skipped = 0
        if self.after_cr:
            self.after_cr = False
            if buf[:1] == b"\n":
                skipped = 1
                buf = buf[1:]
        crs = buf.count(b"\r")
        if crs == 0 or crs == buf.count(b"\r\n"):
            lines = buf.split(b"\n")
            tail = lines.pop()
            return skipped, lines, None, tail
        lines = []
        cr_only: list[bool] = []
        parts = buf.split(b"\n")
        tail = parts.pop()
        for raw in parts:
            body = raw[:-1] if raw.endswith(b"\r") else raw
            if b"\r" in body:
                pieces = body.split(b"\r")
                last = pieces.pop()
                for p in pieces:
                    lines.append(p + b"\r")
                    cr_only.append(True)
                raw = last + raw[len(body):]
            lines.append(raw)
            cr_only.append(False)
        if b"\r" in tail:
            self.after_cr = tail.endswith(b"\r")
            pieces = tail.split(b"\r")
            tail = pieces.pop()
            for p in pieces:
                lines.append(p + b"\r")
                cr_only.append(True)
        return skipped, lines, cr_only, tail
