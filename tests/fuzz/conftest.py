"""Glue for the fuzzed-files tests: one worker process per run, and the figures at the end.

The summary line is printed from real counts (every example hypothesis ran,
shrinking included), so "1,000 cases per kind, 0 tracebacks, 0 hangs" is a
measurement of this run, not the configured number.
"""

from __future__ import annotations

from typing import Iterator

import pytest

from fuzzkit import Tally, Worker

TALLY_KEY = pytest.StashKey[Tally]()


@pytest.fixture(scope="session")
def fuzz_worker() -> Iterator[Worker]:
    worker = Worker()
    try:
        yield worker
    finally:
        worker.close()


@pytest.fixture(scope="session")
def fuzz_tally(request: pytest.FixtureRequest) -> Tally:
    """Kept on the config (not in a module global) so the summary hook finds it."""
    return request.config.stash.setdefault(TALLY_KEY, Tally())


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, exitstatus: int,
                            config: pytest.Config) -> None:
    tally = config.stash.get(TALLY_KEY, None)
    if tally is not None and sum(tally.cases.values()):
        terminalreporter.write_line(tally.line())
