"""Application protocols the reference server speaks after the handshake.

Why this exists: real firmware does not send one line and wait for an echo.
It speaks MQTT to a broker, makes an HTTP request, waits for the server to
greet it, or says nothing at all and keeps the connection for minutes.  The
server's testimony about the *handshake* must not depend on any of that, but
a harness still wants to see what happened next ("the device connected,
sent CONNECT and PUBLISH, then the server's idle timeout closed it").

Each protocol here is a small, pure state machine fed with decrypted bytes:
it never touches sockets, OpenSSL or clocks.  :meth:`Protocol.feed` returns a
:class:`Reply` (bytes to encrypt and send, short human-readable entries for
the record, and, when the conversation is over, the reason to close with).
``server.py`` only moves bytes between OpenSSL and these objects, so a new
protocol is one class plus one entry in :data:`PROTOCOLS`.

Entries never carry payloads, MQTT credentials, HTTP headers or bodies:
records are evidence that may end up in CI artifacts, and a device's
application data may hold secrets (principle 5).  Topics, client ids and
paths are kept, truncated and stripped of control characters.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import ClassVar

from harness.fingerprint import fp

DEFAULT_GREETING = "220 tls-resume-hil reference server ready"
MAX_LINE = 16384  # one "line" protocol request; longer input is echoed as is
MAX_HTTP_HEAD = 16384
MAX_MQTT_PACKET = 256 * 1024  # bigger packets end the connection instead of growing a buffer
MAX_ENTRIES = 50
MAX_TEXT = 64  # path, topic or client id shown in an entry

SERVER_CLOSED = "server closed after the reply"


@dataclass
class Reply:
    """What a protocol wants done after it saw some bytes.

    ``close`` set means: send ``out``, then close_notify, then close the TCP
    connection; its text becomes the record's ``app_end``.
    """

    out: bytes = b""
    entries: list[str] = field(default_factory=list)
    close: str | None = None


class AppEntries:
    """The record's ``app`` list, capped so a chatty device cannot grow a record forever."""

    def __init__(self, limit: int = MAX_ENTRIES):
        self.limit = limit
        self._entries: list[str] = []
        self._more = 0

    def extend(self, entries: list[str]) -> None:
        taken = entries[: self.limit - len(self._entries)]
        self._entries.extend(taken)
        self._more += len(entries) - len(taken)

    def snapshot(self) -> list[str]:
        """A new list (the record gets its own copy; readers on other threads never see it change)."""
        out = list(self._entries)
        if self._more:
            out.append(f"... {self._more} more")
        return out


def clean(text: str | bytes, limit: int = MAX_TEXT) -> str:
    """Printable, one-line, bounded text for an entry."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    text = "".join(ch if ch.isprintable() and ch not in "\r\n" else "?" for ch in text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class Protocol:
    """One connection's application conversation; subclasses override :meth:`feed`."""

    name: ClassVar[str] = ""

    def __init__(self, greeting: str = DEFAULT_GREETING):
        self.greeting = greeting
        self.closed = False  # set once a Reply asked to close: later bytes are ignored
        self._buf = bytearray()  # what the client sent that does not make a message yet

    def start(self) -> Reply:
        """Called right after the handshake, before the client has said anything."""
        return Reply()

    def feed(self, data: bytes) -> Reply:
        """Decrypted bytes from the client, in order, in chunks of any size."""
        raise NotImplementedError

    def _close(self, reply: Reply, why: str) -> Reply:
        self.closed = True
        reply.close = why
        return reply


class NoneProtocol(Protocol):
    """Accept anything, answer nothing: the device decides when the connection ends."""

    name = "none"

    def feed(self, data: bytes) -> Reply:
        return Reply(entries=[f"data {len(data)} bytes"] if data else [])


class LineProtocol(Protocol):
    """The original behaviour: echo one line, then close (clients read TLS 1.3 tickets meanwhile)."""

    name = "line"

    def feed(self, data: bytes) -> Reply:
        if self.closed:
            return Reply()
        self._buf += data
        nl = self._buf.find(b"\n")
        if nl < 0 and len(self._buf) < MAX_LINE:
            return Reply()
        line = bytes(self._buf[: nl + 1] if nl >= 0 else self._buf[:MAX_LINE])
        self._buf.clear()
        return self._close(Reply(out=line, entries=[f"line {len(line)} bytes"]), SERVER_CLOSED)


class GreetingProtocol(LineProtocol):
    """The server speaks first (SMTP/FTP style), then echoes one line like ``line``."""

    name = "greeting"

    def start(self) -> Reply:
        return Reply(out=self.greeting.encode("utf-8") + b"\n", entries=["greeting sent"])


_TOKEN = re.compile(rb"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
_HTTP_VERSION = re.compile(rb"^HTTP/1\.[0-9]$")


#: a path segment this long may be a device token (``/api/v1/<token>/telemetry``)
SECRET_SEGMENT = 16


def _masked(path: bytes) -> bytes:
    """The path with every long segment replaced by its fingerprint: still traceable, no longer a secret."""
    return b"/".join(f"<{fp(seg)}>".encode() if len(seg) >= SECRET_SEGMENT else seg for seg in path.split(b"/"))


class HttpProtocol(Protocol):
    """One HTTP/1.1 request head, a 200 (or 400) with ``Connection: close``, then close.

    A request body is not read: the reply follows the head, which is all a
    device needs to see its request answered.
    """

    name = "http"
    BODY = b"tls-resume-hil reference server: ok\n"

    def feed(self, data: bytes) -> Reply:
        if self.closed:
            return Reply()
        self._buf += data
        # A bad request line is answered at once: no need to wait for a head that never ends.
        eol = self._buf.find(b"\n")
        if eol >= 0 and self._request_line(bytes(self._buf[:eol])) is None:
            return self._bad("malformed request line")
        end, sep = self._buf.find(b"\r\n\r\n"), 4
        if end < 0:
            end, sep = self._buf.find(b"\n\n"), 2
        if end < 0:
            if len(self._buf) >= MAX_HTTP_HEAD:
                return self._bad(f"request head over {MAX_HTTP_HEAD // 1024} KiB")
            return Reply()
        if end + sep > MAX_HTTP_HEAD:
            return self._bad(f"request head over {MAX_HTTP_HEAD // 1024} KiB")
        lines = bytes(self._buf[:end]).split(b"\n")
        request = self._request_line(lines[0])
        if request is None:
            return self._bad("malformed request line")
        for header in lines[1:]:
            name, colon, _ = header.partition(b":")
            if not colon or not _TOKEN.match(name):
                return self._bad("malformed header line")
        method, path = request
        body = b"" if method == "HEAD" else self.BODY
        head = (
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
            f"Content-Length: {len(self.BODY)}\r\nConnection: close\r\n\r\n"
        ).encode("ascii")
        return self._close(Reply(out=head + body, entries=[f"http {method} {path}"]), SERVER_CLOSED)

    @staticmethod
    def _request_line(raw: bytes) -> tuple[str, str] | None:
        parts = raw.rstrip(b"\r").split(b" ")
        if len(parts) != 3 or not _TOKEN.match(parts[0]) or not parts[1] or not _HTTP_VERSION.match(parts[2]):
            return None
        path = parts[1].split(b"?", 1)[0].split(b"#", 1)[0]
        return parts[0].decode("ascii"), clean(_masked(path))

    def _bad(self, why: str) -> Reply:
        body = b"bad request\n"
        head = (
            "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        ).encode("ascii")
        return self._close(Reply(out=head + body, entries=["http bad request"]), f"{SERVER_CLOSED} (400: {why})")


# MQTT 3.1.1 control packet types (OASIS MQTT 3.1.1, section 2.2.1)
CONNECT, CONNACK, PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP = 1, 2, 3, 4, 5, 6, 7
SUBSCRIBE, SUBACK, UNSUBSCRIBE, UNSUBACK, PINGREQ, PINGRESP, DISCONNECT = 8, 9, 10, 11, 12, 13, 14
MQTT_NAMES = {
    0: "reserved(0)", 1: "CONNECT", 2: "CONNACK", 3: "PUBLISH", 4: "PUBACK", 5: "PUBREC", 6: "PUBREL",
    7: "PUBCOMP", 8: "SUBSCRIBE", 9: "SUBACK", 10: "UNSUBSCRIBE", 11: "UNSUBACK", 12: "PINGREQ",
    13: "PINGRESP", 14: "DISCONNECT", 15: "reserved(15)",
}


class MqttError(ValueError):
    """A packet the broker side cannot accept; the text goes into ``app_end``."""


class _Reader:
    """Bounds-checked reads inside one MQTT packet body."""

    def __init__(self, body: bytes):
        self.body, self.pos = body, 0

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.body):
            raise MqttError("malformed packet: field runs past the end of the packet")
        out = self.body[self.pos : self.pos + n]
        self.pos += n
        return out

    def u8(self) -> int:
        return self.take(1)[0]

    def u16(self) -> int:
        return int.from_bytes(self.take(2), "big")

    def string(self) -> bytes:
        return self.take(self.u16())

    def left(self) -> int:
        return len(self.body) - self.pos


class MqttProtocol(Protocol):
    """An MQTT 3.1.1 broker that accepts everything and keeps nothing.

    Enough for firmware to go through its usual motions (CONNECT, SUBSCRIBE,
    PUBLISH, PINGREQ, DISCONNECT) and for the record to show them; nothing is
    routed.  Usernames, passwords, will messages and payloads are never read
    into an entry.
    """

    name = "mqtt"

    def __init__(self, greeting: str = DEFAULT_GREETING):
        super().__init__(greeting)
        self._connected = False

    def feed(self, data: bytes) -> Reply:
        reply = Reply()
        if self.closed:
            return reply
        self._buf += data
        try:
            while not self.closed:
                packet = self._next_packet()
                if packet is None:
                    break
                self._handle(*packet, reply)
        except MqttError as e:
            self._buf.clear()
            return self._close(reply, f"protocol error: {e}")
        return reply

    def _next_packet(self) -> tuple[int, int, bytes] | None:
        """(type, flags, body) of the next complete packet, or None until more bytes come."""
        buf = self._buf
        if len(buf) < 2:
            return None
        length, mult, pos = 0, 1, 1
        while True:
            if pos >= len(buf):
                return None
            byte = buf[pos]
            length += (byte & 0x7F) * mult
            pos += 1
            if not byte & 0x80:
                break
            if pos == 5:
                raise MqttError("malformed packet: remaining length longer than 4 bytes")
            mult *= 128
        if length > MAX_MQTT_PACKET:
            raise MqttError(
                f"{MQTT_NAMES[buf[0] >> 4]} packet of {length} bytes is over the {MAX_MQTT_PACKET // 1024} KiB limit"
            )
        if len(buf) < pos + length:
            return None
        first = buf[0]
        body = bytes(buf[pos : pos + length])
        del buf[: pos + length]
        return first >> 4, first & 0x0F, body

    def _handle(self, kind: int, flags: int, body: bytes, reply: Reply) -> None:
        name = MQTT_NAMES[kind]
        if not self._connected and kind != CONNECT:
            raise MqttError(f"first MQTT packet is not CONNECT (it is {name})")
        r = _Reader(body)
        if kind == CONNECT:
            if self._connected:
                raise MqttError("second CONNECT on one connection")
            self._connect(r, flags, reply)
        elif kind == PUBLISH:
            qos = (flags >> 1) & 3
            if qos == 3:
                raise MqttError("malformed PUBLISH: QoS 3")
            topic = r.string()
            reply.entries.append(f"mqtt PUBLISH topic={clean(topic)} qos={qos}")
            if qos:
                packet_id = r.take(2)
                reply.out += bytes((PUBACK << 4 if qos == 1 else PUBREC << 4, 2)) + packet_id
        elif kind == PUBREL:
            reply.entries.append("mqtt PUBREL")
            reply.out += bytes((PUBCOMP << 4, 2)) + r.take(2)
        elif kind in (PUBACK, PUBREC, PUBCOMP):
            reply.entries.append(f"mqtt {name}")  # we never publish: acknowledged nothing, harmless
        elif kind in (SUBSCRIBE, UNSUBSCRIBE):
            if flags != 0b0010:
                raise MqttError(f"malformed {name}: fixed header flags {flags:#06b}, must be 0b0010")
            packet_id = r.take(2)
            topics = []
            while r.left():
                topics.append(clean(r.string()))
                if kind == SUBSCRIBE:
                    r.u8()  # requested QoS; we grant 0
            if not topics:
                raise MqttError(f"malformed {name}: no topic filter")
            reply.entries.append(f"mqtt {name} {','.join(topics)}")
            if kind == SUBSCRIBE:
                reply.out += _fixed(SUBACK << 4, packet_id + bytes(len(topics)))
            else:
                reply.out += bytes((UNSUBACK << 4, 2)) + packet_id
        elif kind == PINGREQ:
            reply.entries.append("mqtt PINGREQ")
            reply.out += bytes((PINGRESP << 4, 0))
        elif kind == DISCONNECT:
            reply.entries.append("mqtt DISCONNECT")
            self._close(reply, "client disconnected (MQTT DISCONNECT)")
        else:
            raise MqttError(f"unexpected {name} from the client")

    def _connect(self, r: _Reader, flags: int, reply: Reply) -> None:
        proto_name = r.string()
        level = r.u8()
        connect_flags = r.u8()
        keepalive = r.u16()
        client_id = clean(r.string())
        if proto_name not in (b"MQTT", b"MQIsdp"):
            raise MqttError(f"CONNECT names protocol {clean(proto_name)!r}, not MQTT")
        entry = f"mqtt CONNECT client_id={client_id} keepalive={keepalive}"
        if level != 4:
            reply.entries.append(f"{entry} level={level}")
            reply.out += bytes((CONNACK << 4, 2, 0, 1))  # 1 = unacceptable protocol version
            self._close(reply, f"server refused MQTT protocol level {level} (only 4 = 3.1.1; CONNACK return code 1)")
            return
        if flags or connect_flags & 1:
            raise MqttError("malformed CONNECT: reserved flag set")
        self._connected = True
        reply.entries.append(entry)
        reply.out += bytes((CONNACK << 4, 2, 0, 0))


def _fixed(first: int, body: bytes) -> bytes:
    """A packet with its variable-length remaining length (bodies here are small)."""
    length, out = len(body), bytearray((first,))
    while True:
        byte, length = length % 128, length // 128
        out.append(byte | (0x80 if length else 0))
        if not length:
            return bytes(out) + body


PROTOCOLS: dict[str, type[Protocol]] = {
    cls.name: cls for cls in (NoneProtocol, LineProtocol, HttpProtocol, MqttProtocol, GreetingProtocol)
}
PROTOCOL_NAMES = tuple(PROTOCOLS)


def make(name: str, greeting: str = DEFAULT_GREETING) -> Protocol:
    """A fresh protocol object for one connection."""
    return PROTOCOLS[name](greeting)
