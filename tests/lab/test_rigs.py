"""Several rigs in one run (pytest-xdist, one worker per rig) and the lock that keeps two runs off one rig.

Every test here runs a child pytest the way a lab does, on simulated
benches started by the child itself: real xdist workers, real benches,
real flock locks in a folder of the test's own.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from harness.riglock import RigLock, read_holder
from harness.rigs import expand, plan
from labkit import ROOT, SIM, command, read_run, run

pytestmark = pytest.mark.slow

THREE = ("a_first", "b_second", "c_third")


def _variant_file(tmp: Path, variant: str) -> Path:
    """sim.yaml whose firmware is always ``variant``, under its own name (a rig with another build)."""
    text = SIM.read_text().replace('"--variant", "{sim_variant}"', f'"--variant", "{variant}"', 1)
    text = re.sub(r"(?m)^name: sim$", f"name: sim-{variant}", text, count=1)
    assert f'"--variant", "{variant}"' in text and f"name: sim-{variant}" in text
    path = tmp / f"sim-{variant}.yaml"
    path.write_text(text)
    return path


def test_scenarios_spread_over_two_rigs_each_id_and_record_names_its_rig(tmp_path: Path) -> None:
    child = run(tmp_path, [SIM, SIM], "-n", "2", scenarios=THREE)
    assert child.returncode == 0, child.stdout[-3000:]
    assert len(child.cases) == 3 and all(c.outcome == "passed" for c in child.cases.values()), child.cases
    for name, case in child.cases.items():
        rig = case.properties["rig"]
        assert rig in ("sim#1", "sim#2")
        assert name.endswith(f"[{rig}]"), name                        # the rig in the test id
        result = json.loads((child.run_root / rig.replace("#", "_") / name.split("[")[0] / "result.json")
                            .read_text())
        assert result["rig"] == rig and result["nodeid"].endswith(f"[{rig}]")
    props = child.suite_properties
    assert props["rigs"] == "sim#1,sim#2"
    for rig in ("sim#1", "sim#2"):
        assert props[f"{rig}.supply_idn"].startswith("Keysight"), props
        assert props[f"{rig}.device_file"] == str(SIM)
    # Two benches: each rig's folder holds its own bench log, naming a supply port of its own.
    ports = {re.search(r"^supply (\S+)$", (child.run_root / r / "bench.log").read_text().replace("[stdout] ", ""),
                       re.M).group(1) for r in ("sim_1", "sim_2")}
    assert len(ports) == 2, ports
    out = child.stdout
    assert "rig sim#1: " in out and "rig sim#2: " in out and "all rigs together:" in out
    assert "scenarios: 3 run, 3 passed" in out
    history = [json.loads(line) for line in (tmp_path / "history.jsonl").read_text().splitlines()]
    assert sorted(h["rig"] for h in history) == ["sim#1", "sim#2"]
    assert sum(h["scenarios"] for h in history) == 3


def test_every_scenario_on_every_rig_and_only_the_broken_build_fails(tmp_path: Path) -> None:
    """--on-rigs all: a firmware comparison.  The build that keeps its session in RAM fails on its own rig."""
    broken = _variant_file(tmp_path, "ram-only")
    child = run(tmp_path, [SIM, broken], "-n", "2", "--on-rigs", "all", scenarios=("a_first",))
    assert child.returncode == 1, child.stdout[-3000:]
    assert set(child.cases) == {"a_first[sim]", "a_first[sim-ram-only]"}, child.cases
    good, bad = child.cases["a_first[sim]"], child.cases["a_first[sim-ram-only]"]
    assert good.outcome == "passed" and good.properties["rig"] == "sim"
    assert bad.outcome == "failed" and bad.properties["rig"] == "sim-ram-only"
    assert "FAIL [nothing-offered]" in bad.message, bad.message
    # Each copy ran on its own rig's bench: the firmware banner in each rig's console says which build.
    assert "variant=ram-only" in (child.run_root / "sim-ram-only" / "console.capture").read_text(errors="replace")
    assert "variant=ram-only" not in (child.run_root / "sim" / "console.capture").read_text(errors="replace")
    assert "rig sim: 1 scenarios, 1 passed" in child.stdout
    assert "rig sim-ram-only: 1 scenarios, 0 passed, 1 failed" in child.stdout


@pytest.mark.parametrize("args, expected", [
    (["--device", str(SIM), "--device", str(SIM)], "2 rigs given (sim#1, sim#2): run them with pytest-xdist, "
                                                     "one worker per rig: -n 2"),
    (["-n", "3", "--device", str(SIM), "--device", str(SIM)], "2 rigs given (sim#1, sim#2) but -n 3"),
    (["--device", "devices/esp32_rigol_dp832.yaml", "--device", "devices/esp32_rigol_dp832.yaml", "-n", "2"],
     "esp32_rigol_dp832.yaml: given 2 times with --device, but it describes one fixed bench"),
    (["--device", "devices/no-such-*.yaml"], "--device: 'devices/no-such-*.yaml': no device file matches"),
])
def test_rig_usage_errors_say_what_to_do(tmp_path: Path, args: list[str], expected: str) -> None:
    proc = subprocess.run([os.sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--collect-only",
                           *args, "--lock-dir", str(tmp_path)], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 4, proc.stdout + proc.stderr
    assert expected in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr


HOLD = """schema: 1
name: {name}
description: holds the rig for a while (the first of two runs on one device file)
timeout: 120
steps:
  - power_on:
  - connect: {{version: tls1.2}}
  - wait: 90
"""


def _holder_pid(lock_dir: Path, device: Path) -> int | None:
    key = f"device:{device.resolve()}#1"
    holder = read_holder(RigLock("probe", [key], lock_dir).path_of(key))
    return holder.pid if holder is not None else None


def test_second_run_is_refused_naming_the_holder_and_a_waiting_run_gets_the_rig_after_sigkill(
        tmp_path: Path) -> None:
    first_dir, second_dir, third_dir = (tmp_path / n for n in ("first", "second", "third"))
    for d in (first_dir, second_dir, third_dir):
        d.mkdir()
    lock_dir = tmp_path / "locks"
    common = ["--lock-dir", str(lock_dir)]
    first_cmd = command(first_dir, SIM, *common, scenarios=("hold",), scenario=HOLD)
    first = subprocess.Popen(first_cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             start_new_session=True)
    third = None
    try:
        deadline = time.monotonic() + 60
        while _holder_pid(lock_dir, SIM) != first.pid:
            assert first.poll() is None, first.communicate()[0][-3000:]
            assert time.monotonic() < deadline, "the first run never locked the rig"
            time.sleep(0.2)
        while not (first_dir / "runs" / "hold").exists():     # it is driving the bench now
            assert time.monotonic() < deadline and first.poll() is None
            time.sleep(0.2)

        # The second run: refused at once, naming the holder; it never started a bench of its own.
        started = time.monotonic()
        second = run(second_dir, SIM, *common, scenarios=("a_first", "b_second"))
        assert time.monotonic() - started < 60
        assert second.returncode == 1, second.stdout[-3000:]
        for case in second.cases.values():
            assert case.outcome == "error", case
            assert "BENCH ERROR [rig-busy]" in case.message and f"pid {first.pid}" in case.message, case.message
        assert f"RIG BUSY: rig sim is in use (device:{SIM}#1) by pid {first.pid}" in second.stdout
        assert not (second.run_root / "bench.log").exists() and not (second.run_root / "supply.jsonl").exists()
        assert not list(second.run_root.glob("*/result.json")) if second.run_root.exists() else True

        # The third run waits for the rig; the first is killed; the third gets the rig and passes.
        third_log = open(tmp_path / "third.out", "w")
        third_cmd = command(third_dir, SIM, *common, "--rig-wait", "120", scenarios=("a_first",))
        third = subprocess.Popen(third_cmd, cwd=ROOT, stdout=third_log, stderr=subprocess.STDOUT, text=True,
                                 start_new_session=True)
        while "waiting for" not in (tmp_path / "third.out").read_text():
            assert third.poll() is None, (tmp_path / "third.out").read_text()[-3000:]
            assert time.monotonic() < deadline + 60, "the third run never said it waits"
            time.sleep(0.2)
        assert f"held by pid {first.pid}" in (tmp_path / "third.out").read_text()
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)
        third.wait(timeout=240)
        third_log.close()
        result = read_run(third_dir, "", (tmp_path / "third.out").read_text(), third.returncode, third_cmd)
        assert result.returncode == 0, result.stdout[-3000:]
        assert [c.outcome for c in result.cases.values()] == ["passed"]
        assert _holder_pid(lock_dir, SIM) == third.pid       # the last holder it wrote; the lock itself is free
        with RigLock("after", [f"device:{SIM}#1"], lock_dir):
            pass
    finally:
        for proc in (first, third):
            if proc is not None and proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=30)
        if first.stdout is not None:
            first.stdout.close()


def test_rig_names_for_copies_globs_and_shared_names(tmp_path: Path) -> None:
    other = tmp_path / "rack2.yaml"          # another file whose device is also called "sim"
    other.write_text(SIM.read_text())
    assert [r.name for r in plan(expand([str(SIM), str(SIM), str(other)]))] == ["sim#1", "sim#2", "rack2"]
    assert [r.name for r in plan(expand([str(SIM)]))] == ["sim"]
    same_stem = tmp_path / "sim.yaml"
    same_stem.write_text(SIM.read_text())
    with pytest.raises(Exception, match="several rigs would be reported as sim"):
        plan(expand([str(SIM), str(same_stem)]))
    globbed = expand(["devices/sim-app-*.yaml"], cwd=ROOT)
    assert [p.name for p in globbed] == sorted(p.name for p in (ROOT / "devices").glob("sim-app-*.yaml"))
    assert len(globbed) >= 3


def test_a_busy_rig_stops_a_run_of_several_before_any_worker_starts(tmp_path: Path) -> None:
    """Otherwise its worker would refuse its share of the scenarios while the other rigs idle."""
    with RigLock("holder", [f"device:{SIM}#2"], tmp_path / "locks"):
        proc = subprocess.run([os.sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", "2",
                               "--device", str(SIM), "--device", str(SIM), "--lock-dir", str(tmp_path / "locks"),
                               "--run-dir", str(tmp_path / "runs"),
                               str(ROOT / "scenarios" / "first_boot_full_handshake.yaml")],
                              cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 4, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert f"rig sim#2 is in use (device:{SIM}#2) by pid {os.getpid()}" in proc.stderr
    assert "leave the rig out of --device, or wait: --rig-wait SECONDS" in proc.stderr
    assert not (tmp_path / "runs").exists()            # nothing started, nothing written


def test_two_rigs_that_drive_one_supply_are_refused(tmp_path: Path) -> None:
    first = ROOT / "devices" / "esp32_rigol_dp832.yaml"
    second = tmp_path / "same-supply.yaml"
    second.write_text(first.read_text().replace("name: esp32-devkitc-dp832", "name: other-board")
                      .replace("usb-FTDI_FT232R_USB_UART_A50285BI", "usb-FTDI_OTHER"))
    with pytest.raises(Exception, match=r"rigs esp32-devkitc-dp832 and other-board both drive "
                                        r"supply:TCPIP::192.168.10.21::5555::SOCKET"):
        plan(expand([str(first), str(second)]))
