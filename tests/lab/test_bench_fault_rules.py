"""The rules that decide whether a failed scenario is the device's verdict or the bench's error, on stand-ins.

The end-to-end proofs are in test_bench_faults.py (child runs with faults
injected); these pin the decisions themselves, including the ones a child
run cannot stage on demand: a rail sample that timed out must never void a
verdict, a supply nobody can reach is never "safe".
"""

from __future__ import annotations

from dataclasses import dataclass, field

from fixtures.plugin import _bench_fault
from harness import clock
from harness.bench import Bench
from harness.devicefile import load
from harness.engine import ScenarioFailure
from harness.errors import BenchStartError, ConsoleLost, SupplyUnreachable
from harness.scenario import Step
from harness.supply import SupplyChannel
from labkit import SIM


@dataclass
class StandInSupply:
    faults: list = field(default_factory=list)
    background_faults: list = field(default_factory=list)

    def faults_between(self, start: float, end: float) -> list:
        return [f for f in self.faults if start <= f[0] <= end]


@dataclass
class StandInBench:
    supply: StandInSupply
    now: object = None

    def probe(self):
        return self.now


def _verdict_failure() -> ScenarioFailure:
    return ScenarioFailure(Step("expect_server", {}, "s.yaml", 9), "FAIL [stale-session]: an older session")


def test_a_sound_bench_leaves_the_verdict_standing() -> None:
    assert _bench_fault(StandInBench(StandInSupply()), 0.0, _verdict_failure()) is None


def test_a_rail_sample_that_timed_out_never_voids_a_verdict() -> None:
    start = clock.now() - 10      # the scenario began 10 s ago
    supply = StandInSupply(background_faults=[(start + 1, "supply-unreachable", "no answer to 'MEAS:CURR?'")])
    assert _bench_fault(StandInBench(supply), start, _verdict_failure()) is None


def test_a_foreground_supply_fault_in_the_scenario_is_the_bench() -> None:
    start = clock.now() - 10      # the scenario began 10 s ago
    supply = StandInSupply(faults=[(start + 1, "supply-unreachable", "write 'OUTP OFF' failed")])
    found = _bench_fault(StandInBench(supply), start, _verdict_failure())
    assert isinstance(found, SupplyUnreachable) and "write 'OUTP OFF' failed" in str(found)
    assert "s.yaml:9: expect_server" in str(found)          # where the scenario stopped, kept


def test_a_fault_before_the_scenario_does_not_count() -> None:
    start = clock.now() - 10      # the scenario began 10 s ago
    supply = StandInSupply(faults=[(start - 5, "supply-unreachable", "last scenario's")])
    assert _bench_fault(StandInBench(supply), start, _verdict_failure()) is None


def test_a_dead_bench_process_comes_first() -> None:
    start = clock.now() - 10      # the scenario began 10 s ago
    supply = StandInSupply(faults=[(start + 1, "supply-unreachable", "write failed")])
    dead = BenchStartError("the bench process exited with code 3")
    assert _bench_fault(StandInBench(supply, dead), start, ConsoleLost("gone")) is dead


def test_background_faults_are_kept_apart_by_the_supply() -> None:
    psu = SupplyChannel("TCPIP::127.0.0.1::9::SOCKET")
    psu._fault(SupplyUnreachable("foreground"))
    with psu._background():
        psu._fault(SupplyUnreachable("sampler"))
    assert [f[2] for f in psu.faults] == ["foreground"]
    assert [f[2] for f in psu.background_faults] == ["sampler"]


def test_a_supply_nobody_can_reach_is_never_confirmed_safe(tmp_path) -> None:
    """A USB supply gone from the bus: make_safe must say unsafe, every time it is asked."""
    bench = Bench(load(SIM), {}, tmp_path, watchdog=False)
    bench.supply = SupplyChannel("ASRL/dev/tls-hil-no-such-port::INSTR", log_path=tmp_path / "supply.jsonl")
    assert bench.make_safe() is False
    assert bench.health.unsafe and "safe state not confirmed" in bench.health.unsafe
    assert bench.make_safe() is False, "a second ask must not turn an unreachable supply safe"
