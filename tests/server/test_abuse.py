"""The reference server under abuse: the short form of ``bench/server_abuse.py``, and its bugs' regressions.

A few hundred hostile connections of every kind (``tlskit.ABUSE_KINDS``:
random bytes, truncated and malformed ClientHellos, huge tickets and PSK
identities, alerts mid-handshake, garbage after the handshake, slow and
idle clients), drawn from a fixed seed, run at once with well-formed
clients doing full and resumed handshakes.  What must hold: every
connection has its record and the record says what went wrong, the loop
never dies and keeps serving, and what the server keeps stays bounded.
Timing is the benchmark's business: here only generous bounds, so a loaded
CI machine cannot make the test flaky.

The tests after the first each pin one bug found under abuse.
"""

from __future__ import annotations

import collections
import errno
import json
import random
import re
import socket
import ssl
import struct
import threading
import time
import tracemalloc
from concurrent.futures import ThreadPoolExecutor

import pytest

import harness.server.server as server_module
from harness.server.clienthello import MAX_EXTENSIONS, MAX_PSK_IDENTITIES, MAX_SNI, ParseError, parse_client_hello
from harness.server.records import PSK_MORE
from tlskit import (
    ABUSE_KINDS,
    QUICK_KINDS,
    Abuse,
    Hello,
    PyClient,
    alert,
    client_hello,
    ext,
    make_abuse,
    run_abuse,
    tls_records,
)

SEED = 13
PER_KIND = 40  # quick kinds; slow and idle clients are fewer, they last a handshake timeout
TIMEOUT = 4.0  # the server's handshake and idle timeouts here: what slow and idle clients last


def _record_by_port(srv, ports: list[int], timeout: float = 15.0) -> dict[int, list]:
    """The records of these connections, by local port (a port can come back: lists)."""
    wanted = collections.Counter(ports)

    def complete(_rec=None) -> bool:
        seen = collections.Counter(int(r.peer.rsplit(":", 1)[1]) for r in srv.records())
        return all(seen[p] >= n for p, n in wanted.items())

    if not complete():
        srv.wait_for(lambda r: complete(), timeout=timeout)
    by_port: dict[int, list] = collections.defaultdict(list)
    for rec in srv.records():
        by_port[int(rec.peer.rsplit(":", 1)[1])].append(rec)
    return by_port


def _wait_open(srv, n: int, timeout: float = 5.0) -> None:
    """Until the server has ``n`` connections open."""
    deadline = time.monotonic() + timeout
    while srv._call(lambda: len(srv._conns)) != n:
        assert time.monotonic() < deadline, f"the server never had {n} connections open"
        time.sleep(0.02)


def _still_serving(srv) -> None:
    """A well-formed client still gets its handshake, and its record."""
    mark = srv.mark()
    ctx = ssl.create_default_context(cafile=str(srv.ca_path))
    with ctx.wrap_socket(socket.create_connection(srv.address, timeout=10), server_hostname="server.test") as tls:
        port = tls.getsockname()[1]
    rec = srv.wait_for(lambda r: r.peer.endswith(f":{port}"), since=mark)
    assert rec.error is None and rec.version == "TLSv1.3"
    assert srv.serving


def test_every_abuse_kind_is_recorded_and_explained(make_server):
    srv = make_server(handshake_timeout=TIMEOUT, app_timeout=TIMEOUT)
    ctx = ssl.create_default_context(cafile=str(srv.ca_path))
    rng = random.Random(SEED)
    abuses = [make_abuse(kind, rng) for kind in QUICK_KINDS for _ in range(PER_KIND)]
    abuses += [make_abuse("slow", rng) for _ in range(6)] + [make_abuse("idle", rng) for _ in range(10)]
    rng.shuffle(abuses)
    ports: list[int | None] = [None] * len(abuses)

    def abuse(i: int) -> None:
        ports[i] = run_abuse(abuses[i], srv.address, ctx=ctx, interval=0.05, timeout=10)

    def wellformed(i: int) -> tuple[int, bool, bytes, bool, bytes]:
        client = PyClient(srv, version=ssl.TLSVersion.TLSv1_2 if i % 2 else None)
        full = client.connect(f"client {i}\n".encode())
        resumed = client.connect(f"client {i} again\n".encode())
        return i, *full, *resumed

    mark = srv.mark()
    with ThreadPoolExecutor(max_workers=16) as pool, ThreadPoolExecutor(max_workers=16) as good:
        done = pool.map(abuse, range(len(abuses)))
        clients = list(good.map(wellformed, range(16)))
        list(done)

    for i, full_reused, full_echo, resumed, echo in clients:
        assert not full_reused and full_echo == f"client {i}\n".encode()
        assert resumed and echo == f"client {i} again\n".encode(), f"client {i} did not resume under abuse"

    by_port = _record_by_port(srv, ports)  # type: ignore[arg-type]
    lost, wrong = [], []
    for a, port in zip(abuses, ports):
        if not by_port.get(port):
            lost.append(a)
            continue
        rec = by_port[port].pop(0)
        if a.mode == "handshake_then":  # the handshake completed: what went wrong after it is app_end
            said = rec.app_end if rec.error is None and rec.version else f"error={rec.error!r}"
        else:
            said = rec.error if rec.version is None else f"completed {rec.version}"
        if not re.fullmatch(a.expect, said or ""):
            wrong.append(f"{a.kind}/{a.variant}: {said!r} does not match {a.expect!r}")
    assert not lost, f"{len(lost)} connections without a record: {[(a.kind, a.variant) for a in lost[:5]]}"
    assert not wrong, "\n".join(wrong[:10])
    assert {a.kind for a in abuses} == set(ABUSE_KINDS)

    recs = srv.since(mark)
    assert len(recs) == len(abuses) + 16 * 2
    # Bounded whatever the client sent: a record never carries more than a few kilobytes.
    assert max(len(json.dumps(r.to_dict())) for r in recs) < 4096
    assert max(len(r.offered.psk) for r in recs) <= MAX_PSK_IDENTITIES + 1
    # Slow and idle clients ended by the server's own timeout: nothing stays open.
    assert srv._call(lambda: len(srv._conns)) == 0
    _still_serving(srv)


# --- one test per bug found under abuse ------------------------------------------------------------


class _ListenProxy:
    """The listening socket, with accept() failing with EMFILE while ``exhausted`` is set."""

    def __init__(self, sock: socket.socket):
        self._sock = sock
        self.exhausted = threading.Event()
        self.accepts = 0

    def accept(self):
        self.accepts += 1
        if self.exhausted.is_set():
            raise OSError(errno.EMFILE, "Too many open files")
        return self._sock.accept()

    def __getattr__(self, name):
        return getattr(self._sock, name)


def test_out_of_file_descriptors_pauses_instead_of_spinning(make_server):
    """Was: EMFILE left the listening socket readable, and the loop retried (and logged) ~40,000 times a second."""
    srv = make_server()
    proxy = _ListenProxy(srv._listen)
    srv._call(lambda: setattr(srv, "_listen", proxy))
    proxy.exhausted.set()
    waiting = socket.create_connection(srv.address)  # in the backlog: accept() keeps failing
    time.sleep(1.2)
    assert proxy.accepts <= 6, f"accept() tried {proxy.accepts} times in 1.2 s: the loop spins"
    proxy.exhausted.clear()  # descriptors back: the connection waiting in the backlog is taken
    waiting.close()
    rec = srv.wait_for(timeout=5)
    assert rec.error == "client closed the connection without sending anything"
    _still_serving(srv)


def test_out_of_file_descriptors_makes_room(make_server):
    """With EMFILE, the longest-running handshake is closed, so the next connection can be taken."""
    srv = make_server(handshake_timeout=30)
    idle = socket.create_connection(srv.address)
    _wait_open(srv, 1)
    proxy = _ListenProxy(srv._listen)
    srv._call(lambda: setattr(srv, "_listen", proxy))
    proxy.exhausted.set()
    mark = srv.mark()
    newcomer = socket.create_connection(srv.address)
    rec = srv.wait_for(since=mark, timeout=5)
    assert rec.error == "closed to make room for a new connection: Too many open files"
    assert rec.peer.endswith(f":{idle.getsockname()[1]}")
    proxy.exhausted.clear()
    newcomer.close()
    idle.close()
    _still_serving(srv)


def test_connection_cap_closes_the_oldest_handshake(make_server):
    """Was: no cap; idle clients held a descriptor and an SSL object each for the whole handshake timeout."""
    srv = make_server(handshake_timeout=30, max_connections=8)
    idle = [socket.create_connection(srv.address) for _ in range(8)]
    _wait_open(srv, 8)
    mark = srv.mark()
    _still_serving(srv)  # the ninth connection is served at once, not after 30 s
    made_room = [r for r in srv.since(mark) if r.error]
    assert len(made_room) == 1
    assert made_room[0].error == "closed to make room for a new connection: max_connections=8 reached"
    assert made_room[0].peer.endswith(f":{idle[0].getsockname()[1]}")  # the oldest
    assert srv._call(lambda: len(srv._conns)) <= 8
    for s in idle:
        s.close()


def test_connection_cap_never_closes_a_device_past_its_handshake(make_server):
    """At the cap with only application-phase connections, the newcomer is refused (with a record) and waits."""
    srv = make_server(max_connections=2, protocol="none", app_timeout=30)
    ctx = ssl.create_default_context(cafile=str(srv.ca_path))
    devices = [ctx.wrap_socket(socket.create_connection(srv.address), server_hostname="server.test") for _ in range(2)]
    srv.wait_for(lambda r: len(srv.records()) == 2, timeout=5)
    mark = srv.mark()
    refused = socket.create_connection(srv.address, timeout=5)
    rec = srv.wait_for(since=mark, timeout=5)
    assert rec.error == "refused: max_connections=2 reached, all past their handshake"
    assert refused.recv(10) == b""
    refused.close()
    queued = socket.create_connection(srv.address, timeout=5)  # waits in the backlog...
    queued_port = queued.getsockname()[1]
    queued.close()
    time.sleep(0.3)
    assert len(srv.since(mark)) == 1, "a connection was taken while the server was full"
    devices[0].close()  # ... until a device leaves
    rec = srv.wait_for(lambda r: r.peer.endswith(f":{queued_port}"), since=mark, timeout=5)
    assert rec.error == "client closed the connection without sending anything"
    first, second = srv.records()[:2]
    assert first.app_end is not None and second.app_end is None  # the other device is untouched
    devices[1].close()


def test_psk_identities_and_server_name_are_bounded_in_the_record(make_server):
    """Was: 9,000 one-byte PSK identities (63 KB) made a 145 KB record and cost ~40 ms of the loop."""
    srv = make_server()
    hello = Hello(psk=[(bytes([i % 256]), i) for i in range(9000)], psk_binders=1,
                  sni=b"\x1b[31mred\nname" + b"a" * 300)
    port = run_abuse(Abuse("huge_psk", "many", tls_records(client_hello(hello))), srv.address)
    rec = srv.wait_for(lambda r: r.peer.endswith(f":{port}"), timeout=5)
    assert rec.offered.psk[-1] == PSK_MORE and len(rec.offered.psk) == MAX_PSK_IDENTITIES + 1
    assert rec.sni.startswith("?[31mred?name") and len(rec.sni) == MAX_SNI and rec.sni.isprintable()
    assert len(json.dumps(rec.to_dict())) < 4096


def test_extensions_walked_are_bounded():
    """Was: 16,000 empty extensions (64 KB) cost the parser ~50-175 ms of the server's only thread."""
    many = client_hello(Hello(extra=[ext(0x7000 + i, b"") for i in range(16000)]))
    with pytest.raises(ParseError, match=f"more than {MAX_EXTENSIONS} extensions"):
        parse_client_hello(many)
    same = client_hello(Hello(extra=[ext(0x7000, b"")] * 16000))  # duplicates count too
    with pytest.raises(ParseError, match="more than"):
        parse_client_hello(same)
    grease = client_hello(Hello(extra=[ext(0x0A0A + 0x1010 * i, b"") for i in range(8)]))
    assert parse_client_hello(grease).sni == "server.test"  # a real client's dozen or two is fine
    names = client_hello(Hello(sni=None, extra=[ext(0, struct.pack(">H", 60000) + b"\x01\x00\x00" * 20000)]))
    assert parse_client_hello(names).sni is None  # names of other types are skipped, a few at most


def test_ended_connections_do_not_keep_what_the_client_sent(make_server):
    """Was: one idle connection at the head of the timer heap kept every later connection, ClientHello and all.

    2,000 ClientHellos with a 60 KB ticket grew the server by 144 MB while a
    single idle client waited out its timeout.
    """
    srv = make_server(handshake_timeout=30)
    rng = random.Random(SEED)
    hellos = [tls_records(client_hello(Hello(ticket=rng.randbytes(60000)))) for _ in range(4)]
    idle = socket.create_connection(srv.address)  # its deadline heads the heap for 30 s
    n = 300
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        ports = [run_abuse(Abuse("huge_ticket", "", hellos[i % 4]), srv.address) for i in range(n)]
        _record_by_port(srv, ports)
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert grown / n < 8000, f"{grown / n:.0f} bytes kept per ended connection"
    assert srv._call(lambda: len(srv._timers)) < n
    idle.close()


def test_a_bug_in_the_first_read_costs_one_connection_not_the_loop(make_server):
    """Was: the read made while accepting ran outside the per-connection guard; a bug there killed the server."""
    srv = make_server()
    calls = []

    def broken(conn, e):
        calls.append(conn)
        raise RuntimeError("bug")

    gate = threading.Event()
    srv._describe_tls_error = broken  # raised on the first read of a non-TLS client
    blocker = threading.Thread(target=lambda: srv._call(lambda: gate.wait(5)))
    blocker.start()  # hold the loop, so the junk is there when the connection is accepted
    time.sleep(0.1)
    with socket.create_connection(srv.address) as s:
        s.sendall(b"\x00junk")
        gate.set()
        blocker.join()
        rec = srv.wait_for(timeout=5)
    assert calls and rec.error == "internal server error: RuntimeError"
    del srv._describe_tls_error
    _still_serving(srv)


def test_a_bug_in_a_timer_costs_one_connection_not_the_loop(make_server):
    """Was: deadlines fired outside any guard; a bug in an idle timeout killed the server."""
    srv = make_server(app_timeout=0.3)
    ctx = ssl.create_default_context(cafile=str(srv.ca_path))

    def broken(conn, how):
        raise RuntimeError("bug")

    srv._close_app = broken
    with ctx.wrap_socket(socket.create_connection(srv.address), server_hostname="server.test"):
        rec = srv.wait_for(lambda r: r.app_end is not None, timeout=5)
    assert rec.error is None and rec.app_end == "internal server error: RuntimeError"
    del srv._close_app
    _still_serving(srv)


def test_a_client_that_does_not_read_cannot_grow_the_server(make_server, monkeypatch):
    """Was: output for a client that sends but never reads (MQTT PINGREQs) queued without limit."""
    monkeypatch.setattr(server_module, "MAX_PENDING", 64 * 1024)
    srv = make_server(protocol="mqtt", app_timeout=10)
    ctx = ssl.create_default_context(cafile=str(srv.ca_path))
    raw = socket.socket()
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16384)  # no autotuning: blocks when the server stops reading
    raw.connect(srv.address)
    tls = ctx.wrap_socket(raw, server_hostname="server.test")
    tls.sendall(bytes([0x10, 12]) + b"\x00\x04MQTT\x04\x02\x00\x3c\x00\x00")  # CONNECT
    srv.wait_for(lambda r: r.app, timeout=5)
    srv._call(lambda: [c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096) for c in srv._conns])
    tls.settimeout(1.5)
    pings = bytes([0xC0, 0]) * 8192
    sent = 0
    try:
        while sent < 2 << 20:  # 2 MiB of PINGREQ asks for 2 MiB of PINGRESP
            tls.sendall(pings)
            sent += len(pings)
    except (TimeoutError, OSError):
        pass  # the server stopped reading: that is the point
    queued = srv._call(lambda: max((len(c.pending or b"") for c in srv._conns), default=0))
    assert queued <= 64 * 1024 + 80 * 1024, f"{queued} bytes queued for a client that does not read"
    assert sent < 2 << 20, "the server read everything a non-reading client sent"
    tls.close()
    _still_serving(srv)


def test_close_notify_and_unknown_alerts_mid_handshake_are_named(make_server):
    """Was: close_notify mid-handshake read "TLS/SSL connection has been closed (EOF) (_ssl.c:1006)",
    an unknown alert "[SSL] unknown error (_ssl.c:1006)"."""
    srv = make_server()
    hello = tls_records(client_hello(Hello()))
    port = run_abuse(Abuse("alert", "", hello, "read_then", alert(1, 0)), srv.address)
    rec = srv.wait_for(lambda r: r.peer.endswith(f":{port}"), timeout=5)
    assert rec.error == f"client sent close_notify mid-handshake (after {len(hello) + 7} bytes)"
    port = run_abuse(Abuse("alert", "", hello, "read_then", alert(2, 255)), srv.address)
    rec = srv.wait_for(lambda r: r.peer.endswith(f":{port}"), timeout=5)
    assert rec.error == "TLS handshake failed: unknown error (the client sent a fatal alert 255 (unknown))"


def test_handshake_timeout_named_is_the_connections_own(make_server):
    """Was: the record named the timeout in force when it fired, not the one the connection was given."""
    srv = make_server(handshake_timeout=0.5)
    with socket.create_connection(srv.address):
        time.sleep(0.1)
        srv.configure(handshake_timeout=5.0)
        rec = srv.wait_for(timeout=5)
    assert rec.error == "handshake timed out after 0.5 s (client sent nothing)"


@pytest.mark.parametrize("knob", [0, -1, 2.5, True, "10"])
def test_max_connections_must_be_a_positive_whole_number(knob):
    from harness.server import ServerConfig, ServerConfigError

    with pytest.raises(ServerConfigError, match="max_connections"):
        ServerConfig(max_connections=knob)
