"""Bench supply driver over pyvisa: power edges on the harness's one clock.

The supply is ground truth for "when did the device lose power": the verdict
puts every power edge (:class:`PowerEvent`) on the same monotonic clock as
console lines and server handshakes.  Each command, reply and measurement is
also appended to a JSON-lines supply log as it happens, so a run killed half
way still leaves the record of what the supply was told.

What a model understands lives in its dialect file (``harness/dialects``);
this module never branches on a vendor.  A watchdog process
(``python -m harness.watchdog``), armed on :meth:`Supply.open`, puts the
supply in its safe state if this process dies without closing it, SIGKILL
included.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import subprocess
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any, Callable, Iterable, Iterator, Mapping, TypeVar

from . import clock
from .dialect import Dialect, Reply
from .dialect import load as load_dialect
from .errors import BenchError, BenchTimeout, ConfigError, HarnessError, InstrumentError, SupplyUnreachable
from .watchdog import Watchdog, WatchdogConfig

log = logging.getLogger(__name__)


class DischargeError(HarnessError):
    """The rail did not fall below the threshold after output off.

    Carries the last measured volts and how long we waited, because "the
    device never lost power" is the most misleading thing a power-loss test
    can silently do.
    """

    def __init__(self, resource: str, volts: float, threshold: float, waited: float):
        self.resource = resource
        self.volts = volts
        self.threshold = threshold
        self.waited = waited
        super().__init__(
            f"{resource}: rail still at {volts:.3f} V after output off, waited {waited:.3f} s "
            f"for it to fall below {threshold:.3f} V (off time too short, threshold too low, "
            f"or something back-feeds the rail)")


@dataclass(frozen=True)
class PowerEvent:
    """One thing the supply did or measured, stamped on both clocks."""

    mono: float
    wall: float
    kind: str  # on | off | discharged | voltage | current_limit | ovp | measure | safe | ...
    volts: float | None = None
    detail: str = ""
    amps: float | None = None
    channel: int | None = None


@dataclass(frozen=True)
class SafeState:
    """What "safe" means for one bench: output off, or on at a given voltage.

    Some devices must stay powered (a board whose debugger is powered by the
    same rail, a bench whose safe state is "idle at 3.3 V"), so safe is a
    per-device choice, off by default.
    """

    output: bool = False
    volts: float | None = None
    current_limit: float | None = None

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any] | None) -> "SafeState":
        """``{output: off}`` / ``{output: on, volts: 3.3}`` as in a device file."""
        if not data:
            return cls()
        unknown = set(data) - {"output", "volts", "current_limit"}
        if unknown:
            raise HarnessError(f"safe state: unknown key(s) {', '.join(sorted(unknown))}; "
                               "expected output, volts, current_limit")
        output = data.get("output", False)
        if isinstance(output, str):
            if output.lower() not in ("on", "off"):
                raise HarnessError(f"safe state: output must be on or off, got {output!r}")
            output = output.lower() == "on"
        volts = data.get("volts")
        if output and volts is None:
            raise HarnessError("safe state: output on needs volts")
        return cls(output=bool(output), volts=None if volts is None else float(volts),
                   current_limit=None if data.get("current_limit") is None
                   else float(data["current_limit"]))

    def to_mapping(self) -> dict[str, Any]:
        return {"output": "on" if self.output else "off", "volts": self.volts,
                "current_limit": self.current_limit}


class SupplyLog:
    """Append-only JSON-lines record of everything said to one supply.

    Opened in append mode and flushed per line: the watchdog writes to the
    same file from another process, and a SIGKILL must not lose the tail.
    The rail sampler's routine queries are the one thing left out (see
    :meth:`quiet`); their answers are in ``rail.jsonl``.
    """

    #: what :meth:`quiet` leaves out: the routine traffic, never timeouts, errors or edges
    QUIET_KINDS = frozenset({"write", "reply"})

    def __init__(self, path: Path | None):
        self.path = Path(path) if path else None
        self._fh: IO[str] | None = None
        self._quiet = threading.local()

    @contextlib.contextmanager
    def quiet(self) -> Iterator[None]:
        """Leave this thread's plain writes and replies out of the log while inside.

        For the rail sampler: ten samples a second would bury the edges
        under thousands of ``MEAS`` lines, and their answers are kept in
        ``rail.jsonl`` anyway.  Per thread, so a foreground operation that
        runs meanwhile is still logged in full.
        """
        self._quiet.on = True
        try:
            yield
        finally:
            self._quiet.on = False

    def write(self, **record: Any) -> None:
        if self.path is None:
            return
        if record.get("kind") in self.QUIET_KINDS and getattr(self._quiet, "on", False):
            return
        if self._fh is None:  # opened on first use: a Supply never opened leaves no handle
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fh = open(self.path, "a", encoding="utf-8", buffering=1)
        st = clock.stamp()
        line = {"mono": st.mono, "wall": st.wall, "time": clock.iso(st.wall), "pid": os.getpid()}
        line.update({k: v for k, v in record.items() if v is not None})
        self._fh.write(json.dumps(line) + "\n")

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


F = TypeVar("F", bound=Callable[..., Any])


def _locked(method: F) -> F:
    """Run a whole operation under the supply's lock.

    A console trigger may cut the power from its reader thread while the
    test thread is half way through a query; a VISA session interleaving
    two conversations would misread both.
    """

    @functools.wraps(method)
    def wrapper(self: "SupplyChannel", *args: Any, **kwargs: Any) -> Any:
        with self._lock:
            return method(self, *args, **kwargs)

    return wrapper  # type: ignore[return-value]


class PriorityLock:
    """The supply's lock, re-entrant, where every ordinary holder goes before the background one.

    Why: a query in flight cannot be aborted (5-50 ms on a real supply over
    LAN or USB), so a power edge that finds the rail sampler
    (:mod:`harness.rail`) talking to the instrument must wait for it.  The
    foreground (edges, a scenario's own measurements, a console trigger's
    cut) takes the lock as it always did, through ``with``; the sampler
    takes it only through :meth:`acquire_idle`, which refuses while the lock
    is held or anybody is blocked waiting for it, and it looks at
    :attr:`wanted` between its queries so that it lets go after the query in
    flight rather than after the whole sample.  A queue of samples thus
    never forms in front of an edge: the worst an edge sees is one query.
    """

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._count = threading.Lock()
        self._waiting = 0  # foreground threads blocked in acquire() right now

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        """Foreground acquire: a thread that has to wait is counted, so the background yields to it."""
        if self._lock.acquire(blocking=False):   # free, or ours already: the fast path, no counting
            return True
        if not blocking:
            return False
        with self._count:
            self._waiting += 1
        try:
            return self._lock.acquire(timeout=timeout)
        finally:
            with self._count:
                self._waiting -= 1

    def release(self) -> None:
        self._lock.release()

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()

    @property
    def wanted(self) -> bool:
        """True while a foreground thread is blocked waiting for the lock."""
        return self._waiting > 0

    def acquire_idle(self) -> bool:
        """Background acquire: only if the lock is free and no foreground thread waits; never blocks."""
        if self._waiting or not self._lock.acquire(blocking=False):
            return False
        if self._waiting:          # one started waiting between the check and the acquire
            self._lock.release()
            return False
        return True


class SupplyBusy(HarnessError):
    """The rail sampler stood aside: the supply was in use, an edge was waiting, or the caller said stop.

    ``yielded`` is True when it let go half way (after the volts, before
    the amps) so that a waiting operation could go first.
    """

    def __init__(self, message: str, yielded: bool = False):
        self.yielded = yielded
        super().__init__(message)


@dataclass(frozen=True)
class RailReading:
    """Volts and amps read back to back, with the moments that bracket them on the harness clock.

    ``start`` is just before the volts query went out, ``end`` just after
    the amps answer arrived: the instrument measured somewhere in between.
    ``busy`` is how long the sample kept the instrument from anyone else,
    its command gap after the last answer included.
    """

    start: float
    end: float
    volts: float
    amps: float
    busy: float


def _no_delay(inst: Any) -> None:
    """Turn off Nagle's algorithm on a raw-socket instrument.

    SCPI over a raw socket is many tiny writes each followed by a query; with
    Nagle on, every write-then-query pair waits for the peer's delayed ACK
    (~40 ms on Linux), which would make a triggered power cut land tens of
    milliseconds late.  pyvisa-py does not expose TCP_NODELAY (its
    VI_ATTR_TCPIP_NODELAY raises UnknownAttribute for SOCKET resources), so
    reach the socket it holds.  Anything else (USBTMC, serial, another VISA
    library) has no such socket and is left alone.
    """
    import socket

    try:
        session = inst.visalib.sessions[inst.session]
        sock = getattr(getattr(session, "interface", None), "setsockopt", None)
        if sock is not None:
            session.interface.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except (AttributeError, KeyError, OSError, TypeError):
        log.debug("no raw socket to set TCP_NODELAY on")


class SupplyChannel:
    """One channel of a bench supply, spoken to in its dialect, with no watchdog.

    Why a class of its own: the watchdog process secures the bench through
    this very driver (the same pacing, read modes and error checks a test
    relies on) and must not arm a watchdog of its own.  Tests and rigs use
    :class:`Supply`.
    """

    def __init__(self, resource: str, dialect: str | Path | Dialect = "keysight-e36300",
                 channel: int = 1, visa_library: str = "@py", log_path: Path | None = None,
                 safe_state: SafeState | Mapping[str, Any] | None = None):
        self.dialect = dialect if isinstance(dialect, Dialect) else load_dialect(dialect)
        if channel not in self.dialect.channels:
            raise ConfigError(self.dialect.file, self.dialect.lines.get("channels"), "channel",
                              f"channel {channel} does not exist on {self.dialect.name} "
                              f"(channels {list(self.dialect.channels)})")
        self.resource = self.dialect.socket_resource(resource)
        self.channel = channel
        self.visa_library = visa_library
        self.safe_state = (safe_state if isinstance(safe_state, SafeState)
                           else SafeState.from_mapping(safe_state))
        self.log_path = Path(log_path) if log_path else None
        self.events: list[PowerEvent] = []
        self.setpoint: float | None = None
        self._log = SupplyLog(self.log_path)
        self._rm: Any = None
        self._inst: Any = None
        self._last_io = 0.0
        self._safe_applied = False
        self._lock = PriorityLock()  # the rail sampler goes last: see PriorityLock
        #: bench faults met by the foreground (scenario steps, cuts, safe state), on the harness clock:
        #: (mono, sub-code, text); the rail sampler's go to ``background_faults``
        self.faults: list[tuple[float, str, str]] = []
        self.background_faults: list[tuple[float, str, str]] = []
        self._bg = threading.local()
        #: a reply may still be on its way after a timeout: drained before the next query
        self._stale = False

    # --- lifecycle ------------------------------------------------------------------------

    @property
    def name(self) -> str:
        return f"{self.dialect.name} ch{self.channel} at {self.resource}"

    @property
    def is_open(self) -> bool:
        return self._inst is not None

    def open(self) -> "SupplyChannel":
        """Connect, put the instrument in remote, clear stale errors."""
        if self._inst is not None:
            return self
        import pyvisa  # imported here so that `harness` imports without a VISA stack

        transport = self.dialect.transport
        self._log.write(kind="open", resource=self.resource, dialect=self.dialect.name,
                        channel=self.channel, visa_library=self.visa_library)
        try:
            self._rm = pyvisa.ResourceManager(self.visa_library)
            kwargs: dict[str, Any] = {"timeout": int(transport.timeout * 1000)}
            if self.resource.upper().startswith("ASRL"):
                for key in ("baud_rate", "data_bits"):
                    if getattr(transport, key) is not None:
                        kwargs[key] = getattr(transport, key)
                if transport.stop_bits is not None:
                    kwargs["stop_bits"] = pyvisa.constants.StopBits(int(transport.stop_bits * 10))
            self._inst = self._rm.open_resource(self.resource, **kwargs)
        except Exception as exc:  # pyvisa raises many kinds: name them all the same way
            self._close_rm()
            raise self._fault(SupplyUnreachable(f"{self.name}: cannot open {self.resource}: {exc}")) from exc
        self._inst.write_termination = transport.write_termination or ""
        self._inst.read_termination = transport.read_termination or None
        _no_delay(self._inst)
        self._sequence(["remote", "clear"], {}, check=False)
        if self.dialect.errors:
            self._drain_errors()
        return self

    def close(self) -> None:
        """Front panel back to local, disconnect, close the log."""
        self._disconnect()
        self._log.close()

    def reconnect(self) -> None:
        """Drop the session and open a new one: after a LAN link or a USB hub came back.

        The instrument keeps its settings across a dropped socket, but one
        that rebooted has lost them, so the caller configures again.  Raises
        :class:`SupplyUnreachable` if it still does not answer.
        """
        with self._lock:
            inst, self._inst = self._inst, None
            if inst is not None:
                try:
                    inst.close()
                except Exception as exc:  # the old session is dead; closing it may fail any way
                    log.debug("%s: closing the dead session: %s", self.name, exc)
                self._log.write(kind="close", resource=self.resource, detail="reconnect")
            self._safe_applied = False
            self._stale = False
        self.open()

    def _disconnect(self) -> None:
        """Front panel back to local, then let go of the instrument."""
        if self._inst is not None:
            try:
                for command in self.dialect.render("local", channel=self.channel):
                    self._write(command)
            except Exception as exc:  # the instrument may be gone; closing must go on
                log.warning("%s: could not return to local: %s", self.name, exc)
            try:
                self._inst.close()
            except Exception as exc:
                log.warning("%s: close failed: %s", self.name, exc)
            self._inst = None
            self._log.write(kind="close", resource=self.resource)
        self._close_rm()

    def _close_rm(self) -> None:
        # pyvisa hands out ONE ResourceManager per VISA library and process:
        # closing it would cut every other Supply's (and the caller's) sessions.
        self._rm = None

    # --- operations -----------------------------------------------------------------------

    @_locked
    def identify(self) -> str:
        answer = self._query("identify")
        self._event("identify", detail=answer)
        self.check_errors()
        return answer

    @_locked
    def configure(self, voltage: float | None = None, current_limit: float | None = None,
                  ovp: float | None = None) -> None:
        """Set voltage, current limit and over-voltage protection, in that order."""
        if ovp is not None and not self.dialect.has("ovp"):
            raise HarnessError(f"{self.name}: this model has no programmable OVP "
                               f"(commands.ovp is null in {self.dialect.where('commands.ovp')})")
        if current_limit is not None:
            self._sequence(["select", "current_limit"], {"amps": current_limit})
            self._event("current_limit", amps=current_limit)
        if ovp is not None:
            self._sequence(["select", "ovp"], {"volts": ovp})
            self._event("ovp", volts=ovp)
        if voltage is not None:
            self.set_voltage(voltage)

    @_locked
    def set_voltage(self, volts: float) -> PowerEvent:
        """Change the set-point now (output state unchanged): brown-out dips use this."""
        at = self._sequence(["select", "voltage"], {"volts": volts}, mark="voltage")
        self.setpoint = volts
        return self._event("voltage", volts=volts, at=at)

    def on(self, settle: bool = True, tolerance: float = 0.1, timeout: float = 2.0) -> PowerEvent:
        """Switch the output on; with ``settle``, return once the rail is within tolerance.

        The returned event is the power edge (stamped when the command went
        out), not the moment the rail settled: that one is in ``events``.
        """
        with self._lock:
            self._safe_applied = False
            at = self._sequence(["select", "output_on"], {}, mark="output_on")
            edge = self._event("on", volts=self.setpoint, at=at)
        if settle:
            if self.setpoint is None:
                raise HarnessError(f"{self.name}: on(settle=True) needs a voltage set first")
            start = clock.now()
            volts = self.measure_voltage()
            while abs(volts - self.setpoint) > tolerance:
                if clock.now() - start > timeout:
                    self._tripped_check("output_on")
                    raise BenchTimeout(
                        f"{self.name}: rail at {volts:.3f} V {clock.now() - start:.3f} s after "
                        f"output on, expected {self.setpoint:.3f} V +/- {tolerance:.3f} V")
                time.sleep(0.01)
                volts = self.measure_voltage()
            self._event("settled", volts=volts, detail=f"{clock.now() - start:.3f} s after on")
        return edge

    def off(self, discharge_below: float | None = 0.3, min_off: float = 0.0,
            timeout: float = 5.0) -> PowerEvent:
        """Switch the output off and prove the rail really went down.

        Polls the measured voltage until it is below ``discharge_below`` (a
        device held up by its own capacitors has not lost power), then keeps
        the output off for ``min_off`` seconds.  Returns the power edge.
        """
        with self._lock:
            at = self._sequence(["select", "output_off"], {}, mark="output_off")
            edge = self._event("off", at=at)
        if discharge_below is not None:
            volts = self.measure_voltage()
            while volts >= discharge_below:
                waited = clock.now() - edge.mono
                if waited > timeout:
                    self._event("discharge-failed", volts=volts,
                                detail=f"waited {waited:.3f} s for < {discharge_below} V")
                    raise DischargeError(self.name, volts, discharge_below, waited)
                time.sleep(0.005)
                volts = self.measure_voltage()
            self._event("discharged", volts=volts,
                        detail=f"{clock.now() - edge.mono:.3f} s after off")
        remaining = edge.mono + min_off - clock.now() if discharge_below is None else min_off
        if remaining > 0:
            time.sleep(remaining)
        return edge

    def cycle(self, off_time: float = 0.5, discharge_below: float | None = 0.3,
              timeout: float = 5.0, settle: bool = True,
              tolerance: float = 0.1) -> tuple[PowerEvent, PowerEvent]:
        """Power cycle: verified off, ``off_time`` without power, on again."""
        off_edge = self.off(discharge_below=discharge_below, min_off=off_time, timeout=timeout)
        on_edge = self.on(settle=settle, tolerance=tolerance, timeout=timeout)
        return off_edge, on_edge

    @_locked
    def measure_voltage(self) -> float:
        volts = self._measure("measure_voltage")
        self._event("measure", volts=volts)
        return volts

    @_locked
    def measure_current(self) -> float:
        amps = self._measure("measure_current")
        self._event("measure", amps=amps)
        return amps

    def read_rail(self, proceed: Callable[[], bool] | None = None) -> RailReading:
        """Volts then amps for the rail sampler, as background work: never in anyone's way.

        Raises :class:`SupplyBusy` at once if the supply is in use or an
        operation is waiting for it, and lets go between the two queries
        (``yielded``) if one started waiting meanwhile or ``proceed()``
        turned false (a cut was armed).  Records no power event and keeps its
        routine traffic out of the supply log (:meth:`SupplyLog.quiet`): the
        readings are the sampler's to keep.  Other failures (a timeout, an
        unparseable reply) raise as they would for :meth:`measure_voltage`.
        """
        if not self._lock.acquire_idle():
            raise SupplyBusy(f"{self.name}: in use")
        try:
            with self._log.quiet(), self._background():
                start = clock.now()
                volts = self._measure("measure_voltage")
                if self._lock.wanted or (proceed is not None and not proceed()):
                    raise SupplyBusy(f"{self.name}: wanted by another operation", yielded=True)
                amps = self._measure("measure_current")
                end = clock.now()
        finally:
            self._lock.release()
        return RailReading(start=start, end=end, volts=volts, amps=amps,
                           busy=end - start + (self.dialect.transport.command_gap or 0.0))

    def wait_idle(self) -> None:
        """Return once nothing, a rail sample included, is talking to the instrument.

        For whoever arms a precise cut: once the cut is armed the sampler
        starts no query (its ``pause_when``), but one it started just before
        may still be in flight, and would delay a line that comes at once.
        Taking the lock as the foreground makes the sampler let go after
        that query, so when this returns the way to the supply is clear.
        """
        with self._lock:
            pass

    @_locked
    def clear_protection(self) -> bool:
        """Clear a latched OVP/OCP trip, if the model can be told to; False if it cannot."""
        if not self.dialect.has("clear_protection"):
            return False
        self._sequence(["select", "clear_protection"], {})
        self._event("protection-cleared")
        return True

    @_locked
    def output_state(self) -> bool | None:
        """True/False from the instrument, or None if the model cannot be asked."""
        if not self.dialect.has("output_state"):
            return None
        self._sequence(["select"], {})
        answer = self._query("output_state").strip()
        reply = self.dialect.reply("output_state")
        match = reply.pattern.search(answer)
        value = match.group("value") if match else answer
        return value.upper() in {v.upper() for v in reply.on_values}

    @_locked
    def safe(self) -> PowerEvent | None:
        """Apply the safe state.  Idempotent and cheap: a second call does nothing.

        No discharge wait here: safe() runs in teardown and signal paths
        where returning quickly matters more than proving the rail decayed.
        """
        if self._inst is None or self._safe_applied:
            return None
        state = self.safe_state
        if state.output:
            if state.current_limit is not None:
                self._sequence(["select", "current_limit"], {"amps": state.current_limit})
            self.set_voltage(state.volts if state.volts is not None else 0.0)
            self._sequence(["select", "output_on"], {})
        else:
            self._sequence(["select", "output_off"], {})
        self._safe_applied = True
        return self._event("safe", volts=state.volts if state.output else None,
                           detail=json.dumps(state.to_mapping()))

    def _tripped_check(self, command: str) -> None:
        """Raise the supply's own error if it switched its output off by itself (OVP/OCP trip).

        A rail that does not come up is either the device (a short pulling
        it into current limit) or the supply protecting itself; only the
        supply can say which, through its output state and error queue.
        """
        with self._lock:
            if self.output_state() is not False:
                return
            errors = self._drain_errors() if self.dialect.errors else []
        text = "; ".join(errors) or "no error in its queue"
        self._event("trip", detail=text)
        raise self._fault(InstrumentError(self.name, command, f"the output switched itself off after on "
                                                             f"(protection tripped?): {text}"))

    @_locked
    def check_errors(self, command: str = "") -> None:
        """Read the instrument's error reporting; raise with its own text if anything is set."""
        errors = self._drain_errors()
        if errors:
            text = "; ".join(errors)
            self._event("error", detail=f"{command}: {text}" if command else text)
            raise self._fault(InstrumentError(self.name, command or "(sequence)", text))

    # --- plumbing -------------------------------------------------------------------------

    def _event(self, kind: str, volts: float | None = None, amps: float | None = None,
               detail: str = "", at: clock.Stamp | None = None) -> PowerEvent:
        st = at or clock.stamp()
        event = PowerEvent(mono=st.mono, wall=st.wall, kind=kind, volts=volts, detail=detail,
                           amps=amps, channel=self.channel)
        self.events.append(event)
        self._log.write(**{"kind": kind, "volts": volts, "amps": amps,
                           "detail": detail or None, "channel": self.channel})
        return event

    def _require_open(self) -> Any:
        if self._inst is None:
            raise HarnessError(f"{self.name}: not open")
        return self._inst

    def _pace(self) -> None:
        gap = self.dialect.transport.command_gap
        if gap:
            wait = self._last_io + gap - clock.now()
            if wait > 0:
                time.sleep(wait)

    def _write(self, command: str) -> None:
        inst = self._require_open()
        self._pace()
        self._log.write(kind="write", command=command)
        try:
            inst.write(command)
        except Exception as exc:
            raise self._fault(SupplyUnreachable(f"{self.name}: write {command!r} failed: {exc}")) from exc
        finally:
            self._last_io = clock.now()

    def _read(self, command: str, reply: Reply, ask_errors: bool = True) -> str:
        inst = self._require_open()
        import pyvisa

        try:
            if self.dialect.transport.read_termination:
                answer = inst.read()
            elif reply.length is not None:
                answer = inst.read_bytes(reply.length).decode("ascii", errors="replace")
            else:
                answer = self._read_until_quiet(inst)
        except pyvisa.errors.VisaIOError as exc:
            self._last_io = clock.now()
            self._stale = True
            self._log.write(kind="timeout", command=command, detail=str(exc))
            errors = self._drain_errors() if ask_errors and self.dialect.errors else []
            if errors:
                raise self._fault(InstrumentError(self.name, command, "; ".join(errors))) from None
            raise self._fault(SupplyUnreachable(f"{self.name}: no answer to {command!r} within "
                                                f"{inst.timeout / 1000:.1f} s ({exc.abbreviation})")) from None
        self._last_io = clock.now()
        answer = answer.strip()
        self._log.write(kind="reply", command=command, reply=answer)
        return answer

    def _drain_late_reply(self) -> None:
        """Throw away a reply that arrived after its query timed out, so the next query reads its own.

        Without this a late ``MEAS:CURR?`` answer (0.02) would be read as the
        next ``MEAS:VOLT?`` and a powered rail would look discharged.
        """
        import pyvisa

        inst = self._require_open()
        saved = inst.timeout
        dropped = b""
        try:
            inst.timeout = 50
            while len(dropped) < 4096:
                dropped += inst.read_bytes(1)
        except pyvisa.errors.VisaIOError:
            pass
        except Exception as exc:  # a dead session: the next write says so
            log.debug("%s: draining a late reply: %s", self.name, exc)
        finally:
            inst.timeout = saved
            self._stale = False
        if dropped:
            self._log.write(kind="late-reply-dropped", detail=dropped.decode("ascii", "replace"))

    def _read_until_quiet(self, inst: Any) -> str:
        """Variable-length replies with no terminator end when the line goes quiet."""
        import pyvisa

        data = bytearray()
        saved = inst.timeout
        try:
            while True:
                inst.timeout = int((self.dialect.transport.quiet if data
                                    else self.dialect.transport.timeout) * 1000)
                try:
                    data += inst.read_bytes(1)
                except pyvisa.errors.VisaIOError:
                    if not data:
                        raise
                    break
        finally:
            inst.timeout = saved
        return data.decode("ascii", errors="replace")

    def _query(self, key: str, **values: Any) -> str:
        commands = self.dialect.render(key, channel=self.channel, **values)
        if not commands:
            raise HarnessError(f"{self.name}: dialect has no '{key}' query")
        if self._stale:
            self._drain_late_reply()
        self._write(commands[0])
        return self._read(commands[0], self.dialect.reply(key))

    def _measure(self, key: str) -> float:
        self._sequence(["select"], {})
        answer = self._query(key)
        match = self.dialect.reply(key).pattern.search(answer)
        if not match:
            raise InstrumentError(self.name, self.dialect.render(key, channel=self.channel)[0],
                                  f"unparseable reply {answer!r} (pattern in "
                                  f"{self.dialect.where('replies')})")
        return float(match.group("value"))

    def _sequence(self, keys: Iterable[str], values: Mapping[str, Any], check: bool = True,
                  mark: str | None = None) -> clock.Stamp | None:
        """Send the commands for ``keys``; after each write, read the error reporting.

        Checking after every write (not once per sequence) lets the error name
        the exact command the instrument refused.  Returns the moment the
        last command of ``mark`` went out: the power edge, stamped before
        the error check's round trip.
        """
        at: clock.Stamp | None = None
        with self._lock:
            for key in keys:
                for command in self.dialect.render(key, channel=self.channel, **values):
                    self._write(command)
                    if key == mark:  # the last command of the key is the edge (master switch)
                        at = clock.stamp()
                    if check and self.dialect.errors:
                        self.check_errors(command)
        return at

    def _drain_errors(self) -> list[str]:
        """All pending errors as texts, each in the instrument's own words."""
        found: list[str] = []
        for check in self.dialect.errors:
            for _ in range(check.max_reads):
                self._write(check.query)
                answer = self._read(check.query, Reply(), ask_errors=False)
                match = check.pattern.search(answer)
                if not match:
                    found.append(f"{check.query} -> unparseable {answer!r}")
                    break
                code = int(match.group("code"))
                if code in check.ok_codes:
                    break
                text = answer
                if code in check.texts:
                    text = f"{answer} ({check.texts[code]})"
                elif 1 <= code <= 99 and check.texts:
                    text = f"{answer} (hardware error)"
                found.append(text)
                if not check.drain:
                    break
        return found

    def _fault(self, exc: BenchError) -> BenchError:
        """Remember a bench fault on the clock before raising it.

        The exception may be swallowed on its way up (a console trigger's
        cut runs in another thread) or the supply may be back by the time
        anyone asks: the plugin reads ``faults`` after a failed scenario so
        a bench fault is never reported as the device's verdict.  The rail
        sampler's faults are kept apart (``background_faults``): it
        swallows them itself, nothing the scenario did depended on them, and
        they must never void a verdict about the device.
        """
        kept = self.background_faults if getattr(self._bg, "on", False) else self.faults
        kept.append((clock.now(), exc.sub_code, str(exc)))
        return exc

    @contextlib.contextmanager
    def _background(self) -> Iterator[None]:
        """Mark this thread's supply traffic as background work (the rail sampler) while inside."""
        self._bg.on = True
        try:
            yield
        finally:
            self._bg.on = False

    def faults_between(self, start: float, end: float) -> list[tuple[float, str, str]]:
        """The faults (mono, sub-code, text) met between two moments on the harness clock."""
        return [f for f in self.faults if start <= f[0] <= end]

    def note(self, kind: str, **fields: Any) -> None:
        """Append a free-form record to the supply log (the watchdog reports through this)."""
        self._log.write(kind=kind, **fields)

    def events_as_dicts(self) -> list[dict[str, Any]]:
        return [asdict(e) for e in self.events]


class Supply(SupplyChannel):
    """One channel of a bench supply, spoken to in its dialect, guarded by a watchdog.

    Context manager: on an exception inside ``with`` the safe state is applied
    before closing; the watchdog covers deaths that skip ``__exit__``.
    """

    def __init__(self, resource: str, dialect: str | Path | Dialect = "keysight-e36300",
                 channel: int = 1, visa_library: str = "@py", log_path: Path | None = None,
                 safe_state: SafeState | Mapping[str, Any] | None = None,
                 watchdog: bool = True, watchdog_grace: float = 30.0):
        super().__init__(resource, dialect, channel=channel, visa_library=visa_library,
                         log_path=log_path, safe_state=safe_state)
        self.watchdog_enabled = watchdog
        self.watchdog_grace = watchdog_grace
        self._watchdog: Watchdog | None = None

    def open(self) -> "Supply":
        """Connect, put the instrument in remote, clear stale errors, arm the watchdog."""
        if self._inst is not None:
            return self
        super().open()
        if self.watchdog_enabled:
            self.arm_watchdog()
        return self

    def close(self, secure: bool = False) -> None:
        """Front panel back to local, disconnect, then disarm the watchdog.

        The watchdog is disarmed last so that a crash inside close() still
        leaves someone responsible for the bench.  ``secure`` asks it to apply
        the safe state from its own fresh connection instead (used when our
        connection failed while unwinding): it goes after we disconnect
        because many instruments take one connection at a time.
        """
        self._disconnect()
        self.disarm_watchdog(apply_safe=secure)
        self._log.close()

    def __enter__(self) -> "Supply":
        return self.open()

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        secure = False
        if exc_type is not None and self._inst is not None:
            try:
                self.safe()
            except Exception as safe_exc:
                # Hand the job to the watchdog, which retries from a clean connection.
                log.error("%s: safe state failed during unwinding: %s", self.name, safe_exc)
                secure = True
        self.close(secure=secure)

    # --- watchdog -------------------------------------------------------------------------

    def watchdog_config(self) -> dict[str, Any]:
        """What the watchdog needs to reach and secure this supply on its own."""
        return asdict(self._watchdog_config())

    def _watchdog_config(self) -> WatchdogConfig:
        return WatchdogConfig(resource=self.resource, dialect=self.dialect.file,
                              channel=self.channel, visa_library=self.visa_library,
                              safe_state=self.safe_state.to_mapping(), parent_pid=os.getpid(),
                              log_path=str(self.log_path) if self.log_path else None,
                              grace=self.watchdog_grace)

    def arm_watchdog(self) -> subprocess.Popen:
        """Start the watchdog process (see :meth:`Watchdog.spawn`) and wait until it is armed."""
        if self._watchdog is not None and self._watchdog.alive:
            return self._watchdog.process
        watchdog = Watchdog.spawn(self._watchdog_config(), self.name)
        self._watchdog = watchdog
        self._log.write(kind="watchdog-armed", watchdog_pid=watchdog.pid)
        log.debug("%s: watchdog %d armed", self.name, watchdog.pid)
        return watchdog.process

    def disarm_watchdog(self, apply_safe: bool = False) -> None:
        """Tell the watchdog we are done (or, with ``apply_safe``, to secure the bench now)."""
        watchdog, self._watchdog = self._watchdog, None
        if watchdog is None:
            return
        if not watchdog.close(apply_safe=apply_safe):
            log.warning("%s: watchdog %d did not exit; killing it", self.name, watchdog.pid)

    @property
    def watchdog_pid(self) -> int | None:
        return self._watchdog.pid if self._watchdog is not None else None
