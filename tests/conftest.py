"""The split between the fast layer and the slow one: ``pytest tests -m "not slow"``.

Slow tests start real processes: the simulated bench, child pytest runs of
the scenario suite, the supply watchdog, the C firmware built with cc.  They prove the product end to end
and take minutes; the fast layer (the engine and the verdict on a fake rig,
parsers, the console on a pseudo-terminal, the reference server in process)
runs in well under a minute.  ``pytest tests`` runs both.
"""

from __future__ import annotations

import pytest

#: test folders and modules whose tests drive real bench processes
SLOW_FOLDERS = {"scenario_runs", "sim", "cfirmware"}
SLOW_MODULES = {"test_keysight_simbench.py", "test_safe_state.py", "test_watchdog.py", "test_device_simbench.py",
                "test_console_sim.py", "test_option_fixtures.py"}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        parts = item.path.parts
        if SLOW_FOLDERS & set(parts) or item.path.name in SLOW_MODULES:
            item.add_marker(pytest.mark.slow)


def pytest_configure(config: pytest.Config) -> None:
    # Also when the harness plugin is not loaded (-p no:fixtures.plugin).
    config.addinivalue_line("markers", "slow: a harness test that starts real bench processes (minutes)")
