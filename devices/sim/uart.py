"""The simulated UART: a pseudo-terminal behind a stable symlink.

The harness opens the *slave* side (``<workdir>/uart`` -> ``/dev/pts/N``)
with pyserial exactly like a USB-serial adapter; the firmware gets the
*master* side as stdin/stdout.  Why each detail:

* The slave is put in raw mode at creation: with the default cooked mode
  the line discipline would echo the firmware's own output back into its
  input and turn ``\\n`` into ``\\r\\n`` before anyone opened the port.
* The bench keeps the slave open itself, so the firmware's reads do not
  fail with EIO whenever the harness closes and reopens the port.
* Bytes sent to an unpowered device are lost (:meth:`discard_input`), as
  on a real UART, instead of being delivered at the next boot.
* Power-up glitches: a few garbage bytes before the banner.
* ``vanish`` mode models native USB CDC: while unpowered the node and the
  symlink disappear (open handles see a hang-up), and power-up creates a
  new node behind the same symlink.
* ``wait_host`` (``--uart-mode cdc-wait``) adds what CDC-ACM firmware often
  does: it prints nothing until the host opens the port (Zephyr's CDC ACM
  samples wait for DTR, Arduino sketches for ``while (!Serial)``).  The
  bench then holds no slave handle of its own until a host opens the port,
  so the master sees a hang-up (POLLHUP) until then: that is how it knows.
"""

from __future__ import annotations

import logging
import os
import select
import time
import tty
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

GARBAGE = b"\xff\x00\xf8\x80\xfe"


@dataclass
class Uart:
    link: Path
    vanish: bool = False
    #: hold the firmware until a host opens the port (see the module docstring)
    wait_host: bool = False
    garbage: bytes = GARBAGE
    master: int | None = None
    slave: int | None = None
    node: str | None = None
    #: a fault made the port vanish (a USB hub dropping out): it comes back at the first power-up after this
    gone_until: float = 0.0
    null: int | None = None

    def open(self) -> None:
        """Create a pty and point the stable link at it (atomically)."""
        if self.master is not None or time.monotonic() < self.gone_until:
            return
        master, slave = os.openpty()
        tty.setraw(slave)
        os.set_blocking(master, True)
        self.master, self.slave, self.node = master, slave, os.ttyname(slave)
        tmp = self.link.with_name(self.link.name + ".new")
        try:
            tmp.unlink()
        except FileNotFoundError:
            pass
        os.symlink(self.node, tmp)
        os.replace(tmp, self.link)
        log.info("uart: %s -> %s", self.link, self.node)
        if self.wait_host:
            os.close(slave)         # until a host opens it, nobody has the slave open: the master sees POLLHUP
            self.slave = None

    def host_open(self) -> bool:
        """Whether a host has the port open now (``wait_host``); keeps a handle of the bench's own from then on.

        The bench's own handle keeps the firmware's reads from failing with EIO
        while the host closes and reopens the port (ser2net does, per client).
        """
        if self.master is None:
            return False
        if self.slave is not None:
            return True
        poller = select.poll()
        poller.register(self.master, select.POLLHUP)
        if any(ev & select.POLLHUP for _, ev in poller.poll(0)):
            return False
        try:
            self.slave = os.open(self.node or "", os.O_RDWR | os.O_NOCTTY)
        except OSError as exc:
            log.warning("uart: cannot keep %s open: %s", self.node, exc)
            return False
        log.info("uart: a host opened %s", self.node)
        return True

    def close(self) -> None:
        """Remove the link and the pty: open slave handles see a hang-up."""
        try:
            if self.link.is_symlink() and os.readlink(self.link) == self.node:
                self.link.unlink()
        except OSError:
            pass
        for fd in (self.master, self.slave, self.null):
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass
        if self.node:
            log.info("uart: %s closed", self.node)
        self.master = self.slave = self.node = self.null = None

    def say(self, text: str) -> None:
        """A line from the bench itself on the device's UART (a crash report, as a fault handler prints)."""
        if self.master is None:
            return
        try:
            os.write(self.master, f"\r\n{text}\r\n".encode())
        except OSError as exc:
            log.warning("uart: cannot write %r: %s", text, exc)

    def power_up(self) -> int:
        """Called before the firmware starts; returns the master fd for it.

        Once the port is gone the firmware still runs, writing into
        /dev/null: the device is fine, nobody can hear it.
        """
        if self.master is None:
            self.open()
        if self.master is None:
            if self.null is None:
                self.null = os.open(os.devnull, os.O_RDWR)
            return self.null
        self.discard_input()
        if self.garbage:
            try:
                os.write(self.master, self.garbage)
            except OSError as exc:
                log.warning("uart: cannot write power-up garbage: %s", exc)
        return self.master

    def power_down(self) -> None:
        if self.vanish:
            self.close()

    def discard_input(self) -> int:
        """Drop whatever the harness sent while nothing was listening."""
        if self.master is None:
            return 0
        dropped = 0
        os.set_blocking(self.master, False)
        try:
            while True:
                try:
                    data = os.read(self.master, 4096)
                except (BlockingIOError, OSError):
                    break
                if not data:
                    break
                dropped += len(data)
        finally:
            os.set_blocking(self.master, True)
        if dropped:
            log.info("uart: %d bytes sent to the unpowered device were lost", dropped)
        return dropped
