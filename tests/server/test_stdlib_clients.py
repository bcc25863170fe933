"""Stdlib ``ssl`` clients, certificates, knobs and the query API."""

from __future__ import annotations

import ssl

import pytest

from tlskit import PyClient
from harness.server import RecordTimeout, ReferenceServer, ServerConfig, ServerConfigError
from harness.server.records import HandshakeRecord


@pytest.mark.parametrize(
    "version,mechanism",
    [(ssl.TLSVersion.TLSv1_3, "psk"), (ssl.TLSVersion.TLSv1_2, "ticket")],
)
def test_stdlib_client_resumes(server, version, mechanism):
    client = PyClient(server, version=version)
    reused, echo = client.connect(b"first\n")
    assert (reused, echo) == (False, b"first\n")
    first = server.wait_for(since=0)
    assert first.issued and first.bytes_in > 0 and first.bytes_out > first.bytes_in
    ids = [first.id]
    for i in range(3):
        mark = server.mark()
        reused, echo = client.connect(b"again\n")
        rec = server.wait_for(since=mark)
        assert reused is True and rec.resumed is True and rec.mechanism == mechanism
        assert rec.resumed_from == (ids[-1] if mechanism == "psk" else first.id)
        ids.append(rec.id)
    assert ids == sorted(ids)


def test_rsa_key_and_names(make_server):
    srv = make_server(key_type="rsa", names=("device-cloud.example",), ips=("127.0.0.1",))
    ctx = ssl.create_default_context(cafile=str(srv.ca_path))
    import socket

    with socket.create_connection((srv.host, srv.port)) as raw:
        with ctx.wrap_socket(raw, server_hostname="device-cloud.example") as tls:
            assert tls.getpeercert()["subjectAltName"][0] == ("DNS", "device-cloud.example")
            tls.sendall(b"x\n")
            tls.recv(10)
    rec = srv.wait_for(since=0)
    assert "RSA" in rec.cipher or rec.version == "TLSv1.3"
    assert rec.sni == "device-cloud.example"


def test_client_certificate_required(make_server):
    srv = make_server(client_cert=True)
    paths = srv.cert_paths
    good = PyClient(srv, cert=(paths.client_cert, paths.client_key))
    assert good.connect() == (False, b"ping\n")
    assert srv.wait_for(since=0).error is None
    mark = srv.mark()
    with pytest.raises((ssl.SSLError, ConnectionError)):
        PyClient(srv, version=ssl.TLSVersion.TLSv1_2).connect()
    rec = srv.wait_for(since=mark)
    assert rec.error and "certificate" in rec.error


def test_wait_for_timeout_lists_what_was_seen(server):
    PyClient(server).connect()
    server.wait_for(since=0)
    with pytest.raises(RecordTimeout) as info:
        server.wait_for(timeout=0.2, resumed=True)
    text = str(info.value)
    assert "resumed=True" in text and "#1" in text and "full" in text
    assert server.wait_for(lambda r: r.version == "TLSv1.3", timeout=1).id == 1
    with pytest.raises(TypeError):
        server.wait_for(timeout=0.1, no_such_field=1)


def test_records_mark_since(server):
    m0 = server.mark()
    PyClient(server).connect()
    server.wait_for(since=m0)
    m1 = server.mark()
    assert server.since(m1) == [] and len(server.since(m0)) == 1
    PyClient(server).connect()
    server.wait_for(since=m1)
    assert [r.id for r in server.since(m1)] == [2]
    assert [r.id for r in server.records()] == [1, 2]


def test_record_round_trip_through_json(server):
    import json

    PyClient(server).connect()
    rec = server.wait_for(since=0)
    line = server.log.path.read_text().splitlines()[0]
    assert HandshakeRecord.from_dict(json.loads(line)) == rec


def test_bad_knobs_are_refused(server, tmp_path):
    with pytest.raises(ServerConfigError, match="cannot change port"):
        server.configure(port=1)
    with pytest.raises(ServerConfigError, match="TLS version"):
        server.configure(versions=("TLSv1.1",))
    with pytest.raises(ServerConfigError, match="ticket_lifetime"):
        ServerConfig(ticket_lifetime=0)
    with pytest.raises(ServerConfigError, match="cert, key and ca"):
        ServerConfig(cert=tmp_path / "x.pem")
    with pytest.raises(ServerConfigError, match="cannot change tickest"):
        server.configure(tickest=False)


def test_secrets_never_in_records_or_logs(server, tmp_path, caplog):
    """Tickets appear only as 12-hex fingerprints."""
    import re

    client = PyClient(server, version=ssl.TLSVersion.TLSv1_2)
    client.connect()
    client.connect()
    server.wait_for(since=1)
    text = server.log.path.read_text() + caplog.text
    long_hex = re.findall(r"[0-9a-f]{13,}", text)
    assert long_hex == []


def test_selfcheck_fails_loudly_without_tickets_from_the_callback(tmp_path):
    class Deaf(ReferenceServer):
        def _on_msg(self, *args):  # a Python whose hook no longer delivers messages
            return None

    srv = Deaf(workdir=tmp_path)
    with pytest.raises(Exception, match="self-check failed"):
        srv.start()
    srv.stop()


def test_ipv6_bind(make_server):
    srv = make_server(host="::1")
    assert srv.host == "::1"
    assert PyClient(srv).connect() == (False, b"ping\n")
    assert srv.wait_for(since=0).peer.startswith("[::1]:")


def test_tls13_ticket_count_knob(server):
    client = PyClient(server, version=ssl.TLSVersion.TLSv1_3)
    server.configure(tls13_tickets=4)
    client.connect()
    assert len(server.wait_for(since=0).issued) == 4
    server.configure(tls13_tickets=0)  # no new tickets, but old ones still resume
    mark = server.mark()
    reused, _ = client.connect()
    rec = server.wait_for(since=mark)
    assert reused and rec.resumed and rec.issued == [] and rec.resumed_from == 1
