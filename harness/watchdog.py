"""Watchdog: leaves the supply safe when the process that held it dies.

A test process can die in ways no ``finally`` survives: SIGKILL, the OOM
killer, pytest-timeout's ``os._exit``, a SIGTERM from CI.  A bench left
powered (or unpowered) then ruins the rest of the night.  So
:meth:`harness.supply.Supply.open` calls :meth:`Watchdog.spawn`, which starts
``python -m harness.watchdog`` as a separate process, in its own session so
that the Ctrl-C or SIGTERM sent to the test's process group does not reach
it, and hands it, as one JSON line on stdin, everything needed to reach the
supply on its own::

    {"resource": ..., "dialect": <path>, "channel": 1, "visa_library": "@py",
     "safe_state": {"output": "off"}, "parent_pid": 1234, "log_path": ..., "grace": 30}

It answers ``armed`` on stdout and then waits for one of:

- ``disarm`` on stdin: the parent closed the supply normally; exit, touch nothing;
- ``safe`` on stdin: the parent asks it to secure the bench (its own connection failed);
- EOF on stdin or the parent's pidfd becoming readable: the parent is gone
  (the kernel closes the pipe whatever killed it);
- SIGTERM to the watchdog itself: someone is tearing everything down; be safe.

In the last three cases it reconnects, retrying for ``grace`` seconds while
the instrument still holds the dead process's connection, applies the safe
state, records what it did in the supply log (JSON lines, same clock) and on
stderr, and exits (0 when the bench is safe, 1 when it could not be made so).

It speaks to the supply through :class:`harness.supply.SupplyChannel`, the
driver a test uses minus the watchdog, so that securing the bench goes
through the same pacing, read modes and error checks as everything else.
"""

from __future__ import annotations

import json
import logging
import os
import select
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from . import clock
from .errors import HarnessError

log = logging.getLogger("harness.watchdog")

ARM_TIMEOUT = 30.0  # a watchdog that never answers must not hang the test
DISARM_TIMEOUT = 5.0


@dataclass(frozen=True)
class WatchdogConfig:
    """The JSON line :meth:`Watchdog.spawn` sends when arming."""

    resource: str
    dialect: str
    channel: int
    visa_library: str = "@py"
    safe_state: dict[str, Any] = field(default_factory=lambda: {"output": "off"})
    parent_pid: int | None = None
    log_path: str | None = None
    grace: float = 30.0

    @classmethod
    def from_json(cls, text: str) -> "WatchdogConfig":
        data = json.loads(text)
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})

    def to_json(self) -> str:
        return json.dumps(asdict(self))


@dataclass
class Watchdog:
    """The parent's handle on one armed watchdog process.

    Its only job on the parent side is to be told, at the end, whether the
    parent finished cleanly (``disarm``) or wants the bench secured
    (``close(apply_safe=True)``); dying without telling it is the case it
    exists for.
    """

    process: subprocess.Popen
    grace: float

    @classmethod
    def spawn(cls, config: WatchdogConfig, name: str) -> "Watchdog":
        """Start the watchdog process and return once it says it is armed.

        It runs in a new session so a Ctrl-C or a SIGTERM sent to the test's
        process group does not take it down with the test; it learns of the
        parent's death through EOF on its stdin (the kernel closes the
        parent's end whatever kills it) and through a pidfd on the parent's
        pid.  ``name`` says which supply in the error if it does not arm.
        """
        root = Path(__file__).resolve().parent.parent
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(root), env.get("PYTHONPATH")) if p)
        proc = subprocess.Popen([sys.executable, "-m", "harness.watchdog"], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=None, cwd=str(root), env=env,
                                start_new_session=True, close_fds=True)
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write((config.to_json() + "\n").encode())
        proc.stdin.flush()
        ready, _, _ = select.select([proc.stdout], [], [], ARM_TIMEOUT)
        answer = proc.stdout.readline().decode(errors="replace").strip() if ready else ""
        if answer != "armed":
            proc.kill()
            proc.wait()
            raise HarnessError(f"{name}: watchdog did not arm (said {answer!r}, "
                               f"exit {proc.returncode})")
        return cls(proc, config.grace)

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def disarm(self) -> bool:
        """The parent is done and the bench is in order: let the watchdog exit, touching nothing."""
        return self.close(apply_safe=False)

    def close(self, apply_safe: bool = False) -> bool:
        """Disarm (or, with ``apply_safe``, have it secure the bench now) and wait until it exits.

        Securing may take the whole grace period (the instrument may still
        hold our connection), disarming only a moment.  A watchdog that does
        not exit in time is killed: nothing is left behind either way.
        Returns False when it had to be killed.
        """
        proc = self.process
        try:
            assert proc.stdin is not None
            proc.stdin.write(b"safe\n" if apply_safe else b"disarm\n")
            proc.stdin.close()
        except (OSError, ValueError):
            pass
        exited = True
        try:
            proc.wait(timeout=self.grace + 5 if apply_safe else DISARM_TIMEOUT)
        except subprocess.TimeoutExpired:
            exited = False
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
        return exited


@dataclass
class _Flags:
    """Set from the SIGTERM handler, read by the wait loop (no module globals)."""

    terminated: bool = False


def secure(config: WatchdogConfig, reason: str) -> bool:
    """Reconnect and apply the safe state, retrying until ``grace`` runs out."""
    # Imported here, in the watchdog process only: harness.supply imports this module to spawn it.
    from .supply import SupplyChannel

    deadline = clock.now() + config.grace
    attempt = 0
    last_error: Exception | None = None
    while True:
        attempt += 1
        supply = SupplyChannel(config.resource, config.dialect, channel=config.channel,
                               visa_library=config.visa_library, log_path=config.log_path,
                               safe_state=config.safe_state)
        try:
            supply.open()
            supply.note(kind="watchdog", detail=f"{reason}; attempt {attempt}",
                              parent_pid=config.parent_pid)
            supply.safe()
            state = supply.output_state()
            want = supply.safe_state.output
            if state is not None and state != want:
                raise RuntimeError(f"output reads {'on' if state else 'off'} after safe state")
            supply.note(kind="watchdog-safe", detail=json.dumps(config.safe_state),
                              verified=state is not None)
            log.info("%s: safe state %s applied (%s, attempt %d%s)", supply.name,
                     config.safe_state, reason, attempt,
                     ", verified" if state is not None else "")
            supply.close()
            return True
        except Exception as exc:  # any failure: the instrument may still hold the old link
            last_error = exc
            try:
                supply.close()
            except Exception:
                pass
        if clock.now() >= deadline:
            log.error("%s: could not apply safe state after %d attempts in %.1f s: %s",
                      config.resource, attempt, config.grace, last_error)
            return False
        time.sleep(min(0.1 * attempt, 1.0))


def _parent_fd(pid: int | None) -> int | None:
    """A pidfd that becomes readable when the parent exits (Linux >= 5.3)."""
    if pid is None or not hasattr(os, "pidfd_open"):
        return None
    try:
        return os.pidfd_open(pid)
    except ProcessLookupError:
        return -1
    except OSError:
        return None


def wait_for_trigger(parent_fd: int | None, flags: _Flags) -> str | None:
    """Block until the parent disarms (None) or something calls for the safe state."""
    stdin_fd = sys.stdin.fileno()
    watched = [stdin_fd] + ([parent_fd] if parent_fd is not None and parent_fd >= 0 else [])
    buffer = b""
    while True:
        if flags.terminated:
            return "watchdog got SIGTERM"
        try:
            ready, _, _ = select.select(watched, [], [], 0.25)
        except InterruptedError:
            continue
        if parent_fd is not None and parent_fd in ready:
            return "parent process exited"
        if stdin_fd in ready:
            chunk = os.read(stdin_fd, 4096)
            if not chunk:
                return "parent connection closed (parent died)"
            buffer += chunk
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                word = line.strip().decode(errors="replace")
                if word == "disarm":
                    return None
                if word == "safe":
                    return "parent asked for the safe state"


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(stream=sys.stderr, level=logging.INFO,
                        format="watchdog[%(process)d] %(levelname)s %(message)s")
    # Ctrl-C and hang-ups belong to the test process, not to us; a dead reader
    # of our stderr must not kill us before the bench is safe.
    for sig in (signal.SIGINT, signal.SIGHUP, signal.SIGPIPE):
        signal.signal(sig, signal.SIG_IGN)
    flags = _Flags()

    def on_term(signum: int, frame: Any) -> None:
        flags.terminated = True

    signal.signal(signal.SIGTERM, on_term)

    line = sys.stdin.readline()
    try:
        config = WatchdogConfig.from_json(line)
        from .dialect import load as load_dialect

        load_dialect(config.dialect)
        import pyvisa  # noqa: F401 - warm the import now so that securing is quick later
    except Exception as exc:
        print(f"error: {exc}", flush=True)
        return 2
    parent_fd = _parent_fd(config.parent_pid)
    print("armed", flush=True)
    # Nobody reads our stdout after this; keep writes from failing on a closed pipe.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.close(devnull)
    if parent_fd == -1:
        reason: str | None = "parent already gone when arming"
    else:
        reason = wait_for_trigger(parent_fd, flags)
    if reason is None:
        log.debug("%s: disarmed by parent", config.resource)
        return 0
    log.warning("%s: %s; applying safe state %s", config.resource, reason, config.safe_state)
    return 0 if secure(config, reason) else 1


if __name__ == "__main__":
    sys.exit(main())
