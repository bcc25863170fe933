"""What the firmware speaks after the TLS handshake: line, none, http, mqtt, greeting.

Why several: real devices do not send "simfw hello"; they publish over MQTT,
poll an HTTP endpoint, just keep the TLS session, or wait for a server
banner.  The harness must judge the *handshake* whatever follows it, so the
emulated firmware can speak each of these against the reference server
(which speaks the same ones).

Every protocol reads application data at least once after the handshake:
that is when tlslite processes the TLS 1.3 NewSessionTicket messages the
server sent, so the session stored afterwards is the same in every mode.

:class:`TlsPipe` drives a tlslite connection on a non-blocking socket with
``select`` and deadlines, keeping an unfinished read pending instead of
abandoning it mid-record; that is what lets a connection be *held* open
(:class:`LiveConnection`) while the shell's main loop stays responsive.
"""

from __future__ import annotations

import logging
import select
import socket
import struct
import time
from dataclasses import dataclass, field
from typing import Callable, Generator, Protocol

from tlslite import TLSConnection
from tlslite.errors import TLSAbruptCloseError, TLSError

log = logging.getLogger(__name__)

APPS = ("line", "none", "http", "mqtt", "greeting")
APP_LINE = b"simfw hello\n"
NONE_WAIT_S = 0.3       # "none": how long to wait for post-handshake messages (tickets)
DRAIN_GRACE_S = 1.0     # "line": how long a silent server may keep the connection after the echo
MQTT_TOPIC = "simfw/state"
MQTT_PAYLOAD = b"online"
MQTT_KEEPALIVE_S = 60


class AppFailed(Exception):
    """The exchange after the handshake failed; ``reason`` is the console text."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class TlsPipe:
    """Application data over an established tlslite connection, with deadlines.

    The socket is switched to non-blocking mode and tlslite's ``*Async``
    generators are driven with ``select``.  A read that times out stays
    pending (a record may be half received); the next :meth:`read` resumes
    it, so no byte is ever lost and the record layer never desynchronises.
    """

    def __init__(self, conn: TLSConnection, sock: socket.socket):
        self.conn = conn
        self.sock = sock
        self.sent = 0
        self.received = 0
        self._reader: Generator | None = None
        self._peer_closed = False
        sock.setblocking(False)

    @property
    def closed(self) -> bool:
        """The peer closed (close_notify or EOF), or we did."""
        return self._peer_closed or bool(self.conn.closed)

    def fileno(self) -> int:
        return -1 if self.closed else self.sock.fileno()

    def _wait(self, want: int, deadline: float) -> bool:
        """Wait until the socket is readable (want 0) or writable (want 1); False on deadline."""
        left = deadline - time.monotonic()
        if left <= 0 or self.closed:
            return False
        fd = self.sock.fileno()
        if fd < 0:
            return False
        r, w, _ = select.select([fd] if want == 0 else [], [fd] if want == 1 else [], [], left)
        return bool(r or w)

    def write(self, data: bytes, timeout: float) -> None:
        """Send all of ``data`` as application data; TimeoutError if the peer does not take it."""
        deadline = time.monotonic() + timeout
        for result in self.conn.writeAsync(data):
            if result in (0, 1) and not self._wait(result, deadline):
                raise TimeoutError("timed out")
        self.sent += len(data)

    def read(self, timeout: float) -> bytes | None:
        """Up to 4096 bytes of application data; ``b""`` once the peer closed;
        None when nothing complete arrived within ``timeout`` (the read stays pending).

        Post-handshake messages (TLS 1.3 tickets) are processed on the way.
        """
        if self.closed:
            return b""
        deadline = time.monotonic() + timeout
        if self._reader is None:
            self._reader = self.conn.readAsync(max=4096, min=1)
        while True:
            try:
                result = next(self._reader)
            except StopIteration:
                self._reader = None
                return b""
            except TLSAbruptCloseError:
                # Many servers (and Python's ssl.SSLSocket.close) close TCP
                # without close_notify: for a client that only reads, that is
                # the end of the conversation, not an error.
                self._reader, self._peer_closed = None, True
                return b""
            except BaseException:
                self._reader = None
                raise
            if result in (0, 1):
                if not self._wait(result, deadline):
                    return None
                continue
            self._reader = None
            data = bytes(result)
            if not data:
                self._peer_closed = True
            self.received += len(data)
            return data

    def read_until(self, done: Callable[[bytes], bool], timeout: float) -> bytes:
        """Read until ``done(data)`` or the peer closes; TimeoutError after ``timeout``."""
        deadline = time.monotonic() + timeout
        data = b""
        while not done(data):
            chunk = self.read(max(0.0, deadline - time.monotonic()))
            if chunk is None:
                raise TimeoutError("timed out")
            if not chunk:
                break
            data += chunk
        return data

    def wait(self, timeout: float) -> bytes:
        """Whatever arrives within ``timeout``: returns at the first data, at close, or at the deadline."""
        chunk = self.read(timeout)
        return chunk or b""

    def drain_until_close(self, grace: float) -> None:
        """Read on until the server closes, so TLS 1.3 tickets sent late still arrive.

        The reference server closes after the exchange, so this costs
        nothing; a server that keeps the connection open costs ``grace``
        seconds of silence at most.
        """
        try:
            while True:
                chunk = self.read(grace)
                if not chunk:
                    return
        except (TLSError, OSError):
            pass

    def close(self) -> None:
        """Send close_notify (if the connection still stands) and close the socket."""
        self._reader = None
        try:
            if not self.conn.closed:
                deadline = time.monotonic() + 1.0
                for result in self.conn.closeAsync():
                    if result in (0, 1) and not self._wait(result, deadline):
                        break
        except Exception:  # noqa: BLE001 - a dead socket must not fail a finished connection
            pass
        finally:
            self.sock.close()


@dataclass
class AppResult:
    """The outcome of one exchange: what the console says and the byte counts."""

    summary: str
    sent: int
    received: int


class AppClient(Protocol):
    """One application protocol, spoken once per connection."""

    name: str

    def exchange(self, pipe: TlsPipe, server_name: str, hold: bool) -> AppResult:
        """Talk after the handshake; with ``hold`` leave the connection usable."""

    def goodbye(self, pipe: TlsPipe) -> None:
        """Say goodbye on a held connection before it is closed (e.g. MQTT DISCONNECT)."""


class _NoGoodbye:
    """For protocols with nothing to say before a held connection is closed."""

    def goodbye(self, pipe: TlsPipe) -> None:
        pass


def _sent_received(pipe: TlsPipe) -> str:
    return f"sent {pipe.sent} bytes, received {pipe.received} bytes"


def _printable(data: bytes, limit: int = 60) -> str:
    text = data.decode("utf-8", "replace").strip()
    return "".join(ch if ch.isprintable() else "?" for ch in text)[:limit]


@dataclass
class LineClient(_NoGoodbye):
    """The emulated firmware's own protocol: one line out, read the echo, wait for the close."""

    timeout: float = 10.0
    name: str = "line"

    def exchange(self, pipe: TlsPipe, server_name: str, hold: bool) -> AppResult:
        received = b""
        try:
            pipe.write(APP_LINE, self.timeout)
            received = pipe.read_until(lambda d: d.endswith(b"\n"), self.timeout)
        except (TLSError, OSError) as exc:
            if not pipe.received:
                raise AppFailed(f"application data: {type(exc).__name__}: {exc}") from None
        if not hold:
            pipe.drain_until_close(DRAIN_GRACE_S)
        # Today's exact console line: the default device file matches it.
        return AppResult(f"app: sent {len(APP_LINE)} bytes, received {len(received)} bytes",
                         len(APP_LINE), len(received))


@dataclass
class NoneClient(_NoGoodbye):
    """Nothing after the handshake: the device only wanted the session (or a keep-alive)."""

    timeout: float = 10.0
    name: str = "none"

    def exchange(self, pipe: TlsPipe, server_name: str, hold: bool) -> AppResult:
        try:
            pipe.wait(NONE_WAIT_S)  # lets tlslite process the TLS 1.3 tickets
        except (TLSError, OSError) as exc:
            log.info("none: %s while waiting for post-handshake messages", exc)
        return AppResult(f"app: none: {_sent_received(pipe)}", pipe.sent, pipe.received)


@dataclass
class HttpClient(_NoGoodbye):
    """``GET /status`` with ``Connection: close``; anything but 200 fails the connect."""

    timeout: float = 10.0
    name: str = "http"

    def exchange(self, pipe: TlsPipe, server_name: str, hold: bool) -> AppResult:
        request = (f"GET /status HTTP/1.1\r\nHost: {server_name}\r\nUser-Agent: simfw\r\n"
                   f"Connection: close\r\n\r\n").encode()
        try:
            pipe.write(request, self.timeout)
            response = pipe.read_until(lambda d: False, self.timeout)  # until the server closes
        except (TLSError, OSError) as exc:
            raise AppFailed(f"http: {type(exc).__name__}: {exc}".rstrip(": ")) from None
        status_line = response.split(b"\r\n", 1)[0].split(b"\n", 1)[0]
        parts = status_line.split(None, 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not parts[1].isdigit():
            shown = _printable(status_line) or "nothing"
            raise AppFailed(f"http: no HTTP response (got {shown!r})")
        status = int(parts[1])
        reason = _printable(parts[2]) if len(parts) > 2 else ""
        if status != 200:
            raise AppFailed(f"http: status {status} {reason}".rstrip())
        return AppResult(f"app: http: GET /status -> {status}, {_sent_received(pipe)}",
                         pipe.sent, pipe.received)


def _mqtt_length(n: int) -> bytes:
    """MQTT 3.1.1 remaining length (section 2.2.3): 7 bits a byte, high bit = more."""
    out = bytearray()
    while True:
        n, digit = divmod(n, 128)
        out.append(digit | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _mqtt_str(text: str) -> bytes:
    raw = text.encode()
    return struct.pack("!H", len(raw)) + raw


def mqtt_connect(client_id: str, keepalive: int = MQTT_KEEPALIVE_S) -> bytes:
    """CONNECT: protocol "MQTT" level 4, clean session, no will, no credentials."""
    body = _mqtt_str("MQTT") + bytes([4, 0x02]) + struct.pack("!H", keepalive) + _mqtt_str(client_id)
    return b"\x10" + _mqtt_length(len(body)) + body


def mqtt_publish(topic: str, payload: bytes) -> bytes:
    """PUBLISH QoS 0 (no packet identifier)."""
    body = _mqtt_str(topic) + payload
    return b"\x30" + _mqtt_length(len(body)) + body


MQTT_PINGREQ = b"\xc0\x00"
MQTT_DISCONNECT = b"\xe0\x00"


@dataclass
class MqttClient:
    """MQTT 3.1.1: CONNECT, CONNACK, PUBLISH, PINGREQ/PINGRESP, DISCONNECT (unless held)."""

    client_id: str
    timeout: float = 10.0
    name: str = "mqtt"
    _buf: bytes = field(default=b"", repr=False)

    def _packet(self, pipe: TlsPipe, deadline: float) -> tuple[int, bytes]:
        """One control packet: (first byte, body)."""
        def complete() -> tuple[int, int] | None:
            if len(self._buf) < 2:
                return None
            length, mult = 0, 1
            for i, b in enumerate(self._buf[1:5], start=1):
                length += (b & 0x7F) * mult
                mult *= 128
                if not b & 0x80:
                    return (i + 1, length) if len(self._buf) >= i + 1 + length else None
            if len(self._buf) >= 5:
                raise AppFailed("mqtt: malformed remaining length")
            return None

        while (shape := complete()) is None:
            chunk = pipe.read(max(0.0, deadline - time.monotonic()))
            if chunk is None:
                raise TimeoutError("timed out")
            if not chunk:
                raise AppFailed("mqtt: server closed the connection")
            self._buf += chunk
        start, length = shape
        first, body = self._buf[0], self._buf[start:start + length]
        self._buf = self._buf[start + length:]
        return first, body

    def exchange(self, pipe: TlsPipe, server_name: str, hold: bool) -> AppResult:
        deadline = time.monotonic() + self.timeout
        try:
            pipe.write(mqtt_connect(self.client_id), self.timeout)
            first, body = self._packet(pipe, deadline)
            if first != 0x20 or len(body) != 2:
                raise AppFailed(f"mqtt: expected CONNACK, got packet 0x{first:02x}")
            if body[1] != 0:
                raise AppFailed(f"mqtt: CONNACK return code {body[1]}")
            pipe.write(mqtt_publish(MQTT_TOPIC, MQTT_PAYLOAD), self.timeout)
            pipe.write(MQTT_PINGREQ, self.timeout)
            first, body = self._packet(pipe, deadline)
            if first != 0xD0:
                raise AppFailed(f"mqtt: expected PINGRESP, got packet 0x{first:02x}")
            if not hold:
                pipe.write(MQTT_DISCONNECT, self.timeout)
        except (TLSError, OSError) as exc:
            raise AppFailed(f"mqtt: {type(exc).__name__}: {exc}".rstrip(": ")) from None
        return AppResult(f"app: mqtt: connack 0, published {MQTT_TOPIC}, pingresp, {_sent_received(pipe)}",
                         pipe.sent, pipe.received)

    def goodbye(self, pipe: TlsPipe) -> None:
        pipe.write(MQTT_DISCONNECT, 1.0)


@dataclass
class GreetingClient(_NoGoodbye):
    """The server speaks first: read its banner line, then the line protocol."""

    timeout: float = 10.0
    name: str = "greeting"

    def exchange(self, pipe: TlsPipe, server_name: str, hold: bool) -> AppResult:
        try:
            first = pipe.read_until(lambda d: b"\n" in d, self.timeout)
            banner, newline, rest = first.partition(b"\n")
            if not newline:
                raise AppFailed("greeting: server closed before its banner line")
            pipe.write(APP_LINE, self.timeout)
            # Bytes after the banner in the same record already belong to the echo.
            echo = rest
            if not echo.endswith(b"\n"):
                echo += pipe.read_until(lambda d: (rest + d).endswith(b"\n"), self.timeout)
        except (TLSError, OSError) as exc:
            raise AppFailed(f"greeting: {type(exc).__name__}: {exc}".rstrip(": ")) from None
        if not hold:
            pipe.drain_until_close(DRAIN_GRACE_S)
        return AppResult(f"app: greeting: banner '{_printable(banner)}', echo {len(echo)} bytes, "
                         f"{_sent_received(pipe)}", pipe.sent, pipe.received)


def make_client(name: str, client_id: str, timeout: float = 10.0) -> AppClient:
    """The client for protocol ``name`` (one of :data:`APPS`)."""
    if name == "line":
        return LineClient(timeout)
    if name == "none":
        return NoneClient(timeout)
    if name == "http":
        return HttpClient(timeout)
    if name == "mqtt":
        return MqttClient(client_id, timeout)
    if name == "greeting":
        return GreetingClient(timeout)
    raise ValueError(f"unknown application protocol {name!r} (known: {', '.join(APPS)})")


@dataclass
class LiveConnection:
    """A connection kept open after the exchange (``--hold``), as a device keeps its MQTT link.

    The shell's main loop selects on :meth:`fileno` beside the UART and
    calls :meth:`service` when it is readable (server data is read and
    dropped, so tickets and close_notify are processed) and :meth:`close`
    at the deadline, at the next connect, or never (power loss).
    """

    pipe: TlsPipe
    client: AppClient
    deadline: float
    opened: float = field(default_factory=time.monotonic)

    @property
    def name(self) -> str:
        return self.client.name

    def fileno(self) -> int:
        return self.pipe.fileno()

    def service(self) -> bool:
        """Process whatever the server sent; False once it closed the connection."""
        try:
            while True:
                chunk = self.pipe.read(0.0)
                if chunk is None:
                    return True
                if not chunk:
                    return False
                log.info("hold: %d bytes from the server ignored", len(chunk))
        except (TLSError, OSError) as exc:
            log.info("hold: connection failed: %s", exc)
            return False

    def close(self) -> None:
        if not self.pipe.closed:
            try:
                self.client.goodbye(self.pipe)
            except (TLSError, OSError) as exc:
                log.info("hold: goodbye failed: %s", exc)
        self.pipe.close()
