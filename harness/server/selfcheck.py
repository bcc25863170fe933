"""The reference server's start-up proof that lineage can work here.

Lineage rests on a CPython debugging hook (the OpenSSL message callback)
that shows the server the NewSessionTickets it writes, TLS 1.3 ones
included, which are encrypted on the wire.  If a future CPython or OpenSSL
stops delivering them, every record would say ``resumed_from: null`` and
every verdict would blame the device.  So before it listens, the server runs
one TLS 1.2 and one TLS 1.3 handshake in process, between memory BIOs, and
refuses to start unless both show issued tickets.

The check runs the server's own pieces (``handshake.py``): its context
set-up, the callback the server installs, the parsing of stashed messages and
the lineage table.  It only builds a context and a lineage of its own, so
the server's keys and ids are untouched.
"""

from __future__ import annotations

import ssl

from harness.errors import HarnessError

from .certs import CertPaths
from .config import ServerConfig
from .handshake import MsgCallback, ServerContext, completed_record, make_record, stash_message, tls_reason
from .lineage import Lineage
from .openssl import OpenSSL
from .records import HandshakeRecord

VERSIONS = ("TLSv1.2", "TLSv1.3")
MAX_FLIGHTS = 20  # a full handshake takes 2 or 3; more means something loops


def selfcheck(
    paths: CertPaths,
    config: ServerConfig,
    on_msg: MsgCallback = stash_message,
    ossl: OpenSSL | None = None,
) -> None:
    """Raise :class:`HarnessError` unless ``on_msg`` shows the tickets TLS 1.2 and 1.3 issue.

    ``on_msg`` is the callback the server installs on its own context, so
    the check fails exactly when the server's lineage would.
    """
    ossl = ossl or OpenSSL.load()
    cfg = config.replace(tickets=True, tls13_tickets=1, client_cert=False)
    tls = ServerContext.create(paths, ossl, on_msg)
    tls.apply(cfg, paths.ca)
    lineage = Lineage()
    tls.install_new_keys(lineage)
    client = ssl.create_default_context(cafile=str(paths.ca))
    client.check_hostname = False
    for rid, version in enumerate(VERSIONS, start=1):
        one = cfg.replace(versions=(version,))
        tls.apply(one, paths.ca)
        rec = inprocess_handshake(tls, one, client, lineage, rid)
        if rec.version != version or not rec.issued:
            raise HarnessError(
                f"self-check failed: a {version} handshake issued tickets {rec.issued} "
                f"(version {rec.version}, error {rec.error}); the OpenSSL message callback "
                "no longer shows NewSessionTicket messages, so lineage cannot work"
            )


def inprocess_handshake(
    tls: ServerContext, cfg: ServerConfig, client: ssl.SSLContext, lineage: Lineage, rid: int
) -> HandshakeRecord:
    """One handshake between memory BIOs, recorded the way the server records one."""
    cin, cout = ssl.MemoryBIO(), ssl.MemoryBIO()
    cobj = client.wrap_bio(cin, cout, server_side=False)
    conn = tls.new_conn(cfg, None, "self-check")
    try:
        for _ in range(MAX_FLIGHTS):
            try:
                cobj.do_handshake()
            except ssl.SSLWantReadError:
                pass
            conn.incoming.write(cout.read())
            try:
                conn.sslobj.do_handshake()
            except ssl.SSLWantReadError:
                cin.write(conn.outgoing.read())
                continue
            except ssl.SSLError as e:
                return make_record(conn, rid, lineage, None, None, False, f"TLS handshake failed: {tls_reason(e)}")
            return completed_record(conn, rid, lineage)
        return make_record(conn, rid, lineage, None, None, False, f"no handshake after {MAX_FLIGHTS} flights")
    finally:
        conn.sslobj.harness_conn = None
