"""The emulated firmware's boot sequence and line shell.

It behaves like a small MCU main loop: single threaded, every command runs
to completion before the next line is read, RAM (this process) vanishes on
power loss, only the flash file and the battery-backed RTC survive.  The
console lines are the contract of ``contracts.md`` section 2; the harness's
device file matches them, so change both together.

The current model is fed through ``--state-fd``: one word per line
(``boot``, ``idle``, ``radio``, ``flash``) that the bench turns into
``MEAS:CURR?`` readings.
"""

from __future__ import annotations

import hashlib
import logging
import os
import select
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import flash as flashmod
from .flash import Flash, StoredSession
from .rtc import Rtc
from .tlsclient import VERSIONS, HandshakeFailed, Outcome, handshake_and_talk, restore
from .variants import Variant

log = logging.getLogger(__name__)

VERSION = "1.0"
PROMPT = "sim> "
MAX_LINE = 256     # line buffer; longer input is dropped like a real shell's
BOOT_S = 0.05      # time spent in "boot" (bootloader, clocks, flash scan)
RADIO_UP_S = 0.05  # radio power-up before the TCP connect, as a modem needs
HELP = [
    "commands:",
    "  connect <host> <port> [tls1.2|tls1.3|auto] [<server-name>]",
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
class Console:
    """Line output on the UART (stdout = pty master) plus the state channel."""

    out_fd: int = 1
    state_fd: int | None = None

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

    def line(self, text: str) -> None:
        log.info("console: %s", text)
        self.write(text + "\r\n")

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
    console: Console
    ca_file: Path | None
    reset_cause: str
    reexec: list[str] = field(default_factory=list)
    held: Held | None = None

    # ---------------------------------------------------------------- boot
    def boot(self) -> None:
        c = self.console
        c.state("boot")
        time.sleep(BOOT_S)
        c.write("\r\n")  # ends the line of power-up garbage the UART produced
        c.line(f"simfw {VERSION} variant={self.variant.name}")
        c.line(f"reset cause: {self.reset_cause}")
        c.line(self._load_flash())
        c.line("ready")
        c.state("idle")
        c.write(PROMPT)

    def _load_flash(self) -> str:
        try:
            self.flash.ensure()
        except OSError as exc:
            return f"flash: unavailable ({exc})"
        if not self.variant.persist:
            return "flash: no stored session"
        states = self.flash.scan()
        if not self.variant.atomic:
            states = states[:1]  # torn-write firmware only knows slot A
        if all(s.status == "empty" for s in states):
            return "flash: no stored session"
        best = Flash.newest(states)
        text = "flash: " + ", ".join(s.describe() for s in states)
        if best is None or best.session is None:
            return text + "; no stored session"
        self.held = Held(best.session, best.name, best.seq)
        s = best.session
        return (f"{text}; using slot {best.name} ({s.version_name} session for {s.server_name}, "
                f"ticket {fp(s.ticket)})")

    # --------------------------------------------------------------- shell
    def run(self) -> None:
        """Line editor + dispatcher, like a real MCU shell.

        Every printable character is echoed as it arrives (so a person in
        miniterm sees what they type), backspace erases, ``\r``, ``\n`` or
        ``\r\n`` ends a line.  The prompt and the echoed command share a
        line; replies start on a line of their own.  Other control bytes
        (line noise) are dropped.
        """
        line = bytearray()
        after_cr = False  # "\r\n" is one line end, even split across reads
        while True:
            try:
                select.select([0], [], [])
                data = os.read(0, 1024)
            except BlockingIOError:
                continue
            except OSError as exc:
                log.info("console input closed: %s", exc)
                return
            if not data:
                return
            echo = bytearray()
            for byte in data:
                if byte in (0x0D, 0x0A):
                    if after_cr and byte == 0x0A and not line:
                        after_cr = False
                        continue
                    after_cr = byte == 0x0D
                    echo += b"\r\n"
                    self.console.write(echo.decode("utf-8", "replace"))
                    echo.clear()
                    text = line.decode("utf-8", "replace").strip()
                    line.clear()
                    if text:
                        self.command(text)
                    self.console.write(PROMPT)
                    continue
                after_cr = False
                if byte in (0x08, 0x7F):
                    if line:
                        line.pop()
                        echo += b"\b \b"
                elif byte >= 0x20 and len(line) < MAX_LINE:
                    line.append(byte)
                    echo.append(byte if byte < 0x7F else ord("?"))
            if echo:
                self.console.write(echo.decode("utf-8", "replace"))

    def command(self, text: str) -> None:
        words = text.split()
        name, args = words[0], words[1:]
        handler = {
            "help": self.cmd_help, "connect": self.cmd_connect, "session": self.cmd_session,
            "erase": self.cmd_erase, "clock": self.cmd_clock, "reset": self.cmd_reset,
        }.get(name)
        if handler is None:
            shown = "".join(ch if ch.isprintable() else "?" for ch in name)[:40]
            self.console.line(f"error: unknown command '{shown}' (try help)")
            return
        try:
            handler(args)
        except Exception as exc:  # noqa: BLE001 - a firmware bug must not look like a power loss
            log.exception("command %r failed", text)
            self.console.line(f"error: {type(exc).__name__}: {exc}")

    def cmd_help(self, args: list[str]) -> None:
        for line in HELP:
            self.console.line(line)

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
                self.console.line("error: usage: clock [set <unix-seconds>]")
                return
            try:
                value = float(args[1])
            except ValueError:
                self.console.line(f"error: not a number: {args[1]}")
                return
            if not 0 <= value < 253402300800:  # what an RTC calendar can hold (year 9999)
                self.console.line(f"error: out of range: {args[1]}")
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

    def _choose_offer(self, version: str, name: str) -> tuple[StoredSession | None, float, str]:
        """Decide what to offer, like real firmware: RTC age, lifetime, name, version."""
        if self.held is None:
            return None, 0.0, "no stored session"
        s = self.held.session
        if self.variant.check_name and s.server_name != name:
            return None, 0.0, f"stored session is for {s.server_name}"
        lo, hi = VERSIONS[version]
        code = 4 if s.tls_version == 4 else 3
        if not (lo[1] <= code <= hi[1]):
            return None, 0.0, f"stored session is {s.version_name}"
        age = self._age(s)
        if s.tls_version == 4 and age < 0:
            return None, age, "ticket age negative: clock went backwards"
        if s.lifetime_s and age > s.lifetime_s:
            return None, age, f"ticket expired: age {int(age)}s > lifetime {s.lifetime_s}s"
        return s, max(0.0, age), ""

    def cmd_connect(self, args: list[str]) -> None:
        c = self.console
        if len(args) < 2 or len(args) > 4:
            c.line("error: usage: connect <host> <port> [tls1.2|tls1.3|auto] [<server-name>]")
            return
        host = args[0]
        try:
            port = int(args[1])
            if not 0 < port < 65536:
                raise ValueError
        except ValueError:
            c.line(f"connect failed: bad port {args[1]!r}")
            return
        version = args[2] if len(args) > 2 else "auto"
        if version not in VERSIONS:
            c.line(f"connect failed: unknown TLS version {version!r} (tls1.2, tls1.3, auto)")
            return
        name = args[3] if len(args) > 3 else host
        offer, age, why = self._choose_offer(version, name)
        if offer is None:
            c.line(f"tls: offering nothing ({why})")
        elif offer.tls_version == 4:
            c.line(f"tls: offering psk {fp(offer.ticket)} (TLSv1.3, age {int(age)}s)")
        else:
            c.line(f"tls: offering ticket {fp(offer.ticket)} (TLSv1.2, age {int(age)}s)")
        c.state("radio")
        try:
            time.sleep(RADIO_UP_S)
            outcome = self._connect(host, port, version, name, offer, age)
        except HandshakeFailed as exc:
            c.state("idle")
            c.line(f"connect failed: {exc.reason}")
            return
        c.state("idle")
        c.line(f"app: sent {outcome.sent} bytes, received {outcome.received} bytes")
        self._store(outcome)
        c.line(f"connect ok resumed={'yes' if outcome.resumed else 'no'}")

    def _connect(self, host: str, port: int, version: str, name: str,
                 offer: StoredSession | None, age: float) -> Outcome:
        c = self.console
        session = restore(offer, age) if offer is not None else None
        uptime = self.variant.uptime_clock
        try:
            outcome = handshake_and_talk(host, port, version, name, session, self.ca_file,
                                         self.rtc.now(), uptime, fallback=self.variant.fallback)
        except HandshakeFailed as exc:
            if not (exc.offered and offer is not None and offer.tls_version == 3):
                raise
            log.info("TLS 1.2 handshake with offered ticket failed: %s", exc.reason)
            if not self.variant.fallback:
                raise HandshakeFailed("server refused session", True) from None
            c.line("tls: server refused session, falling back to full handshake")
            outcome = handshake_and_talk(host, port, version, name, None, self.ca_file,
                                         self.rtc.now(), uptime)
            c.line(f"tls: handshake done {outcome.version} {outcome.cipher} full")
            return outcome
        if offer is not None and not outcome.resumed:
            if not self.variant.fallback:
                raise HandshakeFailed("server refused session", True)
            c.line("tls: server refused session, falling back to full handshake")
        c.line(f"tls: handshake done {outcome.version} {outcome.cipher} "
               f"{'resumed' if outcome.resumed else 'full'}")
        return outcome

    def _store(self, outcome: Outcome) -> None:
        c = self.console
        new = outcome.new_session
        if new is None:
            if outcome.resumed:
                c.line("session unchanged (server issued no new ticket)")
            else:
                c.line("session not stored (server issued no ticket)")
            return
        if outcome.resumed and not self.variant.renew:
            return  # the no-renew bug: the fresh ticket is silently dropped
        if not self.variant.persist:
            self.held = Held(new, None, 0)
            c.line("session stored in RAM")
            return
        try:
            record = flashmod.encode_record(new, 0)
            plan = self.flash.plan(len(record), in_place=not self.variant.atomic)
            record = flashmod.encode_record(new, plan.seq, with_crc=self.variant.atomic)
        except flashmod.RecordError as exc:
            c.line(f"session not stored ({exc})")
            return
        slot = flashmod.SLOT_NAMES[plan.slot]
        c.line(f"flash: writing slot {slot} seq {plan.seq} ({plan.pages} pages)")
        c.state("flash")
        try:
            self.flash.write(plan, record, erase=self.variant.atomic)
        except OSError as exc:
            c.state("idle")
            c.line(f"flash: write failed slot {slot} ({exc})")
            return
        c.state("idle")
        c.line(f"flash: write done slot {slot} seq {plan.seq}")
        self.held = Held(new, slot, plan.seq)
        c.line("session stored")
