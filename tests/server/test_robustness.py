"""Hostile and broken clients: the server keeps serving and records every connection."""

from __future__ import annotations

import json
import os
import socket
import ssl
import struct
from concurrent.futures import ThreadPoolExecutor

import pytest

from tlskit import PyClient


def _client_hello(srv) -> bytes:
    """A real ClientHello, taken from a stdlib client through memory BIOs."""
    ctx = ssl.create_default_context(cafile=str(srv.ca_path))
    inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(inc, out, server_hostname="server.test")
    with pytest.raises(ssl.SSLWantReadError):
        obj.do_handshake()
    return out.read()


def _raw(srv, payload: bytes, close: bool = True) -> socket.socket:
    s = socket.create_connection((srv.host, srv.port), timeout=5)
    if payload:
        s.sendall(payload)
    if close:
        s.close()
    return s


def _still_serving(srv):
    mark = srv.mark()
    assert PyClient(srv).connect(b"ok\n") == (False, b"ok\n")
    assert srv.wait_for(since=mark).error is None


@pytest.fixture
def fast(make_server):
    return make_server(handshake_timeout=0.5, app_timeout=0.5)


def test_random_bytes(fast):
    mark = fast.mark()
    _raw(fast, b"\x00" + os.urandom(299))
    rec = fast.wait_for(since=mark)
    assert rec.error and rec.version is None and "TLS" in rec.error
    _still_serving(fast)


def test_plain_http(fast):
    mark = fast.mark()
    s = _raw(fast, b"GET / HTTP/1.1\r\nHost: server.test\r\n\r\n", close=False)
    rec = fast.wait_for(since=mark)
    s.close()
    assert "plain HTTP" in rec.error
    _still_serving(fast)


def test_truncated_client_hello_then_close(fast):
    hello = _client_hello(fast)
    mark = fast.mark()
    _raw(fast, hello[: len(hello) // 2])
    rec = fast.wait_for(since=mark)
    assert "mid-handshake" in rec.error and rec.bytes_in == len(hello) // 2
    _still_serving(fast)


def test_truncated_client_hello_then_silence(fast):
    hello = _client_hello(fast)
    mark = fast.mark()
    s = _raw(fast, hello[:20], close=False)
    rec = fast.wait_for(since=mark, timeout=5)
    s.close()
    assert "timed out" in rec.error and "after 20 bytes" in rec.error


def test_malformed_client_hello_lengths(fast):
    body = b"\x03\x03" + os.urandom(32) + b"\xff"  # session id length runs past the end
    msg = b"\x01" + struct.pack(">I", len(body))[1:] + body
    mark = fast.mark()
    _raw(fast, b"\x16\x03\x01" + struct.pack(">H", len(msg)) + msg)
    rec = fast.wait_for(since=mark)
    assert rec.error and rec.version is None
    _still_serving(fast)


def test_silent_client(fast):
    mark = fast.mark()
    s = _raw(fast, b"", close=False)
    rec = fast.wait_for(since=mark, timeout=5)
    assert "timed out" in rec.error and "client sent nothing" in rec.error
    assert s.recv(10) == b""  # the server closed it
    s.close()


def test_client_vanishes_mid_handshake(fast):
    ctx = ssl.create_default_context(cafile=str(fast.ca_path))
    inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(inc, out, server_hostname="server.test")
    mark = fast.mark()
    s = socket.create_connection((fast.host, fast.port), timeout=5)
    with pytest.raises(ssl.SSLWantReadError):
        obj.do_handshake()
    s.sendall(out.read())
    assert s.recv(65536)  # the server's first flight: now vanish
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # RST
    s.close()
    rec = fast.wait_for(since=mark)
    assert rec.error and rec.version is None and rec.sni == "server.test"
    _still_serving(fast)


def test_silent_after_handshake(fast):
    """Silence after the handshake is the device's business: an idle timeout, never an error."""
    ctx = ssl.create_default_context(cafile=str(fast.ca_path))
    mark = fast.mark()
    with socket.create_connection((fast.host, fast.port)) as raw:
        with ctx.wrap_socket(raw, server_hostname="server.test") as tls:
            rec = fast.wait_for(since=mark, timeout=2)
            assert rec.version == "TLSv1.3" and rec.error is None and rec.app_end is None
            assert tls.recv(100) == b""  # the server's close_notify at the idle timeout
    rec = fast.wait_for(lambda r: r.app_end is not None, since=mark, timeout=2)
    assert rec.error is None and rec.app_end == "idle timeout after 0.5 s" and rec.app == []


def test_fifty_concurrent_clients(server):
    mark = server.mark()
    junk = [b"\x00garbage", b"GET / HTTP/1.0\r\n\r\n"]

    def one(i: int):
        if i % 10 == 9:
            _raw(server, junk[i % 2])
            return None
        client = PyClient(server, version=ssl.TLSVersion.TLSv1_2 if i % 2 else None)
        return client.connect(f"client {i}\n".encode())

    with ThreadPoolExecutor(max_workers=50) as pool:
        results = list(pool.map(one, range(50)))
    assert all(r[1] == f"client {i}\n".encode() for i, r in enumerate(results) if r is not None)
    server.wait_for(lambda r: len(server.since(mark)) >= 50, since=mark, timeout=10)
    recs = server.since(mark)
    assert len(recs) == 50
    assert sorted(r.id for r in recs) == list(range(1, 51))
    assert sum(1 for r in recs if r.error) == 5
    lines = server.log.path.read_text().splitlines()
    parsed = [json.loads(line) for line in lines]  # every line valid JSON
    assert len(parsed) == 50 and {p["id"] for p in parsed} == set(range(1, 51))
    _still_serving(server)


def test_stop_with_open_connections_records_them(make_server):
    fds_before = len(os.listdir("/proc/self/fd"))
    srv = make_server("s", handshake_timeout=30)
    s = _raw(srv, b"", close=False)
    t = _raw(srv, b"\x16\x03\x01", close=False)
    import threading

    before = threading.active_count()
    srv.stop()
    assert threading.active_count() == before - 1
    recs = srv.records()
    assert len(recs) == 2 and all(r.error == "server stopped" for r in recs)
    s.close()
    t.close()
    assert len(os.listdir("/proc/self/fd")) == fds_before, "the server leaked file descriptors"
