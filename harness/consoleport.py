"""The console's serial port: opened by URL, read as fast as it delivers, watched for vanishing and coming back.

**The port vanishes.**  A board powered through its own USB connector
re-enumerates on every power cut: the tty disappears (reads fail with EIO,
``/dev/serial/by-id/...`` goes away) and a new one appears at power-up.  The
reader thread records a :class:`Gap` on the harness clock, polls until the
same URL opens again and carries on; the test does nothing.

A vanishing tty does not always make its reads fail, so after
``presence_check`` seconds of silence the reader also checks the path: gone,
or leading to another device than the one it holds, counts as vanished too.

Sending while the port is gone raises :class:`ConsoleGone`; the console may
first wait for the port to return (``send(..., wait=5)``).
"""

from __future__ import annotations

import errno
import logging
import os
import select
import stat
import threading
import time
from typing import Callable

import serial

from . import clock
from .consolerecords import ConsoleError, ConsoleGone, Gap
from .errors import HarnessError

try:  # POSIX only: the fast read path for local ttys
    from serial.serialposix import Serial as _PosixSerial
except ImportError:  # pragma: no cover - Windows
    _PosixSerial = None  # type: ignore[assignment,misc]

# One logger for the whole console, whichever part speaks.
log = logging.getLogger("harness.console")

_READ_SIZE = 65536


class _Vanished(Exception):
    """Internal: the port went away (read error, EOF, path gone)."""


def _local_path(url: str) -> bool:
    return "://" not in url


class ConsolePort:
    """One console's port and its presence: the handle, the gaps, the reader loop's I/O.

    ``cond`` is the console's lock: ``present``, ``opens``, ``gaps`` and
    ``closed`` are read and changed under it.  A lock of its own orders the
    port handle against writers.  The port tells the console through three
    callables: ``feed(data, stamp)`` for each chunk read (lock not held),
    ``interrupted()`` when the stream broke and ``event(stamp, message)`` to
    write a capture event (both with ``cond`` held).
    """

    def __init__(self, url: str, baudrate: int, *, name: str, reopen: bool, poll_interval: float,
                 presence_check: float, write_timeout: float, cond: threading.Condition,
                 feed: Callable[[bytes, clock.Stamp], None], interrupted: Callable[[], None],
                 event: Callable[[clock.Stamp, str], None], resolve: Callable[[], str] | None = None):
        self.url = url
        #: asked for the URL again before every reopen: a port served over the network (a labgrid
        #: exporter's ser2net) comes back on a new TCP port after the USB UART re-enumerates
        self.resolve = resolve
        self.baudrate = baudrate
        self.name = name
        self.reopen = reopen
        self.poll_interval = poll_interval
        self.presence_check = presence_check
        self.write_timeout = write_timeout
        self._cond = cond
        self._feed = feed
        self._interrupted = interrupted
        self._event = event
        self._lock = threading.Lock()               # port object vs. writers
        self._port: serial.SerialBase | None = None
        self._rdev: int | None = None
        self.present = False
        self.opens = 0
        self.gaps: list[Gap] = []
        #: set by the console when it closes: the port is not reopened any more
        self.closed = False

    def start(self) -> None:
        """Open the port now; if it is absent and ``reopen`` is on, begin inside a gap instead."""
        try:
            if self.resolve is not None:
                self.url = self.resolve()
            port = self._open()
        except ValueError as exc:
            raise ConsoleError(f"console {self.name}: cannot use URL {self.url!r}: {exc}") from None
        except (serial.SerialException, OSError, HarnessError) as exc:
            if not self.reopen:
                raise ConsoleError(f"console {self.name}: cannot open {self.url}: {exc}") from None
            st = clock.stamp()
            # INFO, not WARNING: on a board whose USB port exists only while
            # powered this is the normal start.
            log.info("console %s: port not present yet (%s); waiting for it", self.name, exc)
            with self._cond:
                self.gaps.append(Gap(st.mono, None, f"absent at open: {exc}"))
                self._event(st, f"absent at open, waiting for it: {exc}")
        else:
            self._attach(port, clock.stamp())

    def watch(self, stop: threading.Event) -> None:
        """The reader loop until ``stop``: hand over what arrives, notice the port vanish, poll for its return."""
        last_check = clock.now()
        while not stop.is_set():
            port = self._port
            if port is None:
                if not self.reopen:
                    break
                if not self._try_reopen():
                    # A local path costs one stat() per poll; a network URL
                    # costs a TCP connect, so poll it less eagerly.
                    local = self.resolve is None and _local_path(self.url)
                    stop.wait(self.poll_interval if local else max(self.poll_interval, 0.1))
                last_check = clock.now()
                continue
            try:
                data = self._read_chunk(port, self.poll_interval)
            except _Vanished as exc:
                if stop.is_set():
                    break
                self._vanished(str(exc))
                continue
            if data:
                self._feed(data, clock.stamp())
                continue
            now = clock.now()
            if now - last_check >= self.presence_check:
                last_check = now
                problem = self._path_problem()
                if problem is not None:
                    self._drain(port)
                    self._vanished(problem)

    def write(self, data: bytes, delay: float, before: Callable[[], None]) -> clock.Stamp:
        """Write ``data``, sleeping ``delay`` s after each byte if > 0; return the stamp taken before.

        ``before`` runs once the port is known present, before the first
        byte, so what it registers (an awaited echo) is in place before any
        answer can arrive.  Raises :class:`ConsoleGone` or, on a write
        timeout, :class:`ConsoleError`.
        """
        with self._lock:
            port = self._port
            if port is None or not self.present:
                raise ConsoleGone(f"console {self.name}: cannot send {data!r}: port {self.url} is not "
                                  f"present ({self.presence_text()})")
            st = clock.stamp()
            before()
            try:
                if delay > 0:
                    for i in range(len(data)):
                        port.write(data[i:i + 1])
                        port.flush()
                        time.sleep(delay)
                else:
                    port.write(data)
            except serial.SerialTimeoutException as exc:
                raise ConsoleError(f"console {self.name}: sending {data!r} timed out after "
                                   f"{self.write_timeout:.1f} s (device not reading?): {exc}") from None
            except (serial.SerialException, OSError) as exc:
                raise ConsoleGone(f"console {self.name}: sending {data!r} failed, port {self.url} "
                                  f"went away: {exc}") from None
        return st

    def detach(self) -> None:
        """Let go of the port handle (closing it; a vanished port may not close cleanly)."""
        with self._lock:
            port, self._port = self._port, None
            self.present = False
        if port is not None:
            try:
                port.close()
            except Exception as exc:  # a vanished port may fail to close cleanly
                log.debug("console %s: close after vanish: %s", self.name, exc)

    def presence_text(self) -> str:
        """Where the port stands, for an error message."""
        gaps = len(self.gaps)
        if self.present:
            return f"port present, opened {self.opens} time(s), {gaps} gap(s)"
        if self.closed:
            return "console closed"
        if self.gaps and self.gaps[-1].end is None:
            g = self.gaps[-1]
            return (f"port ABSENT for the last {clock.now() - g.start:.2f} s ({g.reason}); "
                    + ("polling for it to come back" if self.reopen else "reopen disabled"))
        return "port ABSENT"

    def _open(self) -> serial.SerialBase:
        """Open the URL without pyserial's input flush.

        pyserial empties the input buffer on open.  On a port that just
        re-appeared, that buffer holds the boot banner the device printed
        while we were polling, so the flush would lose exactly the lines a
        power-loss test needs.  Instance attributes shadow the methods open()
        calls for the duration of the open.
        """
        port = serial.serial_for_url(self.url, baudrate=self.baudrate, timeout=self.poll_interval,
                                     write_timeout=self.write_timeout, do_not_open=True)
        noop = lambda: None  # noqa: E731
        port._reset_input_buffer = noop  # type: ignore[attr-defined]
        port.reset_input_buffer = noop  # type: ignore[method-assign]
        try:
            try:
                port.open()
            except NotImplementedError:
                # rfc2217:// has no write timeout; a blocked write there is
                # bounded by the TCP connection instead.
                port.write_timeout = None
                port.open()
        finally:
            for attr in ("_reset_input_buffer", "reset_input_buffer"):
                port.__dict__.pop(attr, None)
        if not (_PosixSerial is not None and isinstance(port, _PosixSerial)) and hasattr(port, "fileno"):
            try:
                port.fileno()
                port.timeout = 0        # select() waits, read() just drains
            except Exception:
                pass
        return port

    def _attach(self, port: serial.SerialBase, st: clock.Stamp) -> None:
        rdev = None
        if _local_path(self.url) and getattr(port, "fd", None) is not None:
            try:
                rdev = os.fstat(port.fd).st_rdev  # type: ignore[attr-defined]
            except OSError:
                rdev = None
        with self._lock:
            self._port = port
            self._rdev = rdev
        with self._cond:
            self.present = True
            self.opens += 1
            if self.gaps and self.gaps[-1].end is None:
                gap = self.gaps[-1]
                gap.end = st.mono
                self._event(st, f"reopened {self.url} after {gap.end - gap.start:.3f} s")
                log.info("console %s: port back after %.3f s", self.name, gap.end - gap.start)
            else:
                self._event(st, f"opened {self.url} at {self.baudrate} baud")
                log.info("console %s: opened", self.name)
            self._cond.notify_all()

    def _vanished(self, reason: str) -> None:
        st = clock.stamp()
        self.detach()
        with self._cond:
            self._interrupted()
            self.gaps.append(Gap(st.mono, None, reason))
            self._event(st, f"vanished: {reason}")
            self._cond.notify_all()
        log.warning("console %s: port vanished (%s)%s", self.name, reason,
                    "; polling for it" if self.reopen else "; reopen disabled")

    def _try_reopen(self) -> bool:
        if self.resolve is not None:
            try:
                url = self.resolve()
            except Exception as exc:  # noqa: BLE001 - not served yet (the exporter has not seen it come back)
                log.debug("console %s: not served yet: %s", self.name, exc)
                return False
            if url != self.url:
                log.info("console %s: now served at %s (was %s)", self.name, url, self.url)
                self.url = url
        if _local_path(self.url) and not os.path.exists(self.url):
            return False
        try:
            port = self._open()
        except (serial.SerialException, OSError, ValueError) as exc:
            log.debug("console %s: reopen failed: %s", self.name, exc)
            return False
        self._attach(port, clock.stamp())
        return True

    def _path_problem(self) -> str | None:
        """Why the path no longer leads to the tty we hold, if it does not."""
        if self._rdev is None:
            return None
        try:
            st = os.stat(self.url)
        except FileNotFoundError:
            return f"{self.url} disappeared"
        except OSError as exc:
            return f"{self.url}: {exc}"
        if stat.S_ISCHR(st.st_mode) and st.st_rdev != self._rdev:
            return f"{self.url} now leads to another device"
        return None

    def _read_chunk(self, port: serial.SerialBase, wait: float) -> bytes:
        """Return what arrives within ``wait`` seconds (b"" if nothing); raise _Vanished."""
        if _PosixSerial is not None and isinstance(port, _PosixSerial):
            # Straight to the fd: pyserial's read(n) waits for n bytes, and
            # read(in_waiting) needs an ioctl plus a first 1-byte read.  One
            # select + one read gives the chunk the moment it lands.
            fd = port.fd
            try:
                ready, _, _ = select.select([fd], [], [], wait)
                if not ready:
                    return b""
                data = os.read(fd, _READ_SIZE)
            except BlockingIOError:
                return b""
            except InterruptedError:
                return b""
            except OSError as exc:
                if exc.errno in (errno.EAGAIN, errno.EINTR):
                    return b""
                raise _Vanished(f"read failed: {exc}") from None
            if not data:
                raise _Vanished("end of file (device disconnected)")
            return data
        try:
            if port.timeout == 0:
                ready, _, _ = select.select([port.fileno()], [], [], wait)
                if not ready:
                    return b""
                data = port.read(_READ_SIZE)
                if not data:
                    raise _Vanished("end of stream")
                return data
            return port.read(max(1, min(port.in_waiting, _READ_SIZE)))
        except (serial.SerialException, OSError, ValueError) as exc:
            raise _Vanished(f"read failed: {exc}") from None

    def _drain(self, port: serial.SerialBase) -> None:
        """Read what is left before giving up a port whose path went away."""
        try:
            while True:
                data = self._read_chunk(port, 0.0)
                if not data:
                    return
                self._feed(data, clock.stamp())
        except _Vanished:
            return
