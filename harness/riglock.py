"""One run per rig: an OS-level lock on each thing a rig drives, held for the whole run.

Why a lock of its own: on a lab PC two people (or a nightly job and a
person) start pytest on the same device file, and both would drive the same
supply and console.  The lock is ``flock(2)`` on a file per key, so the
kernel drops it the moment its holder dies, SIGKILL included: a killed run
never leaves a stale lock to clean up by hand, and no pid file can lie.
The file also carries who holds it (pid, user, host, command, since when),
which the run that is refused or waits prints.

A rig's keys (:func:`harness.rigs.lock_keys`) name what it drives: the
device file's instance for a bench the harness starts, and the supply's
VISA resource, the console's URL and the labgrid place for fixed ones, so
two device files naming one supply also exclude each other.
"""

from __future__ import annotations

import errno
import fcntl
import getpass
import hashlib
import json
import logging
import os
import re
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from .errors import BenchStartError, RigBusy

log = logging.getLogger(__name__)

#: environment variable naming the lock folder; every run on one machine must agree on it
LOCK_DIR_ENV = "TLS_HIL_LOCK_DIR"


def default_lock_dir() -> Path:
    """Shared by every user of the machine: /tmp is on every Linux lab PC (and survives no reboot, as wanted)."""
    return Path(os.environ.get(LOCK_DIR_ENV) or "/tmp/tls-hil-locks")


def _file_name(key: str) -> str:
    readable = re.sub(r"[^A-Za-z0-9._-]+", "_", key).strip("_")[-80:]
    return f"{readable}-{hashlib.sha256(key.encode()).hexdigest()[:12]}.lock"


@dataclass
class Holder:
    """Who holds a lock, as its holder wrote it."""

    pid: int | None
    user: str
    host: str
    since: str
    command: str
    rig: str

    def text(self) -> str:
        who = f"pid {self.pid}" if self.pid else "an unknown process"
        return f"{who} ({self.user}@{self.host}, since {self.since}): {self.command}"


def read_holder(path: Path) -> Holder | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return Holder(pid=data.get("pid"), user=str(data.get("user", "?")), host=str(data.get("host", "?")),
                      since=str(data.get("since", "?")), command=str(data.get("command", "?")),
                      rig=str(data.get("rig", "?")))
    except (OSError, ValueError, AttributeError):
        return None


class RigLock:
    """The locks of one rig: all of them or none, released when closed or when the process dies.

    ``wait``: seconds to wait for a rig another run holds (0: refuse at
    once; ``float('inf')``: wait as long as it takes).  Keys are taken in
    sorted order, so two runs wanting overlapping rigs cannot deadlock.
    """

    def __init__(self, rig: str, keys: Sequence[str], lock_dir: Path | None = None, *, wait: float = 0.0,
                 poll: float = 0.2, on_wait: Callable[[str], None] | None = None, command: str | None = None):
        self.rig = rig
        #: what the holder text says the run is (an xdist worker's own argv says nothing useful)
        self.command = command
        self.keys = sorted(set(keys))
        self.lock_dir = Path(lock_dir) if lock_dir is not None else default_lock_dir()
        self.wait = wait
        self.poll = poll
        self.on_wait = on_wait
        self._held: list[tuple[str, int]] = []

    @property
    def held(self) -> bool:
        return bool(self._held)

    def __enter__(self) -> "RigLock":
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def path_of(self, key: str) -> Path:
        return self.lock_dir / _file_name(key)

    def acquire(self) -> None:
        """Take every key or raise :class:`RigBusy` naming the holder; nothing is kept on failure."""
        self._make_dir()
        deadline = time.monotonic() + self.wait
        told = False
        try:
            for key in self.keys:
                fd = self._open(key)
                try:
                    told = self._take(key, fd, deadline, told)
                except BaseException:
                    os.close(fd)            # Ctrl-C while waiting included
                    raise
                self._held.append((key, fd))
                self._write_holder(fd)
        except BaseException:
            self.release()
            raise

    def _take(self, key: str, fd: int, deadline: float, told: bool) -> bool:
        """flock ``fd``, waiting until ``deadline``; raise :class:`RigBusy` naming the holder.  Returns ``told``."""
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return told
            except OSError as exc:
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise BenchStartError(f"rig {self.rig}: cannot lock {self.path_of(key)}: {exc}") from None
            holder = read_holder(self.path_of(key))
            said = holder.text() if holder else "another process (no holder recorded)"
            if time.monotonic() >= deadline:
                hint = "" if self.wait else "; wait for it with --rig-wait SECONDS"
                raise RigBusy(f"rig {self.rig} is in use ({key}) by {said}{hint}")
            if not told:
                told = True
                message = f"rig {self.rig}: waiting for {key}, held by {said}"
                log.warning("%s", message)
                if self.on_wait is not None:
                    self.on_wait(message)
            time.sleep(self.poll)

    def release(self) -> None:
        """Let go of every key (the holder text stays: it is overwritten by the next holder)."""
        while self._held:
            _, fd = self._held.pop()
            try:
                fcntl.flock(fd, fcntl.LOCK_UN)
            finally:
                os.close(fd)

    def _make_dir(self) -> None:
        try:
            self.lock_dir.mkdir(parents=True, exist_ok=True)
            # Every user of the lab PC locks here.  World-writable without the sticky bit: with
            # fs.protected_regular (systemd's default) an O_CREAT open of another user's file in a sticky
            # folder fails, even when the file is there to be shared.
            if self.lock_dir.stat().st_uid == os.getuid():
                os.chmod(self.lock_dir, 0o777)
        except OSError as exc:
            raise BenchStartError(f"rig {self.rig}: cannot use the lock folder {self.lock_dir}: {exc} "
                                  f"(set {LOCK_DIR_ENV} or --lock-dir)") from None

    def _open(self, key: str) -> int:
        """Open the key's lock file, creating it only if it is not there (never O_CREAT on another's file)."""
        path = self.path_of(key)
        for _ in range(3):
            try:
                return os.open(path, os.O_RDWR | os.O_CLOEXEC)
            except FileNotFoundError:
                pass
            except OSError as exc:
                raise BenchStartError(f"rig {self.rig}: cannot open the lock {path}: {exc}") from None
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
            except FileExistsError:
                continue                    # another run created it meanwhile: open theirs
            except OSError as exc:
                raise BenchStartError(f"rig {self.rig}: cannot create the lock {path}: {exc}") from None
            try:
                os.fchmod(fd, 0o666)        # the next holder may be another user
            except OSError:
                pass
            return fd
        raise BenchStartError(f"rig {self.rig}: the lock {path} keeps appearing and vanishing")

    def _write_holder(self, fd: int) -> None:
        try:
            user = getpass.getuser()
        except (KeyError, OSError):
            user = str(os.getuid())
        data = {"pid": os.getpid(), "user": user, "host": socket.gethostname(), "rig": self.rig,
                "since": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
                "command": (self.command or " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]))[:300]}
        blob = json.dumps(data).encode("utf-8")
        os.ftruncate(fd, 0)
        os.pwrite(fd, blob, 0)
