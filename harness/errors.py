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


class InstrumentError(HarnessError):
    """An instrument refused or failed a command: carries its own error text."""

    def __init__(self, instrument: str, command: str, text: str):
        self.instrument = instrument
        self.command = command
        self.text = text
        super().__init__(f"{instrument}: {command!r} -> {text}")


class BenchTimeout(HarnessError):
    """Waited for something on the bench that did not happen in time."""
