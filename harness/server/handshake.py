"""The handshake path of the reference server, in pieces that need no loop.

Why apart from ``server.py``: the server's start-up self-check must prove
that lineage works on *this* Python and OpenSSL, and it can only prove that
by running the very code the server runs: the same context set-up, the same
message callback, the same parsing of stashed messages and the same lineage
table.  Keeping these pieces free of the selector loop lets the self-check
(``selfcheck.py``) call them on a context of its own, with no socket and no
copy of the server, while the loop in ``server.py`` calls them for every
connection.
"""

from __future__ import annotations

import logging
import re
import selectors
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from harness import clock
from harness.errors import HarnessError
from harness.fingerprint import fp

from . import app, certs
from .clienthello import (
    CLIENT_HELLO,
    FINISHED,
    NEW_SESSION_TICKET,
    SERVER_HELLO,
    ClientHello,
    ParseError,
    ServerHello,
    parse_client_hello,
    parse_new_session_ticket,
    parse_server_hello,
)
from .config import ServerConfig, ServerConfigError
from .lineage import Issued, Lineage
from .openssl import OpenSSL, new_ticket_keys
from .records import PSK_MORE, HandshakeRecord, Offered

# Its lines are the server's to the reader (pytest prints the logger name): keep that name.
log = logging.getLogger("harness.server.server")

HANDSHAKE, APP, CLOSING = 0, 1, 2

#: OpenSSL's message callback: (SSLObject, direction, version, content type, message type, bytes).
MsgCallback = Callable[[Any, str, int, int, int, bytes], None]


class ConnSSLObject(ssl.SSLObject):
    """SSLObject that knows its connection, so the message callback finds it in O(1)."""

    harness_conn: "Conn | None" = None


@dataclass(eq=False)
class Conn:
    """State of one connection while it is open (loop thread only)."""

    sock: socket.socket | None  # None only in the self-check, which has no socket
    peer: str
    sslobj: ConnSSLObject
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
    ticket_delay: float = 0.0  # TLS 1.3: hold what is written after the handshake this long
    handshake_timeout: float = 10.0  # the limit in force at accept (``deadline`` = ``t0`` + this)
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
    # When tickets went out.  The message callback counts NewSessionTickets written
    # (nst_new); the loop then notes where the bytes written so far end in the
    # stream (nst_ends: a ticket is handed to the socket once bytes_out reaches its
    # entry) and the harness clock when that happened (nst_sent).  ticket_ix maps
    # the parsed tickets (``tickets``, hence ``issued``) to those entries.
    nst_new: int = 0
    nst_ends: list | None = None
    nst_sent: list | None = None
    ticket_ix: list | None = None
    nst_seen: int = 0  # NewSessionTickets digested
    server_finished: bool = False  # the server wrote a Finished (TLS 1.2: it resumed, abbreviated handshake)
    failure: str | None = None  # OpenSSL's reason code when the handshake failed on a TLS error
    held: bytearray | None = None  # output held back by ticket_delay (after ``pending``)
    release_at: float | None = None  # harness clock when ``held`` goes out
    final_due: bool = False  # the application phase ended; the file line waits for the tickets
    parse_error: str | None = None
    alert_in: bytes | None = None  # the last alert the client sent (level, description)
    proto: app.Protocol | None = None
    entries: app.AppEntries | None = None
    last_in: float = 0.0  # harness clock of the last bytes received in the application phase
    record: HandshakeRecord | None = None
    done: bool = False
    published: bool = False
    app_ended: bool = False
    events: int = selectors.EVENT_READ


@dataclass
class ServerContext:
    """The server's ``SSLContext`` with the ``SSL_CTX *`` the stdlib does not expose."""

    context: ssl.SSLContext
    ptr: int
    ossl: OpenSSL

    @classmethod
    def create(cls, paths: certs.CertPaths, ossl: OpenSSL, on_msg: MsgCallback) -> "ServerContext":
        """Load the certificate and install ``on_msg`` as the message callback."""
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        try:
            ctx.load_cert_chain(paths.cert, paths.key)
        except (OSError, ssl.SSLError) as e:
            raise ServerConfigError(f"cannot load certificate {paths.cert} / key {paths.key}: {e}") from None
        ctx.sslobject_class = ConnSSLObject
        ptr = ossl.ctx_pointer(ctx)
        install_msg_callback(ctx, on_msg)
        return cls(ctx, ptr, ossl)

    def apply(self, cfg: ServerConfig, ca_path: Path | None) -> None:
        """Push knobs into the SSL_CTX (loop thread, or before the loop starts)."""
        ctx, ossl = self.context, self.ossl
        order = [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3]
        wanted = [v for v in order if v.name.replace("_", ".") in cfg.versions]
        ctx.minimum_version, ctx.maximum_version = wanted[0], wanted[-1]
        if cfg.tickets:
            ctx.options &= ~ssl.OP_NO_TICKET
            ctx.num_tickets = cfg.tls13_tickets
        else:
            ctx.options |= ssl.OP_NO_TICKET
            ctx.num_tickets = 0
        ossl.set_timeout(self.ptr, cfg.ticket_lifetime)
        ossl.set_session_cache(self.ptr, cfg.session_cache)
        if cfg.client_cert:
            ca = cfg.client_ca or ca_path
            try:
                ctx.load_verify_locations(cafile=str(ca))
            except (OSError, ssl.SSLError) as e:
                raise ServerConfigError(f"cannot load client CA {ca}: {e}") from None
            ctx.verify_mode = ssl.CERT_REQUIRED
        else:
            ctx.verify_mode = ssl.CERT_NONE

    def install_new_keys(self, lineage: Lineage) -> None:
        """New ticket keys, a new lineage epoch: every ticket issued before stops working."""
        keys = new_ticket_keys()
        self.ossl.set_ticket_keys(self.ptr, keys)
        epoch = lineage.new_epoch(keys[:16])
        log.info("ticket keys rotated: epoch %d, key name %s", epoch, fp(keys[:16]))

    def new_conn(self, cfg: ServerConfig, sock: socket.socket | None, peer: str) -> Conn:
        """A server-side SSLObject on memory BIOs, with the knobs in force now."""
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        sslobj = self.context.wrap_bio(incoming, outgoing, server_side=True)
        now = clock.now()
        conn = Conn(
            sock=sock,
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
            ticket_delay=cfg.ticket_delay,
            handshake_timeout=cfg.handshake_timeout,
        )
        sslobj.harness_conn = conn  # type: ignore[attr-defined]
        return conn


# --- message callback (hot path: keep it cheap, never raise) ---------------------


def stash_message(obj: Any, direction: str, version: int, content_type: int, msg_type: int, data: bytes) -> None:
    """Stash handshake messages, and note the client's alerts; parsing waits until the server's flight is out."""
    if content_type == 21:
        if direction == "read" and obj.harness_conn is not None:
            obj.harness_conn.alert_in = data[:2]
    elif content_type == 22:
        conn = obj.harness_conn
        if conn is not None:
            written = direction == "write"
            if conn.msgs is None:
                conn.msgs = [(written, version, msg_type, data)]
            else:
                conn.msgs.append((written, version, msg_type, data))
            if written and msg_type == NEW_SESSION_TICKET:
                # Only counted: OpenSSL may still hold the record in its own write
                # buffer here, so the loop notes where the output ends once OpenSSL
                # returns (note_tickets).
                conn.nst_new += 1


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


def digest(conn: Conn) -> None:
    """Parse the stashed messages: offers, choice, issued tickets, round trips."""
    msgs, conn.msgs = conn.msgs, None
    if not msgs:
        return
    tickets = []
    ticket_ix = []
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
                index = conn.nst_seen
                conn.nst_seen += 1
                tickets.append(parse_new_session_ticket(data, tls13=version == 0x0304))
                ticket_ix.append(index)
            elif msg_type == FINISHED:
                conn.server_finished = True
        except ParseError as e:
            what = "ClientHello" if msg_type == CLIENT_HELLO else f"handshake message {msg_type}"
            conn.parse_error = f"unparsable {what}: {e}"
    conn.round_trips = round_trips
    if tickets:
        conn.tickets = (conn.tickets or []) + tickets
        conn.ticket_ix = (conn.ticket_ix or []) + ticket_ix


def note_tickets(conn: Conn) -> None:
    """Call when OpenSSL returns: the tickets it wrote end where the output written so far ends.

    Exact to the flight (a TLS 1.3 server's tickets are a flight of their
    own; a TLS 1.2 ticket travels with ChangeCipherSpec and Finished).
    """
    end = conn.bytes_out + len(conn.pending or b"") + len(conn.held or b"") + conn.outgoing.pending
    if conn.nst_ends is None:
        conn.nst_ends, conn.nst_sent = [], []
    conn.nst_ends.extend([end] * conn.nst_new)
    conn.nst_new = 0


def tickets_sent(conn: Conn) -> list[float]:
    """When each issued ticket (the record's ``issued``, in order) was handed to the socket, so far."""
    sent = conn.nst_sent
    if not sent or not conn.ticket_ix:
        return []
    return [sent[i] for i in conn.ticket_ix if i < len(sent)]


# --- the record ----------------------------------------------------------------------


def completed_record(conn: Conn, rid: int, lineage: Lineage) -> HandshakeRecord:
    """The record of a handshake OpenSSL has just completed."""
    obj = conn.sslobj
    cipher = obj.cipher()
    return make_record(conn, rid, lineage, obj.version(), cipher[0] if cipher else None, bool(obj.session_reused), None)


def make_record(
    conn: Conn, rid: int, lineage: Lineage, version: str | None, cipher: str | None, resumed: bool, error: str | None
) -> HandshakeRecord:
    """Judge lineage and build the record the moment the handshake ends.

    The caller hands out ids in order of handshake completion, so a ticket's
    issuing handshake always has its id before any client can offer that
    ticket back.
    """
    now_stamp = clock.stamp()
    digest(conn)
    ch = conn.ch
    verdict = lineage.judge(ch, conn.sh, version, resumed, conn.tickets_on, conn.versions, now_stamp.mono,
                            failure=conn.failure, server_finished=conn.server_finished)
    offered = Offered()
    if ch is not None:
        if ch.ticket:
            offered.ticket = fp(ch.ticket)
        offered.psk = [fp(p.identity) for p in ch.psk]  # type: ignore[misc]
        if ch.psk_more:
            offered.psk.append(PSK_MORE)
        offered.session_id = fp(lineage.offered_session_id(ch))
    issued: list[str] = []
    if version is not None:
        for nst in conn.tickets or ():
            issued.append(
                lineage.add_ticket(
                    nst.ticket,
                    Issued(rid, now_stamp.mono, conn.lifetime, version, age_add=nst.age_add),
                )
            )
        sh = conn.sh
        if version == "TLSv1.2" and not resumed and sh is not None and sh.session_id:
            lineage.add_session_id(sh.session_id, Issued(rid, now_stamp.mono, conn.lifetime, version))
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
        tickets_sent_mono=tickets_sent(conn) if issued else [],
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


#: TLS alert descriptions (RFC 8446 6, RFC 5246 7.2), for alerts OpenSSL has no reason for
ALERTS = {
    0: "close_notify", 10: "unexpected_message", 20: "bad_record_mac", 22: "record_overflow", 40: "handshake_failure",
    42: "bad_certificate", 43: "unsupported_certificate", 44: "certificate_revoked", 45: "certificate_expired",
    46: "certificate_unknown", 47: "illegal_parameter", 48: "unknown_ca", 49: "access_denied", 50: "decode_error",
    51: "decrypt_error", 70: "protocol_version", 71: "insufficient_security", 80: "internal_error",
    86: "inappropriate_fallback", 90: "user_canceled", 109: "missing_extension", 110: "unsupported_extension",
    112: "unrecognized_name", 113: "bad_certificate_status_response", 115: "unknown_psk_identity",
    116: "certificate_required", 120: "no_application_protocol",
}


def tls_reason(e: ssl.SSLError) -> str:
    """OpenSSL's reason in words ("sslv3 alert handshake failure"), else the exception's text.

    The text loses its ``[SSL]`` prefix and ``(_ssl.c:1006)`` suffix: a line
    of CPython is no reason, and records should read the same on every Python.
    """
    reason = getattr(e, "reason", None)
    if reason:
        return reason.replace("_", " ").lower()
    return re.sub(r"^\[\w+\]\s*|\s*\(_ssl\.c:\d+\)$", "", str(e))


def alert_text(alert: bytes) -> str:
    """The client's alert in words: "a fatal alert 255 (unknown)", "a warning alert user_canceled"."""
    level = {1: "warning", 2: "fatal"}.get(alert[0], f"level-{alert[0]}") if alert else "?"
    desc = alert[1] if len(alert) > 1 else -1
    name = ALERTS.get(desc, f"{desc} (unknown)")
    return f"a {level} alert {name}"
