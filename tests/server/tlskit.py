"""Independent TLS clients for the reference-server tests.

Clients are real and independent of the server's bookkeeping: ``openssl
s_client`` in separate processes (its ``-sess_out``/``-sess_in`` file plays the
device's flash surviving a power cut) and stdlib ``ssl`` clients.
"""

from __future__ import annotations

import re
import socket
import ssl
import subprocess
from dataclasses import dataclass
from pathlib import Path

from harness.server import ReferenceServer

REPO = Path(__file__).resolve().parents[2]


def read_all(tls: ssl.SSLSocket) -> bytes:
    """Read until the server closes (close_notify or TCP close)."""
    out = b""
    while True:
        try:
            chunk = tls.recv(4096)
        except ssl.SSLZeroReturnError:
            break
        if not chunk:
            break
        out += chunk
    return out


@dataclass
class SClient:
    """What ``openssl s_client`` itself said about one connection."""

    status: str | None  # "New" or "Reused" (s_client's own verdict)
    version: str | None
    echoed: bool
    output: str
    returncode: int


def s_client(
    srv: ReferenceServer,
    *,
    tls: str | None = None,
    sess_in: Path | None = None,
    sess_out: Path | None = None,
    extra: tuple[str, ...] = (),
    line: str = "hello server\n",
    ca: Path | None = None,
) -> SClient:
    """One ``openssl s_client`` process: handshake, send a line, read the echo and tickets."""
    cmd = [
        "openssl", "s_client", "-connect", f"{srv.host}:{srv.port}", "-servername", "server.test",
        "-CAfile", str(ca or srv.ca_path), "-verify_return_error", "-ign_eof",
    ]
    if tls:
        cmd.append({"1.2": "-tls1_2", "1.3": "-tls1_3"}[tls])
    if sess_in is not None:
        cmd += ["-sess_in", str(sess_in)]
    if sess_out is not None:
        cmd += ["-sess_out", str(sess_out)]
    cmd += list(extra)
    proc = subprocess.run(cmd, input=line, capture_output=True, text=True, timeout=20)
    out = proc.stdout + proc.stderr
    m = re.search(r"^(New|Reused), (TLSv1\.[23])", out, re.M)
    return SClient(
        status=m.group(1) if m else None,
        version=m.group(2) if m else None,
        echoed=line.strip() in proc.stdout.split("---")[-1] or line.strip() in proc.stdout,
        output=out,
        returncode=proc.returncode,
    )


@dataclass
class PyClient:
    """A stdlib ``ssl`` client keeping its session object between connections."""

    srv: ReferenceServer
    version: ssl.TLSVersion | None = None
    session: ssl.SSLSession | None = None
    cert: tuple[Path, Path] | None = None
    _ctx: ssl.SSLContext | None = None

    def context(self) -> ssl.SSLContext:
        """One context per client: a session only resumes with the context that made it."""
        if self._ctx is not None:
            return self._ctx
        ctx = self._ctx = ssl.create_default_context(cafile=str(self.srv.ca_path))
        if self.version is not None:
            ctx.minimum_version = ctx.maximum_version = self.version
        if self.cert is not None:
            ctx.load_cert_chain(*self.cert)
        return ctx

    def connect(self, line: bytes = b"ping\n", ctx: ssl.SSLContext | None = None) -> tuple[bool, bytes]:
        """Handshake, send a line, read until the server closes; return (reused, echo)."""
        ctx = ctx or self.context()
        with socket.create_connection((self.srv.host, self.srv.port), timeout=10) as raw:
            with ctx.wrap_socket(raw, server_hostname="server.test", session=self.session) as tls:
                tls.sendall(line)
                echo = read_all(tls)
                reused = tls.session_reused
                self.session = tls.session
        return reused, echo


# --- tlslite-ng: a client whose stored session the tests can damage ------------------------


@dataclass
class LiteResult:
    """One tlslite-ng connection: how it went, and the session it ends with."""

    resumed: bool
    echo: bytes
    session: object | None
    error: Exception | None = None
    handshake_mono: float | None = None  # harness clock when the client's handshake completed
    echo_mono: float | None = None  # ... when the server's reply arrived


def _lite_connection_class():
    from tlslite.tlsconnection import TLSConnection

    class FallbackConnection(TLSConnection):
        """tlslite takes any TLS 1.2 ticket offer for accepted; this one sees the refusal and goes on full.

        The server echoes the client's session id only when it takes the
        ticket (RFC 5077 3.4), so the offer carries a fresh random session id.
        """

        def _clientResume(self, session, serverHello, clientRandom, nextProto, settings):  # noqa: N802,N803
            if session is not None and session.tls_1_0_tickets and session.sessionID \
                    and serverHello.session_id != session.sessionID:
                session.tls_1_0_tickets = []
                session.sessionID = bytearray(0)
            yield from super()._clientResume(session, serverHello, clientRandom, nextProto, settings)

    return FallbackConnection


def lite_connect(srv, version: str, session=None, line: bytes = b"tlslite\n") -> LiteResult:
    """Handshake with tlslite-ng (``version`` "1.2" or "1.3"), send a line, read until the server closes.

    ``session`` is used as given (tests damage it on purpose); a TLS 1.2
    ticket offer gets a fresh random session id so a refusal is seen.
    """
    import os

    from tlslite.handshakesettings import HandshakeSettings

    from harness import clock

    settings = HandshakeSettings()
    settings.minVersion = settings.maxVersion = {"1.2": (3, 3), "1.3": (3, 4)}[version]
    if session is not None and version == "1.2" and session.tls_1_0_tickets:
        session.sessionID = bytearray(os.urandom(32))
    with socket.create_connection((srv.host, srv.port), timeout=10) as sock:
        conn = _lite_connection_class()(sock)
        try:
            conn.handshakeClientCert(serverName="server.test", session=session, settings=settings)
        except Exception as e:  # the alert or error the client saw: the test judges it
            return LiteResult(False, b"", None, e)
        shook = clock.now()
        conn.write(line)
        echo = b""
        got = None
        while True:
            data = conn.read()
            if not data:
                break
            got = got or clock.now()
            echo += data
        conn.close()
        return LiteResult(bool(conn.resumed), echo, conn.session, None, shook, got)


def damaged(session, *, secret: bool = False, ticket_byte: int | None = None):
    """A copy of a tlslite session with its secret changed or one byte of its ticket flipped."""
    import copy

    s = copy.deepcopy(session)
    tls13 = bool(s.tickets)
    if secret:
        if tls13:
            s.resumptionMasterSecret = bytearray(s.resumptionMasterSecret)
            s.resumptionMasterSecret[0] ^= 0xFF
        else:
            s.masterSecret = bytearray(s.masterSecret)
            s.masterSecret[0] ^= 0xFF
    if ticket_byte is not None:
        ticket = s.tickets[0] if tls13 else s.tls_1_0_tickets[0]
        raw = bytearray(ticket.ticket)
        raw[ticket_byte] ^= 0xFF
        ticket.ticket = raw
    return s
