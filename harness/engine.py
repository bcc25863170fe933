"""Runs a scenario's steps against live bench objects and judges the result.

The engine is plain Python: it gets a :class:`Rig` (device, supply, console,
reference server, run directory) from whoever owns the hardware (the pytest
fixtures, or a script) and never creates or tears down hardware itself, so a
failing step can never leave the bench in an unknown state: the owner's
teardown puts it back in its safe state.
"""

from __future__ import annotations

import logging
import random
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from . import clock, verdict
from .console import ForbiddenOutput
from .device import BootError, ConnectAttempt, CutNotSeen, Device, Mark, PowerStillOn, Window
from .devicefile import DeviceSpec
from .errors import BenchError, BenchTimeout, HarnessError
from .expectations import EXPECTATIONS, WHOLE_SCENARIO, Ask, NeedsConnect
from .outcomes import Code
from .scenario import Scenario, Step, substitute, walk
from .server.config import ServerConfig
from .supply import DischargeError

log = logging.getLogger(__name__)

#: Server settings every scenario starts from (the reference server's own
#: defaults); the device file's server section, then the scenario's
#: ``server:``, override them.
SERVER_DEFAULTS: dict[str, Any] = {name: getattr(ServerConfig(), name) for name in
                                   ("versions", "tickets", "ticket_lifetime", "tls13_tickets", "session_cache",
                                    "protocol", "greeting", "app_timeout", "ticket_delay")}


def server_knobs(settings: dict[str, Any]) -> dict[str, Any]:
    """Scenario-file names for server settings -> the reference server's knobs."""
    knobs = dict(settings)
    if "lifetime" in knobs:
        knobs["ticket_lifetime"] = int(knobs.pop("lifetime"))
    if isinstance(knobs.get("versions"), str):
        knobs["versions"] = (knobs["versions"],)
    elif "versions" in knobs:
        knobs["versions"] = tuple(knobs["versions"])
    return knobs



class ScenarioFailure(HarnessError):
    """The device did not do what the scenario expects; carries the verdict.

    The message always holds ``FAIL [code]``: the verdict's code, or the
    engine's own (:class:`~harness.outcomes.Code` members found by the engine:
    the device did not boot, a console line never came), so reports and tests
    can sort failures by cause without parsing prose.
    """

    def __init__(self, step: Step, message: str, judged: verdict.Verdict | None = None, code: Code = Code.ERROR):
        self.step = step
        self.verdict = judged
        self.code = judged.code if judged is not None else code
        detail = " ".join(f"{k}={v}" for k, v in step.args.items())
        if judged is None:
            message = f"FAIL [{code}]: {message}"
        super().__init__(f"{step.where}: {step.action}{' ' + detail if detail else ''}: {message}")


#: how long a device without a shell may take to store its session after a handshake
STORE_WAIT = 5.0


class ScenarioSkip(HarnessError):
    """The bench cannot run this scenario (e.g. the device has no command it needs)."""


@dataclass
class Rig:
    """The live objects a scenario runs against."""

    spec: DeviceSpec
    device: Device
    supply: Any
    console: Any
    server: Any
    values: dict[str, Any] = field(default_factory=dict)
    servers: dict[str, Any] = field(default_factory=dict)   # extra reference servers by name
    flash_file: Path | None = None


@dataclass(frozen=True)
class Progress:
    """Where a long scenario is (a soak of 200 cuts prints nothing for minutes without it)."""

    cycle: int
    cycles: int
    verdicts: int
    passed: int
    last_code: str

    def text(self) -> str:
        rate = f"{100 * self.passed / self.verdicts:.0f}%" if self.verdicts else "-"
        return (f"cycle {self.cycle}/{self.cycles}: {self.passed}/{self.verdicts} verdicts passed ({rate})"
                + (f", last {self.last_code}" if self.last_code else ""))


@dataclass
class Trace:
    """What happened during one scenario run, on the harness clock."""

    start: float
    steps: list[tuple[float, str]] = field(default_factory=list)
    verdicts: list[verdict.Verdict] = field(default_factory=list)
    server_mark: int = 0
    server_marks: dict[str, int] = field(default_factory=dict)
    device_mark: Mark = Mark(0, 0, 0)
    end: float | None = None


class Engine:
    """Runs one expanded scenario (one parameter combination) on a :class:`Rig`.

    Each ``_step_<action>`` method is one step kind of the scenario schema;
    the parser (:mod:`harness.scenario`) has already checked the arguments, so
    a handler only meets bench problems, which become a
    :class:`ScenarioFailure` with a code.
    """

    def __init__(self, rig: Rig, scenario: Scenario, params: dict[str, Any], *,
                 on_step: Callable[[Step, dict[str, Any]], None] | None = None,
                 on_progress: Callable[[Progress], None] | None = None):
        self.rig = rig
        self.scenario = scenario
        self.params = dict(params)
        self.on_step = on_step
        self.on_progress = on_progress
        self.trace = Trace(start=clock.now())
        self._last_connect_mono: float | None = None
        #: one seeded generator per run: {random: [low, high]} values are drawn
        #: from it in step order, so a seed replays the same run
        self.seed = int(self.params.get("seed", 1))
        self.rng = random.Random(self.seed)
        self._last_server = "primary"
        #: console position at the start of the last step that is not an
        #: expectation: an expect_console looks from there, so it sees what
        #: the action before it made the device print
        self._step_mark: int | None = None
        #: per server: the TLS versions the scenario allows, those applied now
        #: (a connect naming a version narrows them), and what the last
        #: connect asked for (the verdict checks the handshakes against it)
        self._allowed: dict[str, tuple[str, ...]] = {}
        self._applied: dict[str, tuple[str, ...]] = {}
        self._asked: dict[str, str] = {}
        #: the last record a connect of a device without a shell has answered with
        self._auto_taken = 0

    # -- lifecycle ------------------------------------------------------------
    def check_requirements(self) -> None:
        """Skip before touching the bench if the device file cannot support a step."""
        if self.rig.spec.firmware.session_stored is None and _uses(self.scenario.steps, "expect_stored"):
            raise ScenarioSkip(f"{self.scenario.file}: uses expect_stored, but {self.rig.spec.path} has no "
                               "firmware.session_stored pattern")
        fw = self.rig.spec.firmware
        for name in self.scenario.requires:
            if name == "corrupt_session" and self.rig.flash_file is not None:
                continue
            if fw.event(name) is not None or self.rig.device.has_command(name):
                continue
            raise ScenarioSkip(f"{self.scenario.file}: needs '{name}' (a device command or a firmware event "
                               f"pattern), which {self.rig.spec.path} does not define")
        for step in walk(self.scenario.steps):
            on = step.args.get("after") if step.action == "cut_power_when" else None
            if on is not None and on != "connect" and fw.event(str(substitute(on, self.params))) is None:
                raise ScenarioSkip(f"{step.where}: cut_power_when after '{on}', a console pattern "
                                   f"{self.rig.spec.path} does not define (firmware.{on} or firmware.events.{on})")
        if not getattr(self.rig.supply, "measures", True):
            for step in walk(self.scenario.steps):
                if step.action in ("brownout", "cut_power_when") or (step.action in ("power_off", "power_cycle")
                                                                     and step.args.get("verify") is False):
                    raise ScenarioSkip(f"{step.where}: {step.action} needs a supply that sets and measures the "
                                       f"rail and cuts at a known moment; {self.rig.spec.path} cuts power with "
                                       "a switch that measures nothing (labgrid.power: labgrid)")
        self._check_versions()
        if fw.autoconnect:
            why = self._needs_shell()
            if why:
                raise ScenarioSkip(f"{why}; {self.rig.spec.path} describes a device without a shell "
                                   "(firmware.autoconnect: true)")

    def _connect_versions(self) -> set[str]:
        """The explicit TLS versions this cell's connect steps ask for."""
        words = set()
        for step in walk(self.scenario.steps):
            if step.action == "connect":
                word = str(substitute(step.args.get("version", "auto"), self.params))
                if word in verdict.TLS_NAMES:
                    words.add(word)
        return words

    def _check_versions(self) -> None:
        """Skip a cell the firmware cannot run: a version it lacks, or a server it cannot talk to."""
        spec = self.rig.spec
        supported = set(spec.firmware.versions)
        declared = f"{spec.path} declares firmware.versions: [{', '.join(spec.firmware.versions)}]"
        for word in sorted(self._connect_versions() - supported):
            raise ScenarioSkip(f"{self.scenario.file}: this cell needs {word}; {declared}")
        names = {verdict.TLS_NAMES[v] for v in supported}
        settings = [self.scenario.server] + [st.args for st in walk(self.scenario.steps) if st.action == "server"]
        for knobs in settings:
            versions = server_knobs(knobs).get("versions")
            if versions and not names & set(versions):
                raise ScenarioSkip(f"{self.scenario.file}: the reference server is set to "
                                   f"{', '.join(versions)} only; {declared}")

    def _needs_shell(self) -> str | None:
        """Why a device that only connects by itself at boot cannot run this scenario, if it cannot."""
        since_power = True
        for step in _unrolled(self.scenario.steps):
            where = f"{step.where}: {step.action}"
            if step.action in ("device", "send"):
                return f"{where} sends a shell command"
            if step.action == "cut_power_when":
                return f"{where} cuts power during a connection the harness starts"
            if step.action == "connect":
                if step.args.get("server", "primary") != "primary" or step.args.get("sni"):
                    return f"{where} points the device at another server"
                if step.args.get("expect") == "fail":
                    return f"{where} expects a connection to fail"
                if not since_power:
                    return f"{where} reconnects without a power cycle in between"
                since_power = False
            if step.action in ("power_on", "power_cycle", "brownout"):
                since_power = True
        return None

    def server(self, name: str) -> Any:
        if name == "primary":
            return self.rig.server
        if name not in self.rig.servers:
            raise HarnessError(f"no reference server named {name!r} on this bench "
                               f"(have: primary{', ' + ', '.join(self.rig.servers) if self.rig.servers else ''})")
        return self.rig.servers[name]

    def _device_defaults(self) -> dict[str, Any]:
        """Server settings this device needs whatever the scenario: its application protocol."""
        s = self.rig.spec.server
        knobs: dict[str, Any] = {"protocol": s.protocol}
        if s.greeting is not None:
            knobs["greeting"] = s.greeting
        if s.app_timeout is not None:
            knobs["app_timeout"] = s.app_timeout
        if s.ticket_delay is not None:
            knobs["ticket_delay"] = s.ticket_delay
        return knobs

    def prepare(self) -> None:
        """Known state: server settings as the scenario says, power off, session erased."""
        base = {**SERVER_DEFAULTS, **self._device_defaults()}
        primary = {**base, **server_knobs(self.scenario.server)}
        self._allowed = {"primary": tuple(primary["versions"])}
        self._applied = {"primary": tuple(primary["versions"])}
        if self.rig.spec.firmware.autoconnect:
            # The device connects at boot, before any connect step could pin
            # the version: pin it for the whole scenario now.
            words = self._connect_versions()
            if len(words) == 1 and verdict.TLS_NAMES.get(next(iter(words))) in primary["versions"]:
                primary["versions"] = (verdict.TLS_NAMES[next(iter(words))],)
                self._applied["primary"] = primary["versions"]
        self.rig.server.configure(**primary)
        for name, other in self.rig.servers.items():
            other.configure(**base)
            self._allowed[name] = self._applied[name] = tuple(base["versions"])
        dev = self.rig.device
        dev.power_off(verify=True)
        if not self.scenario.keep_session:
            self._erase_session()
        t = self.trace
        t.server_mark = self.rig.server.mark()
        t.server_marks = {name: srv.mark() for name, srv in self.rig.servers.items()}
        self.rig.console.mark()
        t.device_mark = dev.mark()
        t.start = clock.now()

    def _erase_session(self) -> None:
        dev = self.rig.device
        if dev.has_command("erase_session"):
            dev.power_on()
            dev.command("erase_session")
            if dev.has_command("set_clock"):
                # A scenario may have moved the device clock (an RTC that
                # stopped while off); the next one starts from true time.
                now = time.time()
                dev.command("set_clock", unix=round(now, 3), iso=clock.iso(now))
            dev.power_off(verify=True)
        elif self.rig.flash_file is not None:
            # With power off, the harness erases the flash image itself (a
            # device without a shell has no erase command).  No image yet:
            # nothing was ever stored.
            flash = Path(self.rig.flash_file)
            if flash.exists():
                flash.write_bytes(b"\xff" * flash.stat().st_size)
        else:
            raise ScenarioSkip(f"cannot start from an erased session: {self.rig.spec.path} has no "
                               "erase_session command; set keep_session: true in the scenario to run anyway")

    def run(self) -> Trace:
        self.check_requirements()
        try:
            self.prepare()
        except ScenarioSkip:
            raise
        except BenchError as exc:
            exc.args = (f"{self.scenario.file}: before the first step: {exc}",)
            raise
        except HarnessError as exc:
            # The known state could not be reached (the device does not boot,
            # panics, the rail does not discharge): the same codes as in a step.
            step = Step("prepare", {}, self.scenario.file, self.scenario.line)
            raise ScenarioFailure(step, f"before the first step: {exc}", code=_code_for(step, exc)) from None
        try:
            self._run_steps(self.scenario.steps, depth=0)
        finally:
            self.rig.device.disarm()
            self.trace.end = clock.now()
        return self.trace

    def window(self) -> Window:
        """The device's power cuts, boots and connects during this scenario."""
        return self.rig.device.since(self.trace.device_mark)

    # -- evidence ----------------------------------------------------------------
    def evidence(self, server: str = "primary") -> verdict.Evidence:
        t = self.trace
        s = self.rig.spec

        def since(name: str) -> list:
            if name == "primary":
                return self.rig.server.since(t.server_mark)
            return self.server(name).since(t.server_marks.get(name, 0))

        # The other servers' records say who issued what a device offered to the wrong one.
        others = {name: since(name) for name in ("primary", *t.server_marks) if name != server}
        window = self.window()
        return verdict.Evidence(
            records=since(server),
            cuts=window.cuts,
            boots=window.boots,
            lines=[ln for ln in self.rig.console.lines if ln.mono >= t.start],
            session_stored=s.firmware.session_stored,
            flash_write=s.firmware.flash_write,
            brownout_threshold=s.supply.brownout_threshold,
            discharge_below=s.supply.discharge_below,
            others=others,
        )

    # -- steps ------------------------------------------------------------------
    def _run_steps(self, steps: list[Step], depth: int) -> None:
        for step in steps:
            args = substitute(step.args, {**self.params, **self._dynamic()})
            self.trace.steps.append((clock.now(), f"{'  ' * depth}{step.action} {args if args else ''}".rstrip()))
            if self.on_step:
                self.on_step(step, args)
            if not step.action.startswith("expect_"):
                self._step_mark = self.rig.console.mark()
            log.info("step %s %s", step.action, args)
            handler = getattr(self, f"_step_{step.action}")
            try:
                handler(step, args)
            except (ScenarioFailure, ScenarioSkip):
                raise
            except BenchError as exc:
                # Not a verdict: the plugin reports it as an error and may retry the scenario.
                if not getattr(exc, "step_named", False):      # the innermost step (inside a repeat) says where
                    exc.args = (f"{step.where}: {step.action}: {exc}",)
                    exc.step_named = True  # type: ignore[attr-defined]
                raise
            except HarnessError as exc:
                raise ScenarioFailure(step, str(exc), code=_code_for(step, exc)) from None

    def _dynamic(self) -> dict[str, Any]:
        """Values known only while running: ``{now}``, ``{cut_time}`` (Unix seconds).

        ``cut_time`` is when power was last cut: setting the device clock to it
        models an RTC that stopped while the device was unpowered.
        """
        cuts = self.window().cuts
        cut = clock.wall_from_mono(cuts[-1].off_mono) if cuts else time.time()
        return {"now": round(time.time(), 3), "cut_time": round(cut, 3)}

    def _value(self, value: Any) -> Any:
        """A number from the file, or one drawn from the run's seeded generator."""
        if isinstance(value, dict) and "random" in value:
            low, high = value["random"]
            return round(self.rng.uniform(float(low), float(high)), 4)
        return value

    def _off_time(self, args: dict[str, Any]) -> tuple[float | None, bool]:
        off = self._value(args.get("off_time", "discharged"))
        verify = bool(args.get("verify", True))
        if off == "discharged":
            return None, verify
        return float(off), verify

    def _step_power_on(self, step: Step, args: dict[str, Any]) -> None:
        self.rig.device.settle_cut()
        self.rig.device.power_on(wait_boot=args.get("wait_boot", True), timeout=args.get("timeout"))

    def _step_power_off(self, step: Step, args: dict[str, Any]) -> None:
        off, verify = self._off_time(args)
        self.rig.device.power_off(off, verify)

    def _step_power_cycle(self, step: Step, args: dict[str, Any]) -> None:
        off, verify = self._off_time(args)
        dev = self.rig.device
        dev.power_off(off, verify)
        mark = self.rig.console.mark()
        dev.power_on(wait_boot=False)
        if not getattr(self.rig.supply, "measures", True):
            # A switch that measures nothing: the boot is the evidence (Device.boot_after).  A device
            # without a shell cannot be asked whether it still runs: its missing boot is left to the
            # verdict (kept_running: no reset and a resumption is power-not-cut).
            if self.rig.spec.firmware.prompt and not self.rig.spec.firmware.autoconnect:
                dev.boot_after(mark)
            else:
                try:
                    dev.boot_after(mark)
                except BootError:
                    log.info("no boot after a switched power cycle (a device without a shell)")
        elif verify:
            dev.wait_boot(mark)
        else:
            # The rail may not have fallen far enough to reset the device: a boot
            # is not guaranteed, and the verdict will say so.
            try:
                dev.wait_boot(mark, timeout=min(2.0, self.rig.spec.firmware.boot_timeout))
            except BenchError:
                raise
            except HarnessError:
                log.info("no boot after an unverified power cycle")

    def _step_cut_power_when(self, step: Step, args: dict[str, Any]) -> None:
        on = args.get("after")
        delay = self._delay(step, args.get("delay", 0.0))
        if on == "connect":
            # Device-neutral: the harness knows when it sends the connect command.
            self.trace.steps.append((clock.now(), f"  armed: cut power {delay * 1000:.1f} ms after the next "
                                     "connect command is sent"))
            self.rig.device.arm_cut(None, delay, "the connect command")
            return
        pattern = args.get("line") if on is None else self.rig.spec.firmware.event(on)
        assert pattern is not None  # checked in check_requirements
        self.trace.steps.append((clock.now(), f"  armed: cut power {delay * 1000:.1f} ms after {pattern!r}"
                                 + (f" (firmware {on})" if on else "")))
        self.rig.device.arm_cut(pattern, delay, f"the line {pattern!r}")

    def _delay(self, step: Step, value: Any) -> float:
        """Seconds, a seeded random draw, or a fraction of this device's measured session write."""
        if isinstance(value, dict) and "of_write" in value:
            return float(value["of_write"]) * self._write_duration(step)
        return float(self._value(value))

    def _write_duration(self, step: Step) -> float:
        """How long this device takes to store a session: its flash_write line to its session_stored line.

        Measured on the device itself during this scenario, so a sweep of
        cut points covers the write of any firmware, fast or slow.
        """
        fw = self.rig.spec.firmware
        start_rx = re.compile(fw.flash_write or "(?!)")
        end_rx = re.compile(fw.session_stored or "(?!)")
        started = None
        measured = None
        for ln in self.rig.console.lines:
            if ln.mono < self.trace.start:
                continue
            if start_rx.search(ln.text):
                started = ln.mono
            elif started is not None and end_rx.search(ln.text):
                measured, started = ln.mono - started, None
        if measured is None:
            raise ScenarioFailure(step, "cannot time the session write: since the scenario began the device never "
                                  f"printed its flash_write line ({fw.flash_write!r}) followed by its "
                                  f"session_stored line ({fw.session_stored!r}), so there is no write to cut",
                                  code=Code.TRIGGER_NOT_SEEN)
        self.trace.steps.append((clock.now(), f"  measured session write: {measured * 1000:.1f} ms"))
        return measured

    def _step_brownout(self, step: Step, args: dict[str, Any]) -> None:
        self.rig.device.brownout(float(args["volts"]), float(self._value(args["duration"])),
                                 wait_boot=args.get("wait_boot", True))

    def _step_wait(self, step: Step, args: dict[str, Any]) -> None:
        time.sleep(float(self._value(args["seconds"])))

    def _pin_version(self, name: str, version: str) -> None:
        """Constrain the server to the version a connect names, so no other can be negotiated.

        The scenario's own server versions stay the frame: a connect asking
        for a version the scenario's server refuses (on purpose) leaves the
        server as the scenario set it, and the verdict judges what happened.
        """
        allowed = self._allowed.get(name, SERVER_DEFAULTS["versions"])
        wanted = verdict.TLS_NAMES.get(version)
        target = (wanted,) if wanted in allowed else tuple(allowed)
        if self._applied.get(name) != target:
            self.server(name).configure(versions=target)
            self._applied[name] = target

    def _step_connect(self, step: Step, args: dict[str, Any]) -> None:
        name = args.get("server", "primary")
        server = self.server(name)
        self._last_server = name
        version = args.get("version", "auto")
        self._asked[name] = version
        if self.rig.spec.firmware.autoconnect:
            self._await_autoconnect(step, args, server)
            return
        self._pin_version(name, version)
        sni = args.get("sni") or server.names[0]
        self._last_connect_mono = clock.now()
        server_mark = server.mark()
        attempt = self.rig.device.connect(self.rig.spec.server.reach_host, server.port, version, sni,
                                          timeout=args.get("timeout"))
        expect = args.get("expect", "any" if self.rig.device.armed is not None else "ok")
        if attempt.interrupted:
            return
        if expect == "ok" and not attempt.ok:
            # The device may report the failure (it sent an alert) before the
            # server has finished recording that connection: give the server
            # a moment, so the verdict judges what it really saw.
            try:
                server.wait_for(since=server_mark, timeout=2.0)
            except BenchTimeout:
                pass
            self._fail_connect(step, name, attempt.detail)
        if expect == "fail" and attempt.ok:
            raise ScenarioFailure(step, f"the connection was expected to fail but succeeded: {attempt.detail}")

    def _fail_connect(self, step: Step, name: str, detail: str) -> None:
        ev = self.evidence(name)
        judged = verdict.version_truth(ev.records_between(self._last_connect_mono), self._asked.get(name)) \
            or verdict.failed_connect(ev, self._last_connect_mono, detail)
        self.trace.verdicts.append(judged)
        raise ScenarioFailure(step, judged.explain(), judged)

    def _await_store(self, handshake_end: float) -> None:
        """Let a device without a shell finish with its connection before the next step.

        A shell answers a connect command when the firmware is done (session
        stored); a device that connects by itself says nothing to the harness.
        Its session_stored line is the sign; a firmware that never prints it
        (the bug a verdict will name) costs at most :data:`STORE_WAIT` seconds.
        """
        pattern = self.rig.spec.firmware.session_stored
        if pattern is None:
            return
        con = self.rig.console
        rx = re.compile(pattern)
        deadline = handshake_end + STORE_WAIT
        while clock.now() < deadline:
            if any(ln.mono >= handshake_end and rx.search(ln.text) for ln in con.since(self._step_mark or 0)):
                return
            time.sleep(0.02)
        log.info("no %r within %g s of the handshake", pattern, STORE_WAIT)

    def _await_autoconnect(self, step: Step, args: dict[str, Any], server: Any) -> None:
        """A device without a shell connected (or will) by itself after its last boot: wait for that."""
        dev = self.rig.device
        if dev.last_on is None or not dev.powered:
            raise ScenarioFailure(step, "this device connects by itself after boot: power it on before a "
                                  "connect step")
        since, console_mark = dev.last_on
        self._last_connect_mono = since
        # Lines the device printed for this connection came before this step.
        self._step_mark = console_mark
        taken = self._auto_taken
        timeout = float(args.get("timeout") or 30.0)

        def after_boot(rec: Any) -> bool:
            return verdict.began(rec) >= since and rec.id > taken

        try:
            rec = server.wait_for(after_boot, timeout=timeout, since=self.trace.server_mark)
        except BenchTimeout as exc:
            judged = verdict.Verdict(False, Code.NEVER_CONNECTED, f"the device did not connect by itself within "
                                     f"{timeout:g} s of power-up", cause="the address baked into the firmware, "
                                     "the network, or the firmware failed before its ClientHello",
                                     lines=[ln for ln in self.rig.console.lines if ln.mono >= since][:25])
            self.trace.verdicts.append(judged)
            raise ScenarioFailure(step, f"{judged.explain()}\n{exc}", judged) from None
        if verdict.aborted_refusal(rec):
            # Some stacks abort when their offer is refused and fall back on a
            # second connection: that one belongs to this connect too.
            try:
                rec = server.wait_for(lambda r: r.id > rec.id, timeout=5.0, since=self.trace.server_mark)
            except BenchTimeout:
                pass
        self._auto_taken = rec.id
        ok = rec.version is not None and not rec.error
        if ok:
            self._await_store(rec.mono)
        self.rig.device.connects.append(ConnectAttempt(since, rec.mono, ok, False, rec.summary()))
        if not ok and args.get("expect", "ok") == "ok":
            self._fail_connect(step, self._last_server, rec.error or "handshake failed")

    def _step_device(self, step: Step, args: dict[str, Any]) -> None:
        extra = dict(args.get("args") or {})
        if args["command"] == "set_clock" and "unix" in extra:
            extra.setdefault("iso", clock.iso(float(extra["unix"])))
        attempt = self.rig.device.command(args["command"], timeout=args.get("timeout"), **extra)
        if not attempt.ok:
            raise ScenarioFailure(step, f"device command {args['command']!r} failed: {attempt.detail}")

    def _step_send(self, step: Step, args: dict[str, Any]) -> None:
        self.rig.console.send(args["line"])

    def _step_expect_stored(self, step: Step, args: dict[str, Any]) -> None:
        pattern = self.rig.spec.firmware.session_stored
        assert pattern is not None  # checked in check_requirements
        try:
            self.rig.console.expect(pattern, timeout=float(args.get("timeout", 10.0)), since=self._step_mark)
        except BenchTimeout as exc:
            raise ScenarioFailure(step, f"the device never printed that it stored the session "
                                  f"({pattern!r})\n{exc}", code=Code.NOT_STORED) from None

    def _step_expect_reset(self, step: Step, args: dict[str, Any]) -> None:
        boots = self.window().boots
        want = args["cause"]
        if not boots:
            raise ScenarioFailure(step, "no boot was seen in this scenario", code=Code.NO_BOOT)
        got = boots[-1].cause
        if got != want:
            raise ScenarioFailure(step, f"the last boot reported reset cause {got!r} ({boots[-1].line!r}), "
                                  f"expected {want!r}", code=Code.WRONG_RESET_CAUSE)

    def _step_expect_console(self, step: Step, args: dict[str, Any]) -> None:
        self.rig.console.expect(args["pattern"], timeout=float(args.get("timeout", 10.0)), since=self._step_mark)

    def _step_server(self, step: Step, args: dict[str, Any]) -> None:
        knobs = server_knobs({k: v for k, v in args.items() if k != "rotate_keys"})
        if knobs:
            self.rig.server.configure(**knobs)
            if "versions" in knobs:
                self._allowed["primary"] = self._applied["primary"] = tuple(self.rig.server.config.versions)
        if args.get("rotate_keys"):
            self.rig.server.rotate_keys()

    def _step_corrupt_session(self, step: Step, args: dict[str, Any]) -> None:
        dev = self.rig.device
        if dev.powered:
            raise ScenarioFailure(step, "corrupt the stored session while power is off (add a power_off step)")
        if self.rig.flash_file is not None:
            path = Path(self.rig.flash_file)
            data = bytearray(path.read_bytes())
            rng = random.Random(args["seed"]) if "seed" in args else self.rng
            written = [i for i, b in enumerate(data) if b != 0xFF]
            first, last = (written[0], written[-1] + 1) if written else (0, len(data))
            # Leave the first quarter of what was written (where a record's
            # magic and header usually are) and spread the flips evenly over
            # the rest from a seeded offset: the damage reaches the ticket and
            # secrets, which a firmware without an integrity check would trust.
            used = list(range(first + (last - first) // 4, last))
            count = min(int(args.get("bytes", 1)), len(used))
            step_len = len(used) / count
            offset = rng.random() * step_len
            for k in range(count):
                index = used[int(offset + k * step_len)]
                data[index] ^= 1 << rng.randrange(8)
            path.write_bytes(bytes(data))
            log.info("flipped %d bit(s) in %s", count, path)
            return
        dev.power_on()
        dev.command("corrupt_session")
        dev.power_off(verify=True)

    def _step_expect_server(self, step: Step, args: dict[str, Any]) -> None:
        name = args.get("server", self._last_server)
        ev = self.evidence(name)
        outcome = args["outcome"]
        ask = Ask(since=self._last_connect_mono, start=self.trace.start, cut=int(args.get("cut", -1)),
                  reason=args.get("reason"), mechanism=args.get("mechanism"))
        try:
            judged = EXPECTATIONS[outcome](ev, ask)
        except NeedsConnect:
            raise ScenarioFailure(step, "expect_server needs a connect step before it") from None
        if outcome not in WHOLE_SCENARIO and \
                (judged.ok or judged.code in (Code.HANDSHAKE_FAILED, Code.CONNECT_FAILED)):
            # Whatever the expectation, a cell naming a TLS version never
            # passes on a handshake in another one.
            judged = verdict.version_truth(ev.records_between(self._last_connect_mono), self._asked.get(name)) \
                or judged
        self.trace.verdicts.append(judged)
        if not judged.ok:
            raise ScenarioFailure(step, judged.explain(), judged)
        log.info("verdict: %s", judged.summary)

    def _step_repeat(self, step: Step, args: dict[str, Any]) -> None:
        times = int(args["times"])
        before = len(self.trace.verdicts)
        for cycle in range(1, times + 1):
            self._run_steps(step.steps, depth=1)
            if self.on_progress is not None:
                judged = self.trace.verdicts[before:]
                self.on_progress(Progress(cycle, times, len(judged), sum(v.ok for v in judged),
                                          str(judged[-1].code) if judged else ""))


def _unrolled(steps: list[Step]) -> list[Step]:
    """Steps in the order they run, a repeated body twice (what its second pass follows matters)."""
    out: list[Step] = []
    for step in steps:
        if step.action == "repeat":
            body = _unrolled(step.steps)
            out.extend(body * min(2, int(step.args.get("times", 1))))
        else:
            out.append(step)
    return out


def _uses(steps: list[Step], action: str) -> bool:
    return any(s.action == action or _uses(s.steps, action) for s in steps)


def _code_for(step: Step, exc: HarnessError) -> Code:
    """The engine's outcome code for a bench problem met while running ``step``."""
    for kind, code in ((BootError, Code.NO_BOOT), (PowerStillOn, Code.POWER_NOT_CUT),
                       (ForbiddenOutput, Code.FORBIDDEN_OUTPUT),
                       (DischargeError, Code.DISCHARGE), (CutNotSeen, Code.TRIGGER_NOT_SEEN)):
        if isinstance(exc, kind):
            return code
    if step.action == "expect_console" and isinstance(exc, BenchTimeout):
        return Code.CONSOLE_TIMEOUT
    return Code.ERROR
