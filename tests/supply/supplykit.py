"""Helpers shared by the supply tests (imported as a plain module: tests/ is no package)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
INSTRUMENTS = HERE / "instruments"


def sim_instrument(dialect: str) -> tuple[str, str]:
    """(resource, visa_library) of the pyvisa-sim description for ``dialect``."""
    path = INSTRUMENTS / f"{dialect}.yaml"
    resources = yaml.safe_load(path.read_text())["resources"]
    return next(iter(resources)), f"{path}@sim"


def output_state(resource: str) -> str:
    """Ask the simulated supply directly (plain pyvisa, no harness code)."""
    import pyvisa

    rm = pyvisa.ResourceManager("@py")
    inst = rm.open_resource(resource, read_termination="\n", write_termination="\n",
                            timeout=1000)
    try:
        return inst.query("OUTP? (@1)").strip()
    finally:
        inst.close()


def wait_output(resource: str, want: str, within: float) -> float:
    """Poll until OUTP? says ``want``; return how long it took, fail after ``within``."""
    start = time.monotonic()
    last = None
    while time.monotonic() - start < within:
        try:
            last = output_state(resource)
        except Exception as exc:  # the dead client's connection may still be closing
            last = repr(exc)
        if last == want:
            return time.monotonic() - start
        time.sleep(0.02)
    raise AssertionError(f"OUTP? still {last!r} {within} s later (wanted {want!r})")


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    return env


def start_holder(resource: str, mode: str, log_path: Path,
                 visa_library: str = "@py") -> subprocess.Popen:
    """A child process holding the supply ON (tests/supply/holder.py), in its own group."""
    proc = subprocess.Popen([sys.executable, str(HERE / "holder.py"), resource, mode,
                             str(log_path), visa_library], stdout=subprocess.PIPE,
                            stderr=open(stderr_path(log_path), "wb"), env=child_env(),
                            cwd=str(ROOT), start_new_session=True)
    assert proc.stdout is not None
    line = proc.stdout.readline().decode().strip()
    if line != "on":
        proc.kill()
        proc.wait()
        raise AssertionError(f"holder did not switch on: {line!r}\n"
                             f"{stderr_path(log_path).read_text()}")
    return proc


def stderr_path(log_path: Path) -> Path:
    """Where a child's (and its watchdog's) stderr goes: a file, never a pipe that can fill."""
    return log_path.with_suffix(".stderr")


def records(log_path: Path) -> list[dict]:
    return [json.loads(line) for line in log_path.read_text().splitlines()]


def watchdog_pids(log_path: Path) -> list[int]:
    pids = []
    for line in log_path.read_text().splitlines():
        record = json.loads(line)
        if record.get("kind") == "watchdog-armed":
            pids.append(record["watchdog_pid"])
    return pids


def wait_gone(pid: int, within: float = 10.0) -> None:
    """Wait for a process we did not start directly (an orphaned watchdog) to exit."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as fh:
                if fh.read().split(") ")[-1].startswith("Z"):
                    return
        except FileNotFoundError:
            return
        time.sleep(0.02)
    raise AssertionError(f"watchdog {pid} still running after {within} s")
