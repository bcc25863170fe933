"""Resumption as seen by independent ``openssl s_client`` processes.

The session file written by ``-sess_out`` and read by ``-sess_in`` in a new
process plays the device's flash across a power cut.  The server's record
must agree with s_client's own "New"/"Reused" line, and ``resumed_from``
must name the handshake that issued what was resumed.
"""

from __future__ import annotations

from tlskit import s_client


def test_tls13_psk_chain_follows_renewed_tickets(server, tmp_path):
    sess = tmp_path / "flash.pem"
    first = s_client(server, tls="1.3", sess_out=sess)
    assert first.status == "New" and first.echoed, first.output
    rec = server.wait_for(since=0)
    assert (rec.version, rec.resumed, rec.mechanism, rec.resumed_from) == ("TLSv1.3", False, "full", None)
    assert len(rec.issued) == 2, "the message callback no longer shows TLS 1.3 tickets"
    previous = rec
    for _ in range(3):
        mark = server.mark()
        c = s_client(server, tls="1.3", sess_in=sess, sess_out=sess)
        assert c.status == "Reused", c.output
        rec = server.wait_for(since=mark)
        assert rec.resumed and rec.mechanism == "psk" and rec.rejected is None
        # TLS 1.3 renews the ticket on every resumption: lineage moves along.
        assert rec.resumed_from == previous.id
        assert rec.offered.psk and rec.offered.psk[0] in previous.issued
        assert len(rec.issued) == 1
        assert rec.ticket_age_ms is not None and rec.claimed_age_ms is not None
        assert abs(rec.ticket_age_ms - rec.claimed_age_ms) < 2000
        previous = rec


def test_tls12_ticket_chain_keeps_first_ticket(server, tmp_path):
    sess = tmp_path / "flash.pem"
    first = s_client(server, tls="1.2", sess_out=sess)
    assert first.status == "New" and first.version == "TLSv1.2", first.output
    issuer = server.wait_for(since=0)
    assert issuer.version == "TLSv1.2" and len(issuer.issued) == 1
    assert issuer.round_trips == 2
    for _ in range(3):
        mark = server.mark()
        c = s_client(server, tls="1.2", sess_in=sess, sess_out=sess)
        assert c.status == "Reused", c.output
        rec = server.wait_for(since=mark)
        assert (rec.resumed, rec.mechanism, rec.resumed_from) == (True, "ticket", issuer.id)
        assert rec.offered.ticket == issuer.issued[0]
        assert rec.round_trips == 1 and rec.ticket_age_ms is None


def test_tls12_session_id_resumption(make_server, tmp_path):
    srv = make_server(tickets=False)
    sess = tmp_path / "flash.pem"
    assert s_client(srv, tls="1.2", sess_out=sess).status == "New"
    issuer = srv.wait_for(since=0)
    assert issuer.issued == []
    for _ in range(2):
        mark = srv.mark()
        c = s_client(srv, tls="1.2", sess_in=sess, sess_out=sess)
        assert c.status == "Reused", c.output
        rec = srv.wait_for(since=mark)
        assert (rec.resumed, rec.mechanism, rec.resumed_from) == (True, "session-id", issuer.id)
        assert rec.offered.session_id is not None


def test_session_cache_off_means_no_session_id_resumption(make_server, tmp_path):
    srv = make_server(tickets=False)
    sess = tmp_path / "flash.pem"
    assert s_client(srv, tls="1.2", sess_out=sess).status == "New"
    srv.configure(session_cache=False)
    c = s_client(srv, tls="1.2", sess_in=sess)
    assert c.status == "New", c.output
    rec = srv.wait_for(since=1)
    assert (rec.resumed, rec.mechanism, rec.rejected) == (False, "full", "unknown")
    assert rec.offered.session_id is not None
    # with the cache off the server hands out no session id at all
    fresh = tmp_path / "fresh.pem"
    s_client(srv, tls="1.2", sess_out=fresh)
    assert not fresh.exists(), "nothing resumable was issued, s_client writes no session"


def test_json_log_matches_records(server, tmp_path):
    import json

    s_client(server, tls="1.3")
    server.wait_for(since=0)
    lines = server.log.path.read_text().splitlines()
    assert [json.loads(line)["id"] for line in lines] == [r.id for r in server.records()]
