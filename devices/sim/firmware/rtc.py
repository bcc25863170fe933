"""The firmware's real-time clock, the base of every ticket age.

A real device keeps wall-clock time in a battery-backed RTC, so ticket ages
survive a power cut; here the RTC is the host's wall clock plus an offset
(``clock set``) kept in a small file beside the flash (the battery domain).
The ``uptime-clock`` variant instead counts from boot, like firmware that
has no RTC: after any reset its clock restarts near 1970 + 0 s, so a stored
TLS 1.3 ticket appears to come from the future.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

log = logging.getLogger(__name__)


@dataclass
class Rtc:
    """Seconds since the Unix epoch as the firmware believes them."""

    battery_file: Path | None
    uptime: bool = False
    boot_mono: float = field(default_factory=time.monotonic)
    ram_offset: float = 0.0

    def _stored_offset(self) -> float:
        if self.battery_file is None:
            return 0.0
        try:
            return float(self.battery_file.read_text().strip() or 0.0)
        except (OSError, ValueError):
            return 0.0  # a flat battery: back to the host's time

    def now(self) -> float:
        if self.uptime:
            return time.monotonic() - self.boot_mono + self.ram_offset
        return time.time() + self._stored_offset()

    def now_ms(self) -> int:
        """Ticket timestamps: an RTC ticks whole seconds, an uptime counter ms.

        Whole seconds also mean that setting the clock back to a moment
        truncated to the second never makes a ticket look younger than 0 s.
        """
        if self.uptime:
            return int(self.now() * 1000)
        return int(self.now()) * 1000

    def set(self, unix_seconds: float) -> None:
        if self.uptime:
            self.ram_offset = unix_seconds - (time.monotonic() - self.boot_mono)
            return
        offset = unix_seconds - time.time()
        if self.battery_file is not None:
            self.battery_file.write_text(f"{offset!r}\n")

    def iso(self) -> str:
        return iso(round(self.now()))


def iso(unix_seconds: float) -> str:
    try:
        return datetime.fromtimestamp(unix_seconds, tz=timezone.utc).isoformat(timespec="seconds")
    except (OverflowError, OSError, ValueError):
        return f"@{unix_seconds:.0f}"
