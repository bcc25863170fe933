"""The firmware's TLS client: tlslite-ng on a real socket.

Why tlslite-ng: it is independent of OpenSSL (the reference server's
engine), pure Python, and exposes what an embedded stack keeps for
resumption (master secret, RFC 5077 ticket, TLS 1.3 PSK ticket with its
age_add and nonce), so the session can be written to flash field by field
and rebuilt after RAM is gone.

Two things a firmware must do that tlslite-ng leaves to the caller:

* verify the server certificate against the CA it was provisioned with
  (done here with ``cryptography``: chain signatures, validity at the RTC's
  time, host name against the SAN);
* fall back to a full handshake when a TLS 1.2 server refuses the offered
  ticket.  tlslite-ng's client assumes an offered ticket is accepted and
  aborts otherwise.  Like Mbed TLS, the firmware sends a fresh random
  session ID beside the ticket (RFC 5077 section 3.4): a server that accepts
  the ticket echoes it, one that refuses does not.  :class:`FirmwareConnection`
  checks that echo and continues with the full handshake in the same
  connection (or aborts, for the no-fallback variant).  As a last resort the
  shell also reconnects without the session when a handshake with an
  offered ticket fails (e.g. a ticket accepted with a corrupt secret).
"""

from __future__ import annotations

import ipaddress
import logging
import os
import socket
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from cryptography import x509
from cryptography.x509.oid import NameOID
from tlslite import HandshakeSettings, TLSConnection
from tlslite.constants import AlertDescription, CipherSuite
from tlslite.errors import TLSError
from tlslite.messages import NewSessionTicket
from tlslite.session import Session, Ticket

from .appproto import AppClient, AppFailed, LineClient, LiveConnection, TlsPipe
from .flash import StoredSession

log = logging.getLogger(__name__)

VERSIONS = {"tls1.2": ((3, 3), (3, 3)), "tls1.3": ((3, 4), (3, 4)), "auto": ((3, 3), (3, 4))}


class HandshakeFailed(Exception):
    """The TLS connection failed; ``offered`` says whether a session was offered."""

    def __init__(self, reason: str, offered: bool):
        super().__init__(reason)
        self.reason = reason
        self.offered = offered


@dataclass
class Outcome:
    """What one successful connection produced (secrets stay in here)."""

    version: str
    cipher: str
    resumed: bool
    sent: int
    received: int
    new_session: StoredSession | None
    renewed: bool  # the server issued a ticket during this connection
    summary: str = ""  # the application protocol's console line
    live: LiveConnection | None = field(default=None, repr=False)  # held open (--hold)


def is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
        return True
    except ValueError:
        return False


class FirmwareConnection(TLSConnection):
    """tlslite's TLSConnection with RFC 5077 refusal detection for TLS 1.2."""

    def __init__(self, sock: socket.socket, fallback: bool = True):
        super().__init__(sock)
        self.fallback = fallback
        self.ticket_refused = False

    def _clientResume(self, session, serverHello, clientRandom, nextProto, settings):  # noqa: N802,N803
        if session is not None and session.tls_1_0_tickets and session.sessionID \
                and serverHello.session_id != session.sessionID:
            self.ticket_refused = True
            log.info("server did not echo our session id: ticket refused")
            if not self.fallback:
                for result in self._sendError(AlertDescription.handshake_failure, "server refused session"):
                    yield result
            # Forget the ticket: tlslite then goes on with the full handshake.
            session.tls_1_0_tickets = []
            session.sessionID = bytearray(0)
        for result in super()._clientResume(session, serverHello, clientRandom, nextProto, settings):
            yield result


def restore(stored: StoredSession, age_s: float) -> Session:
    """Rebuild a tlslite Session from flash fields.

    tlslite computes ticket validity and the obfuscated TLS 1.3 ticket age
    from ``time.time()``; shifting the receive time by the RTC-derived age
    makes it send the age the firmware's own clock implies.
    """
    session = Session()
    received = time.time() - age_s
    if stored.tls_version == 4:
        nst = NewSessionTicket().create(stored.lifetime_s, stored.age_add, bytearray(stored.nonce),
                                        bytearray(stored.ticket), [])
        nst.time = received
        session.create(bytearray(0), bytearray(0), stored.cipher_suite, None, None, None, None, False,
                       stored.server_name, resumable=True, extendedMasterSecret=True,
                       resumptionMasterSecret=bytearray(stored.secret), tickets=[nst])
    else:
        ticket = Ticket(bytearray(stored.ticket), stored.lifetime_s, bytearray(stored.secret), stored.cipher_suite)
        ticket.time_received = received
        # A fresh random session ID beside the ticket: its echo tells acceptance.
        session.create(bytearray(stored.secret), bytearray(os.urandom(32)), stored.cipher_suite, None, None, None,
                       None, False, stored.server_name, resumable=True,
                       extendedMasterSecret=stored.ext_master_secret,
                       tickets=[], tls_1_0_tickets=[ticket])
    return session


def verify_certificate(chain_der: list[bytes], ca_file: Path | None, name: str, at: float | None) -> None:
    """Raise HandshakeFailed unless ``chain_der`` leads to the CA and names ``name``.

    ``at`` is the RTC time for the validity check; None skips it, as firmware
    without a real-time clock must (mbed TLS without MBEDTLS_HAVE_TIME_DATE).
    """
    if ca_file is None:
        raise HandshakeFailed("no CA certificate provisioned (start the bench with --set ca=FILE)", False)
    try:
        cas = x509.load_pem_x509_certificates(ca_file.read_bytes())
    except (OSError, ValueError) as exc:
        raise HandshakeFailed(f"cannot load CA file {ca_file}: {exc}", False) from None
    if not chain_der:
        raise HandshakeFailed("server sent no certificate", False)
    try:
        chain = [x509.load_der_x509_certificate(d) for d in chain_der]
    except ValueError as exc:
        raise HandshakeFailed(f"bad server certificate: {exc}", False) from None
    when = datetime.fromtimestamp(at, tz=timezone.utc) if at is not None else None
    for cert in chain:
        if when is not None and not (cert.not_valid_before_utc <= when <= cert.not_valid_after_utc):
            raise HandshakeFailed(f"certificate {cert.subject.rfc4514_string()} not valid at RTC time "
                                  f"{when.isoformat(timespec='seconds')}", False)
    # Walk leaf -> intermediates -> trusted CA.
    current = chain[0]
    pool = chain[1:]
    for _ in range(len(chain) + 1):
        for ca in cas:
            if ca.subject == current.issuer and _signed_by(current, ca):
                _check_name(chain[0], name)
                return
        nxt = next((c for c in pool if c.subject == current.issuer and _signed_by(current, c)), None)
        if nxt is None:
            break
        pool.remove(nxt)
        current = nxt
    raise HandshakeFailed("certificate not signed by the provisioned CA", False)


def _signed_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
        return True
    except Exception:  # noqa: BLE001 - InvalidSignature, wrong key type, ...: all mean "not this issuer"
        return False


def _check_name(cert: x509.Certificate, name: str) -> None:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        san = None
    if is_ip(name):
        ips = san.get_values_for_type(x509.IPAddress) if san else []
        if ipaddress.ip_address(name) in ips:
            return
    else:
        dns = san.get_values_for_type(x509.DNSName) if san else [
            a.value for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
        for pattern in dns:
            if _name_matches(pattern.lower(), name.lower()):
                return
    raise HandshakeFailed(f"certificate does not name {name}", False)


def _name_matches(pattern: str, name: str) -> bool:
    if pattern.startswith("*."):
        head, _, rest = name.partition(".")
        return bool(head) and rest == pattern[2:]
    return pattern == name


def handshake_and_talk(host: str, port: int, versions: tuple[tuple[int, int], tuple[int, int]], name: str,
                       offer: Session | None, ca_file: Path | None, rtc_now: float, uptime_clock: bool,
                       fallback: bool = True, timeout: float = 10.0, app: AppClient | None = None,
                       hold_s: float = 0.0, take_tickets: bool = True,
                       on_handshake: Callable[[StoredSession | None], None] | None = None) -> Outcome:
    """One TCP connection: handshake, verify, the application exchange, then close.

    ``versions`` is the (min, max) range offered in the ClientHello; ``app``
    the protocol spoken after the handshake (default: one line and its
    echo).  With ``hold_s`` > 0 a connection the server left open is not
    closed but handed back in ``Outcome.live`` for the shell to keep.
    ``on_handshake`` gets the session as it stands the moment the handshake
    returns, before any application byte (in TLS 1.3 that session holds no
    ticket yet: the early-store bug stores it).  ``take_tickets=False``
    drops TLS 1.3 tickets, as a stack that ignores NewSessionTicket does.

    Raises :class:`HandshakeFailed`; never lets a tlslite or socket error out.
    """
    app = app if app is not None else LineClient(timeout)
    settings = HandshakeSettings()
    settings.minVersion, settings.maxVersion = versions
    offered = offer is not None
    sni = None if is_ip(name) else name
    if offer is not None:
        # tlslite insists the session's name equals the SNI sent; the
        # firmware's own name policy was applied before (any-server skips it).
        offer.serverName = sni
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except OSError as exc:
        raise HandshakeFailed(f"tcp connect to {host}:{port}: {exc.strerror or exc}", False) from None
    conn = FirmwareConnection(sock, fallback=fallback)
    pipe: TlsPipe | None = None
    live: LiveConnection | None = None
    try:
        try:
            conn.handshakeClientCert(session=offer, settings=settings, serverName=sni)
        except (TLSError, OSError, ValueError, AssertionError) as exc:
            raise HandshakeFailed(f"handshake: {type(exc).__name__}: {exc}".rstrip(": "), offered) from None
        resumed = bool(conn.resumed)
        # Read these now: tlslite resets conn.version when the peer closes.
        tls13 = conn.version >= (3, 4)
        suite = conn.session.cipherSuite
        if not resumed:
            chain = [bytes(c.bytes) for c in conn.session.serverCertChain.x509List] \
                if conn.session.serverCertChain else []
            verify_certificate(chain, ca_file, name, None if uptime_clock else rtc_now)
        # A real RTC counts whole seconds; an uptime counter counts ms.
        now_ms = int(rtc_now * 1000) if uptime_clock else int(rtc_now) * 1000
        if on_handshake is not None:
            on_handshake(_extract(conn, tls13, name, now_ms, uptime_clock, take_tickets, early=True)[0])
        pipe = TlsPipe(conn, sock)
        try:
            result = app.exchange(pipe, name, hold=hold_s > 0)
        except AppFailed as exc:
            raise HandshakeFailed(exc.reason, False) from None
        new_session, renewed = _extract(conn, tls13, name, now_ms, uptime_clock, take_tickets)
        if hold_s > 0 and not pipe.closed:
            live = LiveConnection(pipe, app, time.monotonic() + hold_s)
        return Outcome(version="TLSv1.3" if tls13 else "TLSv1.2",
                       cipher=CipherSuite.ietfNames.get(suite, f"0x{suite:04x}"),
                       resumed=resumed, sent=result.sent, received=result.received,
                       new_session=new_session, renewed=renewed, summary=result.summary, live=live)
    finally:
        if live is None:
            if pipe is not None:
                pipe.close()
            else:
                try:
                    conn.close()
                except Exception:  # noqa: BLE001 - a dead socket must not fail a finished connection
                    pass
                sock.close()


def _extract(conn: TLSConnection, tls13: bool, name: str, now_ms: int, uptime_clock: bool,
             take_tickets: bool = True, early: bool = False) -> tuple[StoredSession | None, bool]:
    """The session worth storing after this connection, and whether it is new.

    ``early``: the session as a stack hands it out right after the handshake,
    even when it holds no ticket yet (TLS 1.3: the secret, no ticket).
    """
    s = conn.session
    if tls13:
        tickets = list(conn.tickets or []) if take_tickets else []
        if not tickets:
            if early:
                return StoredSession(4, name, s.cipherSuite, bytes(s.resumptionMasterSecret), b"", 0, now_ms,
                                     0, b"", b"", True, uptime_clock), True
            return None, False
        t = tickets[-1]
        return StoredSession(4, name, s.cipherSuite, bytes(s.resumptionMasterSecret), bytes(t.ticket),
                             int(t.ticket_lifetime), now_ms, int(t.ticket_age_add), bytes(t.ticket_nonce),
                             b"", True, uptime_clock), True
    new = list(conn.tls_1_0_tickets or [])
    if new:
        t = new[-1]
        return StoredSession(3, name, s.cipherSuite, bytes(s.masterSecret), bytes(t.ticket),
                             int(t.ticket_lifetime), now_ms, 0, b"", bytes(s.sessionID),
                             bool(s.extendedMasterSecret), uptime_clock), True
    return None, False
