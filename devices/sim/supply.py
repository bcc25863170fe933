"""The simulated bench supply: a Keysight E36312A-like instrument model.

Physics that matters for power-loss tests, and why:

* After ``OUTP OFF`` the rail does not drop to 0 V at once: the device's
  decoupling capacitance discharges through its load, modelled as an
  exponential decay towards the new target with time constant ``tau``.
  A too-short off time therefore does not reset the device: a classic
  mistake in real power-cycling rigs that the harness must detect.
* Rising edges are instant (a bench supply's slew is far faster than tau).
* Current limit: with OCP enabled, a load above ``CURR`` trips the output
  off (``CURR:PROT:TRIP?`` = 1 until cleared).  Without OCP the supply goes
  constant-current and the rail sags by ``CURR/load``: an undersized limit
  browns the device out during radio bursts, as on a real bench.
* OVP: a set-point above ``VOLT:PROT`` trips the output off.

Everything is evaluated lazily from ``time.monotonic()`` under one lock,
so SCPI clients, the power-domain monitor and measurements agree.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

from .scpi import Command, ErrorQueue, Parser, ScpiError, boolean, channel_list, fmt, number

log = logging.getLogger(__name__)

IDN = "Keysight Technologies,E36312A,SIM0001,1.0-sim"
DEFAULT_VOLT = 3.3
DEFAULT_CURR = 1.0


@dataclass
class Channel:
    """One output: set-points, protection state and the modelled rail."""

    number: int
    vmax: float
    imax: float
    volt: float = DEFAULT_VOLT
    curr: float = DEFAULT_CURR
    output: bool = False
    ovp: float = 0.0
    ovp_tripped: bool = False
    ocp_on: bool = False
    ocp_tripped: bool = False
    rail: float = 0.0
    low_water: float = 0.0
    load: float = 0.0  # amps the connected device would draw at nominal voltage
    t: float = field(default_factory=time.monotonic)

    def __post_init__(self) -> None:
        if not self.ovp:
            self.ovp = round(self.vmax * 1.1, 3)

    def reset(self) -> None:
        self.volt, self.curr, self.output = DEFAULT_VOLT, DEFAULT_CURR, False
        self.ovp = round(self.vmax * 1.1, 3)
        self.ovp_tripped = self.ocp_tripped = self.ocp_on = False

    def target(self) -> float:
        if not self.output:
            return 0.0
        if not self.ocp_on and self.load > self.curr > 0:
            return self.volt * self.curr / self.load  # constant-current sag
        return self.volt

    def advance(self, now: float, tau: float) -> None:
        """Move the rail to ``now``; target is constant since the last call."""
        dt = max(0.0, now - self.t)
        tgt = self.target()
        if self.rail <= tgt:
            self.rail = tgt
        else:
            self.rail = tgt + (self.rail - tgt) * math.exp(-dt / tau) if tau > 0 else tgt
        self.t = now
        self.low_water = min(self.low_water, self.rail)

    def current(self) -> float:
        if not self.output or self.rail <= 0.0:
            return 0.0
        return min(self.load, self.curr)


@dataclass
class SimulatedSupply:
    """The instrument: channels, SCPI command table, error queue, one lock."""

    tau: float = 0.1
    channels: list[Channel] = field(default_factory=lambda: [
        Channel(1, vmax=6.0, imax=5.0), Channel(2, vmax=25.0, imax=1.0), Channel(3, vmax=25.0, imax=1.0)])
    nsel: int = 1
    remote: bool = False
    lock: threading.RLock = field(default_factory=threading.RLock)
    parser: Parser = field(init=False)
    #: called (under the lock) when an OUTP ON switches a channel on: the bench's fault injection hooks here
    on_output_on: Callable[[Channel], None] | None = None

    def __post_init__(self) -> None:
        c = Command
        self.parser = Parser([
            c("*IDN?", True, lambda p: self._noparams(p, IDN)),
            c("*RST", False, self._rst),
            c("*CLS", False, self._cls),
            c("*OPC?", True, lambda p: self._noparams(p, "1")),
            c("*OPC", False, lambda p: self._noparams(p, None)),
            c("*WAI", False, lambda p: self._noparams(p, None)),
            c("*TST?", True, lambda p: self._noparams(p, "0")),
            c("SYSTem:ERRor[:NEXT]?", True, lambda p: self._noparams(p, self.parser.errors.pop())),
            c("SYSTem:REMote", False, lambda p: self._set_remote(p, True)),
            c("SYSTem:LOCal", False, lambda p: self._set_remote(p, False)),
            c("SYSTem:RWLock", False, lambda p: self._set_remote(p, True)),
            c("INSTrument:NSELect", False, self._nsel),
            c("INSTrument:NSELect?", True, lambda p: self._noparams(p, str(self.nsel))),
            c("OUTPut[:STATe]", False, self._outp),
            c("OUTPut[:STATe]?", True, lambda p: self._query(p, lambda ch: "1" if ch.output else "0")),
            c("OUTPut:PROTection:CLEar", False, lambda p: self._clear(p, ovp=True, ocp=True)),
            c("[SOURce:]VOLTage:PROTection[:LEVel]", False, self._ovp),
            c("[SOURce:]VOLTage:PROTection[:LEVel]?", True, lambda p: self._query(p, lambda ch: fmt(ch.ovp))),
            c("[SOURce:]VOLTage:PROTection:TRIPped?", True,
              lambda p: self._query(p, lambda ch: "1" if ch.ovp_tripped else "0")),
            c("[SOURce:]VOLTage:PROTection:CLEar", False, lambda p: self._clear(p, ovp=True, ocp=False)),
            c("[SOURce:]CURRent:PROTection:STATe", False, self._ocp_state),
            c("[SOURce:]CURRent:PROTection:STATe?", True,
              lambda p: self._query(p, lambda ch: "1" if ch.ocp_on else "0")),
            c("[SOURce:]CURRent:PROTection:TRIPped?", True,
              lambda p: self._query(p, lambda ch: "1" if ch.ocp_tripped else "0")),
            c("[SOURce:]CURRent:PROTection:CLEar", False, lambda p: self._clear(p, ovp=False, ocp=True)),
            c("[SOURce:]VOLTage[:LEVel][:IMMediate][:AMPLitude]", False, self._volt),
            c("[SOURce:]VOLTage[:LEVel][:IMMediate][:AMPLitude]?", True,
              lambda p: self._query(p, lambda ch: fmt(ch.volt))),
            c("[SOURce:]CURRent[:LEVel][:IMMediate][:AMPLitude]", False, self._curr),
            c("[SOURce:]CURRent[:LEVel][:IMMediate][:AMPLitude]?", True,
              lambda p: self._query(p, lambda ch: fmt(ch.curr))),
            c("MEASure[:SCALar]:VOLTage[:DC]?", True, lambda p: self._query(p, lambda ch: fmt(ch.rail))),
            c("MEASure[:SCALar]:CURRent[:DC]?", True, lambda p: self._query(p, lambda ch: fmt(ch.current()))),
        ])

    # ------------------------------------------------------------- public API
    @property
    def errors(self) -> ErrorQueue:
        return self.parser.errors

    def execute(self, raw: bytes) -> str | None:
        """One SCPI line from any client; the whole line runs under the lock."""
        with self.lock:
            self._advance()
            reply = self.parser.execute(raw)
            self._advance()
            return reply

    def trip(self, number: int, why: str) -> None:
        """Trip a channel's over-voltage protection: output off, latched, and said in the error queue.

        Real supplies differ in how they report a trip (a status register,
        the front panel, the error queue); the queue is the one the
        harness reads after every command, and the latch is what makes the
        next OUTP ON fail until OUTP:PROT:CLE.
        """
        with self.lock:
            ch = self.channels[number - 1]
            ch.output, ch.ovp_tripped = False, True
            self.parser.errors.push(-300, f"Device-specific error; channel {number}: {why}")
            log.warning("channel %d: %s", number, why)

    def push_error(self, code: int, text: str) -> None:
        with self.lock:
            self.parser.errors.push(code, text)

    def sample(self, number: int = 1) -> tuple[float, float, bool]:
        """(rail now, lowest rail since the last sample, output on) for the monitor."""
        with self.lock:
            self._advance()
            ch = self.channels[number - 1]
            low = ch.low_water
            ch.low_water = ch.rail
            return ch.rail, low, ch.output

    def set_load(self, amps: float, number: int = 1) -> None:
        """The device changed what it draws; check OCP like the real front end."""
        with self.lock:
            self._advance()
            ch = self.channels[number - 1]
            ch.load = amps
            self._check_protection(ch)
            self._advance()

    # --------------------------------------------------------------- helpers
    def _advance(self) -> None:
        now = time.monotonic()
        for ch in self.channels:
            ch.advance(now, self.tau)

    def _check_protection(self, ch: Channel) -> None:
        if ch.output and ch.volt > ch.ovp:
            ch.output, ch.ovp_tripped = False, True
            log.warning("channel %d: over-voltage protection tripped (%.3f V > %.3f V)", ch.number, ch.volt, ch.ovp)
        if ch.output and ch.ocp_on and ch.load > ch.curr:
            ch.output, ch.ocp_tripped = False, True
            log.warning("channel %d: over-current protection tripped (%.3f A > %.3f A)", ch.number, ch.load, ch.curr)

    @staticmethod
    def _noparams(params: list[str], reply: str | None) -> str | None:
        if params:
            raise ScpiError(-108)
        return reply

    def _targets(self, params: list[str], max_values: int) -> tuple[list[str], list[Channel]]:
        """Split off an optional trailing channel list; default = INST:NSEL."""
        if params and params[-1].startswith("("):
            chans = channel_list(params[-1], len(self.channels))
            params = params[:-1]
        else:
            chans = [self.nsel]
        if len(params) > max_values:
            raise ScpiError(-108)
        return params, [self.channels[n - 1] for n in chans]

    def _query(self, params: list[str], get) -> str:
        _, chans = self._targets(params, 0)
        return ",".join(get(ch) for ch in chans)

    def _value(self, params: list[str]) -> tuple[str, list[Channel]]:
        values, chans = self._targets(params, 1)
        if not values:
            raise ScpiError(-109)
        return values[0], chans

    def _rst(self, params: list[str]) -> None:
        self._noparams(params, None)
        for ch in self.channels:
            ch.reset()
        self.nsel = 1
        log.info("*RST: all outputs off, defaults restored")

    def _cls(self, params: list[str]) -> None:
        self._noparams(params, None)
        self.parser.errors.clear()

    def _set_remote(self, params: list[str], remote: bool) -> None:
        self._noparams(params, None)
        self.remote = remote

    def _nsel(self, params: list[str]) -> None:
        if len(params) != 1:
            raise ScpiError(-109 if not params else -108)
        self.nsel = int(number(params[0], 1, len(self.channels), 1))

    def _outp(self, params: list[str]) -> None:
        value, chans = self._value(params)
        on = boolean(value)
        for ch in chans:
            if on and (ch.ovp_tripped or ch.ocp_tripped):
                raise ScpiError(-221, "protection tripped, clear it first")
            was_on, ch.output = ch.output, on
            log.info("channel %d: output %s", ch.number, "ON" if on else "OFF")
            self._check_protection(ch)
            if on and not was_on and self.on_output_on is not None:
                self.on_output_on(ch)

    def _volt(self, params: list[str]) -> None:
        value, chans = self._value(params)
        for ch in chans:
            ch.volt = number(value, 0.0, ch.vmax, DEFAULT_VOLT)
            log.info("channel %d: VOLT %.3f", ch.number, ch.volt)
            self._check_protection(ch)

    def _curr(self, params: list[str]) -> None:
        value, chans = self._value(params)
        for ch in chans:
            ch.curr = number(value, 0.0, ch.imax, DEFAULT_CURR)
            log.info("channel %d: CURR %.3f", ch.number, ch.curr)
            self._check_protection(ch)

    def _ovp(self, params: list[str]) -> None:
        value, chans = self._value(params)
        for ch in chans:
            ch.ovp = number(value, 0.0, round(ch.vmax * 1.1, 3), round(ch.vmax * 1.1, 3))
            self._check_protection(ch)

    def _ocp_state(self, params: list[str]) -> None:
        value, chans = self._value(params)
        for ch in chans:
            ch.ocp_on = boolean(value)
            self._check_protection(ch)

    def _clear(self, params: list[str], ovp: bool, ocp: bool) -> None:
        _, chans = self._targets(params, 0)
        for ch in chans:
            if ovp:
                ch.ovp_tripped = False
            if ocp:
                ch.ocp_tripped = False
