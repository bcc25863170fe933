"""Helpers for the C firmware's tests: build or fail, run the binary on a pty, read its flash.

The firmware is driven exactly as the simulated bench drives it (stdin and
stdout on a pseudo-terminal master, a pipe for the state words, SIGKILL for
a power loss), but without the bench, so a test can cut power at any
moment it likes and read the flash file in between.
"""

from __future__ import annotations

import os
import re
import select
import signal
import struct
import subprocess
import threading
import time
import tty
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from devices.cfirmware import build as fwbuild

ROOT = Path(__file__).resolve().parents[2]
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
PROMPT = "uart:~$ "

# The record format (devices/cfirmware/src/store.h), read independently here.
PAGE = 256
SLOT = 32 * PAGE
HEADER = 96


def firmware(stack: str, variant: str) -> Path:
    """The binary, or a test failure that says what to install (never a skip)."""
    try:
        return fwbuild.build(stack, variant)
    except fwbuild.BuildError as exc:
        pytest.fail(f"cannot build the C firmware ({stack}, {variant}): {exc}", pytrace=False)


@dataclass
class Slot:
    name: str
    status: str           # empty | valid | bad-crc | bad-header
    seq: int = 0
    length: int = 0
    stack: int = 0
    tls_version: int = 0
    server_name: str = ""
    payload: bytes = b""


def read_slots(flash: Path) -> list[Slot]:
    """Judge both slots of a flash image with the format spec, not the firmware's code."""
    data = flash.read_bytes() if flash.exists() else b""
    data = data + b"\xff" * max(0, 2 * SLOT - len(data))
    out = []
    for i, name in enumerate("AB"):
        raw = data[i * SLOT:(i + 1) * SLOT]
        h = raw[:HEADER]
        if h == b"\xff" * HEADER:
            out.append(Slot(name, "empty"))
            continue
        magic, fmt, stack, tlsver, _flags, seq, length = struct.unpack_from("<4sBBBBII", h)
        crc = struct.unpack_from("<I", h, 92)[0]
        if magic != b"TLSR" or fmt != 1 or not 0 < length <= SLOT - HEADER:
            out.append(Slot(name, "bad-header", seq, length))
            continue
        payload = raw[HEADER:HEADER + length]
        sname = h[28:92].split(b"\0", 1)[0].decode("utf-8", "replace")
        ok = zlib.crc32(h[:92] + payload) == crc
        out.append(Slot(name, "valid" if ok else "bad-crc", seq, length, stack, tlsver, sname, payload))
    return out


def newest_valid(slots: list[Slot]) -> Slot | None:
    valid = [s for s in slots if s.status == "valid"]
    return max(valid, key=lambda s: s.seq) if valid else None


def rewrite_record(flash: Path, slot: int, payload: bytes | None = None, crc_ok: bool = True) -> None:
    """Replace a slot's payload (same header fields), with a correct CRC unless told otherwise."""
    data = bytearray(flash.read_bytes())
    base = slot * SLOT
    h = bytearray(data[base:base + HEADER])
    if payload is None:
        length = struct.unpack_from("<I", h, 12)[0]
        payload = bytes(data[base + HEADER:base + HEADER + length])
    struct.pack_into("<I", h, 12, len(payload))
    crc = zlib.crc32(bytes(h[:92]) + payload) ^ (0 if crc_ok else 1)
    struct.pack_into("<I", h, 92, crc)
    data[base:base + SLOT] = b"\xff" * SLOT
    data[base:base + HEADER] = h
    data[base + HEADER:base + HEADER + len(payload)] = payload
    flash.write_bytes(bytes(data))


@dataclass
class Line:
    mono: float
    text: str


@dataclass
class Fw:
    """One power-on of the firmware: started on construction, :meth:`cut` is the power loss."""

    binary: Path
    flash: Path
    ca: Path | str
    page_ms: int = 15
    app: str = "mqtt"
    reset_cause: str = "power-on"
    extra: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)   # added to this process's environment
    lines: list[Line] = field(default_factory=list)
    states: list[str] = field(default_factory=list)
    raw: bytearray = field(default_factory=bytearray)

    def __post_init__(self) -> None:
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)
        state_r, state_w = os.pipe()
        self._state_r = state_r
        self.errlog = self.flash.with_suffix(".stderr")
        with open(self.errlog, "ab") as err:
            self.proc = subprocess.Popen(
                [str(self.binary), "--flash", str(self.flash), "--reset-cause", self.reset_cause,
                 "--state-fd", str(state_w), "--ca", str(self.ca), "--page-ms", str(self.page_ms),
                 "--app", self.app, *self.extra],
                stdin=self.master, stdout=self.master, stderr=err, pass_fds=(state_w,), start_new_session=True,
                env={**os.environ, **self.env})
        os.close(state_w)
        self._cursor = 0
        self._partial = ""
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    # -- output ------------------------------------------------------------
    def _read(self) -> None:
        while not self._stop.is_set():
            r, _, _ = select.select([self.slave, self._state_r], [], [], 0.05)
            if self._state_r in r:
                try:
                    data = os.read(self._state_r, 4096)
                except OSError:
                    data = b""
                self.states.extend(data.decode().split())
            if self.slave in r:
                try:
                    data = os.read(self.slave, 4096)
                except OSError:
                    return
                now = time.monotonic()
                with self._lock:
                    self.raw += data
                    text = self._partial + data.decode("utf-8", "replace")
                    parts = re.split(r"\r\n|\n|\r", text)
                    self._partial = parts.pop()
                    for p in parts:
                        clean = ANSI.sub("", p)
                        while clean.startswith(PROMPT):
                            clean = clean[len(PROMPT):]
                        self.lines.append(Line(now, clean))

    def expect(self, pattern: str, timeout: float = 10.0) -> re.Match:
        """The next line (after the last match) matching ``pattern``."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                for i in range(self._cursor, len(self.lines)):
                    m = rx.search(self.lines[i].text)
                    if m:
                        self._cursor = i + 1
                        self.last = self.lines[i]
                        return m
            if time.monotonic() > deadline:
                raise AssertionError(f"no line matching {pattern!r} within {timeout} s; output:\n" + self.text())
            if self.proc.poll() is not None and not self._reader.is_alive():
                raise AssertionError(f"firmware exited ({self.proc.returncode}); output:\n" + self.text())
            time.sleep(0.01)

    def text(self) -> str:
        with self._lock:
            return "\n".join(ln.text for ln in self.lines) + ("\n" + self._partial if self._partial else "")

    def since_mark(self) -> str:
        with self._lock:
            return "\n".join(ln.text for ln in self.lines[self._cursor:])

    # -- input -------------------------------------------------------------
    def send(self, line: str) -> None:
        os.write(self.slave, line.encode() + b"\r\n")

    def boot(self, timeout: float = 10.0) -> str:
        """Wait for the ready line; the boot log as text."""
        self.expect(r"<inf> main: ready$", timeout)
        return self.text()

    def connect(self, port: int, version: str = "1.2", sni: str = "server.test", timeout: float = 40.0) -> re.Match:
        self.send(f"tls connect 127.0.0.1 {port} {version} {sni}")
        return self.expect(r"<inf> tls: connected (\S+) (\S+) resumed=(yes|no)$|<err> tls: connect failed: (.*)",
                           timeout)

    # -- power -------------------------------------------------------------
    def cut(self) -> None:
        """Power loss: SIGKILL, nothing flushed."""
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait()
        self.close()

    def close(self) -> None:
        self._stop.set()
        self._reader.join(2)
        for fd in (self.master, self.slave, self._state_r):
            try:
                os.close(fd)
            except OSError:
                pass

    def __enter__(self) -> "Fw":
        return self

    def __exit__(self, *exc: object) -> None:
        self.cut()
