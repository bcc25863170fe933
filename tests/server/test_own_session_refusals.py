"""The server recognised the offer and still could not use it: ``decrypt``, ``binder``, ``finished``.

Each is produced for real, by tlslite-ng (no OpenSSL on the client side)
offering a session the server really issued, damaged the way a firmware
damages it: a flipped byte in the ticket body (a torn flash write), the
ticket kept with a wrong secret (a TLS 1.3 resumption secret, a TLS 1.2
master secret rebuilt from the ticket alone).
"""

from __future__ import annotations

import socket

import pytest

from tlskit import damaged, lite_connect

pytest.importorskip("tlslite")
from tlslite.constants import AlertDescription  # noqa: E402
from tlslite.errors import TLSLocalAlert, TLSRemoteAlert  # noqa: E402

KEY_NAME_LEN = 16


def _first(srv, version):
    """A full handshake: the issuing record and the client's session."""
    got = lite_connect(srv, version)
    assert got.error is None and not got.resumed, got.error
    issuer = srv.wait_for(since=0)
    assert issuer.issued and not issuer.resumed
    return issuer, got.session


def _offer(srv, version, session):
    mark = srv.mark()
    got = lite_connect(srv, version, session)
    return got, srv.wait_for(since=mark)


@pytest.mark.parametrize("version,name", [("1.3", "TLSv1.3"), ("1.2", "TLSv1.2")])
def test_flipped_ticket_body_is_decrypt(server, version, name):
    issuer, session = _first(server, version)
    got, rec = _offer(server, version, damaged(session, ticket_byte=KEY_NAME_LEN + 4))
    # OpenSSL's HMAC check fails: it ignores the ticket and completes a full handshake.
    assert got.error is None and not got.resumed and got.echo == b"tlslite\n", got.error
    assert (rec.version, rec.resumed, rec.mechanism, rec.rejected, rec.error) == (name, False, "full", "decrypt", None)
    offered = rec.offered.psk[0] if version == "1.3" else rec.offered.ticket
    assert offered is not None and offered not in issuer.issued
    # the undamaged session still resumes: it was the bytes, not the server
    got, rec = _offer(server, version, session)
    assert got.resumed and rec.resumed and rec.resumed_from == issuer.id and rec.rejected is None


@pytest.mark.parametrize("version", ["1.2", "1.3"])
def test_flipped_key_name_stays_foreign_and_old_key_stays_rotated(server, version):
    _, session = _first(server, version)
    got, rec = _offer(server, version, damaged(session, ticket_byte=3))
    assert got.error is None and rec.rejected == "foreign"
    server.rotate_keys()
    got, rec = _offer(server, version, damaged(session, ticket_byte=KEY_NAME_LEN + 4))
    assert got.error is None and rec.rejected == "rotated", "an old epoch's key name: rotated, damaged or not"


def test_tls13_psk_with_wrong_secret_is_binder(server):
    issuer, session = _first(server, "1.3")
    got, rec = _offer(server, "1.3", damaged(session, secret=True))
    assert isinstance(got.error, TLSRemoteAlert), "OpenSSL must refuse a PSK whose binder does not verify"
    assert (rec.version, rec.resumed, rec.rejected) == (None, False, "binder")
    assert rec.error and "binder does not verify" in rec.error
    assert rec.offered.psk and rec.offered.psk[0] in issuer.issued, "the identity was the server's own"
    assert rec.issued == [] and rec.tickets_sent_mono == []


def test_tls12_ticket_with_wrong_master_secret_is_finished(server):
    issuer, session = _first(server, "1.2")
    got, rec = _offer(server, "1.2", damaged(session, secret=True))
    # The server took its ticket (abbreviated handshake), the client cannot decrypt its Finished.
    assert isinstance(got.error, TLSLocalAlert) and got.error.description == AlertDescription.bad_record_mac
    assert (rec.version, rec.resumed, rec.rejected) == (None, False, "finished")
    assert rec.error and "alert bad record mac" in rec.error
    assert rec.offered.ticket == issuer.issued[0]
    assert rec.round_trips == 1, "one flight from the server: ServerHello, ChangeCipherSpec, Finished"


@pytest.mark.parametrize("wrong_secret,reason", [(True, "decryption failed or bad record mac"),
                                                 (False, "digest check failed")])
def test_tls12_bad_client_finished_is_finished(server, wrong_secret, reason):
    """The server's own check: a client that sends its Finished before checking the server's.

    With a wrong master secret the server cannot decrypt it; with the right
    one, computed before the server's Finished was in the transcript, its
    verify_data is wrong.
    """
    from tlslite.handshakesettings import HandshakeSettings
    from tlslite.tlsconnection import TLSConnection

    class FinishedFirst(TLSConnection):
        def _clientResume(self, session, serverHello, clientRandom, nextProto, settings):  # noqa: N802,N803
            self._calcPendingStates(session.cipherSuite, session.masterSecret, clientRandom, serverHello.random,
                                    settings.cipherImplementations)
            yield from self._sendFinished(session.masterSecret, session.cipherSuite, nextProto, settings=settings)
            self.sock.flush()
            self.sock.buffer_writes = False
            yield from self._getFinished(session.masterSecret, session.cipherSuite)
            self.session = session
            yield "resumed_and_finished"

    issuer, session = _first(server, "1.2")
    offer = damaged(session, secret=wrong_secret)
    offer.sessionID = bytearray(range(32))
    settings = HandshakeSettings()
    settings.minVersion = settings.maxVersion = (3, 3)
    mark = server.mark()
    with socket.create_connection((server.host, server.port), timeout=10) as sock:
        with pytest.raises(Exception):  # the server's alert
            FinishedFirst(sock).handshakeClientCert(serverName="server.test", session=offer, settings=settings)
    rec = server.wait_for(since=mark)
    assert rec.error and reason in rec.error, rec.error
    assert (rec.resumed, rec.rejected, rec.offered.ticket) == (False, "finished", issuer.issued[0])


def test_client_vanishing_after_the_servers_finished_is_not_finished(server):
    """A device losing power mid-handshake is no proof of a wrong secret: only a TLS error is."""
    from tlslite.handshakesettings import HandshakeSettings
    from tlslite.tlsconnection import TLSConnection

    class Vanish(Exception):
        pass

    class VanishingConnection(TLSConnection):
        def _clientResume(self, session, serverHello, clientRandom, nextProto, settings):  # noqa: N802,N803
            raise Vanish  # the server has sent ServerHello, ChangeCipherSpec and Finished
            yield  # pragma: no cover

    issuer, session = _first(server, "1.2")
    session.sessionID = bytearray(range(32))
    settings = HandshakeSettings()
    settings.minVersion = settings.maxVersion = (3, 3)
    mark = server.mark()
    with socket.create_connection((server.host, server.port), timeout=10) as sock:
        with pytest.raises(Vanish):
            VanishingConnection(sock).handshakeClientCert(serverName="server.test", session=session,
                                                          settings=settings)
    rec = server.wait_for(since=mark)
    assert rec.error and "closed the connection mid-handshake" in rec.error, rec.error
    assert rec.offered.ticket == issuer.issued[0] and rec.rejected != "finished"
