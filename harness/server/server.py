"""The reference server: one selector loop, OpenSSL through ``ssl.SSLObject``.

Why a single loop thread with memory BIOs rather than a thread per
connection: every connection is a small state machine (handshake, then an
application phase spoken by a protocol object from ``app.py``, then close)
whose CPU work happens inside OpenSSL; one thread avoids thread
start and hand-off costs on the hot path (the benchmark drives one connection
after another), it alone touches the ``SSL_CTX`` and the lineage table (no
locks, no races when keys rotate mid-run), and memory BIOs let it count the
exact bytes on the wire and tell "client vanished" from "client is slow".
Other threads talk to it through :meth:`ReferenceServer._call`, which runs a
function on the loop and waits for it.

The record of a connection is published the moment its handshake ends
(``_handshake_done``): the application phase that follows (MQTT for an hour,
an HTTP request, silence, an idle timeout, a TLS error) only fills the
``app*`` fields and ``closed_mono`` and never sets ``error``.  The JSON-lines
file gets the record when the connection ends (see ``records.py``).
"""

from __future__ import annotations

import heapq
import itertools
import logging
import queue
import selectors
import socket
import ssl
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from harness import clock
from harness.errors import HarnessError
from harness.fingerprint import fp

from . import app, certs
from .clienthello import (
    CLIENT_HELLO,
    NEW_SESSION_TICKET,
    SERVER_HELLO,
    ClientHello,
    ParseError,
    ServerHello,
    parse_client_hello,
    parse_new_session_ticket,
    parse_server_hello,
)
from .config import RUNTIME_KNOBS, ServerConfig, ServerConfigError
from .engine import OpenSSL, new_ticket_keys
from .lineage import Issued, Lineage
from .records import HandshakeRecord, Offered, Predicate, RecordLog

log = logging.getLogger(__name__)

HANDSHAKE, APP, CLOSING = 0, 1, 2
RECV_SIZE = 65536
CLIENT_CLOSE_NOTIFY = "client closed (close_notify)"
_HTTP_METHODS = (b"GET ", b"POST", b"HEAD", b"PUT ", b"OPTI", b"DELE", b"PATC", b"CONN")


class _SSLObject(ssl.SSLObject):
    """SSLObject that knows its connection, so the message callback finds it in O(1)."""

    harness_conn: "_Conn | None" = None


@dataclass(eq=False)
class _Conn:
    """State of one connection while it is open (loop thread only)."""

    sock: socket.socket
    peer: str
    sslobj: _SSLObject
    incoming: ssl.MemoryBIO
    outgoing: ssl.MemoryBIO
    t0: float
    deadline: float
    tickets_on: bool
    versions: tuple[str, ...]
    lifetime: int
    protocol: str  # knobs captured at accept: configure() affects the next connection
    greeting: str
    app_timeout: float
    state: int = HANDSHAKE
    eof: bool = False
    first_bytes: bytes = b""
    pending: bytearray | None = None
    bytes_in: int = 0
    bytes_out: int = 0
    round_trips: int = 0
    msgs: list | None = None  # (written?, version, type, bytes) from the message callback
    ch: ClientHello | None = None
    sh: ServerHello | None = None
    tickets: list | None = None  # NewSessionTicket messages written (loop thread only)
    parse_error: str | None = None
    proto: app.Protocol | None = None
    entries: app.AppEntries | None = None
    last_in: float = 0.0  # harness clock of the last bytes received in the application phase
    record: HandshakeRecord | None = None
    done: bool = False
    published: bool = False
    app_ended: bool = False
    events: int = selectors.EVENT_READ


class ReferenceServer:
    """A TLS 1.2/1.3 server that records every handshake with its lineage.

    Use as a context manager, or ``start()``/``stop()``.  ``workdir`` receives
    the generated CA (``ca.pem``), the server certificate and the handshake log.
    """

    def __init__(self, config: ServerConfig | None = None, workdir: Path | str | None = None, **knobs: Any):
        config = config or ServerConfig()
        if knobs:
            config = config.replace(**knobs)
        self.config = config
        self.workdir = Path(workdir) if workdir is not None else None
        self.host = config.host
        self.port = config.port
        self.ca_path: Path | None = config.ca
        self.cert_paths: certs.CertPaths | None = None
        self.names: tuple[str, ...] = config.names + config.ips
        self.log: RecordLog | None = None
        self._ossl: OpenSSL | None = None
        self._ctx: ssl.SSLContext | None = None
        self._ctx_ptr = 0
        self._lineage = Lineage()
        self._ids = itertools.count(1)
        self._listen: socket.socket | None = None
        self._sel: selectors.BaseSelector | None = None
        self._wake_r: socket.socket | None = None
        self._wake_w: socket.socket | None = None
        self._calls: queue.SimpleQueue = queue.SimpleQueue()
        self._conns: set[_Conn] = set()
        self._timers: list[tuple[float, int, _Conn]] = []
        self._seq = itertools.count()
        self._thread: threading.Thread | None = None
        self._running = False
        self._listeners: list[Callable[[HandshakeRecord], None]] = []
        self._closed_listeners: list[Callable[[HandshakeRecord], None]] = []

    def add_listener(self, fn: Callable[[HandshakeRecord], None]) -> None:
        """Call ``fn(record)`` for every record when it is published (from the loop thread; keep it short).

        That is when the handshake completes or fails; application fields
        are still empty then (see :meth:`add_closed_listener`).
        """
        self._listeners.append(fn)
        if self.log is not None:
            self.log.add_listener(fn)

    def add_closed_listener(self, fn: Callable[[HandshakeRecord], None]) -> None:
        """Call ``fn(record)`` when the connection of a completed handshake ends (app fields final)."""
        self._closed_listeners.append(fn)
        if self.log is not None:
            self.log.add_closed_listener(fn)

    # --- lifecycle -------------------------------------------------------------

    def __enter__(self) -> "ReferenceServer":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> "ReferenceServer":
        if self._thread is not None:
            raise HarnessError("reference server already started")
        cfg = self.config
        if cfg.cert is None and self.workdir is None:
            raise ServerConfigError("a workdir is needed to write the generated CA and certificate")
        if cfg.cert is not None:
            self.cert_paths = certs.CertPaths(cfg.cert, cfg.key, cfg.ca)  # type: ignore[arg-type]
        else:
            self.cert_paths = certs.generate(self.workdir, cfg.names, cfg.ips, cfg.key_type)  # type: ignore[arg-type]
        self.ca_path = self.cert_paths.ca
        log_path = cfg.log_path or (self.workdir / "handshakes.jsonl" if self.workdir else None)
        self._ossl = OpenSSL.load()
        self._ctx = self._make_context()
        self._apply(cfg, first=True)
        self._install_new_keys()
        self._selfcheck()
        family = socket.AF_INET6 if ":" in cfg.host else socket.AF_INET
        try:
            self._listen = socket.create_server((cfg.host, cfg.port), family=family, backlog=512)
        except OSError as e:
            raise HarnessError(f"cannot listen on {cfg.host}:{cfg.port}: {e.strerror or e}") from None
        self._listen.setblocking(False)
        self.host, self.port = self._listen.getsockname()[:2]
        self.log = RecordLog(log_path)
        for fn in self._listeners:
            self.log.add_listener(fn)
        for fn in self._closed_listeners:
            self.log.add_closed_listener(fn)
        self._sel = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._sel.register(self._listen, selectors.EVENT_READ, "listen")
        self._sel.register(self._wake_r, selectors.EVENT_READ, "wake")
        self._running = True
        self._thread = threading.Thread(target=self._loop, name=f"tls-server-{self.port}", daemon=True)
        self._thread.start()
        log.info("reference server listening on %s:%s (%s)", self.host, self.port, self._knobs_text(cfg))
        return self

    def stop(self) -> None:
        """Stop serving, nothing leaks.

        A connection still in its handshake gets a failed record ("server
        stopped"); one in its application phase gets close_notify (best
        effort) and ``app_end: "server stopped"``, and is written to the file.
        """
        thread = self._thread
        if thread is None:
            return
        self._running = False
        self._wake()
        thread.join(timeout=10)
        if thread.is_alive():
            log.error("server loop did not stop within 10 s")
        self._thread = None
        for s in (self._listen, self._wake_r, self._wake_w):
            if s is not None:
                s.close()
        if self._sel is not None:
            self._sel.close()
        if self.log is not None:
            self.log.close()
        log.info("reference server on port %s stopped", self.port)

    @property
    def address(self) -> tuple[str, int]:
        return self.host, self.port

    # --- knobs -------------------------------------------------------------------

    def configure(self, **knobs: Any) -> ServerConfig:
        """Change knobs on the running server; takes effect for the next connection."""
        bad = set(knobs) - RUNTIME_KNOBS
        if bad:
            raise ServerConfigError(
                f"cannot change {', '.join(sorted(bad))} while running (restart the server); "
                f"run-time knobs: {', '.join(sorted(RUNTIME_KNOBS))}"
            )
        new = self.config.replace(**knobs)
        if self._thread is None:
            self.config = new
        else:
            self._call(lambda: self._apply(new))
        log.info("server reconfigured: %s", self._knobs_text(new))
        return new

    def rotate_keys(self) -> None:
        """Install new ticket keys: every ticket issued before stops working."""
        if self._thread is None:
            raise HarnessError("server not started")
        self._call(self._install_new_keys)

    def _install_new_keys(self) -> None:
        keys = new_ticket_keys()
        self._ossl.set_ticket_keys(self._ctx_ptr, keys)  # type: ignore[union-attr]
        epoch = self._lineage.new_epoch(keys[:16])
        log.info("ticket keys rotated: epoch %d, key name %s", epoch, fp(keys[:16]))

    def _call(self, fn: Callable[[], Any], timeout: float = 10.0) -> Any:
        """Run ``fn`` on the loop thread (which alone touches OpenSSL state) and wait."""
        if threading.current_thread() is self._thread:
            return fn()
        done = threading.Event()
        box: dict[str, Any] = {}

        def run() -> None:
            try:
                box["result"] = fn()
            except BaseException as e:  # handed back to the caller
                box["error"] = e
            finally:
                done.set()

        self._calls.put(run)
        self._wake()
        if not done.wait(timeout):
            raise HarnessError("server loop did not answer within 10 s")
        if "error" in box:
            raise box["error"]
        return box.get("result")

    def _wake(self) -> None:
        try:
            if self._wake_w is not None:
                self._wake_w.send(b"x")
        except (BlockingIOError, OSError):
            pass

    @staticmethod
    def _knobs_text(c: ServerConfig) -> str:
        return (
            f"versions={'/'.join(c.versions)} tickets={'on' if c.tickets else 'off'} "
            f"lifetime={c.ticket_lifetime}s tls13_tickets={c.tls13_tickets} "
            f"session_cache={'on' if c.session_cache else 'off'} client_cert={c.client_cert} "
            f"protocol={c.protocol} app_timeout={c.app_timeout:g}s"
        )

    # --- OpenSSL context -----------------------------------------------------------

    def _make_context(self) -> ssl.SSLContext:
        assert self.cert_paths is not None and self._ossl is not None
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        try:
            ctx.load_cert_chain(self.cert_paths.cert, self.cert_paths.key)
        except (OSError, ssl.SSLError) as e:
            raise ServerConfigError(
                f"cannot load certificate {self.cert_paths.cert} / key {self.cert_paths.key}: {e}"
            ) from None
        ctx.sslobject_class = _SSLObject
        self._ctx_ptr = self._ossl.ctx_pointer(ctx)
        install_msg_callback(ctx, self._on_msg)
        return ctx

    def _apply(self, cfg: ServerConfig, first: bool = False) -> None:
        """Push knobs into the SSL_CTX (loop thread, or before the loop starts)."""
        ctx, ossl = self._ctx, self._ossl
        assert ctx is not None and ossl is not None
        order = [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3]
        wanted = [v for v in order if v.name.replace("_", ".") in cfg.versions]
        ctx.minimum_version, ctx.maximum_version = wanted[0], wanted[-1]
        if cfg.tickets:
            ctx.options &= ~ssl.OP_NO_TICKET
            ctx.num_tickets = cfg.tls13_tickets
        else:
            ctx.options |= ssl.OP_NO_TICKET
            ctx.num_tickets = 0
        ossl.set_timeout(self._ctx_ptr, cfg.ticket_lifetime)
        ossl.set_session_cache(self._ctx_ptr, cfg.session_cache)
        if cfg.client_cert:
            ca = cfg.client_ca or self.ca_path
            try:
                ctx.load_verify_locations(cafile=str(ca))
            except (OSError, ssl.SSLError) as e:
                raise ServerConfigError(f"cannot load client CA {ca}: {e}") from None
            ctx.verify_mode = ssl.CERT_REQUIRED
        else:
            ctx.verify_mode = ssl.CERT_NONE
        self.config = cfg

    def _selfcheck(self) -> None:
        """Prove the message callback still delivers issued tickets on this Python/OpenSSL.

        Lineage depends on it; if a future CPython drops the hook, the server
        must refuse to start rather than record "resumed_from: null" forever.
        """
        assert self.cert_paths is not None
        probe = type(self).__new__(type(self))
        probe.__dict__.update(self.__dict__)
        probe._lineage = Lineage()
        probe._ids = itertools.count(1)
        probe._timers = []
        probe.config = self.config.replace(tickets=True, tls13_tickets=1, client_cert=False)
        probe._ctx = probe._make_context()
        probe._apply(probe.config)
        probe._install_new_keys()
        client = ssl.create_default_context(cafile=str(self.cert_paths.ca))
        client.check_hostname = False
        for version in ("TLSv1.2", "TLSv1.3"):
            probe._apply(probe.config.replace(versions=(version,)))
            rec = probe._inprocess_handshake(client)
            if rec.version != version or not rec.issued:
                raise HarnessError(
                    f"self-check failed: a {version} handshake issued tickets {rec.issued} "
                    f"(version {rec.version}, error {rec.error}); the OpenSSL message callback "
                    "no longer shows NewSessionTicket messages, so lineage cannot work"
                )

    def _inprocess_handshake(self, client_ctx: ssl.SSLContext) -> HandshakeRecord:
        cin, cout = ssl.MemoryBIO(), ssl.MemoryBIO()
        cobj = client_ctx.wrap_bio(cin, cout, server_side=False)
        conn = self._new_conn(None, "self-check")  # type: ignore[arg-type]
        for _ in range(20):
            try:
                cobj.do_handshake()
            except ssl.SSLWantReadError:
                pass
            conn.incoming.write(cout.read())
            self._handshake_step(conn)
            cin.write(conn.outgoing.read())
            if conn.state != HANDSHAKE:
                break
        assert conn.record is not None
        return conn.record

    # --- the loop ------------------------------------------------------------------

    def _loop(self) -> None:
        sel = self._sel
        assert sel is not None
        try:
            while self._running:
                timeout = self._fire_timers()
                for key, mask in sel.select(timeout):
                    data = key.data
                    if data == "listen":
                        self._accept()
                    elif data == "wake":
                        self._drain_wake()
                    else:
                        try:
                            self._service(data, mask)
                        except Exception as e:  # a bug must cost one connection, not the server
                            log.exception("internal error on connection from %s", data.peer)
                            self._finish(data, f"internal server error: {type(e).__name__}")
        except Exception:
            log.exception("server loop crashed")
        finally:
            for conn in list(self._conns):
                if conn.state == APP:  # tell the device, which may be waiting on an open connection
                    try:
                        self._close_app(conn, "server stopped")
                        self._flush_bio(conn)
                    except Exception:
                        log.debug("close_notify at stop failed for %s", conn.peer, exc_info=True)
                self._finish(conn, "server stopped")

    def _drain_wake(self) -> None:
        try:
            while self._wake_r is not None and self._wake_r.recv(4096):
                pass
        except (BlockingIOError, OSError):
            pass
        while True:
            try:
                fn = self._calls.get_nowait()
            except queue.Empty:
                return
            fn()

    def _fire_timers(self) -> float | None:
        timers = self._timers
        now = clock.now()
        while timers:
            deadline, _, conn = timers[0]
            if conn.done or deadline != conn.deadline:
                heapq.heappop(timers)
                continue
            if deadline > now:
                return deadline - now
            heapq.heappop(timers)
            if conn.state == HANDSHAKE:
                what = "client sent nothing" if conn.bytes_in == 0 else f"after {conn.bytes_in} bytes from the client"
                self._finish(conn, f"handshake timed out after {self.config.handshake_timeout:g} s ({what})")
            elif conn.state == APP:
                due = conn.last_in + conn.app_timeout
                if due > now:  # data came meanwhile: the idle limit counts from the last bytes
                    conn.deadline = due
                    heapq.heappush(timers, (due, next(self._seq), conn))
                    continue
                self._close_app(conn, f"idle timeout after {conn.app_timeout:g} s")
                self._send(conn)
            else:
                self._finish(conn, "client did not take the reply in time")
        return None

    def _set_deadline(self, conn: _Conn, seconds: float) -> None:
        conn.deadline = clock.now() + seconds
        heapq.heappush(self._timers, (conn.deadline, next(self._seq), conn))

    def _new_conn(self, sock: socket.socket | None, peer: str) -> _Conn:
        cfg = self.config
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        sslobj = self._ctx.wrap_bio(incoming, outgoing, server_side=True)  # type: ignore[union-attr]
        now = clock.now()
        conn = _Conn(
            sock=sock,  # type: ignore[arg-type]
            peer=peer,
            sslobj=sslobj,  # type: ignore[arg-type]
            incoming=incoming,
            outgoing=outgoing,
            t0=now,
            deadline=now + cfg.handshake_timeout,
            tickets_on=cfg.tickets,
            versions=cfg.versions,
            lifetime=cfg.ticket_lifetime,
            protocol=cfg.protocol,
            greeting=cfg.greeting,
            app_timeout=cfg.app_timeout,
        )
        sslobj.harness_conn = conn  # type: ignore[attr-defined]
        return conn

    def _accept(self) -> None:
        assert self._listen is not None and self._sel is not None
        for _ in range(64):
            try:
                sock, addr = self._listen.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:  # EMFILE and friends: keep serving the others
                log.warning("accept failed: %s", e)
                return
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            peer = f"[{addr[0]}]:{addr[1]}" if ":" in addr[0] else f"{addr[0]}:{addr[1]}"
            conn = self._new_conn(sock, peer)
            self._conns.add(conn)
            heapq.heappush(self._timers, (conn.deadline, next(self._seq), conn))
            self._sel.register(sock, selectors.EVENT_READ, conn)
            # The ClientHello often arrives with the connection: answer it now
            # instead of after another trip through epoll.
            self._service(conn, selectors.EVENT_READ)

    def _service(self, conn: _Conn, mask: int) -> None:
        if conn.done:
            return
        if mask & selectors.EVENT_WRITE:
            self._send(conn)
            if conn.done:
                return
        if mask & selectors.EVENT_READ:
            try:
                data = conn.sock.recv(RECV_SIZE)
            except (BlockingIOError, InterruptedError):
                data = None
            except ConnectionResetError as e:
                # After the handshake this is usually a device closing with our
                # TLS 1.3 tickets (or a reply) unread in its socket: the kernel sends RST.
                self._finish(conn, "client reset the TCP connection" if conn.state != HANDSHAKE
                             else f"connection error: {e.strerror or e}")
                return
            except OSError as e:
                self._finish(conn, f"connection error: {e.strerror or e}")
                return
            if data is not None:
                if data:
                    if conn.bytes_in == 0:
                        conn.first_bytes = data[:8]
                    conn.bytes_in += len(data)
                    if conn.state == APP:
                        conn.last_in = clock.now()
                    if conn.state != CLOSING:  # after our close, input is dropped, not buffered
                        conn.incoming.write(data)
                else:
                    conn.eof = True
                    conn.incoming.write_eof()
                    if conn.state == CLOSING:
                        self._finish(conn, None)
                        return
        if conn.state == HANDSHAKE:
            self._handshake_step(conn)
        if conn.state == APP:
            self._app_step(conn)
        if not conn.done:
            self._send(conn)

    # --- per-connection steps ------------------------------------------------------

    def _handshake_step(self, conn: _Conn) -> None:
        try:
            conn.sslobj.do_handshake()
        except ssl.SSLWantReadError:
            if conn.eof:
                self._finish(conn, self._vanished(conn))
            return
        except ssl.SSLEOFError:
            self._finish(conn, self._vanished(conn))
            return
        except ssl.SSLError as e:
            self._digest(conn)
            self._publish(conn, self._describe_tls_error(conn, e))
            self._flush_bio(conn)  # the alert
            self._finish(conn, None)
            return
        except OSError as e:
            self._finish(conn, f"TLS error: {e}")
            return
        self._handshake_done(conn)

    @staticmethod
    def _vanished(conn: _Conn) -> str:
        if conn.bytes_in == 0:
            return "client closed the connection without sending anything"
        return f"client closed the connection mid-handshake (after {conn.bytes_in} bytes)"

    def _describe_tls_error(self, conn: _Conn, e: ssl.SSLError) -> str:
        text = "TLS handshake failed: " + self._reason(e)
        if conn.first_bytes.startswith(_HTTP_METHODS):
            text += " (plain HTTP request on the TLS port)"
        elif conn.first_bytes[:1] == b"\x15":
            text += " (the client sent an alert instead of a ClientHello)"
        elif conn.first_bytes and conn.first_bytes[0] != 0x16:
            text += " (first bytes are not a TLS handshake record)"
        elif conn.parse_error:
            text += f" ({conn.parse_error})"
        return text

    def _handshake_done(self, conn: _Conn) -> None:
        """Publish the record now: whatever the application does next cannot hide or spoil it.

        OpenSSL has written the server's last flight, TLS 1.3 NewSessionTickets
        included, by the time ``do_handshake`` returns, so ``issued`` and
        ``bytes_out`` are complete here.
        """
        obj = conn.sslobj
        version = obj.version()
        cipher = obj.cipher()
        resumed = obj.session_reused
        rec = self._make_record(conn, version, cipher[0] if cipher else None, bool(resumed), None)
        conn.state = APP
        if conn.sock is None:  # the self-check: no application phase, nothing to publish
            return
        rec.protocol = conn.protocol
        conn.proto = app.make(conn.protocol, conn.greeting)
        conn.entries = app.AppEntries()
        conn.last_in = clock.now()
        self._publish(conn, None)
        self._set_deadline(conn, conn.app_timeout)
        self._talk(conn, conn.proto.start())

    def _make_record(
        self, conn: _Conn, version: str | None, cipher: str | None, resumed: bool, error: str | None
    ) -> HandshakeRecord:
        """Assign the id and judge lineage the moment the handshake ends.

        Ids follow handshake completion, so a ticket's issuing handshake
        always has its id before any client can offer that ticket back.
        """
        now_stamp = clock.stamp()
        rid = next(self._ids)
        self._digest(conn)
        ch = conn.ch
        verdict = self._lineage.judge(
            ch, conn.sh, version, resumed, conn.tickets_on, conn.versions, now_stamp.mono
        )
        offered = Offered()
        if ch is not None:
            if ch.ticket:
                offered.ticket = fp(ch.ticket)
            offered.psk = [fp(p.identity) for p in ch.psk]  # type: ignore[misc]
            offered.session_id = fp(self._lineage.offered_session_id(ch))
        issued: list[str] = []
        if version is not None:
            for nst in conn.tickets or ():
                issued.append(
                    self._lineage.add_ticket(
                        nst.ticket,
                        Issued(rid, now_stamp.mono, conn.lifetime, version, age_add=nst.age_add),
                    )
                )
            sh = conn.sh
            if version == "TLSv1.2" and not resumed and sh is not None and sh.session_id:
                self._lineage.add_session_id(sh.session_id, Issued(rid, now_stamp.mono, conn.lifetime, version))
        rec = HandshakeRecord(
            id=rid,
            mono=now_stamp.mono,
            time=clock.iso(now_stamp.wall),
            peer=conn.peer,
            sni=ch.sni if ch else None,
            version=version,
            cipher=cipher,
            resumed=resumed,
            mechanism=verdict.mechanism,
            offered=offered,
            issued=issued,
            resumed_from=verdict.resumed_from,
            rejected=verdict.rejected,
            ticket_age_ms=verdict.ticket_age_ms,
            claimed_age_ms=verdict.claimed_age_ms,
            round_trips=conn.round_trips,
            duration_ms=round((now_stamp.mono - conn.t0) * 1000, 3),
            error=error,
            client_versions=ch.version_names() if ch is not None else [],
        )
        conn.record = rec
        return rec

    def _app_step(self, conn: _Conn) -> None:
        """Decrypt what the client sent, hand it to the protocol, note how the client left."""
        data = bytearray()
        ended: str | None = None
        try:
            while True:
                chunk = conn.sslobj.read(RECV_SIZE)
                if not chunk:  # the stdlib returns b"" on close_notify
                    ended = CLIENT_CLOSE_NOTIFY
                    break
                data += chunk
        except ssl.SSLWantReadError:
            if conn.eof:
                ended = "client closed the TCP connection"
        except ssl.SSLZeroReturnError:
            ended = CLIENT_CLOSE_NOTIFY
        except ssl.SSLEOFError:
            ended = "client closed the TCP connection"
        except ssl.SSLError as e:
            ended = f"TLS error after the handshake: {self._reason(e)}"
        if data:
            self._talk(conn, conn.proto.feed(bytes(data)))  # type: ignore[union-attr]
        # If the protocol already decided to close (CLOSING), _send flushes its reply first.
        if ended and conn.state == APP:
            if ended == CLIENT_CLOSE_NOTIFY:
                self._close_app(conn, ended)  # answer with our close_notify (RFC 5246 7.2.1), then close
            else:
                self._finish(conn, ended)

    @staticmethod
    def _reason(e: ssl.SSLError) -> str:
        reason = getattr(e, "reason", None)
        return reason.replace("_", " ").lower() if reason else str(e)

    def _talk(self, conn: _Conn, reply: app.Reply) -> None:
        """Carry out a protocol's reply: record its entries, encrypt its bytes, close if asked."""
        if conn.state != APP:
            return
        if reply.entries:
            conn.entries.extend(reply.entries)  # type: ignore[union-attr]
        if reply.out:
            try:
                conn.sslobj.write(reply.out)
            except ssl.SSLError as e:
                self._close_app(conn, f"TLS error after the handshake: {self._reason(e)}")
                return
        if reply.close:
            self._close_app(conn, reply.close)
        elif reply.entries or reply.out:
            bytes_in, bytes_out = self._app_bytes(conn)
            self.log.update(  # type: ignore[union-attr]
                conn.record, app=conn.entries.snapshot(), app_bytes_in=bytes_in, app_bytes_out=bytes_out  # type: ignore[union-attr]
            )

    def _close_app(self, conn: _Conn, how: str) -> None:
        """The server ends the application phase: close_notify, then close once it is out.

        The record is finished *before* the last bytes go out, so a client
        that has seen the server close can rely on the file line existing.
        """
        try:
            conn.sslobj.unwrap()  # queues close_notify; the peer's comes later or never
        except (ssl.SSLWantReadError, ssl.SSLError):
            pass
        self._end_app(conn, how)
        conn.state = CLOSING
        self._set_deadline(conn, conn.app_timeout)

    def _app_bytes(self, conn: _Conn) -> tuple[int, int]:
        """Bytes after the handshake: received, and written by us (sent or still queued)."""
        rec = conn.record
        assert rec is not None
        written = conn.bytes_out + len(conn.pending or b"") + conn.outgoing.pending
        return conn.bytes_in - rec.bytes_in, written - rec.bytes_out

    def _end_app(self, conn: _Conn, how: str) -> None:
        """Finish the record of a completed handshake: app fields final, written to the file."""
        if conn.app_ended or conn.record is None or conn.sock is None or not conn.published:
            return
        conn.app_ended = True
        bytes_in, bytes_out = self._app_bytes(conn)
        self.log.update(  # type: ignore[union-attr]
            conn.record,
            final=True,
            app=conn.entries.snapshot() if conn.entries is not None else [],
            app_end=how,
            app_bytes_in=bytes_in,
            app_bytes_out=bytes_out,
            closed_mono=clock.now(),
        )
        log.debug("connection #%d from %s ended: %s", conn.record.id, conn.peer, how)

    def _flush_bio(self, conn: _Conn) -> None:
        data = conn.outgoing.read()
        if data:
            if conn.pending is None:
                conn.pending = bytearray(data)
            else:
                conn.pending += data
        if conn.sock is not None and conn.pending:
            try:
                sent = conn.sock.send(conn.pending)
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError:
                conn.pending = None
                return
            conn.bytes_out += sent
            del conn.pending[:sent]

    def _send(self, conn: _Conn) -> None:
        try:
            self._flush_bio(conn)
        except OSError as e:
            self._finish(conn, f"connection error: {e}")
            return
        want = selectors.EVENT_READ | (selectors.EVENT_WRITE if conn.pending else 0)
        if conn.state == CLOSING and not conn.pending:
            try:
                conn.sock.shutdown(socket.SHUT_WR)
            except OSError:
                pass
            self._finish(conn, None)
            return
        if want != conn.events and self._sel is not None:
            conn.events = want
            self._sel.modify(conn.sock, want, conn)

    def _publish(self, conn: _Conn, error: str | None) -> HandshakeRecord:
        """Append the connection's one record (idempotent).

        Called when the handshake completes or fails, *before* the server's
        last flight (or alert) goes out, so a client that has finished its
        handshake can rely on the record already existing.  A failed
        handshake is final and goes to the file now; a completed one goes
        there when its connection ends (:meth:`_end_app`).
        """
        rec = conn.record
        if rec is None:
            rec = self._make_record(conn, None, None, False, error)
        if conn.published:
            return rec  # a late problem (reply not taken) does not rewrite history
        if error and not rec.error:
            rec.error = error
        conn.published = True
        # Handshake bytes only: application data that came in the same TCP
        # segment as the client's Finished is still unread in the BIO.
        completed = conn.state != HANDSHAKE
        rec.bytes_in = conn.bytes_in - (conn.incoming.pending if completed else 0)
        rec.bytes_out = conn.bytes_out + len(conn.pending or b"") + conn.outgoing.pending
        if conn.sock is not None:
            self.log.append(rec, final=not completed)  # type: ignore[union-attr]
        if rec.error:
            log.debug("handshake #%d from %s: %s", rec.id, rec.peer, rec.error)
        return rec

    def _finish(self, conn: _Conn, reason: str | None) -> None:
        """End a connection; every connection produces exactly one record.

        ``reason`` is the handshake's ``error`` while the handshake is under
        way, and the record's ``app_end`` after it: nothing that happens once
        the handshake completed can turn it into a failure.
        """
        if conn.done:
            return
        if conn.state == HANDSHAKE:
            self._publish(conn, reason)
        else:
            self._end_app(conn, reason or "connection closed")
        conn.done = True
        if conn.sock is not None:
            self._conns.discard(conn)
            try:
                self._sel.unregister(conn.sock)  # type: ignore[union-attr]
            except (KeyError, ValueError):
                pass
            conn.sock.close()
        # The timer heap keeps this object until its deadline passes: let go of
        # the OpenSSL objects now instead of holding thousands of them.
        conn.sslobj.harness_conn = None  # type: ignore[attr-defined]
        conn.sslobj = conn.incoming = conn.outgoing = None  # type: ignore[assignment]
        conn.msgs = conn.pending = conn.proto = None  # type: ignore[assignment]

    # --- message callback (hot path: keep it cheap, never raise) ---------------------

    def _on_msg(self, obj: Any, direction: str, version: int, content_type: int, msg_type: int, data: bytes) -> None:
        """Stash handshake messages; parsing waits until the server's flight is out."""
        if content_type == 22:
            conn = obj.harness_conn
            if conn is not None:
                if conn.msgs is None:
                    conn.msgs = [(direction == "write", version, msg_type, data)]
                else:
                    conn.msgs.append((direction == "write", version, msg_type, data))

    @staticmethod
    def _digest(conn: _Conn) -> None:
        """Parse the stashed messages: offers, choice, issued tickets, round trips."""
        msgs, conn.msgs = conn.msgs, None
        if not msgs:
            return
        tickets = []
        last_out = False
        round_trips = conn.round_trips
        for written, version, msg_type, data in msgs:
            try:
                if not written:
                    last_out = False
                    if msg_type == CLIENT_HELLO:
                        conn.ch = parse_client_hello(data)  # after a HelloRetryRequest: the second one
                    continue
                # A round trip = a client flight answered by a server flight.
                # TLS 1.3 tickets follow the client's Finished but answer nothing.
                if not last_out and (msg_type != NEW_SESSION_TICKET or version != 0x0304):
                    round_trips += 1
                    last_out = True
                if msg_type == SERVER_HELLO:
                    conn.sh = parse_server_hello(data)
                elif msg_type == NEW_SESSION_TICKET:
                    tickets.append(parse_new_session_ticket(data, tls13=version == 0x0304))
            except ParseError as e:
                what = "ClientHello" if msg_type == CLIENT_HELLO else f"handshake message {msg_type}"
                conn.parse_error = f"unparsable {what}: {e}"
        conn.round_trips = round_trips
        if tickets:
            conn.tickets = (conn.tickets or []) + tickets

    # --- query API -----------------------------------------------------------------

    def records(self) -> list[HandshakeRecord]:
        return self._log().records()

    def mark(self) -> int:
        return self._log().mark()

    def since(self, mark: int) -> list[HandshakeRecord]:
        return self._log().since(mark)

    def wait_for(
        self, predicate: Predicate | None = None, *, timeout: float = 10.0, since: int | None = None, **fields: Any
    ) -> HandshakeRecord:
        return self._log().wait_for(predicate, timeout=timeout, since=since, **fields)

    def _log(self) -> RecordLog:
        if self.log is None:
            raise HarnessError("server not started: no records yet")
        return self.log


def install_msg_callback(ctx: ssl.SSLContext, fn: Callable[..., None]) -> None:
    """Install ``fn`` as OpenSSL's message callback without the stdlib's enum wrapper.

    ``SSLContext._msg_callback`` (a CPython debugging hook) wraps the callback
    to convert ints into enums on every message; the raw ``_ssl`` slot takes
    the callable as is, which keeps the per-message cost to one Python call.
    """
    slot = getattr(ssl._SSLContext, "_msg_callback", None)  # type: ignore[attr-defined]
    if slot is None or not hasattr(slot, "__set__"):
        raise HarnessError("this Python's ssl module has no message callback: lineage cannot work")
    slot.__set__(ctx, fn)
