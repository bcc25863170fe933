"""One clock for every event on the bench.

Console lines, power edges, supply measurements and server handshakes are put
in order by a single time base: ``time.monotonic()``.  On Linux it reads
CLOCK_MONOTONIC, which is system wide, so stamps taken in the simulated bench
process, the reference server thread and the test process compare directly.
Wall-clock time is carried beside it only for humans reading a report.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timezone


def now() -> float:
    """Monotonic seconds: the harness's one time base."""
    return time.monotonic()


@dataclass(frozen=True)
class Stamp:
    """A moment on both clocks: ``mono`` orders events, ``wall`` is for people."""

    mono: float
    wall: float

    @property
    def iso(self) -> str:
        return iso(self.wall)


def stamp() -> Stamp:
    return Stamp(time.monotonic(), time.time())


def iso(wall: float) -> str:
    """ISO 8601 UTC with milliseconds, as printed in records and timelines."""
    return datetime.fromtimestamp(wall, tz=timezone.utc).isoformat(timespec="milliseconds")


def wall_from_mono(mono: float) -> float:
    """Best estimate of the wall time of a monotonic stamp taken in this boot."""
    return time.time() - (time.monotonic() - mono)


def hhmmss(mono: float | None) -> str:
    """A monotonic stamp as wall time of day with milliseconds, as verdicts print moments."""
    if mono is None:
        return "?"
    return datetime.fromtimestamp(wall_from_mono(mono), tz=timezone.utc).strftime("%H:%M:%S.%f")[:-3]
