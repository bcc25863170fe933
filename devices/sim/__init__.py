"""The simulated bench: a SCPI supply, a UART pty and a device with flash.

The bench runs as its own process (``python -m devices.sim``) so that it
outlives a test process killed with SIGKILL; that is what the watchdog
tests need.  :class:`SimBench` starts that process from Python, waits for
its ``ready`` line and, on exit, terminates it and waits for it, so the
firmware child and the UART link are cleaned up by the bench itself.

    with SimBench(workdir=tmp, settings={"ca": ca_pem}, tau=0.02) as bench:
        rm = pyvisa.ResourceManager("@py")
        psu = rm.open_resource(bench.supply_resource, read_termination="\\n",
                               write_termination="\\n")
        port = serial.Serial(str(bench.uart_path), 115200, timeout=1)
"""

from __future__ import annotations

import logging
import os
import selectors
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from .power import PACKAGE_ROOT

log = logging.getLogger(__name__)

__all__ = ["SimBench", "SimBenchError"]


class SimBenchError(RuntimeError):
    """The bench process did not come up; carries the tail of its log."""


@dataclass
class SimBench:
    """Context manager around a ``python -m devices.sim`` process.

    Options mirror the command line (``settings`` = ``--set``, ``env`` =
    ``--env``).  Pass ``workdir`` (pytest's tmp_path is the usual choice) so
    logs and flash survive the bench for post-mortems; without one a
    temporary directory is made and removed again by :meth:`stop`.
    """

    workdir: Path | None = None
    host: str = "127.0.0.1"
    port: int = 0
    firmware: str | None = None
    variant: str = "correct"
    uart_mode: str = "stable"
    settings: dict[str, str] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    tau: float | None = None
    brownout: float | None = None
    por: float | None = None
    garbage: bytes | None = None
    tick: float | None = None
    log_level: str = "INFO"
    start_timeout: float = 20.0
    process: subprocess.Popen | None = None
    supply_resource: str = ""
    uart_path: Path = Path()
    flash_path: Path = Path()
    lines: dict[str, str] = field(default_factory=dict)
    _own_workdir: bool = False

    @property
    def log_path(self) -> Path:
        return Path(self.workdir) / "bench.log"

    @property
    def firmware_log(self) -> Path:
        return Path(self.workdir) / "firmware.log"

    def argv(self) -> list[str]:
        argv = [sys.executable, "-m", "devices.sim", "--workdir", str(self.workdir), "--host", self.host,
                "--port", str(self.port), "--variant", self.variant, "--uart-mode", self.uart_mode,
                "--log-level", self.log_level]
        if self.firmware is not None:
            argv += ["--firmware", self.firmware]
        for key, value in self.settings.items():
            argv += ["--set", f"{key}={value}"]
        for key, value in self.env.items():
            argv += ["--env", f"{key}={value}"]
        for opt, value in (("--tau", self.tau), ("--brownout", self.brownout), ("--por", self.por),
                           ("--tick", self.tick)):
            if value is not None:
                argv += [opt, str(value)]
        if self.garbage is not None:
            argv += ["--garbage", self.garbage.hex()]
        return argv

    def start(self) -> "SimBench":
        if self.workdir is None:
            self.workdir = Path(tempfile.mkdtemp(prefix="simbench-"))
            self._own_workdir = True
        self.workdir = Path(self.workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(PACKAGE_ROOT), env.get("PYTHONPATH", "")) if p)
        with open(self.log_path, "ab") as err:
            # Own session: a Ctrl-C or SIGKILL aimed at the test process group
            # must not take the bench down before the teardown (or a watchdog)
            # has made the supply safe.
            self.process = subprocess.Popen(self.argv(), stdout=subprocess.PIPE, stderr=err,
                                            stdin=subprocess.DEVNULL, start_new_session=True,
                                            env=env, cwd=str(PACKAGE_ROOT))
        try:
            self._read_banner()
        except BaseException:
            self.stop()
            raise
        log.info("sim bench pid %d: %s, uart %s", self.process.pid, self.supply_resource, self.uart_path)
        return self

    def _read_banner(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        deadline = time.monotonic() + self.start_timeout
        buf = b""
        with selectors.DefaultSelector() as sel:
            sel.register(self.process.stdout, selectors.EVENT_READ)
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise SimBenchError(f"bench not ready after {self.start_timeout}s; log:\n{self._log_tail()}")
                if not sel.select(timeout=left):
                    continue
                chunk = os.read(self.process.stdout.fileno(), 4096)
                if not chunk:
                    raise SimBenchError(f"bench exited with status {self.process.wait()}; "
                                        f"log:\n{self._log_tail()}")
                buf += chunk
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    key, _, value = line.decode().strip().partition(" ")
                    if key == "ready":
                        self.supply_resource = self.lines["supply"]
                        self.uart_path = Path(self.lines["uart"])
                        self.flash_path = Path(self.lines["flash"])
                        return
                    self.lines[key] = value

    def _log_tail(self, n: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no log)"

    def stop(self, timeout: float = 10.0) -> int | None:
        """Terminate the bench and wait; it cleans up its firmware and link itself."""
        if self.process is None:
            return None
        proc, self.process = self.process, None
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                log.error("bench pid %d ignored SIGTERM; killing it", proc.pid)
                proc.kill()
                proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
        if self._own_workdir and self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
        return proc.returncode

    def __enter__(self) -> "SimBench":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
