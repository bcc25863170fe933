"""What happens after the handshake is recorded apart and never hides or spoils the handshake.

Real stdlib ``ssl`` clients against a real server on 127.0.0.1: the record
must be visible while the client still holds the connection, the
application messages and the way the connection ended must be right once it
closes, and a second connection must still resume from the first.
"""

from __future__ import annotations

import json
import socket
import ssl
import time
from typing import Callable

import pytest
from tlskit import read_all

from harness import clock
from harness.server import ReferenceServer, ServerConfig, ServerConfigError
from harness.server.app import DEFAULT_GREETING, PROTOCOL_NAMES
from harness.server.records import HandshakeRecord

TLS = {"TLSv1.2": ssl.TLSVersion.TLSv1_2, "TLSv1.3": ssl.TLSVersion.TLSv1_3}
CLOSED = "server closed after the reply"
CLOSE_NOTIFY = "client closed (close_notify)"


# --- clients -------------------------------------------------------------------


def client_context(srv: ReferenceServer, version: str | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(srv.ca_path))
    if version is not None:
        ctx.minimum_version = ctx.maximum_version = TLS[version]
    return ctx


def connect(srv: ReferenceServer, ctx: ssl.SSLContext, session: ssl.SSLSession | None = None) -> ssl.SSLSocket:
    raw = socket.create_connection((srv.host, srv.port), timeout=5)
    raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return ctx.wrap_socket(raw, server_hostname="server.test", session=session)


def read_exact(tls: ssl.SSLSocket, n: int) -> bytes:
    out = b""
    while len(out) < n:
        chunk = tls.recv(n - len(out))
        assert chunk, f"server closed after {out!r}, expected {n} bytes"
        out += chunk
    return out


def take_tickets(tls: ssl.SSLSocket) -> None:
    """Let the client process TLS 1.3 NewSessionTickets when the server says nothing else."""
    tls.settimeout(0.2)
    try:
        assert tls.recv(1) == b"", "the server spoke although its protocol answers nothing"
    except (socket.timeout, TimeoutError):
        pass
    tls.settimeout(5)


def close_notify(tls: ssl.SSLSocket) -> None:
    """Send close_notify and take the server's."""
    try:
        tls.unwrap()
    except (ssl.SSLError, OSError):
        pass


def mqtt_packet(first: int, body: bytes = b"") -> bytes:
    length, header = len(body), bytearray((first,))
    while True:
        byte, length = length % 128, length // 128
        header.append(byte | (0x80 if length else 0))
        if not length:
            return bytes(header) + body


def mqtt_str(text: bytes) -> bytes:
    return len(text).to_bytes(2, "big") + text


def mqtt_connect(client_id: bytes = b"simfw-1", keepalive: int = 60, level: int = 4, user: bytes | None = None,
                 password: bytes | None = None) -> bytes:
    flags = 0x02  # clean session
    payload = mqtt_str(client_id)
    if user is not None:
        flags |= 0x80
        payload += mqtt_str(user)
    if password is not None:
        flags |= 0x40
        payload += mqtt_str(password)
    return mqtt_packet(0x10, mqtt_str(b"MQTT") + bytes((level, flags)) + keepalive.to_bytes(2, "big") + payload)


PINGREQ, DISCONNECT = mqtt_packet(0xC0), mqtt_packet(0xE0)


# --- one short conversation per protocol ---------------------------------------------------
# Each returns (expected app entries, expected app_end, the session to resume with): the
# session is taken before close_notify, because an unwrapped SSLSocket no longer has one.

Talk = tuple[list[str], str, "ssl.SSLSession | None"]


def talk_line(tls: ssl.SSLSocket) -> Talk:
    tls.sendall(b"ping\n")
    assert read_all(tls) == b"ping\n"
    return ["line 5 bytes"], CLOSED, tls.session


def talk_none(tls: ssl.SSLSocket) -> Talk:
    tls.sendall(b"hello")
    take_tickets(tls)  # also proves the server answers nothing
    session = tls.session
    close_notify(tls)
    return ["data 5 bytes"], CLOSE_NOTIFY, session


def talk_http(tls: ssl.SSLSocket) -> Talk:
    tls.sendall(b"GET /status?token=abc HTTP/1.1\r\nHost: server.test\r\nAuthorization: Bearer sekrit\r\n\r\n")
    head, _, body = read_all(tls).partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    assert lines[0] == b"HTTP/1.1 200 OK"
    assert b"Content-Type: text/plain" in lines and b"Connection: close" in lines
    assert f"Content-Length: {len(body)}".encode() in lines and body
    return ["http GET /status"], CLOSED, tls.session


def talk_mqtt(tls: ssl.SSLSocket) -> Talk:
    tls.sendall(mqtt_connect())
    assert read_exact(tls, 4) == b"\x20\x02\x00\x00"
    tls.sendall(PINGREQ)
    assert read_exact(tls, 2) == b"\xd0\x00"
    tls.sendall(DISCONNECT)
    assert read_all(tls) == b""
    return ["mqtt CONNECT client_id=simfw-1 keepalive=60", "mqtt PINGREQ", "mqtt DISCONNECT"], \
        "client disconnected (MQTT DISCONNECT)", tls.session


def talk_greeting(tls: ssl.SSLSocket) -> Talk:
    assert tls.recv(100) == DEFAULT_GREETING.encode() + b"\n"  # before the client said anything
    tls.sendall(b"hi\n")
    assert read_all(tls) == b"hi\n"
    return ["greeting sent", "line 3 bytes"], CLOSED, tls.session


TALK: dict[str, Callable[[ssl.SSLSocket], Talk]] = {
    "line": talk_line, "none": talk_none, "http": talk_http, "mqtt": talk_mqtt, "greeting": talk_greeting,
}


def ended(srv: ReferenceServer, mark: int) -> HandshakeRecord:
    """The first record after ``mark`` whose connection has ended."""
    return srv.wait_for(lambda r: r.app_end is not None, since=mark, timeout=2)


def log_line(srv: ReferenceServer, rid: int) -> dict:
    lines = [json.loads(line) for line in srv.log.path.read_text().splitlines()]
    found = [d for d in lines if d["id"] == rid]
    assert len(found) == 1, f"record #{rid} written {len(found)} times"
    return found[0]


# --- every protocol, both versions -----------------------------------------------


@pytest.mark.parametrize("version", ["TLSv1.2", "TLSv1.3"])
@pytest.mark.parametrize("protocol", PROTOCOL_NAMES)
def test_handshake_visible_while_open_then_app_then_resumption(make_server, protocol, version):
    assert set(TALK) == set(PROTOCOL_NAMES)
    srv = make_server(protocol=protocol)
    ctx = client_context(srv, version)
    mark = srv.mark()
    with connect(srv, ctx) as tls:
        # The client holds the connection and has said nothing: the record is there already.
        rec = srv.wait_for(since=mark, timeout=2)
        assert (rec.version, rec.error, rec.resumed, rec.protocol) == (version, None, False, protocol)
        assert rec.issued and rec.app_end is None and rec.closed_mono is None
        if version == "TLSv1.3":
            assert len(rec.issued) == 2, "TLS 1.3 tickets must be complete when the handshake ends"
        hs_bytes = (rec.bytes_in, rec.bytes_out)
        assert srv.log.path.read_text() == "", "the file gets the record when the connection ends"
        app, app_end, session = TALK[protocol](tls)
    rec = ended(srv, mark)
    assert (rec.app, rec.app_end, rec.error) == (app, app_end, None)
    assert (rec.bytes_in, rec.bytes_out) == hs_bytes, "handshake byte counts must not move after the handshake"
    assert rec.app_bytes_in > 0 and rec.closed_mono >= rec.mono
    assert rec.app_bytes_out > 0  # a reply, or at least our close_notify
    assert log_line(srv, rec.id) == rec.to_dict()

    mark = srv.mark()
    with connect(srv, ctx, session=session) as tls:
        again = srv.wait_for(since=mark, timeout=2)
        assert tls.session_reused and again.resumed and again.resumed_from == rec.id and again.error is None
        assert again.app_end is None
        assert TALK[protocol](tls)[:2] == (app, app_end)
    assert ended(srv, mark).app == app


# --- idle timeout ------------------------------------------------------------------


def test_silent_client_is_closed_at_the_idle_limit_without_error(make_server):
    srv = make_server(protocol="line", app_timeout=1)
    mark = srv.mark()
    with connect(srv, client_context(srv)) as tls:
        rec = srv.wait_for(since=mark, timeout=2)
        assert rec.error is None and rec.app_end is None
        tls.settimeout(3)  # the client would hold the connection 3 s; the server closes first
        t0 = time.monotonic()
        assert tls.recv(10) == b""
        waited = time.monotonic() - t0
    assert 0.7 < waited < 2.5, waited
    rec = ended(srv, mark)
    assert rec.error is None and rec.version == "TLSv1.3"
    assert rec.app_end == "idle timeout after 1 s" and rec.app == []
    assert 0.9 < rec.closed_mono - rec.mono < 2.0


def test_idle_limit_counts_from_the_last_data(make_server):
    srv = make_server(protocol="none", app_timeout=0.6)
    mark = srv.mark()
    with connect(srv, client_context(srv)) as tls:
        srv.wait_for(since=mark, timeout=2)
        for _ in range(3):
            tls.sendall(b"k")
            time.sleep(0.4)
        tls.settimeout(2)
        assert tls.recv(10) == b""
    rec = ended(srv, mark)
    assert rec.app == ["data 1 bytes"] * 3 and rec.app_end == "idle timeout after 0.6 s" and rec.error is None
    assert rec.closed_mono - rec.mono > 1.3


# --- MQTT ------------------------------------------------------------------------------


def test_mqtt_session_with_hand_written_client(make_server):
    srv = make_server(protocol="mqtt")
    mark = srv.mark()
    with connect(srv, client_context(srv)) as tls:
        for byte in mqtt_connect(b"simfw-1", 60, user=b"simuser", password=b"hunter2"):
            tls.sendall(bytes((byte,)))  # one TLS record per byte: framing must not care
        assert read_exact(tls, 4) == b"\x20\x02\x00\x00"
        tls.sendall(PINGREQ)
        assert read_exact(tls, 2) == b"\xd0\x00"
        tls.sendall(mqtt_packet(0x30, mqtt_str(b"dev/state") + b'{"on":"secret-payload"}'))
        tls.sendall(mqtt_packet(0x32, mqtt_str(b"dev/state") + b"\x00\x07" + b"qos1"))
        assert read_exact(tls, 4) == b"\x40\x02\x00\x07"  # PUBACK for packet 7
        tls.sendall(mqtt_packet(0x82, b"\x00\x08" + mqtt_str(b"dev/cmd") + b"\x01"))
        assert read_exact(tls, 5) == b"\x90\x03\x00\x08\x00"  # SUBACK granting QoS 0
        tls.sendall(mqtt_packet(0xA2, b"\x00\x09" + mqtt_str(b"dev/cmd")))
        assert read_exact(tls, 4) == b"\xb0\x02\x00\x09"
        tls.sendall(DISCONNECT)
        assert read_all(tls) == b""
    rec = ended(srv, mark)
    assert rec.app == [
        "mqtt CONNECT client_id=simfw-1 keepalive=60",
        "mqtt PINGREQ",
        "mqtt PUBLISH topic=dev/state qos=0",
        "mqtt PUBLISH topic=dev/state qos=1",
        "mqtt SUBSCRIBE dev/cmd",
        "mqtt UNSUBSCRIBE dev/cmd",
        "mqtt DISCONNECT",
    ]
    assert rec.app_end == "client disconnected (MQTT DISCONNECT)" and rec.error is None
    line = srv.log.path.read_text()
    for secret in ("simuser", "hunter2", "secret-payload", "qos1"):
        assert secret not in line
    assert "mqtt: mqtt CONNECT client_id=simfw-1 keepalive=60 .. mqtt DISCONNECT (7 entries)" in rec.summary()


def test_app_entries_are_capped(make_server):
    srv = make_server(protocol="mqtt")
    mark = srv.mark()
    with connect(srv, client_context(srv)) as tls:
        tls.sendall(mqtt_connect() + PINGREQ * 60)
        assert read_exact(tls, 4 + 2 * 60) == b"\x20\x02\x00\x00" + b"\xd0\x00" * 60
        tls.sendall(DISCONNECT)
        assert read_all(tls) == b""
    rec = ended(srv, mark)
    assert len(rec.app) == 51 and rec.app[-2] == "mqtt PINGREQ" and rec.app[-1] == "... 12 more"  # 62 messages, 50 kept
    assert rec.app_end == "client disconnected (MQTT DISCONNECT)"


def test_mqtt_first_packet_not_connect(make_server):
    srv = make_server(protocol="mqtt")
    mark = srv.mark()
    with connect(srv, client_context(srv, "TLSv1.2")) as tls:
        tls.sendall(mqtt_packet(0x30, mqtt_str(b"dev/state") + b"x"))
        assert read_all(tls) == b""
    rec = ended(srv, mark)
    assert rec.error is None and rec.version == "TLSv1.2" and rec.app == []
    assert rec.app_end == "protocol error: first MQTT packet is not CONNECT (it is PUBLISH)"


@pytest.mark.parametrize(
    "packet,app_end",
    [
        (b"\x30\xff\xff\xff\xff\x7f", "protocol error: malformed packet: remaining length longer than 4 bytes"),
        (mqtt_packet(0x30, b"\x00\x09dev"), "protocol error: malformed packet: field runs past the end of the packet"),
        (b"\x30\xff\xff\xff\x7f", "protocol error: PUBLISH packet of 268435455 bytes is over the 256 KiB limit"),
        (mqtt_packet(0x20, b"\x00\x00"), "protocol error: unexpected CONNACK from the client"),
    ],
)
def test_mqtt_malformed_packet_after_connect(make_server, packet, app_end):
    srv = make_server(protocol="mqtt")
    mark = srv.mark()
    with connect(srv, client_context(srv)) as tls:
        tls.sendall(mqtt_connect())
        assert read_exact(tls, 4) == b"\x20\x02\x00\x00"
        tls.sendall(packet)
        assert read_all(tls) == b""
    rec = ended(srv, mark)
    assert rec.error is None and rec.app == ["mqtt CONNECT client_id=simfw-1 keepalive=60"]
    assert rec.app_end == app_end


def test_mqtt_protocol_level_other_than_4_is_refused(make_server):
    srv = make_server(protocol="mqtt")
    mark = srv.mark()
    with connect(srv, client_context(srv)) as tls:
        tls.sendall(mqtt_connect(b"v5-device", 30, level=5))
        assert read_all(tls) == b"\x20\x02\x00\x01"  # CONNACK, return code 1, then close
    rec = ended(srv, mark)
    assert rec.error is None and rec.app == ["mqtt CONNECT client_id=v5-device keepalive=30 level=5"]
    assert "level 5" in rec.app_end and "CONNACK return code 1" in rec.app_end


# --- HTTP and greeting ------------------------------------------------------------------------


def test_http_get_records_method_and_path_only(make_server):
    srv = make_server(protocol="http")
    mark = srv.mark()
    long_path = "/" + "/".join(["abcd"] * 25)   # short segments: kept, then cut at 64 characters
    with connect(srv, client_context(srv)) as tls:
        tls.sendall(f"GET {long_path}?key=sekrit HTTP/1.1\r\nHost: x\r\nCookie: sekrit\r\n\r\n".encode())
        assert read_all(tls).startswith(b"HTTP/1.1 200 OK\r\n")
    rec = ended(srv, mark)
    assert rec.app == ["http GET " + long_path[:61] + "..."] and len(rec.app[0]) == len("http GET ") + 64
    assert rec.app_end == CLOSED and "sekrit" not in srv.log.path.read_text()


def test_http_malformed_request_gets_400(make_server):
    srv = make_server(protocol="http")
    mark = srv.mark()
    with connect(srv, client_context(srv, "TLSv1.2")) as tls:
        tls.sendall(b"HELLO THERE\r\n\r\n")
        reply = read_all(tls)
    assert reply.startswith(b"HTTP/1.1 400 Bad Request\r\n") and b"Connection: close\r\n" in reply
    rec = ended(srv, mark)
    assert rec.app == ["http bad request"] and rec.error is None
    assert rec.app_end == "server closed after the reply (400: malformed request line)"


def test_greeting_comes_first_and_the_client_may_just_close(make_server):
    srv = make_server(protocol="greeting", greeting="220 lab broker")
    mark = srv.mark()
    with connect(srv, client_context(srv)) as tls:
        assert tls.recv(100) == b"220 lab broker\n"
        close_notify(tls)
    rec = ended(srv, mark)
    assert rec.app == ["greeting sent"] and rec.app_end == CLOSE_NOTIFY and rec.error is None
    assert rec.app_bytes_out > len(b"220 lab broker\n")


@pytest.mark.parametrize(
    "version,app_end",
    [
        ("TLSv1.2", "client closed the TCP connection"),  # nothing unread: a FIN
        ("TLSv1.3", "client reset the TCP connection"),  # our tickets unread in its socket: an RST
    ],
)
def test_client_closing_tcp_without_close_notify(make_server, version, app_end):
    srv = make_server(protocol="none")
    mark = srv.mark()
    tls = connect(srv, client_context(srv, version))
    srv.wait_for(since=mark, timeout=2)
    if version == "TLSv1.3":  # make sure the tickets arrived, so close() really resets
        deadline = time.monotonic() + 1
        while not _unread(tls) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert _unread(tls)
    tls.close()  # no unwrap
    rec = ended(srv, mark)
    assert rec.app_end == app_end and rec.error is None and rec.app == [] and rec.version == version


def _unread(tls: ssl.SSLSocket) -> bool:
    """Bytes from the server wait unread in the client's socket."""
    raw = socket.socket(fileno=tls.fileno())
    try:
        return bool(raw.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT))
    except BlockingIOError:
        return False
    finally:
        raw.detach()


# --- knobs, file, stop -----------------------------------------------------------------


def test_protocol_is_captured_per_connection(make_server):
    srv = make_server(protocol="line")
    ctx = client_context(srv)
    mark = srv.mark()
    with connect(srv, ctx) as first:
        srv.wait_for(since=mark, timeout=2)
        srv.configure(protocol="http")  # the open connection keeps speaking "line"
        with connect(srv, ctx) as second:
            second.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            assert read_all(second).startswith(b"HTTP/1.1 200 OK")
        first.sendall(b"still line\n")
        assert read_all(first) == b"still line\n"
    srv.wait_for(lambda r: len([x for x in srv.since(mark) if x.app_end]) == 2, since=mark, timeout=2)
    recs = srv.since(mark)
    assert [(r.protocol, r.app) for r in recs] == [("line", ["line 11 bytes"]), ("http", ["http GET /"])]


def test_bad_protocol_names_the_choices(server):
    with pytest.raises(ServerConfigError, match="none, line, http, mqtt, greeting") as info:
        ServerConfig(protocol="smtp")
    assert "'smtp'" in str(info.value)
    with pytest.raises(ServerConfigError, match="none, line, http, mqtt, greeting"):
        server.configure(protocol="smtp")
    with pytest.raises(ServerConfigError, match="one line"):
        ServerConfig(greeting="a\r\nb")
    assert ServerConfig().protocol == "line" and ServerConfig().app_timeout == 60.0
    assert ServerConfig(protocol="MQTT").protocol == "mqtt"


def test_open_connection_is_written_at_stop(make_server):
    srv = make_server("stop", protocol="none")
    mark = srv.mark()
    tls = connect(srv, client_context(srv, "TLSv1.2"))
    try:
        rec = srv.wait_for(since=mark, timeout=2)
        tls.sendall(b"abc")
        srv.wait_for(lambda r: r.app == ["data 3 bytes"], since=mark, timeout=2)
        assert srv.log.path.read_text() == ""
        srv.stop()
        assert tls.recv(10) == b""  # the server's close_notify
    finally:
        tls.close()
    assert rec.app_end == "server stopped" and rec.error is None
    assert [json.loads(x)["app_end"] for x in srv.log.path.read_text().splitlines()] == ["server stopped"]


def test_record_round_trips_with_app_fields(make_server):
    srv = make_server(protocol="greeting")
    mark = srv.mark()
    with connect(srv, client_context(srv)) as tls:
        talk_greeting(tls)
    rec = ended(srv, mark)
    data = log_line(srv, rec.id)
    for name in ("protocol", "app", "app_end", "app_bytes_in", "app_bytes_out", "closed_mono", "client_versions"):
        assert name in data
    assert data["protocol"] == "greeting" and data["app"] == ["greeting sent", "line 3 bytes"]
    assert data["client_versions"] == ["TLSv1.2", "TLSv1.3"]
    assert HandshakeRecord.from_dict(data) == rec


# --- client_versions on a failed handshake -------------------------------------------------


def test_client_versions_on_a_version_mismatch(make_server):
    srv = make_server(versions=("TLSv1.3",))
    mark = srv.mark()
    with pytest.raises((ssl.SSLError, ConnectionError)):
        with connect(srv, client_context(srv, "TLSv1.2")):
            pass
    rec = srv.wait_for(since=mark, timeout=2)
    assert rec.error and rec.version is None and rec.client_versions == ["TLSv1.2"]
    assert rec.protocol is None and rec.app == [] and rec.app_end is None
    assert "client offered TLSv1.2" in rec.summary()
    assert log_line(srv, rec.id)["client_versions"] == ["TLSv1.2"]


# --- exact byte accounting with a memory-BIO client ---------------------------------------


@pytest.mark.parametrize("version", ["TLSv1.2", "TLSv1.3"])
def test_handshake_and_app_bytes_add_up_to_the_wire(make_server, version):
    """bytes_in/out are the handshake's (TLS 1.3 tickets included); app_* the rest, to the byte."""
    srv = make_server(protocol="line")
    obj_in, obj_out = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = client_context(srv, version).wrap_bio(obj_in, obj_out, server_hostname="server.test")
    sent = received = 0
    mark = srv.mark()
    with socket.create_connection((srv.host, srv.port), timeout=5) as sock:

        def push() -> None:
            nonlocal sent
            data = obj_out.read()
            sock.sendall(data)
            sent += len(data)

        def pull() -> bool:
            nonlocal received
            data = sock.recv(65536)
            received += len(data)
            if data:
                obj_in.write(data)
            else:
                obj_in.write_eof()
            return bool(data)

        while True:
            try:
                obj.do_handshake()
                break
            except ssl.SSLWantReadError:
                push()
                pull()
        push()
        rec = srv.wait_for(since=mark, timeout=2)
        hs_in, hs_out = rec.bytes_in, rec.bytes_out
        assert hs_in == sent  # every byte the client sent so far was handshake
        obj.write(b"twelve bytes")
        obj.write(b"\n")
        push()
        echo = b""
        while True:
            try:
                chunk = obj.read(4096)
            except ssl.SSLWantReadError:
                if not pull():
                    break
                continue
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                break
            if not chunk:
                break
            echo += chunk
        while pull():  # to the server's FIN
            pass
    assert echo == b"twelve bytes\n"
    rec = ended(srv, mark)
    assert (rec.bytes_in, rec.bytes_out) == (hs_in, hs_out)
    assert rec.bytes_in + rec.app_bytes_in == sent
    assert rec.bytes_out + rec.app_bytes_out == received
    # Two small records (the line, one "line" entry) and close_notify: tickets are not in here.
    assert 0 < rec.app_bytes_out < 120 and rec.app == ["line 13 bytes"]


def test_clock_of_closed_mono_is_the_harness_clock(make_server):
    srv = make_server(protocol="line")
    before = clock.now()
    mark = srv.mark()
    with connect(srv, client_context(srv)) as tls:
        talk_line(tls)
    rec = ended(srv, mark)
    assert before <= rec.mono <= rec.closed_mono <= clock.now()
