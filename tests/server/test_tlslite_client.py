"""tlslite-ng, the emulated firmware's TLS stack, against the reference server.

A second TLS implementation (pure Python, no OpenSSL) keeps the server's
verdicts honest, and proves the simulated device and the server agree.
"""

from __future__ import annotations

import socket

import pytest

tlslite = pytest.importorskip("tlslite.api")


def _connect(srv, version: tuple[int, int], session=None):
    settings = tlslite.HandshakeSettings()
    settings.minVersion = settings.maxVersion = version
    with socket.create_connection((srv.host, srv.port), timeout=10) as sock:
        conn = tlslite.TLSConnection(sock)
        conn.handshakeClientCert(serverName="server.test", session=session, settings=settings)
        conn.write(b"tlslite\n")
        echo = b""
        while True:
            data = conn.read()
            if not data:
                break
            echo += data
        conn.close()
        return conn.resumed, echo, conn.session


@pytest.mark.parametrize("version,name", [((3, 4), "TLSv1.3"), ((3, 3), "TLSv1.2")])
def test_tlslite_resumes(server, version, name):
    resumed, echo, session = _connect(server, version)
    assert (resumed, echo) == (False, b"tlslite\n")
    first = server.wait_for(since=0)
    assert first.version == name and not first.resumed
    previous = first
    for _ in range(2):
        mark = server.mark()
        resumed, echo, session = _connect(server, version, session)
        rec = server.wait_for(since=mark)
        assert resumed is True and rec.resumed is True, rec.summary()
        if name == "TLSv1.3":  # renewed every time: lineage moves along
            assert (rec.mechanism, rec.resumed_from) == ("psk", previous.id)
        else:  # the RFC 5077 ticket is kept
            assert (rec.mechanism, rec.resumed_from) == ("ticket", first.id)
        previous = rec
