"""Power through a switch that measures nothing: a labgrid place's network power driver (a PDU outlet, a relay).

Why it exists: labs without a programmable supply per rig still cut power,
with the network PDU or relay board their labgrid places already control
(a ``NetworkPowerPort``).  Such a
switch can say on or off and nothing else: no rail voltage, no current, no
protection, no set-point.  So the harness cannot verify that the rail
discharged; it falls back to the device's own testimony, its reset cause
after power returns (:func:`harness.verdict.switch_without_power_on_reset`),
and every verdict on such a cut says that this is what it rests on.

:class:`SwitchedPower` answers the calls the device model and the bench make
of a :class:`~harness.supply.Supply`, so nothing above it needs an ``if``:
``off`` holds the power off for the asked time instead of waiting for a
discharge, ``measure_*`` raise :class:`NotMeasured`, and a scenario that
needs a set-point (a brown-out) is skipped by the engine (``measures`` is
False).
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any, Callable, Protocol, TypeVar

from . import clock
from .errors import HarnessError, SupplyUnreachable
from .supply import PowerEvent, SupplyLog

log = logging.getLogger(__name__)
T = TypeVar("T")


class NotMeasured(HarnessError):
    """The power switch has no meter: there is no voltage or current to read."""


class Switch(Protocol):
    def power_on(self) -> None: ...

    def power_off(self) -> None: ...

    def power_state(self) -> bool | None: ...


class SwitchedPower:
    """A power switch in the place of a supply: on, off, held off, and nothing measured."""

    #: the device model and the engine ask: can this power source measure the rail or set a voltage?
    measures = False

    def __init__(self, switch: Switch, name: str, *, log_path: Path | None = None,
                 safe_state: dict[str, Any] | None = None, timeout: float = 20.0):
        self.switch = switch
        #: seconds one request to the switch may take
        self.timeout = timeout
        self.resource = name
        self._name = name
        self.safe_state = dict(safe_state or {"output": "off"})
        self.events: list[PowerEvent] = []
        self.voltage: float | None = None
        self.setpoint: float | None = None
        self._log = SupplyLog(log_path)
        self._lock = threading.Lock()
        self._open = False

    # -- lifetime -----------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self._name

    @property
    def is_open(self) -> bool:
        return self._open

    def open(self) -> "SwitchedPower":
        self._open = True
        return self

    def close(self, secure: bool = False) -> None:
        """The switch stays where the safe state left it; the place's guard covers a killed run."""
        self._open = False
        self._log.close()

    def reconnect(self) -> None:
        self._open = True

    # -- what a supply is asked ---------------------------------------------------------------
    def identify(self) -> str:
        return f"labgrid power driver ({self._name}; switches, measures nothing)"

    def configure(self, voltage: float | None = None, current_limit: float | None = None,
                  ovp: float | None = None) -> None:
        """Nothing to set: the switch passes whatever the outlet gives."""

    def set_voltage(self, volts: float) -> PowerEvent:
        raise NotMeasured(f"{self._name}: a power switch cannot set a voltage (a brown-out needs a programmable "
                          "supply)")

    def _call(self, what: str, action: Callable[[], T]) -> T:
        """One request to the switch, bounded: labgrid's HTTP power models wait forever on a switch that hangs.

        A request still hanging after ``timeout`` is left to its thread and
        reported as the supply being unreachable (a bench error), so a cut,
        a teardown or Ctrl-C never waits on it.
        """
        done: list[Any] = []
        failed: list[BaseException] = []

        def run() -> None:
            try:
                done.append(action())
            except BaseException as exc:  # noqa: BLE001 - handed to the caller below
                failed.append(exc)

        worker = threading.Thread(target=run, name=f"switch-{what}", daemon=True)
        worker.start()
        worker.join(self.timeout)
        if worker.is_alive():
            raise SupplyUnreachable(f"{self._name}: the power switch did not answer {what} within "
                                    f"{self.timeout:.0f} s")
        if failed:
            raise failed[0]
        return done[0]

    def _acquire(self) -> None:
        if not self._lock.acquire(timeout=self.timeout + 1):
            raise SupplyUnreachable(f"{self._name}: an earlier request to the power switch is still hanging")

    def on(self, settle: bool = True, tolerance: float = 0.1, timeout: float = 2.0) -> PowerEvent:
        self._acquire()
        try:
            at = clock.now()
            self._call("on", self.switch.power_on)
            return self._event("on", at, detail="switched on (no settling to measure)")
        finally:
            self._lock.release()

    def off(self, discharge_below: float | None = 0.3, min_off: float = 0.0, timeout: float = 5.0) -> PowerEvent:
        """Switch off and hold it off ``min_off`` seconds; a discharge cannot be verified without a meter.

        The edge is stamped when the switch has answered, not when it was
        asked: the device runs on through the request's latency, and a verdict
        must not count what it did meanwhile as before the cut.
        """
        self._acquire()
        try:
            self._call("off", self.switch.power_off)
            at = clock.now()
            edge = self._event("off", at, detail="switched off (discharge not measurable)")
        finally:
            self._lock.release()
        if min_off > 0:
            time.sleep(max(0.0, at + min_off - clock.now()))
        return edge

    def safe(self) -> PowerEvent | None:
        if self.safe_state.get("output", "off") == "on":
            return self.on(settle=False)
        self._acquire()
        try:
            self._call("off", self.switch.power_off)
            return self._event("safe", clock.now(), detail="output off")
        finally:
            self._lock.release()

    def output_state(self) -> bool | None:
        return self._call("state", self.switch.power_state)

    def measure_voltage(self) -> float:
        raise NotMeasured(f"{self._name}: the power switch has no voltmeter")

    def measure_current(self) -> float:
        raise NotMeasured(f"{self._name}: the power switch has no ammeter")

    def read_rail(self, proceed: Any = None) -> Any:
        raise NotMeasured(f"{self._name}: the power switch measures nothing")

    def check_errors(self, command: str = "") -> None:
        """A switch has no error queue; its driver raises on a failed request."""

    def clear_protection(self) -> bool:
        return False

    def faults_between(self, start: float, end: float) -> list[tuple[float, str, str]]:
        return []

    def disarm_watchdog(self, apply_safe: bool = False) -> None:
        if apply_safe:
            self.safe()

    def wait_idle(self) -> None:
        """No background queries to wait for."""

    def note(self, kind: str, **fields: Any) -> None:
        self._log.write(kind=kind, **fields)

    def _event(self, kind: str, at: float, detail: str = "") -> PowerEvent:
        event = PowerEvent(mono=at, wall=clock.wall_from_mono(at), kind=kind, detail=detail)
        self.events.append(event)
        self._log.write(kind=kind, mono=at, detail=detail)
        log.info("%s: %s", self._name, detail or kind)
        return event
