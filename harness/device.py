"""The device under test: the actions a scenario needs, performed from its file.

A :class:`Device` combines a supply, a console and a :class:`DeviceSpec`.
It knows nothing of any particular firmware: what to send and what to wait
for comes from the device file.  It keeps the evidence a verdict needs on
the harness clock: power cuts (with the rail voltage measured before power
came back), boots (with the reset cause the firmware printed) and connection
attempts.

It is the one owner of every power cut: switched off by a step, dipped by a
brown-out, or injected at a moment the device chooses (an armed cut fired by
a console line or a delay after the connect command).  Arming, cutting,
verifying the discharge and the evidence window a scenario judges
(:meth:`Device.mark` / :meth:`Device.since`) all live here, so nobody else
edits the list of cuts.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

from . import clock
from .devicefile import CommandSpec, DeviceSpec, fill
from .consolerecords import ConsoleError
from .errors import BenchError, BenchTimeout, ConsoleLost, HarnessError

log = logging.getLogger(__name__)

#: how long a USB-UART adapter's port may stay away while the device is powered (a re-enumeration takes
#: about a second) before the console counts as lost
PORT_GRACE = 3.0


class SupplyLike(Protocol):
    def on(self, settle: bool = True, tolerance: float = 0.1, timeout: float = 2.0) -> Any: ...
    def off(self, discharge_below: float | None = 0.3, min_off: float = 0.0, timeout: float = 5.0) -> Any: ...
    def set_voltage(self, volts: float) -> Any: ...
    def measure_voltage(self) -> float: ...
    def safe(self) -> Any: ...


class ConsoleLike(Protocol):
    def mark(self) -> int: ...
    def expect(self, pattern: str, timeout: float = ..., since: int | None = None) -> Any: ...
    def send(self, line: str) -> None: ...
    def trigger(self, pattern: str, action: Callable[[], object], delay: float = 0.0) -> Any: ...


class BootError(HarnessError):
    """Power came back but the device did not reach its boot-ready line."""


#: reset causes that show the power really went away.  Not brown-out: a brown-out reset keeps retention
#: RAM (ESP32 RTC memory, .noinit/backup SRAM), so firmware that kept its session there would pass.
POWER_LOSS_CAUSES = ("power-on",)


def _words(text: str) -> bool:
    """Text a shell would print (a prompt, an echo), not the noise of a line floating or back-powered."""
    return sum(ch.isalnum() for ch in text) >= 2 and all(ch.isprintable() or ch.isspace() for ch in text)


class PowerStillOn(HarnessError):
    """A power switch without a meter was told off, and the device still answered: power was not cut."""


class CutNotSeen(HarnessError):
    """An armed power cut never happened: the moment it waited for never came."""


@dataclass
class PowerCut:
    """One interval without power, as the supply saw it."""

    off_mono: float
    on_mono: float | None = None
    volts_before_on: float | None = None
    verified: bool = False
    #: "off" (a supply's output switched off), "brownout" (voltage dipped) or "switched" (a power switch
    #: without a meter: the discharge is not measured, the reset cause is the evidence)
    kind: str = "off"


@dataclass
class Boot:
    mono: float
    cause: str | None
    line: str


@dataclass
class SessionWrite:
    """A console line where the device says it writes (flash_write) or has stored (session_stored) its session."""

    mono: float
    text: str
    kind: str                  # "flash_write" or "session_stored"
    bytes: int | None = None   # the pattern's ``bytes`` group, when it has one


@dataclass(frozen=True)
class Mark:
    """Where a scenario's window begins in each evidence list."""

    cuts: int
    boots: int
    connects: int


@dataclass
class Window:
    """The device's evidence since a :class:`Mark`: what one scenario is judged on."""

    cuts: list[PowerCut]
    boots: list[Boot]
    connects: list["ConnectAttempt"]


class _DelayCut:
    """A cut a fixed delay after the harness sends the connect command.

    Offers what a console :class:`~harness.console.Trigger` offers
    (``armed``, ``fired``, ``delay``, ``wait``, ``cancel``), so an armed cut
    is settled the same way whatever fires it.
    """

    def __init__(self, delay: float):
        self.delay = delay
        self.armed = True
        self.error: Exception | None = None
        self._fired = threading.Event()
        self._timer: threading.Timer | None = None

    @property
    def fired(self) -> bool:
        return self._fired.is_set()

    def start(self, action: Callable[[], None]) -> None:
        def run() -> None:
            try:
                action()
            except Exception as exc:  # noqa: BLE001 - handed to settle_cut, which raises it
                self.error = exc
            finally:
                self._fired.set()

        self.armed = False
        self._timer = threading.Timer(self.delay, run)
        self._timer.daemon = True
        self._timer.start()

    def wait(self, timeout: float) -> None:
        if not self._fired.wait(timeout):
            raise HarnessError(f"the timed cut did not happen within {timeout:g} s")

    def cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer.join(timeout=10)
        self.armed = False


@dataclass
class ArmedCut:
    """A power cut waiting for its moment: ``what`` says which, for the messages."""

    what: str
    trigger: Any        # a console Trigger or a _DelayCut


@dataclass
class ConnectAttempt:
    start_mono: float
    end_mono: float
    ok: bool
    interrupted: bool
    detail: str
    groups: dict[str, str] = field(default_factory=dict)


class Device:
    def __init__(self, spec: DeviceSpec, supply: SupplyLike, console: ConsoleLike,
                 values: dict[str, Any] | None = None):
        self.spec = spec
        self.supply = supply
        self.console = console
        self.values = dict(values or {})
        self.cuts: list[PowerCut] = []
        self.boots: list[Boot] = []
        self.connects: list[ConnectAttempt] = []
        self.powered = False
        self.armed: ArmedCut | None = None
        #: when power last came on (harness clock) and the console position
        #: just before: what a device that connects by itself did since then
        #: is the answer to the next ``connect``
        self.last_on: tuple[float, int] | None = None

    # -- power ------------------------------------------------------------
    def power_on(self, wait_boot: bool = True, timeout: float | None = None) -> Boot | None:
        volts = None
        if self.cuts and self.cuts[-1].on_mono is None:
            try:
                volts = self.supply.measure_voltage()
            except HarnessError:
                volts = None
        mark = self.console.mark()
        before = clock.now()
        self.supply.on(settle=True, tolerance=self.spec.supply.settle_tolerance)
        now = clock.now()
        self.last_on = (before, mark)
        if self.cuts and self.cuts[-1].on_mono is None:
            self.cuts[-1].on_mono = now
            self.cuts[-1].volts_before_on = volts
        self.powered = True
        if not wait_boot:
            return None
        return self.boot_after(mark, timeout)

    def boot_after(self, mark: int, timeout: float | None = None) -> Boot:
        """The boot after power came back; after a cut by a switch that measures nothing, also its evidence.

        A switch cannot show the rail went down, so the boot must: its reset
        cause must be a power-on reset, and a device that did not boot but
        still answers on its shell never lost power.  Either is raised as
        :class:`PowerStillOn` (``power-not-cut``), whatever the scenario
        expects next, so no verdict can rest on a cut that did not happen.
        """
        last = self.cuts[-1] if self.cuts else None
        switched = last is not None and last.kind == "switched"
        try:
            boot = self.wait_boot(mark, timeout)
        except BootError:
            rebooted = any(re.search(self.spec.firmware.reset_cause or "(?!)", ln.text)
                           for ln in self.console.since(mark))
            answer = self._answers() if switched and not rebooted else None
            if answer is not None:
                # No boot because there was nothing to boot from: the device kept its power.
                raise PowerStillOn(f"no boot after power came back, and the device answers on its console "
                                   f"({answer!r}): it never lost power when the switch turned it off (a relay "
                                   "that did not open, or a second supply path: USB, a battery, a debug probe)") \
                    from None
            raise
        if switched and boot.cause not in POWER_LOSS_CAUSES:
            seen = f"its reset cause was {boot.cause!r}" if boot.cause else "it printed no reset cause"
            raise PowerStillOn(f"power loss not shown: the power switch measures nothing, and after it the device "
                               f"rebooted but {seen}, not a power-on reset (a relay that did not open, a second "
                               "supply path, or firmware.reset_causes does not map its power-on reset to "
                               "power-on)")
        return boot

    def wait_boot(self, mark: int, timeout: float | None = None) -> Boot:
        fw = self.spec.firmware
        cause = None
        cause_line = ""
        wait = timeout or fw.boot_timeout
        try:
            if fw.reset_cause:
                m = self.console.expect(fw.reset_cause, timeout=wait, since=mark)
                cause = self.reset_cause_name(m.match.group("cause"))
                cause_line = m.line.text
            ready = self.console.expect(fw.boot_ready, timeout=wait, since=mark)
        except BenchTimeout as exc:
            raise self._lost_or(BootError(f"the device did not boot within {wait:.0f} s of power-up\n{exc}")) \
                from None
        boot = Boot(mono=ready.line.mono, cause=cause, line=cause_line or ready.line.text)
        self.boots.append(boot)
        log.info("device booted (reset cause %s)", cause)
        return boot

    def _check_port(self) -> None:
        """While a powered device runs a command, an adapter's port that stays away is lost: say so now.

        Waiting out a 30 s command timeout for a port that vanished (a bench
        process that died, a hub that dropped out) only delays the report.
        """
        if self.spec.console.native_usb or not self.powered:
            return
        gaps = getattr(self.console, "gaps", None) or []
        if not gaps or gaps[-1].end is not None:
            return
        # Counted from when it vanished or from power-on, whichever is later: a port that went with the
        # power gets its re-enumeration time after power-up.
        since = max(gaps[-1].start, self.last_on[0] if self.last_on else 0.0)
        if clock.now() - since > PORT_GRACE:
            raise ConsoleLost(f"console {getattr(self.console, 'url', '?')} vanished "
                              f"{clock.now() - gaps[-1].start:.1f} s ago and has stayed away while the "
                              f"device was powered ({gaps[-1].reason})")

    def _lost_or(self, exc: HarnessError) -> HarnessError:
        """``exc``, unless the console port is away: then the bench lost it, and the device is not to blame.

        A USB-UART adapter (on the board or on the bench) is there whether
        the firmware runs or not, so a port that stays away is a cable, a
        hub or ser2net: :class:`ConsoleLost`.  The device's own USB
        (``console.native_usb``) appears only when the firmware runs: then
        its absence is the device's failure, and ``exc`` stands.
        """
        if self.spec.console.native_usb or getattr(self.console, "present", True):
            return exc
        url = getattr(self.console, "url", "?")
        return ConsoleLost(f"console {url} vanished and did not come back, so the device could not be "
                           f"judged: {exc}")

    def reset_cause_name(self, printed: str) -> str:
        """Map what the firmware prints (``RTCWDT_BROWN_OUT_RESET``) to a harness name (``brown-out``)."""
        for name, pattern in self.spec.firmware.reset_causes.items():
            if re.search(pattern, printed):
                return name
        return printed

    def power_off(self, off_time: float | None = None, verify: bool = True) -> PowerCut:
        """Cut power; with ``verify`` wait until the rail is really discharged."""
        if self.armed is not None:
            self.settle_cut()   # an armed cut that never happened must not pass as this one
        s = self.spec.supply
        min_off = s.min_off if off_time is None else off_time
        cut = PowerCut(off_mono=clock.now(), verified=verify)
        if not getattr(self.supply, "measures", True):
            # A switch without a meter: held off, never verified; the reset cause will have to tell.
            cut.kind, cut.verified = "switched", False
        self.cuts.append(cut)
        self.powered = False
        if verify:
            self.supply.off(discharge_below=s.discharge_below, min_off=min_off, timeout=s.discharge_timeout)
        else:
            self.supply.off(discharge_below=None, min_off=0.0)
            if min_off > 0:
                time.sleep(min_off)
        cut.off_mono = self._last_off_mono(cut.off_mono)
        if cut.kind == "switched":
            self._check_unpowered(min_off)
        return cut

    def _check_unpowered(self, held: float) -> None:
        """After a switch that measures nothing opened: a device with a shell must not answer any more.

        The one direct check there is without a meter: Enter on the console.
        A device that still echoes or prompts kept its power (a relay that
        did not open, a board also fed through USB, a battery, a debug
        probe); calling its next boot a power loss would be false.  Without
        a shell, the reset cause at the next boot is the only witness.
        """
        said = self._answers()
        if said is not None:
            raise PowerStillOn(f"the device still answered on its console ({said!r}) {held:.1f} s after the "
                               "power switch turned it off: power was not cut (a relay that did not open, or a "
                               "second supply path: USB, a battery, a debug probe)")

    #: how long a shell gets to answer Enter when asked whether the device still runs
    ANSWER_WAIT = 1.0

    def _answers(self) -> str | None:
        """What the device's shell says to Enter (its prompt, an echo), or None if nothing answers.

        Only a device with a shell can be asked; a quiet one (or a port that
        went with the power) answers None.
        """
        fw = self.spec.firmware
        if not fw.prompt or fw.autoconnect:
            return None
        mark, before = self.console.mark(), self.console.pending
        try:
            self.console.send("")
        except HarnessError:
            return None
        deadline = clock.now() + self.ANSWER_WAIT
        while clock.now() < deadline:
            time.sleep(0.05)
            answer = [ln.text for ln in self.console.since(mark) if _words(ln.text)]
            if answer:
                return answer[0]
            pending = self.console.pending.decode("utf-8", "replace").strip()
            if self.console.pending != before and _words(pending):
                return pending
        return None

    # -- evidence window ---------------------------------------------------
    def stored_sizes(self, start: float, end: float) -> list[int]:
        """Session record sizes the device printed (a ``bytes`` group in its flash_write or session_stored pattern)."""
        fw = self.spec.firmware
        patterns = [re.compile(p) for p in (fw.flash_write, fw.session_stored) if p and "(?P<bytes>" in p]
        sizes = []
        for ln in self.console.lines:
            if start <= ln.mono <= end:
                for rx in patterns:
                    m = rx.search(ln.text)
                    if m and m.group("bytes"):
                        sizes.append(int(m.group("bytes")))
                        break
        return sizes

    def session_writes(self, start: float, end: float) -> list[SessionWrite]:
        """The device's own lines about writing its session (flash_write, session_stored) in a window.

        Built like :meth:`stored_sizes`, from the same patterns, but keeping
        every line with its time: the report draws them on the scenario's
        time axis next to the power edges, so "the cut landed 3 ms into the
        write" is seen, not computed.  These are claims by the device, shown
        beside the ground truth, never used to judge.
        """
        fw = self.spec.firmware
        patterns = [(kind, re.compile(p)) for kind, p in (("flash_write", fw.flash_write),
                                                           ("session_stored", fw.session_stored)) if p]
        writes = []
        for ln in self.console.lines:
            if not start <= ln.mono <= end:
                continue
            for kind, rx in patterns:
                m = rx.search(ln.text)
                if m:
                    size = m.groupdict().get("bytes")
                    writes.append(SessionWrite(mono=ln.mono, text=ln.text, kind=kind,
                                               bytes=int(size) if size else None))
                    break
        return writes

    def mark(self) -> Mark:
        return Mark(len(self.cuts), len(self.boots), len(self.connects))

    def since(self, mark: Mark) -> Window:
        return Window(self.cuts[mark.cuts:], self.boots[mark.boots:], self.connects[mark.connects:])

    # -- injected cuts -------------------------------------------------------
    def arm_cut(self, pattern: str | None, delay: float, what: str) -> None:
        """Cut power ``delay`` s after a console line matches ``pattern``, or, with no
        pattern, ``delay`` s after the next connect command is sent."""
        self.disarm()
        if pattern is None:
            self.armed = ArmedCut(what, _DelayCut(delay))
        else:
            self.armed = ArmedCut(what, self.console.trigger(pattern, self._cut_now, delay=delay))
        # Armed: the rail sampler starts no new query; one already in flight must not delay the cut.
        wait_idle = getattr(self.supply, "wait_idle", None)
        if wait_idle is not None:
            wait_idle()

    def disarm(self) -> None:
        if self.armed is not None:
            self.armed.trigger.cancel()
        self.armed = None

    def _cut_now(self) -> None:
        """The armed moment came (console trigger thread or timer): off, no waiting."""
        mono = clock.now()
        self.supply.off(discharge_below=None, min_off=0.0)
        # Stamped by the supply's own record of the edge, as power_off does.
        self.cuts.append(PowerCut(off_mono=self._last_off_mono(mono), verified=False,
                                  kind="off" if getattr(self.supply, "measures", True) else "switched"))
        self.powered = False

    def settle_cut(self, grace: float = 5.0) -> None:
        """Before power returns: the armed cut must have happened, and the rail discharged.

        Raises :class:`CutNotSeen` when the moment never came (the line was
        never printed): a cut that did not happen proves nothing.
        """
        armed, self.armed = self.armed, None
        if armed is not None:
            trig = armed.trigger
            if not trig.fired and not trig.armed:
                try:   # the moment came; the cut is due after its delay
                    trig.wait(trig.delay + grace)
                except HarnessError as exc:
                    trig.cancel()
                    raise CutNotSeen(f"cut_power_when: {armed.what} came but the cut did not happen: {exc}") \
                        from None
            fired = trig.fired
            trig.cancel()
            if not fired:
                raise CutNotSeen(f"cut_power_when: {armed.what} never appeared, so power was never cut there")
            error = getattr(trig, "error", None)
            if isinstance(error, BenchError):
                raise error             # the supply failed, not the firmware: a bench error stays one
            if error is not None:
                raise HarnessError(f"cut_power_when: the cut after {armed.what} failed: {error}")
        last = self.cuts[-1] if self.cuts else None
        if last is not None and last.on_mono is None and not last.verified and last.kind != "switched":
            s = self.spec.supply
            self.supply.off(discharge_below=s.discharge_below, min_off=s.min_off, timeout=s.discharge_timeout)
            last.verified = getattr(self.supply, "measures", True)

    def safe(self) -> None:
        """Whatever happened: nothing armed, output in the device file's safe state."""
        self.disarm()
        self.powered = False
        self.supply.safe()

    def _last_off_mono(self, fallback: float) -> float:
        events = getattr(self.supply, "events", None) or []
        for event in reversed(events):
            if getattr(event, "kind", None) == "off":
                return float(event.mono)
        return fallback

    def power_cycle(self, off_time: float | None = None, verify: bool = True) -> Boot | None:
        self.power_off(off_time, verify)
        return self.power_on()

    def brownout(self, volts: float, duration: float, wait_boot: bool = True) -> Boot | None:
        """Dip the rail to ``volts`` for ``duration`` seconds, then restore it."""
        if self.armed is not None:
            self.settle_cut()
        nominal = self.spec.supply.voltage
        mark = self.console.mark()
        cut = PowerCut(off_mono=clock.now(), kind="brownout", verified=False)
        self.cuts.append(cut)
        self.supply.set_voltage(volts)
        time.sleep(duration)
        try:
            cut.volts_before_on = self.supply.measure_voltage()
        except HarnessError:
            pass
        self.supply.set_voltage(nominal)
        cut.on_mono = clock.now()
        self.last_on = (cut.off_mono, mark)   # a reset by the dip reboots the device
        if not wait_boot:
            return None
        return self.wait_boot(mark)

    # -- shell ------------------------------------------------------------
    def command(self, name: str, timeout: float | None = None, **args: Any) -> ConnectAttempt:
        spec = self.spec.firmware.commands.get(name)
        if spec is None:
            raise HarnessError(f"{self.spec.path}: the device file has no firmware command '{name}' "
                               f"(has: {', '.join(sorted(self.spec.firmware.commands)) or 'none'})")
        return self._run(spec, timeout, args)

    def has_command(self, name: str) -> bool:
        return name in self.spec.firmware.commands

    def connect(self, host: str, port: int, version: str = "auto", sni: str = "",
                timeout: float | None = None) -> ConnectAttempt:
        if self.spec.firmware.autoconnect:
            raise HarnessError("this device connects by itself after boot; use a power step instead")
        # The harness names versions its own way (tls1.2); the shell may not.
        token = self.spec.firmware.version_tokens.get(version, version)
        if self.armed is not None and isinstance(self.armed.trigger, _DelayCut) and self.armed.trigger.armed:
            self.armed.trigger.start(self._cut_now)
        return self.command("connect", timeout, host=host, port=port, version=token, sni=sni)

    def _run(self, spec: CommandSpec, timeout: float | None, args: dict[str, Any]) -> ConnectAttempt:
        start = clock.now()
        mark = self.console.mark()
        if spec.send is not None:
            line = fill(spec.send, {**self.values, **args}, f"firmware.commands.{spec.name}.send")
            try:
                self.console.send(" ".join(line.split()) if "  " in line or line.endswith(" ") else line)
            except ConsoleError as exc:
                raise self._lost_or(exc) from None
        if spec.ok is None:
            return ConnectAttempt(start, clock.now(), True, False, "sent")
        pattern = spec.ok if spec.fail is None else f"(?:{spec.ok})|(?P<_fail>{spec.fail})"
        wait = timeout or spec.timeout
        deadline = clock.now() + wait
        while True:
            # Wait in slices: a trigger may cut the power mid-command, and then
            # no answer will ever come; waiting out the full timeout would hide
            # what happened and waste the run.
            if not self.powered:
                attempt = ConnectAttempt(start, clock.now(), False, True, "power was cut during the command")
                if spec.name == "connect":
                    self.connects.append(attempt)
                return attempt
            self._check_port()
            try:
                m = self.console.expect(pattern, timeout=min(0.25, max(0.01, deadline - clock.now())),
                                        since=mark)
                break
            except BenchTimeout as exc:
                if clock.now() >= deadline:
                    raise self._lost_or(BenchTimeout(f"{spec.name}: no answer matching {spec.ok!r} within "
                                                     f"{wait:.1f} s\n{exc}")) from None
        groups = {k: v for k, v in m.match.groupdict().items() if v is not None and not k.startswith("_")}
        failed = m.match.groupdict().get("_fail") is not None
        fail_groups = {}
        if failed and spec.fail:
            fm = re.search(spec.fail, m.line.text)
            fail_groups = {k: v for k, v in (fm.groupdict() if fm else {}).items() if v is not None}
        attempt = ConnectAttempt(start, m.line.mono, not failed, False, m.line.text, {**groups, **fail_groups})
        if spec.name == "connect":
            self.connects.append(attempt)
        return attempt
