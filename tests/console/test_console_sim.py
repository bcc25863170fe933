"""The console on the simulated bench: a USB-CDC-like port that exists only while powered."""

from __future__ import annotations

import pytest

from consolekit import wait_until
from harness import clock

sim = pytest.importorskip("devices.sim")
SimBench = getattr(sim, "SimBench", None)
if SimBench is None:  # pragma: no cover - the bench is written in parallel
    pytest.skip("devices.sim has no SimBench yet", allow_module_level=True)

from harness.supply import Supply  # noqa: E402


@pytest.mark.timeout(60)
def test_console_across_power_cycles_on_sim_bench_vanish_mode(tmp_path, console_factory):
    with SimBench(workdir=tmp_path / "bench", uart_mode="vanish", tau=0.02) as bench, \
            Supply(bench.supply_resource, "keysight-e36300", watchdog=False) as supply:
        # Created while the device is unpowered: its port does not exist yet.
        con = console_factory(bench.uart_path)
        assert not con.present and con.gaps[0].reason.startswith("absent at open")
        con.forbid(r"Traceback|panic")
        supply.configure(voltage=3.3, current_limit=0.5)
        supply.on()
        assert con.expect(r"reset cause: (\S+)", timeout=15).match.group(1) == "power-on"
        con.expect(r"^ready$", timeout=15)
        con.expect(r"sim> $", timeout=5)
        con.send("session")
        assert con.expect(r"^session: ", timeout=5).line.text == "session: none"

        for cycle in range(3):
            mark = con.mark()
            before_off = clock.now()
            supply.off(discharge_below=0.3)
            wait_until(lambda: len(con.gaps) == 2 + cycle, what="the port to vanish")
            on = supply.on()
            boot = con.expect(r"simfw \d", timeout=15)
            cause = con.expect(r"reset cause: (\S+)", timeout=15, since=mark)
            assert cause.match.group(1) == "power-on"
            con.expect(r"^ready$", timeout=15)
            gap = con.gaps[-1]
            assert before_off <= gap.start and gap.end is not None and gap.end <= boot.line.mono
            assert on.mono <= boot.line.mono

        # Fault injection: cut the power the moment the firmware says it is ready.
        con.expect(r"sim> $", timeout=5)
        trig = con.trigger(r"^ready$", lambda: supply.off(discharge_below=None))
        supply.off(discharge_below=0.3)
        supply.on(settle=False)  # the trigger thread will use the supply next: no overlap
        firing = trig.wait(15)
        assert firing.line.text == "ready" and firing.error is None
        wait_until(lambda: not con.present, what="the port to vanish after the cut")
        offs = [e for e in supply.events if e.kind == "off"]
        assert firing.line.mono <= offs[-1].mono  # the cut came after the line, from the trigger
        con.check()
