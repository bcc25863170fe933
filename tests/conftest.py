"""The split between the fast layer and the slow one: ``pytest tests -m "not slow"``.

Slow tests start real processes: the simulated bench, child pytest runs of
the scenario suite, the supply watchdog, the C firmware built with cc.  They prove the product end to end
and take minutes; the fast layer (the engine and the verdict on a fake rig,
parsers, the console on a pseudo-terminal, the reference server in process)
runs in well under a minute.  ``pytest tests`` runs both.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

#: test folders and modules whose tests drive real bench processes
SLOW_FOLDERS = {"scenario_runs", "sim", "cfirmware", "lab", "safety", "fuzz", "labgrid"}
SLOW_MODULES = {"test_keysight_simbench.py", "test_safe_state.py", "test_watchdog.py", "test_device_simbench.py",
                "test_console_sim.py", "test_option_fixtures.py", "test_report_browser.py",
                "test_rail_simbench.py"}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        parts = item.path.parts
        if SLOW_FOLDERS & set(parts) or item.path.name in SLOW_MODULES:
            item.add_marker(pytest.mark.slow)


def pytest_configure(config: pytest.Config) -> None:
    # Also when the harness plugin is not loaded (-p no:fixtures.plugin).
    config.addinivalue_line("markers", "slow: a harness test that starts real bench processes (minutes)")
    # The child runs these tests start lock their simulated rigs in a folder of this session's own: the
    # harness's tests neither wait for nor block a scenario run on the same machine (tests/lab/test_rigs.py
    # gives each of its children a lock folder explicitly).
    if "TLS_HIL_LOCK_DIR" not in os.environ:
        folder = tempfile.mkdtemp(prefix="tls-hil-test-locks-")
        os.environ["TLS_HIL_LOCK_DIR"] = folder
        config.add_cleanup(lambda: shutil.rmtree(folder, ignore_errors=True))


#: the firmware variant whose default-suite run two tests share: the variant matrix judges its cells and the
#: report test opens its report.html in a browser (one run of about four minutes instead of two)
SHARED_VARIANT = "torn-write"


@pytest.fixture(scope="session")
def torn_write_suite(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """The default suite (`pytest`, every scenario but the soak) on the simulated bench with the torn-write firmware.

    Run on three simulated rigs at once (``-n 3``, one xdist worker each), as a lab with several rigs runs
    it: the suite takes a third of the time, and CI runs the several-rigs path on every commit.  Returns the
    run root and the outcome of every test by its name as JUnit gives it (the rig is its last parameter,
    ``x[tls1.3-sim#2]``; ``scenario_suite.without_rig`` takes it off).
    """
    sys.path.insert(0, str(Path(__file__).resolve().parent / "scenario_runs"))
    from scenario_suite import run_suite, without_rig

    tmp = tmp_path_factory.mktemp("suite-torn-write")
    sim = str(Path(__file__).resolve().parents[1] / "devices" / "sim.yaml")
    results, proc = run_suite(tmp, "--sim-variant", SHARED_VARIANT, "-n", str(SHARED_RIGS),
                              *[a for _ in range(SHARED_RIGS) for a in ("--device", sim)], timeout=1500)
    assert results, proc.stdout[-3000:]
    assert all(without_rig(name) != name for name in results), sorted(results)
    return tmp / "runs", results


#: rigs the shared suite runs on
SHARED_RIGS = 3
