"""harness.labgrid against a real labgrid 26: coordinator, exporters and ser2net on loopback (see conftest.py)."""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest

from harness.errors import BenchStartError, ConsoleLost
from harness.labgrid import CoordinatorClient, PlaceSession, release_if_ours
from lgkit import Lab, free_port, read_until, tail

ROOT = Path(__file__).resolve().parents[2]


def holder(lab: Lab, place: str) -> str | None:
    client = CoordinatorClient(lab.address)
    try:
        return client.place(place).acquired
    finally:
        client.close()


def wait_released(lab: Lab, place: str, timeout: float) -> float:
    start = time.monotonic()
    while holder(lab, place) is not None:
        assert time.monotonic() - start < timeout, f"{place} still acquired after {timeout:g} s"
        time.sleep(0.1)
    return time.monotonic() - start


def test_acquire_and_release(lab: Lab) -> None:
    session = PlaceSession("rig1", lab.address)
    session.acquire()
    try:
        assert holder(lab, "rig1") == session.acquired_as
        assert session.guard is not None and session.guard.poll() is None
        who = lab.client("who").stdout
        assert "rig1" in who
    finally:
        guard = session.guard
        session.release()
    assert holder(lab, "rig1") is None
    assert guard is not None and guard.poll() is not None, "release stops the guard"
    session.release()  # idempotent


def test_second_acquirer_is_told_who_holds_it(lab: Lab, monkeypatch: pytest.MonkeyPatch) -> None:
    with PlaceSession("rig1", lab.address) as first:
        monkeypatch.setenv("LG_USERNAME", "alice")
        second = PlaceSession("rig1", lab.address)
        with pytest.raises(BenchStartError) as raised:
            second.acquire()
        second.release()
        assert re.match(rf"place 'rig1' is acquired by {re.escape(first.acquired_as)} since \d{{4}}-\d\d-\d\d ",
                        str(raised.value)), str(raised.value)
        assert holder(lab, "rig1") == first.acquired_as


def test_same_user_second_acquirer_gets_how_to_free_it(lab: Lab) -> None:
    with PlaceSession("rig1", lab.address):
        with pytest.raises(BenchStartError, match=r"same host and user as this run.*labgrid-client -x .* release"):
            PlaceSession("rig1", lab.address).acquire()


def test_waiting_acquire_succeeds_after_release(lab: Lab, monkeypatch: pytest.MonkeyPatch) -> None:
    first = PlaceSession("rig1", lab.address)
    first.acquire()
    releaser = threading.Timer(1.0, first.release)
    monkeypatch.setenv("LG_USERNAME", "waiter")
    start = time.monotonic()
    releaser.start()
    try:
        with PlaceSession("rig1", lab.address, wait=15.0) as second:
            waited = time.monotonic() - start
            assert second.acquired_as.endswith("/waiter")
            assert holder(lab, "rig1") == second.acquired_as
    finally:
        releaser.join()
        first.release()
    assert 0.9 <= waited < 10, waited


def test_unknown_place_and_unreachable_coordinator_are_bench_errors(lab: Lab) -> None:
    with pytest.raises(BenchStartError, match=r"has no place 'nope' \(places: .*rig1"):
        PlaceSession("nope", lab.address).acquire()
    dead = f"127.0.0.1:{free_port()}"
    with pytest.raises(BenchStartError, match=rf"labgrid coordinator {dead} cannot be reached"):
        PlaceSession("rig1", dead).acquire()


CHILD = textwrap.dedent("""
    import sys, time
    from harness.labgrid import PlaceSession
    power = sys.argv[4:] == ["power"]
    session = PlaceSession(sys.argv[1], sys.argv[2], guard_log=sys.argv[3], power_off_on_exit=power)
    session.acquire()
    if power:
        session.power_on()
    print("acquired", session.guard.pid, flush=True)
    time.sleep(600)
""")


@contextmanager
def guarded_child(lab: Lab, place: str, guard_log: Path, *extra: str) -> Iterator[tuple[subprocess.Popen, int]]:
    """A run in a child process that holds ``place`` (``extra`` "power": with power_off_on_exit, powered on).

    Yields the child and its guard's pid; both are ended afterwards through the child's handle and that pid.
    """
    child = subprocess.Popen([sys.executable, "-c", CHILD, place, lab.address, str(guard_log), *extra], cwd=ROOT,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    guard_pid = None
    try:
        line = child.stdout.readline()
        assert line.startswith("acquired"), line + child.stdout.read() if child.poll() is not None else line
        guard_pid = int(line.split()[1])
        yield child, guard_pid
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(5)
        child.stdout.close()
        if guard_pid is not None and os.path.exists(f"/proc/{guard_pid}"):
            os.kill(guard_pid, signal.SIGKILL)  # the guard this test started through its child, by its pid


def wait_gone(pid: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while os.path.exists(f"/proc/{pid}") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not os.path.exists(f"/proc/{pid}"), f"process {pid} still there after {timeout:g} s"


def test_guard_releases_the_place_after_sigkill(lab: Lab, tmp_path: Path) -> None:
    guard_log = tmp_path / "guard.log"
    with guarded_child(lab, "rig1", guard_log) as (child, guard_pid):
        assert holder(lab, "rig1") is not None
        os.kill(child.pid, signal.SIGKILL)
        child.wait(10)
        took = wait_released(lab, "rig1", 15.0)
        assert took < 10
        wait_gone(guard_pid, 10)  # the guard exits once it has released
        assert "released place 'rig1'" in guard_log.read_text(), guard_log.read_text()


def test_guard_switches_power_off_then_releases_after_sigkill(lab: Lab, tmp_path: Path) -> None:
    guard_log = tmp_path / "guard.log"
    with guarded_child(lab, "rig1", guard_log, "power") as (child, guard_pid):
        assert lab.power.state[0] is True, "the child switched the power on"
        sent = len(lab.power.requests)
        os.kill(child.pid, signal.SIGKILL)
        child.wait(10)
        start = time.monotonic()
        while lab.power.state[0]:
            assert time.monotonic() - start < 10, "the guard never switched the power off\n" + guard_log.read_text()
            time.sleep(0.05)
        wait_released(lab, "rig1", 10.0)
        took = time.monotonic() - start
        wait_gone(guard_pid, 10)
        assert lab.power.requests[sent:] == ["/relay/0/0"], lab.power.requests[sent:]
        text = guard_log.read_text()
        assert re.search(r"switched power of place 'rig1' OFF through plain/plain/NetworkPowerPort/\S+; "
                         r"released place 'rig1'", text), text
        print(f"power off and release {took:.2f} s after SIGKILL")
        assert took < 5


def test_normal_release_stops_the_guard_without_switching(lab: Lab, tmp_path: Path) -> None:
    """release() at a normal end: the harness has decided the power itself, the guard must not touch it."""
    guard_log = tmp_path / "guard.log"
    try:
        with PlaceSession("rig1", lab.address, power_off_on_exit=True, guard_log=guard_log) as session:
            guard = session.guard
            assert guard is not None and "--power-off" in guard.args
            session.power_on()
            deadline = time.monotonic() + 10
            while "watching process" not in (guard_log.read_text() if guard_log.exists() else ""):
                assert time.monotonic() < deadline and guard.poll() is None, "the guard did not start"
                time.sleep(0.05)
            sent = list(lab.power.requests)
        assert guard.poll() == -signal.SIGTERM, "release stops the guard while it waits"
        assert holder(lab, "rig1") is None
        assert lab.power.requests == sent, "no power request after release"
        assert lab.power.state[0] is True
        assert "switched" not in guard_log.read_text()
    finally:
        lab.power.state[0] = False


def test_power_off_on_exit_needs_the_guard() -> None:
    with pytest.raises(ValueError, match="needs the release guard"):
        PlaceSession("rig1", "127.0.0.1:1", guard=False, power_off_on_exit=True)


def test_guard_leaves_a_newer_acquisition_alone(lab: Lab) -> None:
    with PlaceSession("rig1", lab.address) as session:
        sent = len(lab.power.requests)
        said = release_if_ours("rig1", lab.address, session.acquired_as, session.acquired_since - 60, power_off=True)
        assert "left alone" in said
        said = release_if_ours("rig1", lab.address, "otherhost/otheruser", session.acquired_since, power_off=True)
        assert "now acquired by" in said and "left alone" in said
        assert holder(lab, "rig1") == session.acquired_as
        assert len(lab.power.requests) == sent, "the power of someone else's acquisition is not touched"


def test_guard_leaves_power_alone_when_the_place_was_taken_over(lab: Lab, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """The run's place was kicked and acquired by someone else before the run died: its guard touches nothing."""
    guard_log = tmp_path / "guard.log"
    with guarded_child(lab, "rig1", guard_log, "power") as (child, guard_pid):
        lab.client("-p", "rig1", "release", "--kick")
        monkeypatch.setenv("LG_USERNAME", "intruder")
        with PlaceSession("rig1", lab.address, guard=False) as intruder:
            sent = len(lab.power.requests)
            os.kill(child.pid, signal.SIGKILL)
            child.wait(10)
            wait_gone(guard_pid, 15)
            text = guard_log.read_text()
            assert re.search(r"now acquired by \S+/intruder: left alone", text), text
            assert len(lab.power.requests) == sent and lab.power.state[0] is True
            assert holder(lab, "rig1") == intruder.acquired_as
    lab.power.state[0] = False


def test_guard_releases_even_when_the_power_cannot_be_switched(lab: Lab, tmp_path: Path) -> None:
    """A switch that does not answer: retried within --retry-for, an error logged, the place released anyway."""
    dead_switch = f"http://127.0.0.1:{free_port()}/relay/{{index}}/{{value}}"
    lab.start_exporter("deadpower", f"deadpower:\n  power:\n    cls: NetworkPowerPort\n    model: simplerest\n"
                                    f"    host: '{dead_switch}'\n    index: 0\n")
    lab.create_place("rig-deadpower", "deadpower/deadpower/*")
    no_such_pid = "999999999"  # above any pid_max: a run that has already ended
    # --retry-for 4: the first attempt (imports, a coordinator session) takes 1-2 s, so the switch is tried again
    for place in ("rig-deadpower", "rig-udev"):  # a switch that does not answer; no power port at all
        session = PlaceSession(place, lab.address, guard=False)
        session.acquire()
        try:
            done = subprocess.run([sys.executable, "-m", "harness.labgrid", "guard", "--pid", no_such_pid,
                                   "--place", place, "--coordinator", lab.address, "--holder", session.acquired_as,
                                   "--since", repr(session.acquired_since), "--power-off", "--retry-for", "4"],
                                  cwd=ROOT, capture_output=True, text=True, timeout=60)
            text = done.stdout + done.stderr
            assert done.returncode == 0, text
            assert holder(lab, place) is None, text
            if place == "rig-deadpower":
                assert "retrying" in text and "could NOT switch the power of place 'rig-deadpower' off" in text, text
                assert "its power may still be ON" in text and "released place 'rig-deadpower'" in text, text
            else:
                assert "has no NetworkPowerPort: could NOT switch its power off" in text, text
                assert "power NOT switched off (no NetworkPowerPort); released place 'rig-udev'" in text, text
        finally:
            session.acquired_as = None  # released by the guard
            session.release()


def test_release_never_raises_when_the_coordinator_is_gone(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    own = Lab(tmp_path)
    guard = None
    try:
        own.start_coordinator()
        own.client("-p", "lonely", "create")
        session = PlaceSession("lonely", own.address)
        session.acquire()
        guard = session.guard
        coordinator = own.procs.pop("coordinator")
        coordinator.kill()  # gone hard, as after a crash or a power cut of the lab server
        coordinator.wait(5)
        with caplog.at_level(logging.WARNING, logger="harness.labgrid"):
            session.release()
        assert "could not release labgrid place 'lonely'" in caplog.text
        assert "release guard" in caplog.text, "the guard stays to release it when this process exits"
        assert guard is not None and guard.poll() is None
        session.release()
    finally:
        own.stop()
        if guard is not None and guard.poll() is None:
            guard.terminate()
            guard.wait(5)


def test_console_url_reads_what_the_device_writes(lab: Lab) -> None:
    pty = lab.ptys["plain"]
    with PlaceSession("rig1", lab.address) as session:
        url = session.console_url(wait=5)
        assert re.fullmatch(r"rfc2217://127\.0\.0\.1:\d+\?ign_set_control", url), url
        got = read_until(url, lambda: pty.write(b"boot: tls session restored\r\n"), b"tls session restored")
        assert b"boot:" in got


def test_console_url_without_the_place_is_an_error(lab: Lab) -> None:
    session = PlaceSession("rig1", lab.address)
    with pytest.raises(BenchStartError, match="not acquired by this run"):
        session.console_url()


def test_console_url_follows_a_reenumerated_uart_to_its_new_port(lab: Lab) -> None:
    """USB re-enumeration after a power cut: the exporter stops ser2net, then serves the new tty on a new port."""
    pty = lab.ptys["udev"]
    with PlaceSession("rig-udev", lab.address) as session:
        before = session.console_url(wait=5)
        read_until(before, lambda: pty.write(b"before the cut\r\n"), b"before the cut")

        pty.vanish()
        deadline = time.monotonic() + 10
        while True:
            try:
                session.console_url()
            except ConsoleLost as lost:
                assert "currently unavailable" in str(lost) and str(pty.path) in str(lost)
                break
            assert time.monotonic() < deadline, "the exporter never reported the tty gone"
            time.sleep(0.1)

        pty.appear()
        after = session.console_url(wait=10)
        assert after != before, (before, after)
        got = read_until(after, lambda: pty.write(b"after the cut\r\n"), b"after the cut")
        assert b"after the cut" in got
        print(f"re-enumeration moved the console: {before} -> {after}")


def test_plain_rawserialport_keeps_its_port_across_a_vanished_tty(lab: Lab) -> None:
    """labgrid's RawSerialPort never notices the path go: same port, and ser2net reopens the path per connection."""
    pty = lab.ptys["plain"]
    with PlaceSession("rig1", lab.address) as session:
        before = session.console_url(wait=5)
        read_until(before, lambda: pty.write(b"one\r\n"), b"one")
        pty.vanish()
        time.sleep(1.0)  # several exporter polls (every 0.25 s): nothing changes for a RawSerialPort
        assert session.console_url() == before
        pty.appear()
        assert session.console_url() == before
        read_until(before, lambda: pty.write(b"two\r\n"), b"two")


def test_power_through_labgrids_network_power_driver(lab: Lab) -> None:
    with PlaceSession("rig1", lab.address) as session:
        session.power_on()
        assert session.power_state() is True
        session.power_off()
        assert session.power_state() is False
    assert lab.power.requests[-4:] == ["/relay/0/1", "/relay/0", "/relay/0/0", "/relay/0"]
    with PlaceSession("rig-udev", lab.address) as session:
        assert session.power_state() is None
        with pytest.raises(BenchStartError, match="no NetworkPowerPort"):
            session.power_on()


def test_logs_are_kept(lab: Lab) -> None:
    for name, log in lab.logs.items():
        assert log.exists(), name
    assert "ser2net" in tail(lab.logs["exporter-plain"], 200)
