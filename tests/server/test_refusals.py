"""Every refusal is a full handshake observed by the client, with the right reason."""

from __future__ import annotations

import time

import pytest

from tlskit import s_client


def _resume(srv, sess, tls):
    mark = srv.mark()
    c = s_client(srv, tls=tls, sess_in=sess)
    return c, srv.wait_for(since=mark)


def test_expired_tickets_both_versions(make_server, tmp_path):
    srv = make_server(ticket_lifetime=1)
    s12, s13 = tmp_path / "s12.pem", tmp_path / "s13.pem"
    assert s_client(srv, tls="1.2", sess_out=s12).status == "New"
    assert s_client(srv, tls="1.3", sess_out=s13).status == "New"
    # OpenSSL counts whole seconds: a ticket is dead once floor(now) > floor(issued) + lifetime.
    time.sleep(max(0.0, int(time.time()) + 2.05 - time.time()))
    for tls, sess in (("1.2", s12), ("1.3", s13)):
        c, rec = _resume(srv, sess, tls)
        assert c.status == "New", c.output
        assert (rec.resumed, rec.mechanism, rec.rejected) == (False, "full", "expired"), rec
    assert rec.ticket_age_ms is not None and rec.ticket_age_ms > 1000


def test_lifetime_is_the_one_in_force_when_issued(make_server, tmp_path):
    srv = make_server(ticket_lifetime=3600)
    sess = tmp_path / "s.pem"
    s_client(srv, tls="1.3", sess_out=sess)
    srv.configure(ticket_lifetime=1)  # later tickets die fast, this one lives on
    c, rec = _resume(srv, sess, "1.3")
    assert c.status == "Reused" and rec.resumed_from == 1


@pytest.mark.parametrize("tls", ["1.2", "1.3"])
def test_rotated_keys(server, tmp_path, tls):
    sess = tmp_path / "s.pem"
    assert s_client(server, tls=tls, sess_out=sess).status == "New"
    server.rotate_keys()
    c, rec = _resume(server, sess, tls)
    assert c.status == "New", c.output
    assert (rec.resumed, rec.rejected) == (False, "rotated")
    # the new epoch's tickets work
    s_client(server, tls=tls, sess_out=sess)
    c, rec = _resume(server, sess, tls)
    assert c.status == "Reused" and rec.resumed


@pytest.mark.parametrize("tls", ["1.2", "1.3"])
def test_tickets_off(server, tmp_path, tls):
    sess = tmp_path / "s.pem"
    assert s_client(server, tls=tls, sess_out=sess).status == "New"
    server.configure(tickets=False)
    c, rec = _resume(server, sess, tls)
    assert c.status == "New", c.output
    assert (rec.resumed, rec.rejected, rec.issued) == (False, "tickets-off", [])
    server.configure(tickets=True)
    c, rec = _resume(server, sess, tls)
    assert c.status == "Reused", "turning tickets back on must accept the old ticket again"


@pytest.mark.parametrize("tls", ["1.2", "1.3"])
def test_ticket_from_another_server_is_foreign(make_server, tmp_path, tls):
    a = make_server("a")
    paths = a.cert_paths
    b = make_server("b", cert=paths.cert, key=paths.key, ca=paths.ca)
    sess = tmp_path / "s.pem"
    assert s_client(a, tls=tls, sess_out=sess).status == "New"
    c, rec = _resume(b, sess, tls)
    assert c.status == "New", c.output
    assert (rec.resumed, rec.rejected) == (False, "foreign")


def test_tls12_session_to_tls13_only_server(server, tmp_path):
    sess = tmp_path / "s.pem"
    assert s_client(server, tls="1.2", sess_out=sess).status == "New"
    server.configure(versions=("TLSv1.3",))
    # the client speaks both; the server picks 1.3 and cannot use the 1.2 ticket
    c, rec = _resume(server, sess, None)
    assert c.status == "New" and c.version == "TLSv1.3", c.output
    assert (rec.version, rec.resumed, rec.rejected) == ("TLSv1.3", False, "version")
    assert rec.offered.ticket is not None
    # a client insisting on 1.2 fails the handshake, still with the reason
    c, rec = _resume(server, sess, "1.2")
    assert c.status is None or c.status == "New"
    assert rec.error and rec.version is None and rec.rejected == "version"


def test_tls13_psk_to_tls12_only_server(server, tmp_path):
    sess = tmp_path / "s.pem"
    assert s_client(server, tls="1.3", sess_out=sess).status == "New"
    server.configure(versions="TLSv1.2")
    c, rec = _resume(server, sess, None)
    assert c.status == "New" and c.version == "TLSv1.2", c.output
    assert rec.rejected == "version" and rec.offered.psk
