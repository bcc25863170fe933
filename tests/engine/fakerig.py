"""A rig without processes: fake supply, console, firmware and reference server, in one thread.

Why: the engine and the verdict are exercised end to end on the simulated
bench (tests/scenario_runs, minutes), so a change to one step used to wait
for the slow loop.  Here every part the engine talks to is a small in-memory
object with the same interface, and the "firmware" answers a command the
moment it is sent, so a scenario runs in milliseconds.  The model is coarse
on purpose (no TLS, no physics): tickets are record ids, a rail is on or off.
It must stay honest about what the engine sees: records are real
:class:`HandshakeRecord` objects, console lines real :class:`Line` objects,
and a firmware bug is a flag that changes what the firmware does, never what
the harness is told.

Not a stand-in for the real bench: it proves the engine's and the verdict's
logic, nothing about timing, ports or OpenSSL.
"""

from __future__ import annotations

import itertools
import json
import re
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from harness import clock
from harness.console import ForbiddenOutput, Guard, Line, LineMatch
from harness.devicefile import DeviceSpec
from harness.errors import BenchTimeout
from harness.server.records import HandshakeRecord, Offered, RecordTimeout
from harness.supply import DischargeError, PowerEvent

VERSIONS = {"tls1.2": "TLSv1.2", "tls1.3": "TLSv1.3"}


@dataclass
class Bugs:
    """What the fake firmware gets wrong (all False: a correct firmware)."""

    ram_only: bool = False        # keeps the session in RAM only
    no_renew: bool = False        # drops tickets received on a resumption
    no_fallback: bool = False     # gives up when its offer is refused
    any_server: bool = False      # offers its session to any server name
    boots: int = 0                # hangs at every boot after this many (0: never hangs)
    panic_at_boot: bool = False   # prints a forbidden line at boot
    offline: bool = False         # never reaches the server
    bad_cert: bool = False        # every handshake fails (certificate)
    app_fails: bool = False       # handshake fine, then the application fails
    stuck_rail: bool = False      # the rail never discharges
    versions: tuple[str, ...] = ("tls1.2", "tls1.3")   # what its TLS stack speaks
    ignores_version: bool = False  # offers every version it has, whatever it was asked


@dataclass
class FakeTrigger:
    pattern: re.Pattern
    action: Callable[[], object]
    delay: float = 0.0
    armed: bool = True
    fired: bool = False

    def cancel(self) -> None:
        self.armed = False

    def wait(self, timeout: float) -> None:
        if not self.fired:
            raise BenchTimeout("trigger did not fire")


class FakeConsole:
    """In-memory console: the firmware appends lines, expect never waits."""

    def __init__(self) -> None:
        self.lines: list[Line] = []
        self.sent: list[str] = []
        self.firmware: FakeFirmware | None = None
        self._pos = 0
        self._mark = 0
        self._triggers: list[FakeTrigger] = []
        self._guards: list[re.Pattern] = []
        self._violation: tuple[str, Line] | None = None
        #: a partial line (a prompt): the fake shell ends every line it prints
        self.pending = b""

    def emit(self, text: str) -> None:
        now = clock.now()
        start, self._pos = self._pos, self._pos + len(text) + 2
        line = Line(now, clock.wall_from_mono(now), text, text.encode(), start, self._pos)
        self.lines.append(line)
        hit = next((g for g in self._guards if g.search(text)), None)
        if hit is not None and self._violation is None:
            self._violation = (hit.pattern, line)
        for trig in list(self._triggers):
            if trig.armed and trig.pattern.search(text):
                trig.armed = False
                trig.fired = True
                trig.action()

    def _catch_up(self) -> None:
        """A device boots after power comes back, not inside the supply's command."""
        if self.firmware is not None:
            self.firmware.run_pending()

    def mark(self) -> int:
        self._catch_up()
        self._mark = self._pos
        return self._mark

    def since(self, mark: int) -> list[Line]:
        self._catch_up()
        return [ln for ln in self.lines if ln.end > mark]

    def expect(self, pattern: Any, timeout: float = 10.0, since: int | None = None) -> LineMatch:
        self._catch_up()
        if self._violation is not None:
            violation, self._violation = self._violation, None
            raise ForbiddenOutput("fake", Guard(re.compile(violation[0]), 0), violation[1])
        start = self._mark if since is None else since
        rx = re.compile(pattern) if isinstance(pattern, str) else pattern
        for ln in self.lines:
            if ln.end > start:
                m = rx.search(ln.text)
                if m:
                    self._mark = max(self._mark, ln.end)
                    return LineMatch(ln, m)
        raise BenchTimeout(f"no line matching {rx.pattern!r} (fake console)")

    def send(self, line: str) -> None:
        self._catch_up()
        self.sent.append(line)
        if self.firmware is not None:
            self.firmware.command(line)

    def trigger(self, pattern: str, action: Callable[[], object], delay: float = 0.0) -> FakeTrigger:
        trig = FakeTrigger(re.compile(pattern), action, delay)
        self._triggers.append(trig)
        return trig

    def forbid(self, pattern: str) -> None:
        self._guards.append(re.compile(pattern))


class FakeSupply:
    """On or off; a glitch shorter than the rail's discharge leaves the firmware running."""

    def __init__(self) -> None:
        self.events: list[PowerEvent] = []
        self.output = False
        self.firmware: FakeFirmware | None = None
        self.stuck_rail = False
        self._glitch = False
        self._brownout = False
        self.volts = 3.3
        self.safe_calls = 0

    def _event(self, kind: str, volts: float | None = None) -> None:
        now = clock.now()
        self.events.append(PowerEvent(now, clock.wall_from_mono(now), kind, volts))

    def on(self, settle: bool = True, tolerance: float = 0.1, timeout: float = 2.0) -> None:
        self.output = True
        self._event("on", 3.3)
        if self._glitch:
            self._glitch = False      # the rail never fell: the firmware kept running
            return
        if self.firmware is not None:
            self.firmware.power_up("power-on")

    def off(self, discharge_below: float | None = 0.3, min_off: float = 0.0, timeout: float = 5.0) -> None:
        self.output = False
        self._event("off")
        if discharge_below is not None and self.stuck_rail:
            raise DischargeError("FAKE::SUPPLY", 3.1, discharge_below, timeout)
        # A switch-off without waiting for the discharge, and a short off time,
        # is a glitch: the engine asks for that with verify: false.
        self._glitch = discharge_below is None and min_off == 0.0 and self.firmware is not None \
            and self.firmware.glitchable
        if not self._glitch and self.firmware is not None:
            self.firmware.die()

    def set_voltage(self, volts: float) -> None:
        """A dip below the brown-out level (2.5 V) resets the firmware when the rail recovers."""
        self._event("voltage", volts)
        self.volts = volts
        if volts < 2.5 and self.firmware is not None:
            self.firmware.die()
            self._brownout = True
        elif self._brownout and self.firmware is not None:
            self._brownout = False
            self.firmware.power_up("brown-out")

    def measure_voltage(self) -> float:
        return self.volts if (self.output or self._glitch) else 0.0

    def safe(self) -> None:
        self.safe_calls += 1
        self.off(None, 0.1)


@dataclass
class Session:
    issuer: int            # the record id that issued it
    server: str            # which fake server issued it ("primary", "other")
    name: str              # the server name it was stored for
    version: str
    epoch: int


class FakeServer:
    """Records handshakes the way the reference server does, from what the fake firmware offers."""

    def __init__(self, key: str, names: tuple[str, ...], port: int):
        self.key = key
        self.names = names
        self.port = port
        self.config = _Config()
        self.epoch = 1
        self._records: list[HandshakeRecord] = []
        self._ids = itertools.count(1)

    def configure(self, **knobs: Any) -> None:
        for name, value in knobs.items():
            setattr(self.config, name, tuple(value) if name == "versions" else value)

    def rotate_keys(self) -> None:
        self.epoch += 1

    def records(self) -> list[HandshakeRecord]:
        return list(self._records)

    def mark(self) -> int:
        return len(self._records)

    def since(self, mark: int) -> list[HandshakeRecord]:
        return self._records[mark:]

    def wait_for(self, predicate: Callable | None = None, *, timeout: float = 10.0, since: int | None = None,
                 **fields: Any) -> HandshakeRecord:
        for rec in self._records[since or 0:]:
            if all(getattr(rec, k) == v for k, v in fields.items()) and (predicate is None or predicate(rec)):
                return rec
        raise RecordTimeout("fake", timeout, self._records[since or 0:])

    def handshake(self, offer: Session | None, sni: str, versions: tuple[str, ...], *,
                  abort_on_refusal: bool = False, fail: str | None = None) -> HandshakeRecord:
        """One connection: negotiate, judge the offer, issue a ticket; returns the record."""
        now = clock.now()
        rid = next(self._ids)
        rec = HandshakeRecord(id=rid, mono=now, time=clock.iso(clock.wall_from_mono(now)), peer="fake:1", sni=sni,
                              client_versions=[VERSIONS[v] for v in versions], duration_ms=0.0,
                              protocol=self.config.protocol)
        common = [VERSIONS[v] for v in versions if VERSIONS[v] in self.config.versions]
        if fail or not common:
            rec.error = fail or "TLS handshake failed: unsupported protocol"
            return self._add(rec)
        rec.version = common[-1]
        if offer is not None:
            if rec.version == "TLSv1.3":
                rec.offered = Offered(psk=[f"t{offer.issuer}"])
            else:
                rec.offered = Offered(ticket=f"t{offer.issuer}")
            reason = self._refusal(offer, rec.version)
            if reason is None:
                rec.resumed, rec.resumed_from = True, offer.issuer
                rec.mechanism = "psk" if rec.version == "TLSv1.3" else "ticket"
            else:
                rec.rejected = reason
                if abort_on_refusal:
                    rec.version, rec.error = None, "client aborted after the refusal"
                    return self._add(rec)
        if not rec.resumed:
            rec.mechanism = "full"
        if self.config.tickets and (not rec.resumed or rec.version == "TLSv1.3"):
            rec.issued = [f"t{rid}"]
        return self._add(rec)

    def _refusal(self, offer: Session, version: str) -> str | None:
        if offer.server != self.key:
            return "foreign"
        if offer.epoch != self.epoch:
            return "rotated"
        if offer.version != version:
            return "version"
        return None

    def _add(self, rec: HandshakeRecord) -> HandshakeRecord:
        self._records.append(rec)
        return rec


@dataclass
class _Config:
    versions: tuple[str, ...] = ("TLSv1.2", "TLSv1.3")
    tickets: bool = True
    ticket_lifetime: int = 7200
    tls13_tickets: int = 2
    session_cache: bool = True
    protocol: str = "line"
    greeting: str = ""
    app_timeout: float = 60.0


@dataclass
class FakeFirmware:
    """The emulated firmware's shell, reduced to its contract with the device file (devices/sim.yaml)."""

    console: FakeConsole
    servers: dict[int, FakeServer]
    flash: Path
    bugs: Bugs = field(default_factory=Bugs)
    autoconnect: tuple[int, str] | None = None   # (port, server name) baked in
    running: bool = False
    ram: Session | None = None
    pending: str | None = None
    booted: int = 0

    @property
    def glitchable(self) -> bool:
        return self.running

    def die(self) -> None:
        self.running = False
        self.pending = None
        self.ram = None

    def say(self, text: str) -> bool:
        """Print a line; False once power is gone (the rest of the command never happens)."""
        if not self.running:
            return False
        self.console.emit(text)
        return self.running

    def power_up(self, cause: str) -> None:
        """Power is back: the boot runs when the harness next looks (see FakeConsole._catch_up)."""
        self.pending = cause

    def run_pending(self) -> None:
        cause, self.pending = self.pending, None
        if cause is not None:
            self.boot(cause)

    def boot(self, cause: str) -> None:
        self.running = True
        self.ram = None
        self.booted += 1
        if self.bugs.boots and self.booted > self.bugs.boots:
            return
        self.say(f"reset cause: {cause}")
        if self.bugs.panic_at_boot:
            self.say("panic: flash restore")
        self.ram = None if self.bugs.ram_only else self._load()
        self.say("ready")
        if self.autoconnect is not None:
            port, name = self.autoconnect
            self.connect(port, "auto", name)

    def _load(self) -> Session | None:
        """The stored record, if its CRC holds: a damaged record is never offered."""
        try:
            raw = self.flash.read_bytes().rstrip(b"\xff")
        except OSError:
            return None
        body, _, crc = raw.rpartition(b"|")
        if not body or crc != str(zlib.crc32(body)).encode():
            return None
        return Session(**json.loads(body))

    def command(self, line: str) -> None:
        if not self.running or self.autoconnect is not None:
            return
        words = line.split()
        if words[:1] == ["connect"] and len(words) >= 3:
            self.connect(int(words[2]), words[3] if len(words) > 3 else "auto", words[4] if len(words) > 4 else "")
        elif words[:1] == ["erase"]:
            self.flash.write_bytes(b"\xff" * 64)
            self.ram = None
            self.say("session erased")
        elif words[:2] == ["clock", "set"]:
            self.say(f"clock: {words[2]}")
        else:
            self.say(f"error: unknown command '{words[0] if words else ''}'")

    def connect(self, port: int, version: str, name: str) -> None:
        server = self.servers[port]
        offer = self.ram if self.ram is not None and (self.bugs.any_server or self.ram.name == name) else None
        versions = tuple(v for v in self.bugs.versions if version in ("auto", v) or self.bugs.ignores_version) \
            or self.bugs.versions
        if not self.say(f"tls: offering {'nothing' if offer is None else 'a session'}"):
            return
        if self.bugs.offline:
            self.say("connect failed: network unreachable")
            return
        rec = server.handshake(offer, name, versions, abort_on_refusal=self.bugs.no_fallback,
                               fail="TLS handshake failed: certificate unknown" if self.bugs.bad_cert else None)
        if rec.version is None:
            self.say(f"connect failed: {rec.error}")
            return
        if self.bugs.app_fails:
            self.say("connect failed: application data: connection reset")
            return
        if rec.issued and not (rec.resumed and self.bugs.no_renew):
            if not self._store(Session(rec.id, server.key, name, rec.version, server.epoch)):
                return
        self.say(f"connect ok resumed={'yes' if rec.resumed else 'no'}")

    def _store(self, session: Session) -> bool:
        if self.bugs.ram_only:
            self.ram = session
            return self.say("session stored in RAM")
        if not self.say("flash: writing slot A"):
            return False
        body = json.dumps(session.__dict__).encode()
        self.flash.write_bytes(body + b"|" + str(zlib.crc32(body)).encode())
        self.ram = session
        return self.say("session stored")


def make_rig(spec: DeviceSpec, tmp: Path, bugs: Bugs | None = None) -> tuple[Any, FakeFirmware]:
    """A :class:`harness.engine.Rig` on fakes, and the firmware to poke at."""
    from harness.device import Device
    from harness.engine import Rig

    console, supply = FakeConsole(), FakeSupply()
    primary = FakeServer("primary", ("server.test",), 4433)
    other = FakeServer("other", ("other.test",), 4434)
    flash = tmp / "flash.bin"
    bugs = bugs or Bugs()
    autoconnect = (primary.port, primary.names[0]) if spec.firmware.autoconnect else None
    fw = FakeFirmware(console, {primary.port: primary, other.port: other}, flash, bugs, autoconnect)
    console.firmware = supply.firmware = fw
    supply.stuck_rail = bugs.stuck_rail
    for pattern in spec.firmware.forbid:
        console.forbid(pattern)
    device = Device(spec, supply, console, {})
    rig = Rig(spec=spec, device=device, supply=supply, console=console, server=primary,
              servers={"other": other}, flash_file=flash)
    return rig, fw
