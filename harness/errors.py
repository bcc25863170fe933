"""Errors a user can act on.

Every error the harness raises on purpose derives from :class:`HarnessError`;
the pytest glue prints these as one clear message instead of a traceback.
"""

from __future__ import annotations


class HarnessError(Exception):
    """An expected failure with a message meant for the person at the bench."""


class ConfigError(HarnessError):
    """A mistake in a user's file: names the file, the line and the key."""

    def __init__(self, file: str, line: int | None, key: str | None, message: str):
        self.file = str(file)
        self.line = line
        self.key = key
        self.message = message
        where = self.file if line is None else f"{self.file}:{line}"
        what = f"{key}: " if key else ""
        super().__init__(f"{where}: {what}{message}")


class BenchError(HarnessError):
    """The bench failed, not the device: never a verdict about the firmware.

    A nightly run that blames the firmware for a dropped LAN link or a
    re-enumerated USB hub sends a developer after a bug that does not exist,
    so these get their own class: pytest reports them as *errors* (not
    failures), the summary counts them apart, and ``--bench-retries`` retries
    only them.  ``sub_code`` says which part of the bench failed (see
    :mod:`harness.outcomes`, "found by bench").
    """

    sub_code = "bench-start"

    def __init__(self, message: str):
        super().__init__(message)


class SupplyUnreachable(BenchError):
    """The supply does not answer: connection refused or dropped, VISA timeout without an error to read."""

    sub_code = "supply-unreachable"


class InstrumentError(BenchError):
    """An instrument refused or failed a command: carries its own error text."""

    sub_code = "supply-error"

    def __init__(self, instrument: str, command: str, text: str):
        self.instrument = instrument
        self.command = command
        self.text = text
        super().__init__(f"{instrument}: {command!r} -> {text}")


class ConsoleLost(BenchError):
    """The console port went away and did not come back where the device file says it must."""

    sub_code = "console-lost"


class ServerError(BenchError):
    """The reference server could not start or stopped serving."""

    sub_code = "server-error"


class BenchStartError(BenchError):
    """The device file's bench command did not start, or exited during the run."""

    sub_code = "bench-start"


class RigBusy(BenchError):
    """Another run holds the rig (its lock names who): this run never drove it."""

    sub_code = "rig-busy"
    #: a retry would only meet the same holder
    retry = False


class BenchTimeout(HarnessError):
    """Waited for something on the bench that did not happen in time."""


def bench_error(sub_code: str, message: str) -> BenchError:
    """The bench error class for a sub-code (a fault remembered as text, raised later)."""
    for kind in (SupplyUnreachable, ConsoleLost, ServerError, BenchStartError, RigBusy):
        if kind.sub_code == sub_code:
            return kind(message)
    error = BenchError(message)
    error.sub_code = sub_code
    return error
