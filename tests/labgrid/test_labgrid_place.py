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
from pathlib import Path

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
    session = PlaceSession(sys.argv[1], sys.argv[2], guard_log=sys.argv[3])
    session.acquire()
    print("acquired", session.guard.pid, flush=True)
    time.sleep(600)
""")


def test_guard_releases_the_place_after_sigkill(lab: Lab, tmp_path: Path) -> None:
    guard_log = tmp_path / "guard.log"
    child = subprocess.Popen([sys.executable, "-c", CHILD, "rig1", lab.address, str(guard_log)], cwd=ROOT,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    guard_pid = None
    try:
        line = child.stdout.readline()
        assert line.startswith("acquired"), line + child.stdout.read() if child.poll() is not None else line
        guard_pid = int(line.split()[1])
        assert holder(lab, "rig1") is not None
        os.kill(child.pid, signal.SIGKILL)
        child.wait(10)
        took = wait_released(lab, "rig1", 15.0)
        assert took < 10
        deadline = time.monotonic() + 10
        while os.path.exists(f"/proc/{guard_pid}") and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not os.path.exists(f"/proc/{guard_pid}"), "the guard exits once it has released"
        assert "released place 'rig1'" in guard_log.read_text(), guard_log.read_text()
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(5)
        child.stdout.close()
        if guard_pid is not None and os.path.exists(f"/proc/{guard_pid}"):
            os.kill(guard_pid, signal.SIGKILL)  # the guard this test started through its child, by its pid


def test_guard_leaves_a_newer_acquisition_alone(lab: Lab) -> None:
    with PlaceSession("rig1", lab.address) as session:
        said = release_if_ours("rig1", lab.address, session.acquired_as, session.acquired_since - 60)
        assert "left alone" in said
        said = release_if_ours("rig1", lab.address, "otherhost/otheruser", session.acquired_since)
        assert "now acquired by" in said and "left alone" in said
        assert holder(lab, "rig1") == session.acquired_as


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
