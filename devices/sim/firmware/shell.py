"""The emulated firmware's boot sequence and line shell.

It behaves like a small MCU main loop: single threaded, every command runs
to completion before the next line is read, RAM (this process) vanishes on
power loss, only the flash file and the battery-backed RTC survive.  The
text of the console lines is what ``devices/sim.yaml`` matches, so change
both together; how the lines are decorated (prompt, echo, colour, line
ends, ESP-IDF/Zephyr log prefixes) is :mod:`style`'s business, what is
spoken after the handshake :mod:`appproto`'s, and the habits that select
them :mod:`personality`'s.

The main loop waits with ``select`` on the UART and, while a connection is
held open (``--hold``), on that socket too, with a timeout for the next
timer (end of the hold, the next autoconnect), so the shell stays
responsive while a connection lives in the background.

The current model is fed through ``--state-fd``: one word per line
(``boot``, ``idle``, ``radio``, ``flash``) that the bench turns into
``MEAS:CURR?`` readings.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import select
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import flash as flashmod
from .appproto import LiveConnection, make_client
from .flash import Flash, StoredSession
from .personality import Personality, Range, UsageError
from .rtc import Rtc
from .style import ERASE_LINE, Level, LineEditor, Style
from .tlsclient import HandshakeFailed, Outcome, handshake_and_talk, restore
from .variants import Variant

log = logging.getLogger(__name__)

VERSION = "1.0"
MAX_LINE = 256     # line buffer; longer input is dropped like a real shell's
BOOT_S = 0.05      # time spent in "boot" (bootloader, clocks, flash scan)
RADIO_UP_S = 0.05  # radio power-up before the TCP connect, as a modem needs
HELP = [
    "commands:",
    "  {connect}",
    "  session              show the stored session",
    "  erase                erase the stored session",
    "  clock [set <unix-seconds>]",
    "  reset                software reset",
    "  help",
]


def fp(data: bytes) -> str:
    """Secrets appear on the console only as a fingerprint (sha256 prefix)."""
    return hashlib.sha256(bytes(data)).hexdigest()[:12]


@dataclass
class UartOut:
    """Line output on the UART (stdout = pty master) plus the state channel."""

    out_fd: int = 1
    state_fd: int | None = None
    style: Style = field(default_factory=Style)

    dropped: int = 0

    def write(self, text: str) -> None:
        """Write to the UART; never block.

        A UART transmitter does not wait for a listener: when nobody drains
        the port (the pty buffer is full) the bytes are lost, not queued
        forever, so an unread console can never hang the firmware.
        """
        data = text.encode("utf-8", "replace")
        while data:
            try:
                n = os.write(self.out_fd, data)
            except BlockingIOError:
                if not self.dropped:
                    log.warning("uart: nobody is reading, output dropped")
                self.dropped += len(data)
                return
            data = data[n:]

    def line(self, text: str, level: Level = Level.INFO) -> None:
        """One output line, decorated as the firmware's logging prints it."""
        log.info("console: %s", text)
        self.write(self.style.line(text, level))

    def warn(self, text: str) -> None:
        self.line(text, Level.WARN)

    def error(self, text: str) -> None:
        self.line(text, Level.ERROR)

    def prompt(self) -> None:
        self.write(self.style.prompt_text())

    def state(self, name: str) -> None:
        if self.state_fd is None:
            return
        try:
            os.write(self.state_fd, name.encode() + b"\n")
        except OSError:
            self.state_fd = None  # the bench went away; keep running regardless


@dataclass
class Held:
    """The session in RAM and where it came from."""

    session: StoredSession
    slot: str | None = None  # "A"/"B" or None when only in RAM
    seq: int = 0


@dataclass
class Firmware:
    """One power-on's worth of firmware: everything here is RAM, lost on a cut."""

    variant: Variant
    flash: Flash
    rtc: Rtc
    console: UartOut
    ca_file: Path | None
    reset_cause: str
    personality: Personality = field(default_factory=Personality)
    reexec: list[str] = field(default_factory=list)
    held: Held | None = None
    live: LiveConnection | None = None       # a connection held open (--hold)
    next_autoconnect: float | None = None    # monotonic time of the next autoconnect
    editor: LineEditor = field(init=False)

    def __post_init__(self) -> None:
        self.editor = LineEditor(self.console.style, MAX_LINE)

    @property
    def has_shell(self) -> bool:
        """An autoconnecting firmware has no shell: no prompt, input ignored."""
        return self.personality.autoconnect is None

    # ---------------------------------------------------------------- boot
    def boot(self) -> None:
        c = self.console
        c.state("boot")
        time.sleep(BOOT_S)
        c.write(c.style.line_end())  # ends the line of power-up garbage the UART produced
        c.line(f"simfw {VERSION} variant={self.variant.name}")
        c.line(f"reset cause: {self.reset_cause}")
        text, level = self._load_flash()
        c.line(text, level)
        c.line("ready")
        c.state("idle")
        if self.has_shell:
            c.prompt()
        else:
            self.next_autoconnect = time.monotonic()

    def _load_flash(self) -> tuple[str, Level]:
        try:
            self.flash.ensure()
        except OSError as exc:
            return f"flash: unavailable ({exc})", Level.ERROR
        if not self.variant.persist:
            return "flash: no stored session", Level.INFO
        states = self.flash.scan()
        if not self.variant.atomic:
            states = states[:1]  # torn-write firmware only knows slot A
        if all(s.status == "empty" for s in states):
            return "flash: no stored session", Level.INFO
        best = Flash.newest(states)
        text = "flash: " + ", ".join(s.describe() for s in states)
        level = Level.INFO if all(s.status in ("valid", "empty") for s in states) else Level.WARN
        if best is None or best.session is None:
            return text + "; no stored session", level
        self.held = Held(best.session, best.name, best.seq)
        s = best.session
        return (f"{text}; using slot {best.name} ({s.version_name} session for {s.server_name}, "
                f"ticket {fp(s.ticket)})", level)

    # ----------------------------------------------------------- main loop
    def run(self) -> None:
        """The main loop: UART input, the held connection and timers, one select.

        Input is handled by the line editor (echo, backspace, line ends) and
        each complete line runs to completion, like a real MCU shell.  A
        firmware without a shell reads its input and ignores it.
        """
        while True:
            fds = [0]
            if self.live is not None and self.live.fileno() >= 0:
                fds.append(self.live.fileno())
            try:
                ready, _, _ = select.select(fds, [], [], self._timeout())
            except OSError as exc:
                log.info("select failed: %s", exc)
                return
            if 0 in ready:
                try:
                    data = os.read(0, 1024)
                except BlockingIOError:
                    data = None
                except OSError as exc:
                    log.info("console input closed: %s", exc)
                    return
                if data == b"":
                    return
                if data:
                    self._input(data)
            if self.live is not None and self.live.fileno() in ready and not self.live.service():
                self._end_hold("server closed", asynchronous=True)
            self._timers()

    def _timeout(self) -> float | None:
        """Seconds until the next timer (end of hold, next autoconnect), None if none."""
        due = [t for t in (self.live.deadline if self.live else None, self.next_autoconnect) if t is not None]
        return max(0.0, min(due) - time.monotonic()) if due else None

    def _timers(self) -> None:
        now = time.monotonic()
        if self.live is not None and now >= self.live.deadline:
            self._end_hold("hold ended", asynchronous=True)
        if self.next_autoconnect is not None and now >= self.next_autoconnect:
            self.next_autoconnect = None
            self.autoconnect()

    def _input(self, data: bytes) -> None:
        if not self.has_shell:
            log.info("no shell: %d input bytes ignored", len(data))
            return
        for kind, text in self.editor.feed(data):
            if kind == "echo":
                self.console.write(text)
                continue
            if text:
                self.command(text)
            self.console.prompt()

    def _async_line(self, text: str) -> None:
        """A line printed while the shell waits at its prompt: the prompt (and
        what was typed so far) is drawn again after it, as ESP-IDF's and
        Zephyr's consoles do."""
        c = self.console
        if not self.has_shell:
            c.line(text)
            return
        if c.style.color:
            c.write(ERASE_LINE)  # wipe the prompt line, print over it
        elif c.style.echo:
            c.write(c.style.line_end())  # leave the prompt's line
        c.line(text)
        c.prompt()
        if c.style.echo:
            c.write(self.editor.pending())

    def _end_hold(self, why: str, asynchronous: bool = False) -> None:
        live, self.live = self.live, None
        if live is None:
            return
        live.close()
        text = f"app: {live.name}: connection closed ({why}) after {time.monotonic() - live.opened:.1f}s"
        if asynchronous:
            self._async_line(text)
        else:
            self.console.line(text)
        self._schedule_autoconnect()

    def _schedule_autoconnect(self) -> None:
        p = self.personality
        if p.autoconnect is not None and p.autoconnect_retry_s > 0 and self.live is None:
            self.next_autoconnect = time.monotonic() + p.autoconnect_retry_s

    # --------------------------------------------------------------- shell
    def command(self, text: str) -> None:
        words = text.split()
        name, args = words[0], words[1:]
        handler = {
            "help": self.cmd_help, "connect": self.cmd_connect, "session": self.cmd_session,
            "erase": self.cmd_erase, "clock": self.cmd_clock, "reset": self.cmd_reset,
        }.get(name)
        if handler is None:
            shown = "".join(ch if ch.isprintable() else "?" for ch in name)[:40]
            self.console.warn(f"error: unknown command '{shown}' (try help)")
            return
        try:
            handler(args)
        except Exception as exc:  # noqa: BLE001 - a firmware bug must not look like a power loss
            log.exception("command %r failed", text)
            self.console.error(f"error: {type(exc).__name__}: {exc}")

    def cmd_help(self, args: list[str]) -> None:
        for line in HELP:
            self.console.line(line.format(connect=self.personality.connect_usage()))

    def cmd_session(self, args: list[str]) -> None:
        if self.held is None:
            self.console.line("session: none")
            return
        s = self.held.session
        age = self._age(s)
        where = f"slot {self.held.slot} seq {self.held.seq}" if self.held.slot else "RAM only"
        self.console.line(f"session: {s.version_name} {s.server_name} ticket {fp(s.ticket)} "
                          f"age {max(0, int(age))}s {where}")

    def cmd_erase(self, args: list[str]) -> None:
        self.console.state("flash")
        try:
            self.flash.erase_all()
        finally:
            self.console.state("idle")
        self.held = None
        self.console.line("session erased")

    def cmd_clock(self, args: list[str]) -> None:
        if args:
            if args[0] != "set" or len(args) != 2:
                self.console.warn("error: usage: clock [set <unix-seconds>]")
                return
            try:
                value = float(args[1])
            except ValueError:
                self.console.warn(f"error: not a number: {args[1]}")
                return
            if not 0 <= value < 253402300800:  # what an RTC calendar can hold (year 9999)
                self.console.warn(f"error: out of range: {args[1]}")
                return
            self.rtc.set(value)
        self.console.line(f"clock: {self.rtc.iso()}")

    def cmd_reset(self, args: list[str]) -> None:
        """Software reset: re-exec this program, so RAM really is gone."""
        self.console.line("resetting")
        if self.console.state_fd is not None:
            os.set_inheritable(self.console.state_fd, True)
        argv = list(self.reexec)
        if "--reset-cause" in argv:
            argv[argv.index("--reset-cause") + 1] = "software"
        else:
            argv += ["--reset-cause", "software"]
        sys.stdout.flush()
        sys.stderr.flush()
        os.execv(sys.executable, [sys.executable] + argv)

    # ------------------------------------------------------------- connect
    def _age(self, s: StoredSession) -> float:
        return (self.rtc.now_ms() - s.received_ms) / 1000.0

    def _choose_offer(self, versions: Range, name: str) -> tuple[StoredSession | None, float, str]:
        """Decide what to offer, like real firmware: RTC age, lifetime, name, version."""
        if self.held is None:
            return None, 0.0, "no stored session"
        s = self.held.session
        if self.variant.check_name and s.server_name != name:
            return None, 0.0, f"stored session is for {s.server_name}"
        lo, hi = versions
        code = 4 if s.tls_version == 4 else 3
        if not (lo[1] <= code <= hi[1]):
            return None, 0.0, f"stored session is {s.version_name}"
        if not s.ticket:
            return None, 0.0, "stored session holds no ticket"
        age = self._age(s)
        if s.tls_version == 4 and age < 0:
            return None, age, "ticket age negative: clock went backwards"
        if s.lifetime_s and age > s.lifetime_s:
            return None, age, f"ticket expired: age {int(age)}s > lifetime {s.lifetime_s}s"
        return s, max(0.0, age), ""

    def cmd_connect(self, args: list[str]) -> None:
        c = self.console
        p = self.personality
        if len(args) < 2 or len(args) > 4:
            c.warn(f"error: usage: {p.connect_usage()}")
            return
        host = args[0]
        try:
            port = int(args[1])
            if not 0 < port < 65536:
                raise ValueError
        except ValueError:
            c.error(f"connect failed: bad port {args[1]!r}")
            return
        try:
            version, name = p.split_connect_args(host, args[2:])
        except UsageError as exc:
            c.error(str(exc))
            return
        self.connect(host, port, version, name)

    def autoconnect(self) -> None:
        """The no-shell firmware's own connection: the same lines as the connect command."""
        target = self.personality.autoconnect
        assert target is not None
        self.connect(target.host, target.port, "auto", target.name)
        self._schedule_autoconnect()

    def connect(self, host: str, port: int, version: str, name: str) -> None:
        """Connect, talk, store the session; print the result line, then hold if asked."""
        c = self.console
        p = self.personality
        if self.live is not None:
            self._end_hold("next connect")
        versions = p.offer_range(version)
        offer, age, why = self._choose_offer(versions, name)
        if offer is None:
            c.line(f"tls: offering nothing ({why})")
        elif offer.tls_version == 4:
            c.line(f"tls: offering psk {fp(offer.ticket)} (TLSv1.3, age {int(age)}s)")
        else:
            c.line(f"tls: offering ticket {fp(offer.ticket)} (TLSv1.2, age {int(age)}s)")
        c.state("radio")
        try:
            time.sleep(RADIO_UP_S)
            outcome = self._connect(host, port, versions, name, offer, age)
        except HandshakeFailed as exc:
            c.state("idle")
            c.error(f"connect failed: {exc.reason}")
            return
        c.state("idle")
        c.line(outcome.summary)
        if not self.variant.store_early:
            self._store(outcome)
        if outcome.live is not None:
            self.live = outcome.live
            c.line(f"app: {self.live.name}: holding connection for {p.hold_s:g}s")
        c.line(f"connect ok resumed={'yes' if outcome.resumed else 'no'}")

    def _handshake(self, host: str, port: int, versions: Range, name: str, session: object,
                   uptime: bool, fallback: bool = True) -> Outcome:
        p = self.personality
        v = self.variant
        # The early-store bug: the session is saved the moment the handshake returns.
        early = (lambda new: self._store_session(new, resumed=False)) if v.store_early else None
        return handshake_and_talk(host, port, versions, name, session, self.ca_file, self.rtc.now(), uptime,
                                  fallback=fallback, app=make_client(p.app, p.client_id), hold_s=p.hold_s,
                                  take_tickets=v.take_tickets, on_handshake=early)

    def _connect(self, host: str, port: int, versions: Range, name: str,
                 offer: StoredSession | None, age: float) -> Outcome:
        c = self.console
        session = restore(offer, age) if offer is not None else None
        uptime = self.variant.uptime_clock
        try:
            outcome = self._handshake(host, port, versions, name, session, uptime, fallback=self.variant.fallback)
        except HandshakeFailed as exc:
            # A handshake that fails because of what was offered (TLS 1.2: a
            # refused ticket with tlslite; any version: a secret that does not
            # match the ticket) is retried without it.
            if not (exc.offered and offer is not None):
                raise
            log.info("handshake with an offered session failed: %s", exc.reason)
            if not self.variant.fallback:
                raise HandshakeFailed("server refused session", True) from None
            c.warn("tls: server refused session, falling back to full handshake")
            outcome = self._handshake(host, port, versions, name, None, uptime)
            c.line(f"tls: handshake done {outcome.version} {outcome.cipher} full")
            return outcome
        if offer is not None and not outcome.resumed:
            if not self.variant.fallback:
                if outcome.live is not None:
                    outcome.live.close()
                raise HandshakeFailed("server refused session", True)
            c.warn("tls: server refused session, falling back to full handshake")
        c.line(f"tls: handshake done {outcome.version} {outcome.cipher} "
               f"{'resumed' if outcome.resumed else 'full'}")
        return outcome

    def _store(self, outcome: Outcome) -> None:
        self._store_session(outcome.new_session, outcome.resumed)

    def _store_session(self, new: StoredSession | None, resumed: bool) -> None:
        c = self.console
        if new is None:
            if resumed:
                c.line("session unchanged (server issued no new ticket)")
            else:
                c.warn("session not stored (server issued no ticket)")
            return
        if resumed and not self.variant.renew:
            return  # the no-renew bug: the fresh ticket is silently dropped
        if not self.variant.keep_secret:
            # The ticket-only bug: "the ticket is the session"; the secret slot is left zeroed.
            new = dataclasses.replace(new, secret=bytes(len(new.secret)))
        if not self.variant.persist:
            self.held = Held(new, None, 0)
            c.line("session stored in RAM")
            return
        try:
            record = flashmod.encode_record(new, 0)
            plan = self.flash.plan(len(record), in_place=not self.variant.atomic)
            record = flashmod.encode_record(new, plan.seq, with_crc=self.variant.atomic)
        except flashmod.RecordError as exc:
            c.warn(f"session not stored ({exc})")
            return
        slot = flashmod.SLOT_NAMES[plan.slot]
        c.line(f"flash: writing slot {slot} seq {plan.seq} ({plan.pages} pages)")
        c.state("flash")
        try:
            self.flash.write(plan, record, erase=self.variant.atomic)
        except OSError as exc:
            c.state("idle")
            c.error(f"flash: write failed slot {slot} ({exc})")
            return
        c.state("idle")
        c.line(f"flash: write done slot {slot} seq {plan.seq}")
        self.held = Held(new, slot, plan.seq)
        c.line("session stored")
