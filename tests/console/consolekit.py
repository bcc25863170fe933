"""Stand-ins for a device's UART: real pseudo-terminals and a real TCP server.

No mocks: the console under test opens a /dev/pts node (through a symlink,
like /dev/serial/by-id) or a socket:// URL exactly as it would a USB adapter
or a ser2net port.  The test plays the device by writing to the pty master
(or the accepted socket).
"""

from __future__ import annotations

import os
import select
import socket
import threading
import time
import tty
from pathlib import Path
from typing import Callable


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def wait_until(pred: Callable[[], bool], timeout: float = 5.0, what: str = "condition") -> None:
    """Poll a condition; the tests synchronise on state, never on sleeps."""
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.005)


class PtyDevice:
    """A fake device behind a stable symlink; ``vanish``/``appear`` model USB re-enumeration."""

    def __init__(self, link: Path):
        self.link = link
        self.master: int | None = None
        self.slave: int | None = None
        self.node: str | None = None
        self.appear()

    def appear(self) -> None:
        assert self.master is None
        master, slave = os.openpty()
        tty.setraw(slave)  # cooked mode would echo and translate before the console opens it
        self.master, self.slave, self.node = master, slave, os.ttyname(slave)
        tmp = self.link.with_name(self.link.name + ".new")
        if os.path.lexists(tmp):
            os.unlink(tmp)
        os.symlink(self.node, tmp)
        os.replace(tmp, self.link)

    def vanish(self) -> None:
        """Close the pty (open slave handles see a hang-up) and remove the symlink."""
        if os.path.lexists(self.link):
            os.unlink(self.link)
        for fd in (self.master, self.slave):
            if fd is not None:
                os.close(fd)
        self.master = self.slave = self.node = None

    def write(self, data: bytes) -> None:
        assert self.master is not None, "device is not present"
        write_all(self.master, data)

    def read(self, n: int, timeout: float = 5.0) -> bytes:
        """Read exactly ``n`` bytes the console sent (or fail)."""
        assert self.master is not None
        out = b""
        deadline = time.monotonic() + timeout
        while len(out) < n:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"device received only {out!r}, expected {n} bytes")
            r, _, _ = select.select([self.master], [], [], left)
            if r:
                out += os.read(self.master, n - len(out))
        return out

    def close(self) -> None:
        if self.master is not None:
            self.vanish()


class TcpDevice:
    """A ser2net-like TCP port: one client at a time; ``drop`` models a lost link."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.server.settimeout(0.05)  # close() does not wake a blocked accept(); polling does
        self.port = self.server.getsockname()[1]
        self.url = f"socket://127.0.0.1:{self.port}"
        self.conn: socket.socket | None = None
        self._accepted = threading.Event()
        self._closed = False
        self._thread = threading.Thread(target=self._accept_loop, daemon=True)
        self._thread.start()

    def _accept_loop(self) -> None:
        while not self._closed:
            try:
                conn, _ = self.server.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            conn.settimeout(None)
            if self._closed:
                conn.close()
                return
            self.conn = conn
            self._accepted.set()

    def wait_client(self, timeout: float = 5.0) -> None:
        assert self._accepted.wait(timeout), "console did not connect"

    def write(self, data: bytes) -> None:
        self.wait_client()
        assert self.conn is not None
        self.conn.sendall(data)

    def read(self, n: int, timeout: float = 5.0) -> bytes:
        self.wait_client()
        assert self.conn is not None
        self.conn.settimeout(timeout)
        out = b""
        while len(out) < n:
            chunk = self.conn.recv(n - len(out))
            if not chunk:
                break
            out += chunk
        return out

    def drop(self) -> None:
        self._accepted.clear()
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def close(self) -> None:
        self._closed = True
        self.drop()
        self.server.close()
        self._thread.join(timeout=2)


class Rfc2217Bridge:
    """An RFC 2217 server (like ser2net or a terminal server) in front of a PtyDevice.

    Built on pyserial's own ``rfc2217.PortManager``.  One client; ``drop``
    closes its connection (the remote bench's link went away).
    """

    def __init__(self, device_path: str):
        import serial
        import serial.rfc2217

        self._serial_mod = serial
        self._rfc = serial.rfc2217
        self.device_path = device_path
        self.server = socket.create_server(("127.0.0.1", 0))
        self.server.settimeout(0.05)
        self.url = f"rfc2217://127.0.0.1:{self.server.getsockname()[1]}"
        self._closed = False
        self.conn: socket.socket | None = None
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._closed:
            try:
                conn, _ = self.server.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            conn.settimeout(None)
            self.conn = conn
            self._session(conn)

    def _session(self, conn: socket.socket) -> None:
        class PtySerial(self._serial_mod.Serial):  # type: ignore[name-defined,misc]
            """A pty has no modem lines: answer what a 3-wire adapter would."""

            cts = dsr = cd = property(lambda self: True)
            ri = property(lambda self: False)

            def _update_dtr_state(self) -> None:
                pass

            def _update_rts_state(self) -> None:
                pass

            def _update_break_state(self) -> None:
                pass

        port = PtySerial(self.device_path, timeout=0.05)
        lock = threading.Lock()

        class Conn:
            def write(self, data: bytes) -> None:
                with lock:
                    conn.sendall(data)

        manager = self._rfc.PortManager(port, Conn())
        alive = [True]

        def serial_to_net() -> None:
            while alive[0]:
                try:
                    data = port.read(port.in_waiting or 1)
                    if data:
                        Conn().write(b"".join(manager.escape(data)))
                except Exception:
                    alive[0] = False
                    return

        pump = threading.Thread(target=serial_to_net, daemon=True)
        pump.start()
        try:
            while alive[0] and not self._closed:
                try:
                    data = conn.recv(1024)
                except OSError:
                    break
                if not data:
                    break
                port.write(b"".join(manager.filter(data)))
        finally:
            alive[0] = False
            pump.join(timeout=2)
            port.close()
            try:
                conn.close()
            except OSError:
                pass

    def drop(self) -> None:
        if self.conn is not None:
            try:
                self.conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def close(self) -> None:
        self._closed = True
        self.drop()
        self.server.close()
        self._thread.join(timeout=3)
