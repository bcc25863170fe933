"""Rail sampling: the supply's volts and amps through a whole scenario, on the one clock.

A verdict says "the rail fell below the brown-out level 40 ms after the cut"
and a report draws the current rising while the device connects: both need
the rail sampled all along, not only when a step asks.  :class:`RailSampler`
is a thread that reads volts and amps from a :class:`~harness.supply.SupplyChannel`
at a set rate, keeps every sample in memory and appends it to
``<run_dir>/rail.jsonl`` as it comes, one JSON object a line, exactly::

    {"mono": 1234.567891, "volts": 3.2987, "amps": 0.0201}

(``report.html`` plots that file; keep the schema.)

**When a sample was taken.**  Each sample is stamped at the *midpoint*
between sending the volts query and receiving the amps answer, on the
harness clock.  The instrument measured somewhere inside that span and most
of a real supply's 5-50 ms per query is its own measurement (integrating over
power-line cycles) with a transport hop either side, so the midpoint is the
unbiased estimate, off by at most half the span (kept in memory as
:attr:`RailSample.span`).  Stamping the answer's arrival instead would put
every sample late by about half a query: on a real supply 10-25 ms, the
order of the rail's own decay, so the plotted rail would seem to fall late
after the ``off`` edge (which is stamped when ``OUTP OFF`` went out).

**Power edges keep their latency.**  A query in flight cannot be aborted,
so the only way to never delay an edge is to not be talking to the
instrument when the edge is due.  Three rules, from coarse to fine:

1. *Pause while a cut is armed* (``pause_when``; the pytest plugin passes
   :func:`cut_pending`): from the moment a console-triggered or timed cut is
   armed until it has happened, the sampler starts no query, and it checks
   again between the volts and the amps.  Those cuts are the ones whose
   moment is the test ("cut the power at ``flash: writing``"); a 50 ms
   query in the way would move the cut out of the window it aims at.
   The price is a gap in ``rail.jsonl`` while the cut is armed (counted as
   ``paused``); the rail falling after the cut is sampled again.  A query
   the sampler started just before the arming may still be in flight
   after it: whoever arms can call
   :meth:`~harness.supply.SupplyChannel.wait_idle` to let it end first
   (``bench/trigger_latency.py --sampling`` measures with and without).
2. *Go last on the lock* (:class:`~harness.supply.PriorityLock`): the
   sampler takes the supply's lock only when it is free and nobody is
   blocked waiting for it, and lets go after the volts if someone started
   waiting.  A power edge from a step (or a scenario's own measurement)
   thus waits for at most the one query already in flight, never a queue
   of samples.  A supply found in use is tried again every
   :data:`RETRY_GAP` until the next tick, then counted as ``busy`` (a
   non-blocking try costs the foreground nothing); a sample given up half
   way (``yielded``) waits for the next tick, so that a foreground using
   the supply back to back pays at most one query per tick.
3. *Keep a small share of the instrument* (``max_busy``): after a sample
   that kept the supply for ``b`` seconds (its command gap included) the
   next one waits at least ``b * (1/max_busy - 1)``, so a slow supply gets
   a lower effective rate instead of a higher chance of being mid-query
   when a step's edge comes.

A sample that fails (timeout, unparseable reply, supply gone) is skipped
and counted, and the sampler backs off; nothing ever raises into the
scenario.  Its routine traffic is left out of the supply log
(:meth:`harness.supply.SupplyLog.quiet`); timeouts and errors are not.

**Default rate** (:data:`DEFAULT_SAMPLE_RATE`, device-file key
``supply.sample_rate``, 0 disables): 10 Hz.  What a scenario shows on the
rail (a boot of 0.3-1 s, a TLS handshake of 0.5-5 s of radio, a power-off
decay of tens to hundreds of ms) is resolved at 100 ms.  A sample is two
queries: a LAN or USB supply answering ``MEAS`` in 5-12 ms spends 10-25 %
of its time on 10 Hz, within rule 3's share, so a step's edge finds it
free three times out of four or more and otherwise waits one query; a
slower one (25-50 ms a query) is throttled by rule 3 to 2.5-5 Hz instead
of being kept busy.  Finer needs are a scenario's own sampling
(``scenarios/test_energy_per_handshake.py``) or a higher rate in the
device file for a fast supply (the simulated one answers in well under
1 ms).
"""

from __future__ import annotations

import bisect
import json
import logging
import math
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Callable, Protocol

from . import clock
from .supply import RailReading, SupplyBusy

log = logging.getLogger(__name__)

#: samples a second unless the device file says otherwise (see the module docstring for why 10)
DEFAULT_SAMPLE_RATE = 10.0
#: above this, no SCPI supply answers in time: a typo, not a wish
MAX_SAMPLE_RATE = 1000.0
#: the largest share of the supply's time the sampler may take (rule 3)
MAX_BUSY = 0.25
#: how soon a sampler that found the supply in use tries again within the same tick
RETRY_GAP = 0.002
#: the longest back-off after failures in a row
MAX_BACKOFF = 5.0


class RailSupply(Protocol):
    """What the sampler needs of a supply (a :class:`~harness.supply.SupplyChannel`, or a fake)."""

    name: str

    def read_rail(self, proceed: Callable[[], bool] | None = None) -> RailReading: ...


@dataclass(frozen=True)
class RailSample:
    """One reading of the rail: ``mono`` is the midpoint of its queries, ``span`` how long they took."""

    mono: float
    volts: float
    amps: float
    span: float = 0.0

    def as_record(self) -> dict[str, float]:
        """The line of ``rail.jsonl``: exactly mono, volts, amps (``span`` stays in memory)."""
        return {"mono": self.mono, "volts": self.volts, "amps": self.amps}


@dataclass
class RailCounts:
    """What became of the sampler's ticks: taken, or skipped and why."""

    taken: int = 0
    busy: int = 0       # the supply was in use for the whole tick
    yielded: int = 0    # let go half way for a waiting operation, no slot after
    paused: int = 0     # a cut was armed
    failed: int = 0     # the query raised (timeout, instrument error, supply closed)

    @property
    def skipped(self) -> int:
        return self.busy + self.yielded + self.paused + self.failed

    def __str__(self) -> str:
        return (f"{self.taken} taken, {self.busy} busy, {self.yielded} yielded, "
                f"{self.paused} paused, {self.failed} failed")


def cut_pending(device: Any) -> bool:
    """True from when ``device`` armed a power cut until the cut has happened.

    Reads :attr:`harness.device.Device.armed`: a console trigger or a timed
    cut, either of which says ``fired`` once its action has run.  Anything
    without an ``armed`` attribute has no cut pending.
    """
    armed = getattr(device, "armed", None)
    return armed is not None and not getattr(armed.trigger, "fired", False)


def read_file(path: Path | str) -> list[RailSample]:
    """The samples of a ``rail.jsonl`` (a last line cut short by a kill is left out)."""
    samples = []
    for raw in Path(path).read_text(encoding="utf-8").splitlines():
        try:
            rec = json.loads(raw)
            samples.append(RailSample(float(rec["mono"]), float(rec["volts"]), float(rec["amps"])))
        except (ValueError, KeyError, TypeError):
            continue
    return samples


class RailSampler:
    """Sample a supply's rail in a thread while a scenario runs (see the module docstring).

    ``rate`` in Hz, 0 disables (then :meth:`start` does nothing and no file
    is written).  ``path`` is appended to as samples come, one flushed line
    each, so a run killed half way keeps what it sampled.  ``pause_when``
    is polled before each query; while it is true no query starts.
    """

    def __init__(self, supply: RailSupply, rate: float = DEFAULT_SAMPLE_RATE, path: Path | str | None = None,
                 pause_when: Callable[[], bool] | None = None, max_busy: float = MAX_BUSY,
                 join_timeout: float = 10.0):
        if not 0 <= rate <= MAX_SAMPLE_RATE:
            raise ValueError(f"rail sample rate {rate} Hz: expected 0 (off) to {MAX_SAMPLE_RATE:g} Hz")
        if not 0 < max_busy <= 1:
            raise ValueError(f"max_busy {max_busy}: expected a share in (0, 1]")
        self.supply = supply
        self.rate = float(rate)
        self.path = Path(path) if path is not None else None
        self.pause_when = pause_when
        self.max_busy = max_busy
        self.join_timeout = join_timeout
        self.counts = RailCounts()
        self._samples: list[RailSample] = []
        self._monos: list[float] = []
        self._data = threading.Lock()       # samples, counts and the file, read by other threads
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._fh: IO[str] | None = None
        self._failures = 0                  # in a row, for the back-off
        self._last_busy = 0.0               # how long the last sample kept the supply (rule 3)
        self._pause_broken = False

    # -- lifecycle --------------------------------------------------------------------

    @property
    def enabled(self) -> bool:
        return self.rate > 0

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> "RailSampler":
        if not self.enabled or self._thread is not None:
            return self
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fh = open(self.path, "a", encoding="utf-8", buffering=1)
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=f"rail {getattr(self.supply, 'name', '')}",
                                        daemon=True)
        self._thread.start()
        self._note("rail-sampling-start", rate=self.rate, path=str(self.path) if self.path else None)
        log.debug("rail: sampling %s at %g Hz into %s", getattr(self.supply, "name", "supply"), self.rate,
                  self.path)
        return self

    def stop(self) -> RailCounts:
        """End the thread (after the query in flight, if any) and close the file; idempotent."""
        thread, self._thread = self._thread, None
        if thread is None:
            return self.counts
        self._stop.set()
        thread.join(self.join_timeout)
        if thread.is_alive():
            log.warning("rail: sampler still in a query %g s after stop; leaving it", self.join_timeout)
        with self._data:
            if self._fh is not None:
                self._fh.close()
                self._fh = None
        self._note("rail-sampling-stop", detail=str(self.counts))
        log.info("rail: %s at %g Hz (%s)", self.counts, self.rate, self.path or "in memory")
        return self.counts

    def __enter__(self) -> "RailSampler":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- results ----------------------------------------------------------------------

    @property
    def samples(self) -> list[RailSample]:
        with self._data:
            return list(self._samples)

    def between(self, start: float, end: float) -> list[RailSample]:
        """The samples stamped in ``[start, end]`` on the harness clock, in order."""
        with self._data:
            i = bisect.bisect_left(self._monos, start)
            j = bisect.bisect_right(self._monos, end)
            return self._samples[i:j]

    # -- sampling ---------------------------------------------------------------------

    def sample_once(self, deadline: float | None = None) -> RailSample | None:
        """One tick's attempt: a sample, or None (skipped and counted). Never raises.

        Retries every :data:`RETRY_GAP` while the supply is in use, until
        ``deadline`` (default: at once, no retry); after letting go half way
        for a waiting operation it does not retry before the next tick.
        """
        deadline = clock.now() if deadline is None else deadline
        while True:
            if self._stop.is_set():
                return None
            if self._paused():
                return self._skip("paused")
            try:
                reading = self.supply.read_rail(proceed=self._may_go_on)
            except SupplyBusy as exc:
                if exc.yielded:
                    # Someone wanted the supply mid-sample: a foreground that uses it back to back
                    # (a scenario's own sampling loop) would pay a query per retry; wait for the next tick.
                    return self._skip("yielded")
                if clock.now() + RETRY_GAP >= deadline:
                    return self._skip("busy")
                self._stop.wait(RETRY_GAP)
                continue
            except Exception as exc:  # noqa: BLE001 - a sample never raises into the scenario
                self._failures += 1
                total = self.counts.failed + 1
                # loud the first time and at 10, 100, ...: a flaky supply must not flood the log
                loud = math.log10(total).is_integer()
                log.log(logging.WARNING if loud else logging.DEBUG,
                        "rail: sample failed (%d so far, %d in a row), skipped: %s", total, self._failures, exc)
                return self._skip("failed")
            self._failures = 0
            return self._keep(reading)

    def _run(self) -> None:
        period = 1.0 / self.rate
        due = clock.now()
        while not self._stop.is_set():
            wait = due - clock.now()
            if wait > 0 and self._stop.wait(wait):
                break
            now = clock.now()
            if due + period <= now:          # late (a slow query, a loaded machine): no catch-up burst
                due += math.floor((now - due) / period) * period
            deadline = due + period
            due = deadline
            sample = self.sample_once(deadline)
            if sample is not None:
                # rule 3: the next sample leaves the supply alone long enough to keep our share
                rest = self._last_busy * (1.0 / self.max_busy - 1.0)
                due = max(due, clock.now() + rest)
            elif self._failures:
                due = max(due, clock.now() + min(MAX_BACKOFF, period * 2 ** min(self._failures, 16)))

    def _keep(self, reading: RailReading) -> RailSample:
        sample = RailSample(mono=(reading.start + reading.end) / 2, volts=reading.volts, amps=reading.amps,
                            span=reading.end - reading.start)
        line = json.dumps(sample.as_record()) + "\n"
        self._last_busy = reading.busy
        with self._data:
            self._samples.append(sample)
            self._monos.append(sample.mono)
            self.counts.taken += 1
            if self._fh is not None:
                try:
                    self._fh.write(line)
                except (OSError, ValueError) as exc:   # disk full: keep sampling in memory
                    log.warning("rail: cannot write %s: %s", self.path, exc)
                    self._fh = None
        return sample

    def _skip(self, why: str) -> None:
        with self._data:
            setattr(self.counts, why, getattr(self.counts, why) + 1)
        return None

    def _paused(self) -> bool:
        if self.pause_when is None:
            return False
        try:
            return bool(self.pause_when())
        except Exception as exc:  # noqa: BLE001 - a broken predicate must not end sampling silently
            if not self._pause_broken:
                log.warning("rail: pause_when raised, pausing: %s", exc)
                self._pause_broken = True
            return True  # when in doubt, stay out of the way of the edges

    def _may_go_on(self) -> bool:
        return not self._stop.is_set() and not self._paused()

    def _note(self, kind: str, **fields: Any) -> None:
        note = getattr(self.supply, "note", None)
        if note is not None:
            try:
                note(kind, **fields)
            except Exception as exc:  # noqa: BLE001 - the log is a courtesy here
                log.debug("rail: could not note %s in the supply log: %s", kind, exc)
