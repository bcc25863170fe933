"""Bring a bench up from its device file: run a command, read what it prints.

The simulated bench is started this way, and so can anything a lab needs
before a run (a ser2net, a relay daemon).  The harness learns where the
supply and the UART are from the lines the command prints, so it never needs
to know it is talking to a simulator.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .devicefile import BenchSpec
from .errors import HarnessError

log = logging.getLogger(__name__)


@dataclass
class LaunchedBench:
    """A running bench process and the resources it announced."""

    process: subprocess.Popen
    resources: dict[str, str]
    log_path: Path
    _tail: deque = field(default_factory=lambda: deque(maxlen=50))

    def close(self, timeout: float = 10.0) -> None:
        """Stop the bench by its own handle: SIGTERM, then SIGKILL if it hangs.

        The bench runs in its own session (a Ctrl-C for pytest must not kill
        it before the teardown has put the supply in its safe state), so a
        child it failed to reap would outlive it: after the leader is gone,
        anything left in its process group is killed too.
        """
        proc = self.process
        if not end_process(proc, timeout):
            log.warning("bench pid %d ignored SIGTERM; killed it", proc.pid)
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        if proc.stdout:
            proc.stdout.close()

    def __enter__(self) -> "LaunchedBench":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def end_process(proc: subprocess.Popen[Any], timeout: float) -> bool:
    """End a child by its own handle: SIGTERM, then SIGKILL if it is still there after ``timeout``.

    Returns False when it had to be killed.  Its process group, if it has
    one of its own, is the caller's to sweep.
    """
    if proc.poll() is not None:
        return True
    proc.terminate()
    try:
        proc.wait(timeout)
        return True
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout)
        return False


def launch(spec: BenchSpec, argv: list[str], log_path: Path, env: dict[str, str] | None = None) -> LaunchedBench:
    """Start ``argv`` (the filled ``bench.start``) and wait for its ready line."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    if argv and shutil.which(argv[0]) is None:
        raise HarnessError(f"bench.start: cannot run {argv[0]!r}: no such program (or not executable)")
    log_file = open(log_path, "ab")
    try:
        proc = subprocess.Popen(_dying_with_us(argv), stdout=subprocess.PIPE, stderr=log_file,
                                stdin=subprocess.DEVNULL, env={**os.environ, **(env or {})}, start_new_session=True)
    except OSError as exc:
        raise HarnessError(f"bench.start: cannot run {argv[0]!r}: {exc}") from None
    finally:
        log_file.close()
    patterns = {name: re.compile(rx) for name, rx in spec.resources.items()}
    ready = re.compile(spec.ready)
    resources: dict[str, str] = {}
    seen: deque[str] = deque(maxlen=20)
    lines: list[str] = []
    done = threading.Event()

    def reader() -> None:
        assert proc.stdout is not None
        for raw in proc.stdout:
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            with open(log_path, "a", encoding="utf-8") as out:
                out.write(f"[stdout] {line}\n")
            if not done.is_set():
                lines.append(line)
                if ready.search(line):
                    done.set()
        done.set()

    thread = threading.Thread(target=reader, name="bench-stdout", daemon=True)
    thread.start()
    deadline = time.monotonic() + spec.timeout
    while not done.wait(0.05):
        if time.monotonic() > deadline:
            break
    for line in lines:
        seen.append(line)
        for name, rx in patterns.items():
            m = rx.search(line)
            if m and name not in resources:
                resources[name] = m.group("value")
    bench = LaunchedBench(proc, resources, log_path)
    if proc.poll() is not None or not any(ready.search(x) for x in lines):
        bench.close()
        why = f"exited with code {proc.returncode}" if proc.returncode is not None else \
            f"did not print its ready line within {spec.timeout:.0f} s"
        tail = _tail(log_path)
        raise HarnessError(f"bench {' '.join(argv)!r} {why}; see {log_path}\n{tail}")
    missing = sorted(set(patterns) - set(resources))
    if missing:
        bench.close()
        raise HarnessError(f"bench did not announce {', '.join(missing)}; it printed: " + " | ".join(seen))
    log.info("bench up: %s", ", ".join(f"{k}={v}" for k, v in resources.items()))
    return bench


#: run by a fresh interpreter before it becomes the bench: argv[1] is our pid, the rest the bench's command
_PDEATHSIG_SHIM = ("import ctypes, os, signal, sys\n"
                   "try:\n"
                   "    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)   # PR_SET_PDEATHSIG\n"
                   "except (OSError, AttributeError):\n"
                   "    pass\n"
                   "if os.getppid() != int(sys.argv[1]):\n"
                   "    sys.exit(0)          # the harness died before the signal was armed\n"
                   "try:\n"
                   "    os.execvp(sys.argv[2], sys.argv[2:])\n"
                   "except OSError as exc:\n"
                   "    sys.exit(f'bench.start: cannot run {sys.argv[2]!r}: {exc}')\n")


def _dying_with_us(argv: list[str]) -> list[str]:
    """The bench's command, run so that it gets SIGTERM when the process that started it dies.

    A SIGKILLed test process runs no teardown; without this the bench (and its
    pseudo-terminal and port) would live on.  The supply itself is covered by
    the watchdog.  Linux only (prctl PR_SET_PDEATHSIG); elsewhere the command as
    given.  Armed by a small interpreter that then execs the bench (same pid),
    not by a ``preexec_fn``: Python code between fork and exec in a process with
    threads (labgrid's gRPC client has several) can deadlock or crash the child;
    it did here, with SIGSEGV before the bench ever ran.
    """
    if not sys.platform.startswith("linux"):
        return list(argv)
    return [sys.executable, "-c", _PDEATHSIG_SHIM, str(os.getpid()), *argv]


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
    except OSError:
        return ""
