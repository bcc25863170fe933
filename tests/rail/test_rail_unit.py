"""The rail sampler without a bench: schema, failures skipped, pauses, and the supply's priority lock.

Fast: a fake supply for the sampler's own logic, and the real driver on a
pyvisa-sim instrument (tests/supply/instruments) for ``read_rail``: that
it stays out of the supply log and the power events, and that it lets go
between its two queries when a foreground operation starts waiting.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path
from typing import Callable

import pytest

from harness import clock
from harness.errors import BenchTimeout, InstrumentError
from harness.rail import RailSampler, cut_pending, read_file
from harness.supply import PriorityLock, RailReading, Supply, SupplyBusy

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "supply"))
from supplykit import sim_instrument  # noqa: E402


class FakeSupply:
    """Answers from a script: a number pair, or an exception to raise, per call."""

    name = "fake"

    def __init__(self, script: Callable[[int], object]):
        self.script = script
        self.calls = 0
        self.notes: list[str] = []

    def read_rail(self, proceed: Callable[[], bool] | None = None) -> RailReading:
        n = self.calls
        self.calls += 1
        start = clock.now()
        answer = self.script(n)
        if isinstance(answer, BaseException):
            raise answer
        volts, amps = answer  # type: ignore[misc]
        end = clock.now()
        return RailReading(start=start, end=end, volts=volts, amps=amps, busy=end - start)

    def note(self, kind: str, **fields: object) -> None:
        self.notes.append(kind)


def test_file_schema_and_between(tmp_path: Path) -> None:
    path = tmp_path / "run" / "rail.jsonl"
    supply = FakeSupply(lambda n: (3.3 - n * 0.01, 0.02 + n * 0.001))
    with RailSampler(supply, rate=200, path=path) as rail:
        time.sleep(0.3)
    lines = path.read_text().splitlines()
    assert len(lines) == rail.counts.taken >= 10
    for raw in lines:
        rec = json.loads(raw)
        assert list(rec) == ["mono", "volts", "amps"]          # exactly these keys, in this order
        assert all(isinstance(v, float) for v in rec.values())
    monos = [json.loads(raw)["mono"] for raw in lines]
    assert monos == sorted(monos)
    assert [s.mono for s in read_file(path)] == monos
    mid = rail.samples[len(lines) // 2].mono
    part = rail.between(monos[0], mid)
    assert part == rail.samples[:len(lines) // 2 + 1]
    assert rail.between(monos[-1] + 1, monos[-1] + 2) == []
    assert supply.notes == ["rail-sampling-start", "rail-sampling-stop"]


def test_failing_sample_is_skipped_and_counted(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    failures = {1: BenchTimeout("no answer to 'MEAS:VOLT? (@1)' within 2.0 s"),
                2: InstrumentError("fake", "MEAS:CURR? (@1)", "-113,Undefined header"),
                3: RuntimeError("pyvisa blew up")}
    supply = FakeSupply(lambda n: failures.get(n, (3.3, 0.02)))
    with RailSampler(supply, rate=100, path=tmp_path / "rail.jsonl") as rail:
        deadline = time.monotonic() + 10
        while rail.counts.taken < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
    assert rail.counts.failed == 3 and rail.counts.taken >= 3
    assert len(read_file(tmp_path / "rail.jsonl")) == rail.counts.taken
    assert sum("sample failed" in r.message and r.levelname == "WARNING" for r in caplog.records) == 1


def test_busy_supply_is_retried_then_counted(tmp_path: Path) -> None:
    supply = FakeSupply(lambda n: SupplyBusy("fake: in use") if n < 1000 else (3.3, 0.0))
    rail = RailSampler(supply, rate=50)
    assert rail.sample_once(deadline=clock.now() + 0.02) is None
    assert rail.counts.busy == 1 and supply.calls > 2      # retried within its tick
    yielded = FakeSupply(lambda n: SupplyBusy("fake: wanted", yielded=True))
    rail = RailSampler(yielded, rate=50)
    assert rail.sample_once() is None and rail.counts.yielded == 1


def test_paused_while_pause_when_is_true(tmp_path: Path) -> None:
    pause = threading.Event()
    pause.set()
    supply = FakeSupply(lambda n: (3.3, 0.02))
    with RailSampler(supply, rate=100, pause_when=pause.is_set) as rail:
        time.sleep(0.15)
        assert supply.calls == 0 and rail.counts.paused >= 5
        pause.clear()
        time.sleep(0.15)
    assert rail.counts.taken >= 5


def test_broken_pause_predicate_pauses(tmp_path: Path) -> None:
    supply = FakeSupply(lambda n: (3.3, 0.02))
    with RailSampler(supply, rate=100, pause_when=lambda: 1 / 0) as rail:
        time.sleep(0.1)
    assert supply.calls == 0 and rail.counts.paused > 0


def test_rate_zero_is_off(tmp_path: Path) -> None:
    supply = FakeSupply(lambda n: (3.3, 0.02))
    with RailSampler(supply, rate=0, path=tmp_path / "rail.jsonl") as rail:
        time.sleep(0.05)
        assert not rail.running
    assert supply.calls == 0 and not (tmp_path / "rail.jsonl").exists()
    with pytest.raises(ValueError):
        RailSampler(supply, rate=-1)


def test_share_of_a_slow_supply_is_capped() -> None:
    """A supply taking 20 ms a sample, asked for 50 Hz, is sampled at most 25 % of the time (rule 3)."""
    def slow(n: int) -> tuple[float, float]:
        time.sleep(0.02)
        return 3.3, 0.02

    supply = FakeSupply(slow)
    with RailSampler(supply, rate=50) as rail:
        time.sleep(1.0)
    assert 6 <= rail.counts.taken <= 14      # ~1 s / (20 ms / 0.25) = 12.5; 50 without the cap


def test_cut_pending_follows_the_armed_cut() -> None:
    class Trig:
        fired = False

    class Armed:
        trigger = Trig()

    class Dev:
        armed: object = None

    dev = Dev()
    assert not cut_pending(dev) and not cut_pending(object())
    dev.armed = Armed()
    assert cut_pending(dev)
    Armed.trigger.fired = True
    assert not cut_pending(dev)


# -- the driver's side, on a pyvisa-sim instrument ------------------------------------------

@pytest.fixture
def sim_supply(tmp_path: Path):
    resource, library = sim_instrument("keysight-e36300")
    supply = Supply(resource, "keysight-e36300", visa_library=library, log_path=tmp_path / "supply.jsonl",
                    watchdog=False)
    with supply:
        supply.configure(voltage=3.3, current_limit=0.5)
        yield supply


def test_read_rail_keeps_out_of_log_and_events(sim_supply: Supply, tmp_path: Path) -> None:
    events = len(sim_supply.events)
    before = (tmp_path / "supply.jsonl").read_text()
    reading = sim_supply.read_rail()
    assert reading.start <= reading.end and reading.volts >= 0 and reading.amps >= 0
    assert len(sim_supply.events) == events
    assert (tmp_path / "supply.jsonl").read_text() == before   # no MEAS traffic logged
    sim_supply.measure_voltage()                                # the foreground still is
    assert "MEAS:VOLT?" in (tmp_path / "supply.jsonl").read_text()


def test_read_rail_stands_aside_while_in_use(sim_supply: Supply) -> None:
    held = threading.Event()
    release = threading.Event()

    def hold() -> None:
        with sim_supply._lock:
            held.set()
            release.wait(5)

    t = threading.Thread(target=hold)
    t.start()
    held.wait(5)
    try:
        with pytest.raises(SupplyBusy) as info:
            sim_supply.read_rail()
        assert not info.value.yielded
    finally:
        release.set()
        t.join(5)


def test_read_rail_lets_go_after_one_query_for_a_waiting_edge(sim_supply: Supply,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """An edge that starts waiting during the volts query goes before the amps query."""
    real = sim_supply._measure
    asked: list[str] = []
    order: list[str] = []
    edge = threading.Thread(target=lambda: (sim_supply.on(settle=False), order.append("edge")))

    def measure(key: str) -> float:
        asked.append(key)
        if key == "measure_voltage":
            edge.start()
            deadline = time.monotonic() + 5
            while not sim_supply._lock.wanted and time.monotonic() < deadline:
                time.sleep(0.001)
            assert sim_supply._lock.wanted
        return real(key)

    monkeypatch.setattr(sim_supply, "_measure", measure)
    with pytest.raises(SupplyBusy) as info:
        sim_supply.read_rail()
    edge.join(5)
    assert info.value.yielded and asked == ["measure_voltage"] and order == ["edge"]


def test_read_rail_lets_go_when_told_to_stop(sim_supply: Supply) -> None:
    with pytest.raises(SupplyBusy) as info:
        sim_supply.read_rail(proceed=lambda: False)
    assert info.value.yielded


def test_priority_lock() -> None:
    lock = PriorityLock()
    assert lock.acquire_idle()
    assert lock.acquire()            # re-entrant for its holder, as the supply's RLock was
    lock.release()
    lock.release()
    got = threading.Event()
    go = threading.Event()

    def foreground() -> None:
        with lock:
            got.set()
            go.wait(5)

    with lock:
        t = threading.Thread(target=foreground)
        t.start()
        deadline = time.monotonic() + 5
        while not lock.wanted and time.monotonic() < deadline:
            time.sleep(0.001)
        assert lock.wanted
    got.wait(5)
    assert not lock.wanted and not lock.acquire_idle()   # held by the foreground now
    go.set()
    t.join(5)
    assert lock.acquire_idle()
    lock.release()


def test_wait_idle_returns_once_the_sample_in_flight_let_go(sim_supply: Supply) -> None:
    """What an arming thread gets from wait_idle: the sampler's query ends, then the way is clear."""
    lock = sim_supply._lock
    holding = threading.Event()
    released: list[float] = []

    def sampler_mid_query() -> None:
        assert lock.acquire_idle()
        holding.set()
        deadline = time.monotonic() + 5
        while not lock.wanted and time.monotonic() < deadline:
            time.sleep(0.001)
        time.sleep(0.02)                    # the rest of the query in flight
        released.append(time.monotonic())
        lock.release()

    t = threading.Thread(target=sampler_mid_query)
    t.start()
    assert holding.wait(5)
    sim_supply.wait_idle()
    returned = time.monotonic()
    t.join(5)
    assert released and returned >= released[0] and lock.acquire_idle()
    lock.release()
