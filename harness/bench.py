"""The bench as one object: brought up from a device file, checked before each scenario, brought back after a fault.

Why a class of its own: a nightly run meets bench faults a scenario cannot
fix (a LAN link to the supply drops, a USB hub re-enumerates the UART, the
bench daemon dies).  Something must tell those apart from firmware bugs,
make the supply safe, and bring the bench back so that the next scenario
runs normally once the fault has cleared.  That needs every part in one
place: the bench process the device file starts, the supply, the console
and the device model built on them.  The pytest fixtures only own its
lifetime (``with Bench(...)``); a script can use it the same way.

:meth:`Bench.probe` answers "is the bench itself sound?" with a
:class:`~harness.errors.BenchError` naming the part that is not, in the
order a broken part hides the next one: the bench process (its death takes
the simulated supply and UART with it), the supply, the console, the
reference server.  :meth:`Bench.ready` recovers what can be recovered and
raises what cannot.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import clock, devicefile
from .console import Console
from .consolerecords import ConsoleError
from .device import Device
from .devicefile import DeviceSpec
from .errors import (BenchError, BenchStartError, ConsoleLost, HarnessError, InstrumentError, ServerError,
                     SupplyUnreachable, bench_error)
from .launcher import LaunchedBench, launch
from .supply import Supply

log = logging.getLogger(__name__)

#: a trip that comes back after this many clears is not a transient: leave it latched, every scenario errors
MAX_PROTECTION_CLEARS = 3


@dataclass
class BenchHealth:
    """What the last probe found, kept for the summary: a fault is news even once recovered."""

    faults: list[str] = field(default_factory=list)
    recoveries: list[str] = field(default_factory=list)
    #: set while the supply could not be confirmed in its safe state; said loudly at the end of the run
    unsafe: str | None = None


class Bench:
    """The live bench of one device file: bench process, supply, console, device.

    ``values`` are the device file's placeholder values (``{run_dir}``,
    ``{server_port}``, ...); the resources the bench command announces are
    added under ``bench``.  ``servers`` are the reference servers the
    scenarios use (probed, never restarted here: their owner does that).
    """

    def __init__(self, spec: DeviceSpec, values: dict[str, Any], run_root: Path, *,
                 env: dict[str, str] | None = None, servers: dict[str, Any] | None = None,
                 watchdog: bool = True, reconnect_wait: float = 10.0, place_wait: float = 0.0):
        self.spec = spec
        self.values = dict(values)
        self.run_root = run_root
        self.env = dict(env or {})
        self.servers = dict(servers or {})
        self.watchdog = watchdog
        #: how long a supply that dropped off the network gets to come back before a scenario gives up
        self.reconnect_wait = reconnect_wait
        #: seconds to wait for a labgrid place someone else holds (the run's --rig-wait)
        self.place_wait = place_wait
        #: the labgrid place (harness.labgrid.PlaceSession) of a device file with a ``labgrid`` section:
        #: held from the first start to the end of the run, across restarts of the other parts
        self.place: Any = None
        self.launched: LaunchedBench | None = None
        self.supply: Supply | None = None
        self.console: Console | None = None
        self.device: Device | None = None
        self.health = BenchHealth()
        self.starts = 0
        self.firmware_version: str | None = None
        #: latched protection trips cleared this run (at most MAX_PROTECTION_CLEARS)
        self.protection_clears = 0
        #: when :meth:`ready` last looked (harness clock): faults after it are news
        self._checked = clock.now()

    # -- lifetime -------------------------------------------------------------------
    def __enter__(self) -> "Bench":
        try:
            self.start()
        except BaseException:
            self.close()
            self.release_place()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.close()
        finally:
            self.release_place()

    def start(self) -> None:
        """Bring every part up, in the order each needs the one before; all or nothing.

        A part that fails leaves nothing half up: what was started is closed
        again, so the next :meth:`ready` restarts the whole bench.
        """
        try:
            self._start()
        except BaseException:
            self.close(secure=False)
            raise

    def _start(self) -> None:
        self.starts += 1
        if self.spec.labgrid is not None and self.place is None:
            self._acquire_place()
        if self.spec.bench is not None:
            argv = [devicefile.fill(a, self.values, "bench.start") for a in self.spec.bench.start]
            try:
                self.launched = launch(self.spec.bench, argv, self.run_root / "bench.log", env=self.env)
            except BenchError:
                raise
            except HarnessError as exc:
                raise BenchStartError(str(exc)) from None
            self.values["bench"] = dict(self.launched.resources)
        self._open_supply()
        self._open_console()
        assert self.supply is not None and self.console is not None
        self.device = Device(self.spec, self.supply, self.console, self.values)

    def _open_supply(self) -> None:
        s = self.spec.supply
        lg = self.spec.labgrid
        if lg is not None and lg.power == "labgrid":
            # The place's power driver: switches, measures nothing (harness.powerswitch says what follows).
            from .powerswitch import SwitchedPower

            assert self.place is not None
            self.supply = SwitchedPower(self.place, s.resource, log_path=self.run_root / "supply.jsonl",
                                        safe_state=s.safe_state).open()  # type: ignore[assignment]
            return
        resource = devicefile.fill(s.resource, self.values, "supply.resource")
        psu = Supply(resource=resource, dialect=s.dialect, channel=s.channel, visa_library=s.visa_library,
                     log_path=self.run_root / "supply.jsonl", safe_state=s.safe_state, watchdog=self.watchdog)
        psu.open()
        self.supply = psu
        self._configure()

    def _configure(self) -> None:
        s = self.spec.supply
        assert self.supply is not None
        if not getattr(self.supply, "measures", True):
            return
        self.supply.configure(voltage=s.voltage, current_limit=s.current_limit, ovp=s.ovp)

    def _acquire_place(self) -> None:
        """Hold the labgrid place for the run; a guard process releases it should this process be killed."""
        from .labgrid import PlaceSession

        lg = self.spec.labgrid
        assert lg is not None
        # With the place's own power switch, its guard also switches the power off if this process dies
        # without releasing: a SIGKILLed run must not leave the device powered (the supply's watchdog does
        # that for a SCPI supply).
        place = PlaceSession(lg.place, lg.coordinator, wait=self.place_wait,
                             guard_log=self.run_root / "labgrid-guard.log",
                             power_off_on_exit=lg.power == "labgrid")
        place.acquire()
        self.place = place
        log.info("labgrid place %s acquired from %s", lg.place, lg.coordinator)

    def release_place(self) -> None:
        """Let the labgrid place go (never raises: its guard releases it if the coordinator is away now).

        Not while the place's own power switch could not be confirmed off: a
        released place goes back to the pool as it is.  Its guard then stays,
        and switches the power off and releases the place once this process
        has ended (harness.labgrid).
        """
        if self.place is None:
            return
        place, self.place = self.place, None
        lg = self.spec.labgrid
        if self.health.unsafe is not None and lg is not None and lg.power == "labgrid":
            log.error("labgrid place %s kept: its power is not confirmed off (%s); its guard switches it off and "
                      "releases it when this run ends", lg.place, self.health.unsafe)
            return
        place.release()

    def _open_console(self) -> None:
        c = self.spec.console
        resolve = None
        if c.url == devicefile.LABGRID_CONSOLE:
            # The place's serial port, asked of the coordinator again before every reopen: the exporter
            # serves a re-enumerated USB UART on a new TCP port.
            assert self.place is not None and self.spec.labgrid is not None
            place, serial_name = self.place, self.spec.labgrid.serial
            url = f"labgrid place {self.spec.labgrid.place}"
            resolve = lambda: place.console_url(name=serial_name)  # noqa: E731
        else:
            url = devicefile.fill(c.url, self.values, "console.url")
        try:
            con = Console(url, baudrate=c.baudrate, capture_path=self.run_root / "console.capture",
                          line_ending=c.line_ending, char_delay=c.char_delay, redact=self.spec.firmware.redact,
                          prompt=self.spec.firmware.prompt, resolve=resolve)
        except ConsoleError as exc:
            raise ConsoleLost(str(exc)) from None
        for pattern in self.spec.firmware.forbid:
            con.forbid(pattern)
        self.console = con

    def close(self, secure: bool | None = None) -> None:
        """Safe state first, then let go of every part; each step runs whatever the one before did.

        ``secure``: hand an unconfirmed safe state to the supply's watchdog
        (which retries from its own connection for its grace period);
        default: when the safe state could not be confirmed.
        """
        self.make_safe()
        if secure is None:
            secure = self.health.unsafe is not None
        if self.console is not None:
            try:
                self.console.close()
            except Exception as exc:  # closing must go on
                log.warning("closing the console: %s", exc)
        if self.supply is not None:
            # Not confirmed safe: the watchdog secures it from its own connection.
            self.supply.close(secure=secure)
        if self.launched is not None:
            self.launched.close()
        self.console = self.supply = self.device = None
        self.launched = None

    def make_safe(self) -> bool:
        """Put the supply in its safe state, reconnecting once if the session died; say loudly if not.

        Returns whether the safe state is confirmed.  A supply nobody can
        reach cannot be confirmed: that is recorded in ``health.unsafe``
        and printed in the run summary.
        """
        if self.supply is None:
            return True
        if self.device is not None:
            self.device.disarm()
            self.device.powered = False
        try:
            if not self.supply.is_open:
                raise SupplyUnreachable(f"{self.supply.name}: not connected")
            self.supply.safe()
            self.health.unsafe = None
            return True
        except HarnessError as first:
            try:
                self.supply.reconnect()
                self.supply.safe()
                self.health.unsafe = None
                return True
            except HarnessError as exc:
                why = f"{self.supply.name}: safe state not confirmed: {first}; after reconnecting: {exc}"
                log.error("%s", why)
                self.health.unsafe = why
                return False

    def firmware_version_seen(self) -> str | None:
        """The build named by the last boot banner (device file ``firmware.banner``), if any was seen."""
        pattern = self.spec.firmware.banner
        if pattern is None or self.console is None:
            return None
        rx = re.compile(pattern)
        for line in reversed(self.console.lines):
            m = rx.search(line.text)
            if m:
                self.firmware_version = m.group("version")
                break
        return self.firmware_version

    # -- health ---------------------------------------------------------------------
    def probe(self) -> BenchError | None:
        """The first part of the bench that is not sound, as the error to report; None if all are."""
        if self.launched is not None:
            code = self.launched.process.poll()
            if code is not None:
                return BenchStartError(f"the bench process (pid {self.launched.process.pid}) exited with code "
                                       f"{code} during the run; see {self.launched.log_path}")
        if self.supply is None or self.console is None or self.device is None:
            return BenchStartError("the bench is not up (a restart did not complete)")
        if not self.supply.is_open:
            return SupplyUnreachable(f"{self.supply.name}: not connected")
        try:
            self.supply.identify()
            if self.device.powered and self.supply.output_state() is False:
                # Off by itself while the device should be running: a protection trip.
                self.supply.check_errors("output state")
                return InstrumentError(self.supply.name, "OUTP?", "the output is off while the device should "
                                       "be powered (protection tripped?), no error in its queue")
        except BenchError as exc:
            return exc
        except HarnessError as exc:
            return SupplyUnreachable(str(exc))
        con = self.console
        if con.closed:
            return ConsoleLost(f"console {con.url} is closed (its reader stopped)")
        if not self.spec.console.native_usb and self.device is not None and self.device.powered \
                and not con.present:
            return ConsoleLost(f"console {con.url} is absent while the device is powered")
        for name, server in self.servers.items():
            if not server.serving:
                return ServerError(f"the reference server {name!r} ({server.address[0]}:{server.address[1]}) "
                                   "is no longer serving")
        return None

    def ready(self) -> None:
        """Before a scenario: recover from a fault left by the last one, or raise what cannot be recovered.

        A supply fault met since the last check counts even if the supply
        answers again now: a tripped protection latch answers every query
        and refuses only the next power-on.
        """
        since, self._checked = self._checked, clock.now()
        fault = self.probe()
        if fault is None and self.supply is not None:
            recent = self.supply.faults_between(since, self._checked)
            if recent:
                fault = bench_error(recent[-1][1], recent[-1][2])
        if fault is None:
            if self.health.unsafe is not None:
                self.make_safe()
            return
        self.health.faults.append(f"{fault.sub_code}: {fault}")
        log.warning("bench fault before the scenario: [%s] %s; recovering", fault.sub_code, fault)
        self.recover(fault)
        again = self.probe()
        if again is not None:
            raise again
        self.health.recoveries.append(fault.sub_code)

    def recover(self, fault: BenchError) -> None:
        """Bring back the part that failed: restart a dead bench, reconnect a supply, reopen a console."""
        if isinstance(fault, BenchStartError) or None in (self.supply, self.console, self.device):
            # A supply the dead bench announced went with it (or is reached again through the new
            # one): no watchdog wait on the old address; the restarted bench is made safe at once.
            announced = "{bench." in self.spec.supply.resource
            self.close(secure=False if announced else None)
            self.start()
            self.make_safe()
        elif isinstance(fault, SupplyUnreachable) or fault.sub_code == "supply-error":
            assert self.supply is not None
            clear = fault.sub_code == "supply-error" and self.protection_clears < MAX_PROTECTION_CLEARS
            deadline = clock.now() + self.reconnect_wait
            while True:
                try:
                    self.supply.reconnect()
                    if clear and self.supply.clear_protection():
                        clear = False
                        self.protection_clears += 1
                        log.warning("%s: cleared a protection latch (%d of at most %d this run) after: %s",
                                    self.supply.name, self.protection_clears, MAX_PROTECTION_CLEARS, fault)
                    self._configure()
                    break
                except HarnessError as exc:
                    if clock.now() >= deadline:
                        raise bench_error(exc.sub_code if isinstance(exc, BenchError) else fault.sub_code,
                                          f"the supply did not come back within {self.reconnect_wait:.0f} s: "
                                          f"{exc}") from None
                    time.sleep(0.5)
            self.make_safe()
        elif isinstance(fault, ConsoleLost):
            if self.console is not None and self.console.closed:
                self.console.close()            # the reader stopped; its port, trigger thread and capture too
                self._open_console()
                assert self.device is not None and self.console is not None
                self.device.console = self.console
        # A server that stopped is its owner's to restart; the probe reports it.
