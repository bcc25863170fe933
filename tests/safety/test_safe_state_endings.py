"""Safe state, measured from outside, for each way a pytest run can end (short form).

The benchmark ``bench/safe_state.py`` repeats every ending 20 times and
prints the table; this runs each ending once with the very same code, so a
change that leaves the bench powered after some ending fails the harness's
own test run.  For each ending: the supply must report the device file's
safe state (``OUTP? (@1)`` = 0, asked over a connection of our own) within
the bound, pytest must have ended the way the ending ends it (its exit
status), every process that was below the pytest process (the watchdog
among them) must be gone, and so must the simulated device's process (the
rail really dropped).

One simulated bench per firmware variant for the whole module, started
here like a lab's bench that exists without pytest (see the benchmark's
docstring for why).  About a minute on two cores.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Iterator

import pytest

ROOT = Path(__file__).resolve().parents[2]
BOUND_S = 10.0

pytestmark = pytest.mark.slow   # starts real bench processes and child pytest runs


def _load_bench_module() -> ModuleType:
    """bench/ is no package: load the benchmark by path, under a name no test module uses."""
    name = "bench_safe_state"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, ROOT / "bench" / "safe_state.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module      # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


safe_state = _load_bench_module()


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator["safe_state.Lab"]:
    with safe_state.Lab(workdir=tmp_path_factory.mktemp("safe-state")) as lab:
        yield lab


@pytest.mark.timeout(150)
@pytest.mark.parametrize("ending", safe_state.ENDINGS, ids=lambda e: e.key)
def test_ending_leaves_the_bench_safe(lab: "safe_state.Lab", ending: "safe_state.Ending") -> None:
    result = safe_state.run_once(lab, ending, bound=BOUND_S)
    took = "-" if result.time_to_safe is None else f"{result.time_to_safe:.3f} s"
    print(f"{ending.label}: exit {result.rc}, safe in {took} by {result.made_safe_by} "
          f"(t0: {result.t0_source}){'; ' + '; '.join(result.notes) if result.notes else ''}")
    assert result.as_intended, f"pytest exited {result.rc}, not as {ending.label} ends it " \
                               f"(expected {ending.exit_codes}); see {lab.workdir}/reps\n" + _tail(lab, ending)
    assert result.powered_at_end, f"the device was not powered when the run ended: {result.notes}"
    assert result.safe, f"supply not in its safe state within {BOUND_S} s after {ending.label}: " \
                        f"{result.time_to_safe} s; {result.notes}"
    assert not result.leftovers, f"left behind after {ending.label}: {result.leftovers}"
    assert not result.device_alive, f"the device process still ran after {ending.label}"


def _tail(lab: "safe_state.Lab", ending: "safe_state.Ending", lines: int = 80) -> str:
    """The end of that run's pytest output (with the stacks a hung run dumps): kept in the CI log, not a tmp dir."""
    logs = sorted(Path(lab.workdir).glob(f"reps/*-{ending.key}/pytest.log"))
    if not logs:
        return ""
    text = logs[-1].read_text(errors="replace").splitlines()
    return "pytest output (tail):\n" + "\n".join(text[-lines:])
