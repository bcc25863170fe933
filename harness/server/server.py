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

The steps of the handshake path that need no loop (context set-up, the
message callback, digesting messages into a record) live in
``handshake.py``, where the start-up self-check (``selfcheck.py``) runs them
too.

The record of a connection is published the moment its handshake ends
(``_handshake_done``): the application phase that follows (MQTT for an hour,
an HTTP request, silence, an idle timeout, a TLS error) only fills the
``app*`` fields and ``closed_mono`` and never sets ``error``.  The JSON-lines
file gets the record when the connection ends (see ``records.py``).

``tickets_sent_mono`` is stamped in :meth:`_flush_bio`, just *before* the
``send()`` that hands the socket the last byte of the flight carrying a
ticket (usually just after the record is published): a lower bound of the
moment a device could have it, so "the device stored before the server sent
the ticket" stays proof whatever the scheduler does after the send.  ``ticket_delay`` holds a TLS 1.3 connection's output after the
handshake (``Conn.held``) until a timer in the same heap as the deadlines
releases it: the loop never sleeps.

Under abuse (``bench/server_abuse.py``, ``tests/server/test_abuse.py``) the
loop must outlive every client and keep a bounded amount of memory:

* Every step of a connection (the read made while accepting and its
  deadlines included) runs under :meth:`_guarded`: a bug costs that
  connection ("internal server error: ..." in its record), never the loop.
* At most ``max_connections`` are open; at the cap the longest-running
  handshake is closed to make room (:meth:`_accept`), and out of file
  descriptors the server makes room the same way or pauses accepting
  instead of retrying in a tight loop.
* A connection's handshake lasts at most ``handshake_timeout`` from accept,
  however slowly its bytes come; after it, silence is bounded by
  ``app_timeout``.
* Output for a client that does not read stops its input at
  :data:`MAX_PENDING`.
* An ended connection lets go of everything the client sent
  (:meth:`_drop`); what stays is its record, whose size the ClientHello
  parser bounds (``clienthello.py``).
"""

from __future__ import annotations

import errno
import heapq
import itertools
import logging
import queue
import selectors
import socket
import ssl
import threading
from pathlib import Path
from typing import Any, Callable

from harness import clock
from harness.errors import HarnessError, ServerError

from . import app, certs
from .config import RUNTIME_KNOBS, ServerConfig, ServerConfigError
from .handshake import (
    APP,
    CLOSING,
    HANDSHAKE,
    Conn,
    ServerContext,
    alert_text,
    completed_record,
    digest,
    make_record,
    note_tickets,
    stash_message,
    tickets_sent,
    tls_reason,
)
from .lineage import Lineage
from .openssl import OpenSSL
from .records import HandshakeRecord, Predicate, RecordLog
from .selfcheck import selfcheck

log = logging.getLogger(__name__)

RECV_SIZE = 65536
#: Output queued for a client that does not read, beyond which the server stops reading that client's
#: input until it takes some: what a connection holds is bounded by what it takes, not by what it sends.
MAX_PENDING = 1 << 20
#: How long accepting pauses when the process is out of file descriptors and no handshake can make room.
ACCEPT_BACKOFF = 0.5
#: Out of descriptors or kernel memory: accepting again at once fails again (and spins the loop).
_ACCEPT_EXHAUSTED = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
# Timer kinds in the heap: the connection's deadline, or the end of its ticket_delay hold.
DEADLINE, RELEASE = 0, 1
CLIENT_CLOSE_NOTIFY = "client closed (close_notify)"
_HTTP_METHODS = (b"GET ", b"POST", b"HEAD", b"PUT ", b"OPTI", b"DELE", b"PATC", b"CONN")


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
        self._tls: ServerContext | None = None
        self._lineage = Lineage()
        self._ids = itertools.count(1)
        self._listen: socket.socket | None = None
        self._sel: selectors.BaseSelector | None = None
        self._wake_r: socket.socket | None = None
        self._wake_w: socket.socket | None = None
        self._calls: queue.SimpleQueue = queue.SimpleQueue()
        self._conns: set[Conn] = set()
        # Connections still in their handshake, oldest first: the first to go when room is needed.
        self._handshaking: dict[Conn, None] = {}
        self._accepting = False  # the listening socket is in the selector
        self._resume_at: float | None = None  # harness clock when accepting resumes after a backoff
        self._warned: dict[str, float] = {}  # warning kind -> harness clock when last logged (see _warn)
        self._timers: list[tuple[float, int, Conn, int]] = []
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
        ossl = OpenSSL.load()
        self._tls = ServerContext.create(self.cert_paths, ossl, self._on_msg)
        self._apply(cfg)
        self._install_new_keys()
        selfcheck(self.cert_paths, self.config, self._on_msg, ossl)
        family = socket.AF_INET6 if ":" in cfg.host else socket.AF_INET
        try:
            self._listen = socket.create_server((cfg.host, cfg.port), family=family, backlog=512)
        except OSError as e:
            raise ServerError(f"reference server: cannot listen on {cfg.host}:{cfg.port}: {e.strerror or e}") \
                from None
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
        self._accepting = True
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

    @property
    def serving(self) -> bool:
        """The loop thread is alive (started and not stopped, and it did not die)."""
        return self._thread is not None and self._thread.is_alive()

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
        self._tls.install_new_keys(self._lineage)  # type: ignore[union-attr]

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
            f"protocol={c.protocol} app_timeout={c.app_timeout:g}s ticket_delay={c.ticket_delay:g}s "
            f"max_connections={c.max_connections}"
        )

    # --- OpenSSL context -----------------------------------------------------------

    def _apply(self, cfg: ServerConfig) -> None:
        """Push knobs into the SSL_CTX (loop thread, or before the loop starts)."""
        self._tls.apply(cfg, self.ca_path)  # type: ignore[union-attr]
        self.config = cfg

    # --- the loop ------------------------------------------------------------------

    def _loop(self) -> None:
        sel = self._sel
        assert sel is not None
        try:
            while self._running:
                timeout = self._fire_timers()
                if self._resume_at is not None:
                    left = self._resume_at - clock.now()
                    if left <= 0:
                        self._resume_accepting()
                    elif timeout is None or left < timeout:
                        timeout = left
                for key, mask in sel.select(timeout):
                    data = key.data
                    if data == "listen":
                        self._accept()
                    elif data == "wake":
                        self._drain_wake()
                    else:
                        self._guarded(data, self._service, data, mask)
        except Exception:
            log.exception("server loop crashed")
        finally:
            for conn in list(self._conns):
                try:
                    if conn.held is not None:  # no more waiting: what ticket_delay held goes first
                        self._release(conn)
                    if conn.state == APP:  # tell the device, which may be waiting on an open connection
                        self._close_app(conn, "server stopped")
                    if conn.state != HANDSHAKE:
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
            deadline, _, conn, kind = timers[0]
            if conn.done or deadline != (conn.deadline if kind == DEADLINE else conn.release_at):
                heapq.heappop(timers)
                continue
            if deadline > now:
                return deadline - now
            heapq.heappop(timers)
            self._guarded(conn, self._timer, conn, kind, now)
        return None

    def _timer(self, conn: Conn, kind: int, now: float) -> None:
        """A connection's deadline (or the end of its ticket_delay hold) has come."""
        timers = self._timers
        if kind == RELEASE:
            self._release(conn)
            self._send(conn)
            return
        if conn.held is not None and conn.state != HANDSHAKE:
            # The server is still holding its own bytes: idle and reply limits count from their release.
            conn.deadline = conn.release_at + conn.app_timeout  # type: ignore[operator]
            heapq.heappush(timers, (conn.deadline, next(self._seq), conn, DEADLINE))
            return
        if conn.state == HANDSHAKE:
            what = "client sent nothing" if conn.bytes_in == 0 else f"after {conn.bytes_in} bytes from the client"
            self._finish(conn, f"handshake timed out after {conn.handshake_timeout:g} s ({what})")
        elif conn.state == APP:
            due = conn.last_in + conn.app_timeout
            if due > now:  # data came meanwhile: the idle limit counts from the last bytes
                conn.deadline = due
                heapq.heappush(timers, (due, next(self._seq), conn, DEADLINE))
                return
            self._close_app(conn, f"idle timeout after {conn.app_timeout:g} s")
            self._send(conn)
        else:
            self._finish(conn, "client did not take the reply in time")

    def _guarded(self, conn: Conn, fn: Callable[..., None], *args: Any) -> None:
        """Run one connection's step; a bug in it costs that connection, never the loop.

        The connection still gets its record ("internal server error: ...");
        if even ending it fails, it is dropped without one rather than left
        registered (a socket nobody reads would spin the loop).
        """
        try:
            fn(*args)
        except Exception as e:
            log.exception("internal error on connection from %s", conn.peer)
            try:
                self._finish(conn, f"internal server error: {type(e).__name__}")
            except Exception:
                log.exception("could not end connection from %s after an internal error", conn.peer)
                self._drop(conn)

    def _set_deadline(self, conn: Conn, seconds: float) -> None:
        conn.deadline = clock.now() + seconds
        heapq.heappush(self._timers, (conn.deadline, next(self._seq), conn, DEADLINE))

    def _hold(self, conn: Conn, until: float) -> None:
        """Keep what is written from now on (and what OpenSSL just wrote) until ``until`` (ticket_delay)."""
        conn.held = bytearray(conn.outgoing.read())
        conn.release_at = until
        heapq.heappush(self._timers, (until, next(self._seq), conn, RELEASE))

    @staticmethod
    def _release(conn: Conn) -> None:
        """What was held joins the bytes to send, in order; the caller sends."""
        held, conn.held, conn.release_at = conn.held, None, None
        if held:
            if conn.pending is None:
                conn.pending = held
            else:
                conn.pending += held

    def _accept(self) -> None:
        """Take the waiting connections (a batch at a time), each within ``max_connections``.

        At the cap, room is made by closing the connection that has been in
        its handshake the longest (its record says so): a flood of idle or
        slow clients cannot lock devices out, nor grow the server past the
        cap.  If every open connection is past its handshake, the new one is
        refused (with its record) and accepting stops until one ends; so it
        does, for a moment, when the process is out of file descriptors
        (accepting again at once would fail again, and spin the loop).
        """
        assert self._listen is not None and self._sel is not None
        for _ in range(64):
            try:
                sock, addr = self._listen.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                if e.errno in _ACCEPT_EXHAUSTED:
                    self._warn("accept", "accept failed: %s (%d connections open)", e.strerror or e, len(self._conns))
                    if not self._make_room(e.strerror or str(e)):
                        self._pause_accepting(clock.now() + ACCEPT_BACKOFF)
                    return
                continue  # the client gave up before we took it (ECONNABORTED and kin): take the next
            cap = self.config.max_connections
            full = len(self._conns) >= cap and not self._make_room(f"max_connections={cap} reached")
            try:
                conn = self._open(sock, addr)
            except Exception:
                log.exception("cannot set up a connection from %s", addr)
                sock.close()
                continue
            if full:
                self._finish(conn, f"refused: max_connections={cap} reached, all past their handshake")
                self._pause_accepting(None)
                return
            # The ClientHello often arrives with the connection: answer it now
            # instead of after another trip through epoll.
            self._guarded(conn, self._service, conn, selectors.EVENT_READ)

    def _open(self, sock: socket.socket, addr: Any) -> Conn:
        sock.setblocking(False)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:  # the peer may already be gone; the first read says so
            pass
        peer = f"[{addr[0]}]:{addr[1]}" if ":" in addr[0] else f"{addr[0]}:{addr[1]}"
        conn = self._tls.new_conn(self.config, sock, peer)  # type: ignore[union-attr]
        self._sel.register(sock, selectors.EVENT_READ, conn)  # type: ignore[union-attr]
        # In the tables only once nothing can fail: a half-made connection would never end.
        self._conns.add(conn)
        self._handshaking[conn] = None
        heapq.heappush(self._timers, (conn.deadline, next(self._seq), conn, DEADLINE))
        return conn

    def _make_room(self, why: str) -> bool:
        """Close the oldest connection still in its handshake, if there is one."""
        if not self._handshaking:
            return False
        oldest = next(iter(self._handshaking))
        self._warn("room", "%d connections open (%s): closing the longest-running handshakes to make room",
                   len(self._conns), why)
        self._finish(oldest, f"closed to make room for a new connection: {why}")
        return True

    def _warn(self, kind: str, msg: str, *args: Any) -> None:
        """A warning at most every 10 s per kind: a flood must not turn into a flood of log lines."""
        now = clock.now()
        if now - self._warned.get(kind, -1e9) >= 10.0:
            self._warned[kind] = now
            log.warning(msg, *args)

    def _pause_accepting(self, until: float | None) -> None:
        """Leave new connections in the listen backlog until a connection ends (or ``until``)."""
        if self._accepting and self._sel is not None and self._listen is not None:
            self._sel.unregister(self._listen)
            self._accepting = False
        self._resume_at = until

    def _resume_accepting(self) -> None:
        self._resume_at = None
        if not self._accepting and self._running and self._sel is not None and self._listen is not None:
            self._sel.register(self._listen, selectors.EVENT_READ, "listen")
            self._accepting = True

    def _service(self, conn: Conn, mask: int) -> None:
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

    def _handshake_step(self, conn: Conn) -> None:
        try:
            conn.sslobj.do_handshake()
        except ssl.SSLWantReadError:
            if conn.nst_new:
                note_tickets(conn)
            if conn.eof:
                self._finish(conn, self._vanished(conn))
            return
        except ssl.SSLEOFError:
            self._finish(conn, self._vanished(conn))
            return
        except ssl.SSLZeroReturnError:  # an SSLError whose text ("connection has been closed (EOF)") misleads
            digest(conn)
            self._publish(conn, f"client sent close_notify mid-handshake (after {conn.bytes_in} bytes)")
            self._finish(conn, None)
            return
        except ssl.SSLError as e:
            conn.failure = getattr(e, "reason", None) or type(e).__name__
            digest(conn)
            self._publish(conn, self._describe_tls_error(conn, e))
            self._flush_bio(conn)  # the alert
            self._finish(conn, None)
            return
        except OSError as e:
            self._finish(conn, f"TLS error: {e}")
            return
        self._handshake_done(conn)

    @staticmethod
    def _vanished(conn: Conn) -> str:
        if conn.bytes_in == 0:
            return "client closed the connection without sending anything"
        return f"client closed the connection mid-handshake (after {conn.bytes_in} bytes)"

    def _describe_tls_error(self, conn: Conn, e: ssl.SSLError) -> str:
        reason = tls_reason(e)
        text = "TLS handshake failed: " + reason
        if conn.first_bytes.startswith(_HTTP_METHODS):
            text += " (plain HTTP request on the TLS port)"
        elif conn.first_bytes[:1] == b"\x15":
            text += " (the client sent an alert instead of a ClientHello)"
        elif conn.first_bytes and conn.first_bytes[0] != 0x16:
            text += " (first bytes are not a TLS handshake record)"
        elif conn.alert_in is not None and "alert" not in reason:  # OpenSSL names the alerts it knows
            text += f" (the client sent {alert_text(conn.alert_in)})"
        elif conn.parse_error:
            text += f" ({conn.parse_error})"
        return text

    def _handshake_done(self, conn: Conn) -> None:
        """Publish the record now: whatever the application does next cannot hide or spoil it.

        OpenSSL has written the server's last flight, TLS 1.3 NewSessionTickets
        included, by the time ``do_handshake`` returns, so ``issued`` and
        ``bytes_out`` are complete here.  With ``ticket_delay`` a TLS 1.3
        connection's output from here on (the tickets first) is held that long
        after the handshake's end; the record does not wait.
        """
        if conn.nst_new:
            note_tickets(conn)
        rec = completed_record(conn, next(self._ids), self._lineage)
        conn.state = APP
        self._handshaking.pop(conn, None)
        rec.protocol = conn.protocol
        # Published before anything else can go wrong: its tickets are in the
        # lineage already, and a resumption must find the record that issued them.
        self._publish(conn, None)
        if conn.ticket_delay > 0 and rec.version == "TLSv1.3":
            self._hold(conn, rec.mono + conn.ticket_delay)
        conn.proto = app.make(conn.protocol, conn.greeting)
        conn.entries = app.AppEntries()
        conn.last_in = clock.now()
        self._set_deadline(conn, conn.app_timeout)
        self._talk(conn, conn.proto.start())

    def _app_step(self, conn: Conn) -> None:
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
            ended = f"TLS error after the handshake: {tls_reason(e)}"
        if data:
            self._talk(conn, conn.proto.feed(bytes(data)))  # type: ignore[union-attr]
        # If the protocol already decided to close (CLOSING), _send flushes its reply first.
        if ended and conn.state == APP:
            if ended == CLIENT_CLOSE_NOTIFY:
                self._close_app(conn, ended)  # answer with our close_notify (RFC 5246 7.2.1), then close
            else:
                self._finish(conn, ended)

    def _talk(self, conn: Conn, reply: app.Reply) -> None:
        """Carry out a protocol's reply: record its entries, encrypt its bytes, close if asked."""
        if conn.state != APP:
            return
        if reply.entries:
            conn.entries.extend(reply.entries)  # type: ignore[union-attr]
        if reply.out:
            try:
                conn.sslobj.write(reply.out)
            except ssl.SSLError as e:
                self._close_app(conn, f"TLS error after the handshake: {tls_reason(e)}")
                return
        if reply.close:
            self._close_app(conn, reply.close)
        elif reply.entries or reply.out:
            bytes_in, bytes_out = self._app_bytes(conn)
            self.log.update(  # type: ignore[union-attr]
                conn.record, app=conn.entries.snapshot(), app_bytes_in=bytes_in, app_bytes_out=bytes_out  # type: ignore[union-attr]
            )

    def _close_app(self, conn: Conn, how: str) -> None:
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

    def _app_bytes(self, conn: Conn) -> tuple[int, int]:
        """Bytes after the handshake: received, and written by us (sent or still queued)."""
        rec = conn.record
        assert rec is not None
        written = conn.bytes_out + len(conn.pending or b"") + len(conn.held or b"") + conn.outgoing.pending
        return conn.bytes_in - rec.bytes_in, written - rec.bytes_out

    def _end_app(self, conn: Conn, how: str, *, gone: bool = False) -> None:
        """Finish the record of a completed handshake: app fields final, written to the file.

        If tickets of this connection are still to go out (held by
        ticket_delay, or not yet taken by the socket) and the connection is not
        ``gone``, the file line waits for them (``final_due``, see
        :meth:`_flush_bio`), so it carries their send times; ``closed_mono``
        is then the moment they (and the close after them) left.
        """
        if conn.app_ended or conn.record is None or not conn.published:
            return
        conn.app_ended = True
        bytes_in, bytes_out = self._app_bytes(conn)
        changes: dict[str, Any] = dict(
            app=conn.entries.snapshot() if conn.entries is not None else [],
            app_end=how,
            app_bytes_in=bytes_in,
            app_bytes_out=bytes_out,
        )
        if not gone and conn.nst_ends and len(conn.nst_sent) < len(conn.nst_ends):  # type: ignore[arg-type]
            conn.final_due = True
            self.log.update(conn.record, **changes)  # type: ignore[union-attr]
        else:
            self.log.update(conn.record, final=True, closed_mono=clock.now(), **changes)  # type: ignore[union-attr]
        log.debug("connection #%d from %s ended: %s", conn.record.id, conn.peer, how)

    def _tickets_out(self, conn: Conn, now: float) -> None:
        """``bytes_out`` passed the end of one or more tickets: stamp them (``now``: before that send), update."""
        ends, sent = conn.nst_ends, conn.nst_sent
        assert ends is not None and sent is not None
        while len(sent) < len(ends) and conn.bytes_out >= ends[len(sent)]:
            sent.append(now)
        rec = conn.record
        if rec is None or not conn.published or not rec.issued:
            return  # make_record picks the times up
        changes: dict[str, Any] = {"tickets_sent_mono": tickets_sent(conn)}
        if conn.final_due and len(sent) == len(ends):
            conn.final_due = False
            changes["closed_mono"] = now
            changes["final"] = True
        self.log.update(rec, **changes)  # type: ignore[union-attr]

    def _flush_bio(self, conn: Conn) -> None:
        if conn.nst_new:
            note_tickets(conn)
        data = conn.outgoing.read()
        if data:
            if conn.held is not None:
                conn.held += data
            elif conn.pending is None:
                conn.pending = bytearray(data)
            else:
                conn.pending += data
        while conn.pending:
            chunk: bytes | bytearray = conn.pending
            split = False
            if conn.final_due:
                # The file line (final once the tickets are out) must exist before
                # the bytes after them, the close among them, reach the client.
                cut = conn.nst_ends[-1] - conn.bytes_out  # type: ignore[index]
                if 0 < cut < len(chunk):
                    chunk, split = bytes(chunk[:cut]), True
            before = clock.now()
            try:
                sent = conn.sock.send(chunk)
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError:
                conn.pending = None
                return
            conn.bytes_out += sent
            del conn.pending[:sent]
            if conn.nst_ends and len(conn.nst_sent) < len(conn.nst_ends) \
                    and conn.bytes_out >= conn.nst_ends[len(conn.nst_sent)]:  # type: ignore[arg-type]
                self._tickets_out(conn, before)
            if not split or sent < len(chunk):
                break

    def _send(self, conn: Conn) -> None:
        try:
            self._flush_bio(conn)
        except OSError as e:
            self._finish(conn, f"connection error: {e}")
            return
        want = selectors.EVENT_READ | (selectors.EVENT_WRITE if conn.pending else 0)
        if conn.pending and len(conn.pending) + len(conn.held or b"") >= MAX_PENDING:
            want = selectors.EVENT_WRITE  # read again once the client takes some of what it asked for
        if conn.state == CLOSING and not conn.pending and conn.held is None:
            try:
                conn.sock.shutdown(socket.SHUT_WR)
            except OSError:
                pass
            self._finish(conn, None)
            return
        if want != conn.events and self._sel is not None:
            conn.events = want
            self._sel.modify(conn.sock, want, conn)

    def _publish(self, conn: Conn, error: str | None) -> HandshakeRecord:
        """Append the connection's one record (idempotent).

        Called when the handshake completes or fails, *before* the server's
        last flight (or alert) goes out, so a client that has finished its
        handshake can rely on the record already existing.  A failed
        handshake is final and goes to the file now; a completed one goes
        there when its connection ends (:meth:`_end_app`).
        """
        rec = conn.record
        if rec is None:
            rec = make_record(conn, next(self._ids), self._lineage, None, None, False, error)
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
        self.log.append(rec, final=not completed)  # type: ignore[union-attr]
        if rec.error:
            log.debug("handshake #%d from %s: %s", rec.id, rec.peer, rec.error)
        return rec

    def _finish(self, conn: Conn, reason: str | None) -> None:
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
            self._end_app(conn, reason or "connection closed", gone=True)
            if conn.final_due:  # it ended with tickets still unsent: write what is known
                conn.final_due = False
                self.log.update(conn.record, final=True, closed_mono=clock.now())  # type: ignore[union-attr]
        self._drop(conn)

    def _drop(self, conn: Conn) -> None:
        """Let go of a connection: socket closed, out of every table, its buffers freed."""
        conn.done = True
        self._conns.discard(conn)
        self._handshaking.pop(conn, None)
        try:
            self._sel.unregister(conn.sock)  # type: ignore[union-attr]
        except (KeyError, ValueError):
            pass
        conn.sock.close()  # type: ignore[union-attr]
        # The timer heap may keep this object until its deadline passes: let go of
        # the OpenSSL objects and of what the client sent (a ClientHello can carry
        # 64 KiB of ticket) now, instead of holding thousands of them.
        if conn.sslobj is not None:
            conn.sslobj.harness_conn = None  # type: ignore[attr-defined]
        conn.sslobj = conn.incoming = conn.outgoing = None  # type: ignore[assignment]
        conn.msgs = conn.pending = conn.held = conn.proto = None  # type: ignore[assignment]
        conn.ch = conn.sh = conn.tickets = conn.entries = conn.record = None
        conn.nst_ends = conn.nst_sent = conn.ticket_ix = None
        # Entries of ended connections leave the heap when they reach its top,
        # which one long-lived connection can delay for its whole timeout:
        # rebuild the heap once they outnumber the live ones.
        timers = self._timers
        if len(timers) > 256 and len(timers) > 4 * len(self._conns):
            timers[:] = [t for t in timers if not t[2].done]  # in place: _fire_timers may be walking it
            heapq.heapify(timers)
        if not self._accepting and len(self._conns) < self.config.max_connections:
            self._resume_accepting()

    # --- message callback (hot path: one Python call per message, see handshake.py) ------

    _on_msg = staticmethod(stash_message)

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

