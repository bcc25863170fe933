"""Safe state, measured: does every way a pytest run can end leave the supply safe, and how fast?

The harness promises (README, "Safe state, whatever happens") that the
supply ends in the device file's safe state however the test process ends:
the fixtures' teardown covers a pass, a failure, an exception, Ctrl-C and
SIGTERM; the watchdog (``harness/watchdog.py``) covers deaths that skip every
``finally`` (SIGKILL, pytest-timeout's ``os._exit``).  This benchmark checks
that promise from the outside, the way an oscilloscope on the rail would,
for each ending repeated ``--reps`` times.

How, and why this way:

* The simulated bench is started here, not by pytest: with the bench section
  of ``devices/sim.yaml`` (so exactly the command pytest would run), through
  :func:`harness.launcher.launch`.  The run gets a temporary device file with
  no ``bench:`` section pointing at the bench's supply, UART and flash, as a
  real lab's bench exists independently of pytest.  Were pytest to start the
  bench, a SIGKILL of pytest would also take the bench down (PDEATHSIG) and
  there would be no supply left to look at.  One bench per firmware variant
  (``correct``; ``ram-only`` for the failure) is reused across repetitions.
  The reference server uses a certificate made once here (the device file's
  ``server.cert/key/ca``), because the bench's firmware is given its CA when
  the bench starts, before any pytest run.
* pytest runs in a throw-away lab directory (its own ``pytest.ini``, a copy
  of ``scenarios/resume_after_power_loss.yaml``, a small Python test file),
  in a session of its own so that "its process group" is only pytest.
* The rail: this process holds its own socket to the supply and asks
  ``OUTP? (@<channel>)`` (Keysight dialect) every few milliseconds on
  CLOCK_MONOTONIC (:func:`harness.clock.now`), from before pytest starts
  until the output is seen in the safe state after the ending.
* The ending moment, t0: for a signal, just before ``kill()``; for the
  endings pytest reaches by itself, a one-hook probe (``conftest.py`` in the
  lab directory, the scope's trigger channel) stamps when each test's call
  phase began and ended: pass, failure and exception end at the end of the
  call; pytest-timeout fires ``--timeout`` seconds after the call began
  (``timeout_func_only``: the timer covers the test body, in which the
  device is powered, not the session's setup).
* Time to safe: from t0 to the first reply that reports the safe state with
  no later reply reporting otherwise (an upper bound: the change happened
  between the previous reply and that one).  Zero when the output was
  already safe at t0.  Safe means within ``--bound`` seconds (10 s).
* Nothing left behind: every descendant of the pytest process seen while it
  ran (the watchdog, which lives in its own session, among them) must be
  gone within ``--bound`` seconds of the end; and the device process on the
  bench must be gone too (the rail really dropped).  Anything left is
  reported and then killed by its pid.
* Who made it safe: read afterwards from the run's supply log
  (``safe`` written by the pytest process: its teardown; ``watchdog-safe``:
  the watchdog), with when, as a second table (the inside view).
* A run that ends before it ever powered the device and not the way its
  ending ends it (pytest could not even load the harness: a half-saved
  file in a shared checkout) is void; it is run again, at most twice, and
  the count is printed.  Pytest's exit status is checked for every run, so
  a pass that did not pass, or a signal that did not land, is flagged.

Run ``python bench/safe_state.py`` (``--reps 20`` by default; ``--endings``
to choose, ``--keep`` to keep every run's logs).  It prints the Markdown
table (way to end | runs | safe | worst time to safe | median | made safe
by | left behind), the inside view, the wall time and, as the last line,
``safe=<n>/<runs> worst_s=<x> wall_s=<y>``; it exits 1 unless every run was
safe, left nothing behind and ended as intended.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import yaml

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from harness import clock, devicefile  # noqa: E402
from harness.launcher import LaunchedBench, launch  # noqa: E402
from harness.server import certs  # noqa: E402

log = logging.getLogger("bench.safe_state")

SIM_DEVICE_FILE = ROOT / "devices" / "sim.yaml"
SCENARIO = ROOT / "scenarios" / "resume_after_power_loss.yaml"
SCENARIO_CELL = "tls1.3"
PROBE_ENV = "SAFE_STATE_PROBE"
POLL_S = 0.005            # rail sampling period
SCAN_S = 0.1              # how often the pytest process tree is listed
RUN_TIMEOUT_S = 120.0     # a pytest run that takes longer than this is hung
SIGNAL_READY_S = 60.0     # how long to wait for a held test to power the device

# The lab directory's files.  The probe is the trigger channel: it only
# writes stamps, it never touches the bench.
LAB_PYTEST_INI = """\
[pytest]
filterwarnings =
    ignore::DeprecationWarning:pyvisa_py.*
"""

LAB_CONFTEST = '''\
"""Trigger channel for bench/safe_state.py: when each test's call phase began and ended."""

import json
import os
import time

import pytest


def _stamp(event: str, **fields: object) -> None:
    path = os.environ.get("SAFE_STATE_PROBE")
    if path:
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps({"event": event, "mono": time.monotonic(), **fields}) + "\\n")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item):
    _stamp("call-start", nodeid=item.nodeid)
    try:
        return (yield)
    finally:
        _stamp("call-end", nodeid=item.nodeid)


@pytest.hookimpl(tryfirst=True)
def pytest_keyboard_interrupt(excinfo: pytest.ExceptionInfo) -> None:
    _stamp("keyboard-interrupt")


@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish(session: pytest.Session) -> None:
    _stamp("sessionfinish")
'''

LAB_TESTS = '''\
"""Tests that end badly while the device is powered (bench/safe_state.py)."""

import json
import os
import time


def _stamp(event: str) -> None:
    path = os.environ.get("SAFE_STATE_PROBE")
    if path:
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps({"event": event, "mono": time.monotonic()}) + "\\n")


def test_hold_powered(rig):
    """Power on, then wait for a signal or a timeout to end the run."""
    rig.device.power_on()
    _stamp("powered")
    time.sleep(300)


def test_raise_powered(rig):
    """Power on, then fail with an exception no test expects."""
    rig.device.power_on()
    _stamp("powered")
    raise RuntimeError("an unexpected error while the device is powered")
'''


# -- the endings ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Ending:
    """One way a pytest run can end, and how this benchmark brings it about."""

    key: str
    label: str
    target: str                      # node id (relative to the lab directory) or -k expression
    variant: str = "correct"         # simulated firmware variant of the bench it runs on
    sig: int | None = None           # signal sent once the device is powered
    group: bool = False              # to pytest's whole process group instead of its pid
    timeout_method: str | None = None  # pytest-timeout method; None: no timeout
    exit_codes: tuple[int, ...] = (0,)  # what pytest's exit status must be for the ending to be this one


SCENARIO_TARGET = f"scenarios/{SCENARIO.name}"
HOLD = "test_endings.py::test_hold_powered"

ENDINGS: tuple[Ending, ...] = (
    Ending("pass", "pass", SCENARIO_TARGET, exit_codes=(0,)),
    Ending("fail", "failure (ram-only verdict)", SCENARIO_TARGET, variant="ram-only", exit_codes=(1,)),
    Ending("exception", "exception in a test", "test_endings.py::test_raise_powered", exit_codes=(1,)),
    Ending("sigint", "Ctrl-C (SIGINT to the group)", HOLD, sig=signal.SIGINT, group=True, exit_codes=(2,)),
    Ending("sigterm", "SIGTERM to pytest", HOLD, sig=signal.SIGTERM, exit_codes=(2,)),
    Ending("timeout-signal", "pytest-timeout (signal)", HOLD, timeout_method="signal", exit_codes=(1,)),
    Ending("timeout-thread", "pytest-timeout (thread)", HOLD, timeout_method="thread", exit_codes=(1,)),
    Ending("sigkill", "SIGKILL of pytest", HOLD, sig=signal.SIGKILL, exit_codes=(-signal.SIGKILL,)),
    Ending("sigkill-group", "SIGKILL of its process group", HOLD, sig=signal.SIGKILL, group=True,
           exit_codes=(-signal.SIGKILL,)),
)
ENDINGS_BY_KEY = {e.key: e for e in ENDINGS}


@dataclass
class RepResult:
    """What one repetition showed."""

    ending: str
    rc: int | None
    safe: bool
    time_to_safe: float | None      # s from t0 to the safe state, None if never
    powered_at_end: bool            # the output was on at t0 (else the ending proved little)
    ever_powered: bool = True       # the output was on at some moment of the run
    leftovers: list[str] = field(default_factory=list)   # processes still alive after the bound
    device_alive: bool = False      # the bench's device process still ran after the safe state
    made_safe_by: str = "?"         # teardown | watchdog | teardown+watchdog | none
    inside_s: dict[str, float] = field(default_factory=dict)  # source -> its safe record's time after t0
    as_intended: bool = True        # pytest's exit status is the one this ending gives
    t0_source: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.safe and not self.leftovers and not self.device_alive and self.as_intended

    @property
    def void(self) -> bool:
        """The ending never happened: pytest stopped some other way before it powered the device.

        A harness that does not even load (a half-saved file in a shared
        checkout) is not an ending of a test run; the benchmark runs such
        a repetition again and says how often it had to.
        """
        return not self.as_intended and not self.ever_powered


# -- the rail probe ---------------------------------------------------------------------------

class RailProbe:
    """This benchmark's own connection to the supply: the oscilloscope on the rail.

    A plain TCP socket speaking SCPI (the Keysight dialect's ``OUTP?``): no
    harness code, so what it reads does not depend on what is being tested.
    Only ``TCPIP::host::port::SOCKET`` resources (the simulated bench).
    """

    def __init__(self, resource: str, channel: int = 1, timeout: float = 2.0):
        parts = resource.split("::")
        if len(parts) != 4 or parts[0].upper() != "TCPIP" or parts[3].upper() != "SOCKET":
            raise ValueError(f"rail probe: need a TCPIP::host::port::SOCKET resource, got {resource!r}")
        self.address = (parts[1], int(parts[2]))
        self.channel = channel
        self.timeout = timeout
        self._sock: socket.socket | None = None
        self._buffer = b""

    def _connect(self) -> socket.socket:
        if self._sock is None:
            sock = socket.create_connection(self.address, timeout=self.timeout)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._sock, self._buffer = sock, b""
        return self._sock

    def _query(self, command: str) -> str:
        sock = self._connect()
        try:
            sock.sendall(command.encode("ascii") + b"\n")
            while b"\n" not in self._buffer:
                chunk = sock.recv(256)
                if not chunk:
                    raise ConnectionError("supply closed the connection")
                self._buffer += chunk
        except OSError:
            self.close()
            raise
        line, self._buffer = self._buffer.split(b"\n", 1)
        return line.decode("ascii", "replace").strip()

    def output(self) -> tuple[float, bool | None]:
        """(stamp of the reply, output on?); None when the supply did not answer."""
        try:
            answer = self._query(f"OUTP? (@{self.channel})")
        except OSError as exc:
            log.debug("rail probe: %s", exc)
            return clock.now(), None
        return clock.now(), answer == "1"

    def force_off(self) -> None:
        """Between repetitions only: a repetition that left the output on must not spoil the next."""
        self._connect().sendall(f"OUTP OFF,(@{self.channel})\n".encode("ascii"))
        self.output()

    def close(self) -> None:
        if self._sock is not None:
            try:
                self._sock.close()
            finally:
                self._sock = None


# -- processes --------------------------------------------------------------------------------

def _stat(pid: int) -> tuple[int, str, int] | None:
    """(ppid, state, start time in ticks) of a live process, None if gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            data = fh.read().decode("ascii", "replace")
    except OSError:
        return None
    fields = data[data.rfind(")") + 2:].split()
    return int(fields[1]), fields[0], int(fields[19])


def descendants(root: int) -> dict[int, int]:
    """Every process below ``root`` now, as pid -> start time (to tell a reused pid apart)."""
    children: dict[int, list[tuple[int, int]]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        st = _stat(int(entry.name))
        if st is not None:
            children.setdefault(st[0], []).append((int(entry.name), st[2]))
    found: dict[int, int] = {}
    todo = [root]
    while todo:
        for pid, start in children.get(todo.pop(), []):
            if pid not in found:
                found[pid] = start
                todo.append(pid)
    return found


def alive(pid: int, start: int) -> bool:
    """The very process seen earlier still runs (a zombie has finished)."""
    st = _stat(pid)
    return st is not None and st[2] == start and st[1] not in ("Z", "X")


def cmdline(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return "?"
    return " ".join(p.decode(errors="replace") for p in raw.split(b"\0") if p)[:120]


# -- the lab: benches, device files, the test directory ----------------------------------------

@dataclass
class BenchUnderTest:
    """One simulated bench started here, and the device file a run against it uses."""

    variant: str
    launched: LaunchedBench
    device_file: Path
    resource: str
    channel: int
    safe_on: bool             # the safe state's output: False for {output: off}

    @property
    def alive(self) -> bool:
        return self.launched.process.poll() is None

    def device_running(self) -> bool:
        """The bench's device process (a child of the bench) runs: the rail is up."""
        return bool(descendants(self.launched.process.pid))

    def close(self) -> None:
        self.launched.close()


class Lab:
    """Everything that lives across repetitions: the benches, the PKI, the lab directory.

    A context manager: the benches are ended by their own handles and the
    working directory removed (unless ``keep``) whatever happens.
    """

    def __init__(self, workdir: Path | None = None, keep: bool = False):
        self._own = workdir is None
        self.workdir = Path(tempfile.mkdtemp(prefix="safe-state-")) if workdir is None else workdir
        self.keep = keep
        self.lab_dir = self.workdir / "lab"
        self.benches: dict[str, BenchUnderTest] = {}
        self.probes: dict[str, RailProbe] = {}
        self.spec = devicefile.load(SIM_DEVICE_FILE)
        if self.spec.bench is None:
            raise RuntimeError(f"{SIM_DEVICE_FILE} has no bench section to start the simulated bench with")
        self.pki = certs.generate(self.workdir / "pki", tuple(self.spec.server.names),
                                  tuple(self.spec.server.ips), self.spec.server.key_type)
        self._write_lab()
        self.reps = 0

    def _write_lab(self) -> None:
        (self.lab_dir / "scenarios").mkdir(parents=True, exist_ok=True)
        (self.lab_dir / "pytest.ini").write_text(LAB_PYTEST_INI, encoding="utf-8")
        (self.lab_dir / "conftest.py").write_text(LAB_CONFTEST, encoding="utf-8")
        (self.lab_dir / "test_endings.py").write_text(LAB_TESTS, encoding="utf-8")
        shutil.copy(SCENARIO, self.lab_dir / "scenarios" / SCENARIO.name)

    def __enter__(self) -> "Lab":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for probe in self.probes.values():
            probe.close()
        for bench in self.benches.values():
            bench.close()
        self.benches.clear()
        if self._own and not self.keep:
            shutil.rmtree(self.workdir, ignore_errors=True)
        elif self.keep:
            log.info("kept %s", self.workdir)

    def bench(self, variant: str) -> BenchUnderTest:
        """The running bench for ``variant``, started (or restarted, if it died) on demand."""
        current = self.benches.get(variant)
        if current is not None and current.alive:
            return current
        if current is not None:
            log.warning("bench %s died (exit %s); starting a new one", variant,
                        current.launched.process.returncode)
            self.probes.pop(variant).close()
            current.close()
        bench = self._start_bench(variant)
        self.benches[variant] = bench
        self.probes[variant] = RailProbe(bench.resource, bench.channel)
        return bench

    def _start_bench(self, variant: str) -> BenchUnderTest:
        assert self.spec.bench is not None
        bench_dir = self.workdir / f"bench-{variant}"
        bench_dir.mkdir(parents=True, exist_ok=True)
        values = {"python": sys.executable, "bench_dir": str(bench_dir), "sim_variant": variant,
                  "sim_uart_mode": "stable", "server_ca": str(self.pki.ca), "run_dir": str(self.workdir)}
        argv = [devicefile.fill(a, values, "bench.start") for a in self.spec.bench.start]
        launched = launch(self.spec.bench, argv, self.workdir / f"bench-{variant}.log",
                          env={"PYTHONPATH": str(ROOT)})
        try:
            device_file = self._write_device_file(variant, launched.resources)
        except Exception:
            launched.close()
            raise
        s = self.spec.supply
        safe_on = str(s.safe_state.get("output", "off")).lower() in ("on", "true", "1")
        resource = launched.resources["supply"]
        log.info("bench %s up (pid %d): %s", variant, launched.process.pid, resource)
        return BenchUnderTest(variant, launched, device_file, resource, s.channel, safe_on)

    def _write_device_file(self, variant: str, resources: dict[str, str]) -> Path:
        """devices/sim.yaml as a lab would write it for a bench that is already there."""
        doc = yaml.safe_load(SIM_DEVICE_FILE.read_text(encoding="utf-8"))
        doc.pop("bench", None)
        doc["name"] = f"sim-external-{variant}"
        values = {"bench": resources}
        doc["supply"]["resource"] = devicefile.fill(doc["supply"]["resource"], values, "supply.resource")
        doc["console"]["url"] = devicefile.fill(doc["console"]["url"], values, "console.url")
        doc["flash_file"] = devicefile.fill(doc["flash_file"], values, "flash_file")
        doc["server"].update(cert=str(self.pki.cert), key=str(self.pki.key), ca=str(self.pki.ca))
        path = self.workdir / f"device-{variant}.yaml"
        path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
        devicefile.load(path)   # a mistake here is ours: say so now, not as a failed run
        return path

    def new_rep_dir(self, ending: Ending) -> Path:
        self.reps += 1
        path = self.workdir / "reps" / f"{self.reps:04d}-{ending.key}"
        path.mkdir(parents=True)
        return path


# -- one repetition -----------------------------------------------------------------------------

def _stamps(path: Path) -> list[dict[str, Any]]:
    try:
        return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]
    except OSError:
        return []


def _child_env(probe_path: Path) -> dict[str, str]:
    """The environment of the pytest run: ours minus what would change pytest's behaviour."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTEST_ADDOPTS", "PYTEST_CURRENT_TEST",
                                                           "PYTEST_PLUGINS", "PYTEST_DEBUG")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    env[PROBE_ENV] = str(probe_path)
    return env


def _who_made_it_safe(supply_log: Path, pytest_pid: int) -> dict[str, float]:
    """From the run's supply log (the inside view): who applied the safe state after the last power-on, and when.

    ``safe`` records written by the pytest process are its teardown; the
    watchdog writes ``watchdog-safe``.  Earlier ones (before the output
    last went on) do not count.
    """
    records = _stamps(supply_log)
    last_on = max((r["mono"] for r in records if r.get("kind") == "on" and "mono" in r), default=float("-inf"))
    found: dict[str, float] = {}
    for r in records:
        mono = r.get("mono")
        if not isinstance(mono, (int, float)) or mono < last_on:
            continue
        if r.get("kind") == "safe" and r.get("pid") == pytest_pid:
            found.setdefault("teardown", mono)
        elif r.get("kind") == "watchdog-safe":
            found.setdefault("watchdog", mono)
    return found


def _scenario_end(run_dir: Path) -> float | None:
    """When the scenario's verdict was reached: the ``scenario`` record's end in the run's events.jsonl."""
    ends = [rec["end"] for path in run_dir.rglob("events.jsonl") for rec in _stamps(path)
            if rec.get("type") == "scenario" and isinstance(rec.get("end"), (int, float))]
    return max(ends) if ends else None


def _pytest_argv(bench: BenchUnderTest, ending: Ending, run_dir: Path, timeout_s: float) -> list[str]:
    argv = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--device", str(bench.device_file),
            "--run-dir", str(run_dir), ending.target]
    if ending.target == SCENARIO_TARGET:
        argv += ["-k", SCENARIO_CELL]
    if ending.timeout_method:
        argv += [f"--timeout={timeout_s}", f"--timeout-method={ending.timeout_method}",
                 "-o", "timeout_func_only=true"]
    return argv


@dataclass
class Watch:
    """What the rail and the process tree showed during one run (filled by :func:`_watch`)."""

    samples: list[tuple[float, bool | None]] = field(default_factory=list)   # (reply stamp, output on?)
    seen: dict[int, int] = field(default_factory=dict)   # every descendant of pytest listed: pid -> start
    t0: float | None = None
    t0_source: str = ""
    hung: bool = False
    notes: list[str] = field(default_factory=list)


def _end_by_signal(proc: subprocess.Popen, ending: Ending, watch: Watch, probe_path: Path,
                   started: float, exited_at: float | None) -> None:
    """Send the ending's signal once the test has powered the device (the rail says on, the test says so)."""
    assert ending.sig is not None
    powered = any(s["event"] == "powered" for s in _stamps(probe_path))
    if powered and watch.samples[-1][1] is True:
        watch.seen.update(descendants(proc.pid))     # the last look before the tree is cut loose
        watch.t0, watch.t0_source = clock.now(), "signal sent"
        if ending.group:
            os.killpg(proc.pid, ending.sig)          # pgid == pid: pytest runs in its own session
        else:
            proc.send_signal(ending.sig)
    elif exited_at is not None:
        watch.notes.append("pytest ended before the device was powered")
        watch.t0, watch.t0_source = exited_at, "pytest exit"
    elif clock.now() - started > SIGNAL_READY_S:
        watch.notes.append("the device was never powered; ending by the signal anyway")
        watch.t0, watch.t0_source = clock.now(), "signal sent (unpowered)"
        proc.send_signal(ending.sig)


def _watch(proc: subprocess.Popen, ending: Ending, probe: RailProbe, want_on: bool, probe_path: Path,
           run_dir: Path, bound: float, timeout_s: float) -> Watch:
    """Sample the rail until pytest has ended and the output is safe (or ``bound`` s after t0 passed).

    Meanwhile list pytest's descendants, and bring the ending about if it
    is a signal.  A run still going after :data:`RUN_TIMEOUT_S` is hung:
    its process group is killed by our handle on it.
    """
    watch = Watch()
    started = clock.now()
    exited_at: float | None = None
    last_scan = float("-inf")
    try:
        while True:
            now = clock.now()
            if exited_at is None and now - last_scan >= SCAN_S:
                watch.seen.update(descendants(proc.pid))
                last_scan = now
            watch.samples.append(probe.output())
            if exited_at is None and proc.poll() is not None:
                exited_at = clock.now()
            if ending.sig is not None and watch.t0 is None:
                _end_by_signal(proc, ending, watch, probe_path, started, exited_at)
            if watch.t0 is None and ending.sig is None and exited_at is not None:
                watch.t0, watch.t0_source = _t0_self_ended(_stamps(probe_path), run_dir, ending, timeout_s)
                if watch.t0 is None:
                    watch.t0, watch.t0_source = exited_at, "pytest exit"
                    watch.notes.append("no call stamp from the probe: t0 is pytest's exit")
            if watch.t0 is not None and exited_at is not None:
                stamp, state = watch.samples[-1]
                if (state is want_on and stamp >= watch.t0) or now - watch.t0 > bound:
                    return watch
            if exited_at is None and now - started > RUN_TIMEOUT_S:
                watch.hung = True
                watch.notes.append(f"pytest still running after {RUN_TIMEOUT_S:.0f} s: killed")
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                exited_at = clock.now()
                if watch.t0 is None:
                    watch.t0, watch.t0_source = exited_at, "killed as hung"
            time.sleep(POLL_S)
    finally:
        if proc.poll() is None:       # an exception of ours: leave no pytest behind either
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _left_behind(seen: dict[int, int], within: float) -> list[str]:
    """Processes that were below pytest and still run ``within`` s later; each is then killed by its pid."""
    deadline = clock.now() + within
    remaining = dict(seen)
    while remaining:
        remaining = {pid: start for pid, start in remaining.items() if alive(pid, start)}
        if not remaining or clock.now() >= deadline:
            break
        time.sleep(0.02)
    left = [f"{pid} {cmdline(pid)}" for pid in remaining]
    for pid, start in remaining.items():
        if alive(pid, start):   # started by our pytest run, so ours to end: by its pid
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    return left


def _device_still_running(bench: BenchUnderTest, within: float = 2.0) -> bool:
    """Whether the simulated device's process outlived the rail for ``within`` s (it dies at brown-out)."""
    deadline = clock.now() + within
    running = bench.device_running()
    while running and clock.now() < deadline:
        time.sleep(0.02)
        running = bench.device_running()
    return running


def run_once(lab: Lab, ending: Ending, bound: float = 10.0, timeout_s: float = 2.0) -> RepResult:
    """Run pytest once, end it the ending's way, and watch the rail until it is safe."""
    bench = lab.bench(ending.variant)
    probe = lab.probes[ending.variant]
    want_on = bench.safe_on
    rep_dir = lab.new_rep_dir(ending)
    probe_path = rep_dir / "probe.jsonl"
    run_dir = rep_dir / "run"

    _, before = probe.output()
    forced = before is not want_on
    if forced:
        log.warning("%s: output %s before the run; switching it off", ending.key, before)
        probe.force_off()
    with open(rep_dir / "pytest.log", "wb") as out:
        proc = subprocess.Popen(_pytest_argv(bench, ending, run_dir, timeout_s), cwd=lab.lab_dir,
                                env=_child_env(probe_path), stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    watch = _watch(proc, ending, probe, want_on, probe_path, run_dir, bound, timeout_s)
    assert watch.t0 is not None
    t0 = watch.t0
    notes = watch.notes + ([f"output was {before} before the run; forced off"] if forced else [])
    time_to_safe = _time_to_safe(watch.samples, t0, want_on)
    safe = time_to_safe is not None and time_to_safe <= bound
    leftovers = _left_behind(watch.seen, within=bound)
    device_alive = not want_on and _device_still_running(bench)
    _, final = probe.output()
    if safe and final is not want_on:
        safe = False
        notes.append(f"output read {final} after the leftover check")
    powered_at_end = _state_at(watch.samples, t0) is True
    if not powered_at_end:
        notes.append("output was not on at the ending")
    inside = _who_made_it_safe(run_dir / "supply.jsonl", proc.pid)
    result = RepResult(ending=ending.key, rc=proc.returncode, safe=safe, time_to_safe=time_to_safe,
                       powered_at_end=powered_at_end, ever_powered=any(v is True for _, v in watch.samples),
                       leftovers=leftovers, device_alive=device_alive,
                       made_safe_by="+".join(sorted(inside)) or "none",
                       inside_s={k: round(v - t0, 6) for k, v in inside.items()},
                       as_intended=proc.returncode in ending.exit_codes and not watch.hung,
                       t0_source=watch.t0_source, notes=notes)
    (rep_dir / "result.json").write_text(json.dumps(result.__dict__, indent=2) + "\n", encoding="utf-8")
    log.log(logging.INFO if result.ok else logging.WARNING, "%-15s rc=%s safe=%s in %s by %s %s%s%s",
            ending.key, result.rc, safe, "-" if time_to_safe is None else f"{time_to_safe:.3f} s",
            result.made_safe_by, " ".join(f"{k}@{v:+.3f}" for k, v in result.inside_s.items()),
            f" LEFT {leftovers}" if leftovers else "", f" ({'; '.join(notes)})" if notes else "")
    return result


def _t0_self_ended(stamps: list[dict[str, Any]], run_dir: Path, ending: Ending,
                   timeout_s: float) -> tuple[float | None, str]:
    """The ending moment of a run that ended by itself.

    pytest-timeout: the call began (probe) plus the timeout.  A scenario:
    its verdict (the harness runs a scenario while setting the test up and
    leaves the call phase only to report it, so the call's end would come
    after the teardown).  A Python test: the end of its call (probe).
    """
    if ending.timeout_method:
        starts = [s["mono"] for s in stamps if s["event"] == "call-start"]
        return (starts[-1] + timeout_s, "call start + timeout") if starts else (None, "")
    if ending.target == SCENARIO_TARGET:
        end = _scenario_end(run_dir)
        if end is not None:
            return end, "scenario end (events.jsonl)"
    ends = [s["mono"] for s in stamps if s["event"] == "call-end"]
    return (ends[-1], "call end") if ends else (None, "")


def _state_at(samples: list[tuple[float, bool | None]], t: float) -> bool | None:
    """The last rail reading taken at or before ``t``."""
    state = None
    for mono, value in samples:
        if mono > t:
            break
        if value is not None:
            state = value
    return state


def _time_to_safe(samples: list[tuple[float, bool | None]], t0: float, want_on: bool) -> float | None:
    """Seconds from t0 to the reading from which on the output stayed safe; None if it did not end safe."""
    if not samples or samples[-1][1] is not want_on:
        return None
    first_safe = samples[-1][0]
    for mono, value in reversed(samples):
        if value is not want_on:
            break
        first_safe = mono
    return max(0.0, first_safe - t0)


# -- many repetitions, and the table ----------------------------------------------------------

def run_endings(lab: Lab, endings: list[Ending], reps: int, bound: float = 10.0, timeout_s: float = 2.0,
                void_retries: int = 2) -> tuple[dict[str, list[RepResult]], list[RepResult]]:
    """Each ending ``reps`` times, interleaved (one of each, then again): the same load for all.

    Returns the results by ending and the void runs that were run again
    (at most ``void_retries`` times for one repetition; after that the void
    run counts as it is).
    """
    results: dict[str, list[RepResult]] = {e.key: [] for e in endings}
    voids: list[RepResult] = []
    for rep in range(reps):
        for ending in endings:
            result = run_once(lab, ending, bound=bound, timeout_s=timeout_s)
            for _ in range(void_retries):
                if not result.void:
                    break
                log.warning("%s: void run (pytest exited %s before powering the device); running it again",
                            ending.key, result.rc)
                voids.append(result)
                result = run_once(lab, ending, bound=bound, timeout_s=timeout_s)
            results[ending.key].append(result)
        log.info("repetition %d/%d done", rep + 1, reps)
    return results, voids


def _fmt_s(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f} s"


def table(results: dict[str, list[RepResult]]) -> list[str]:
    """The Markdown table: one row per ending."""
    lines = ["| way to end | runs | safe | worst time to safe | median | made safe by | left behind |",
             "|---|---|---|---|---|---|---|"]
    for key, reps in results.items():
        label = ENDINGS_BY_KEY[key].label
        times = [r.time_to_safe for r in reps if r.time_to_safe is not None]
        worst = max(times) if len(times) == len(reps) and times else None
        by: dict[str, int] = {}
        for r in reps:
            by[r.made_safe_by] = by.get(r.made_safe_by, 0) + 1
        left = sum(len(r.leftovers) + (1 if r.device_alive else 0) for r in reps)
        odd = sum(1 for r in reps if not r.as_intended or not r.powered_at_end)
        safe = sum(1 for r in reps if r.safe)
        cell = f"{safe}/{len(reps)}" + (f" ({odd} not as intended)" if odd else "")
        worst_cell = _fmt_s(worst) if worst is not None else f"never ({len(reps) - len(times)} runs)"
        median_cell = _fmt_s(statistics.median(times)) if times else "-"
        by_cell = ", ".join(f"{k} {v}" for k, v in sorted(by.items()))
        lines.append(f"| {label} | {len(reps)} | {cell} | {worst_cell} | {median_cell} | {by_cell} | {left} |")
    return lines


def inside_table(results: dict[str, list[RepResult]]) -> list[str]:
    """Who applied the safe state according to the run's own supply log, and when (after t0).

    The inside view beside the outside one: it tells the teardown from the
    watchdog, and how much of the time to safe was the instrument's part.
    """
    lines = ["| way to end | applied by (supply log) | median after t0 | worst after t0 |", "|---|---|---|---|"]
    for key, reps in results.items():
        by: dict[str, list[float]] = {}
        for r in reps:
            for source, after in r.inside_s.items():
                by.setdefault(source, []).append(after)
        for source, times in sorted(by.items()):
            lines.append(f"| {ENDINGS_BY_KEY[key].label} | {source} ({len(times)}/{len(reps)}) "
                         f"| {_fmt_s(statistics.median(times))} | {_fmt_s(max(times))} |")
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--reps", type=int, default=20, help="repetitions of each ending (default 20)")
    p.add_argument("--endings", default=",".join(e.key for e in ENDINGS),
                   help="comma-separated, from: " + ", ".join(e.key for e in ENDINGS))
    p.add_argument("--bound", type=float, default=10.0, help="safe means safe within this many seconds")
    p.add_argument("--timeout", type=float, default=2.0, help="pytest-timeout's --timeout for those endings")
    p.add_argument("--keep", action="store_true", help="keep the working directory (logs of every run)")
    p.add_argument("-v", "--verbose", action="store_true")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if a.verbose else logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        endings = [ENDINGS_BY_KEY[k.strip()] for k in a.endings.split(",") if k.strip()]
    except KeyError as exc:
        p.error(f"unknown ending {exc}; known: {', '.join(ENDINGS_BY_KEY)}")
    wall0 = time.monotonic()
    with Lab(keep=a.keep) as lab:
        results, voids = run_endings(lab, endings, a.reps, bound=a.bound, timeout_s=a.timeout)
    wall = time.monotonic() - wall0
    for line in table(results):
        print(line)
    print()
    for line in inside_table(results):
        print(line)
    every = [r for reps in results.values() for r in reps]
    safe = sum(1 for r in every if r.safe)
    clean = sum(1 for r in every if r.ok)
    worst = max((r.time_to_safe for r in every if r.time_to_safe is not None), default=float("nan"))
    print()
    print(f"command: python bench/safe_state.py --reps {a.reps}"
          + (f" --endings {a.endings}" if a.endings != p.get_default("endings") else ""))
    print(f"wall time: {wall:.0f} s ({wall / max(1, len(every) + len(voids)):.1f} s a run); bound {a.bound:.0f} s; "
          f"clean (safe, nothing left, exit as intended) {clean}/{len(every)}")
    if voids:
        print(f"void runs run again: {len(voids)} (" + ", ".join(f"{v.ending} exit {v.rc}" for v in voids)
              + "; pytest stopped before powering the device: see reps/*/pytest.log with --keep)")
    print(f"safe={safe}/{len(every)} worst_s={worst:.3f} wall_s={wall:.0f}")
    return 0 if clean == len(every) else 1


if __name__ == "__main__":
    sys.exit(main())
