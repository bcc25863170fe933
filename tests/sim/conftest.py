"""Fixtures for the simulated-bench tests (helpers live in simkit.py)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Iterator

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # pytest.ini's pythonpath adds it; do not depend on that
    sys.path.insert(0, str(ROOT))

from devices.sim import SimBench  # noqa: E402
from simkit import TAU, Console, EchoServer, Pki, make_pki, open_psu  # noqa: E402


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def server(pki: Pki) -> Iterator[EchoServer]:
    srv = EchoServer(pki.server_pem)
    yield srv
    srv.close()


@pytest.fixture
def make_bench(tmp_path: Path, pki: Pki):
    """Factory: start a bench with test-friendly defaults; all stopped at teardown."""
    benches: list[SimBench] = []

    def make(**kw) -> SimBench:
        kw.setdefault("tau", TAU)
        settings = {"ca": str(pki.ca_pem), "page_ms": "15"}
        settings.update(kw.pop("settings", {}))
        workdir = kw.pop("workdir", tmp_path / f"bench{len(benches)}")
        bench = SimBench(workdir=workdir, settings=settings, **kw).start()
        benches.append(bench)
        return bench

    yield make
    for bench in benches:
        bench.stop()


@pytest.fixture
def rig(make_bench):
    """A default bench with a pyvisa session and a console, powered off."""
    bench = make_bench()
    rm, psu = open_psu(bench)
    con = Console(bench.uart_path)
    yield bench, psu, con
    con.close()
    psu.close()
    rm.close()
