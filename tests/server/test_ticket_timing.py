"""When each ticket went out (``tickets_sent_mono``), and the ``ticket_delay`` knob.

The evidence a verdict needs against firmware that stores the session the
moment the handshake returns: the device's "storing" line and the server's
ticket on one clock.  On loopback the ticket follows the handshake within a
millisecond, so the server can hold it back like a network round trip.
"""

from __future__ import annotations

import json
import socket
import ssl
import subprocess
import sys

import pytest

from harness import clock
from harness.devicefile import load as load_device_file
from harness.errors import ConfigError
from harness.server import ServerConfig, ServerConfigError
from harness.server.__main__ import build_parser, config_from_args
from harness.server.app import DEFAULT_GREETING

from tlskit import REPO, PyClient, lite_connect, read_all, s_client

TLS = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}
GREETING = DEFAULT_GREETING.encode() + b"\n"


def _published(srv) -> list[tuple[float, list[float]]]:
    """(harness clock at publication, tickets_sent_mono then) for every record, as listeners see it."""
    seen: list[tuple[float, list[float]]] = []
    srv.add_listener(lambda rec: seen.append((clock.now(), list(rec.tickets_sent_mono))))
    return seen


def _file_line(srv, rid: int) -> dict:
    for line in srv.log.path.read_text().splitlines():
        record = json.loads(line)
        if record["id"] == rid:
            return record
    raise AssertionError(f"record #{rid} is not in {srv.log.path}")


def _start(rec) -> float:
    return rec.mono - rec.duration_ms / 1000


@pytest.mark.parametrize("version", ["1.2", "1.3"])
def test_tickets_sent_mono_without_delay(server, version):
    client = PyClient(server, version=TLS[version])
    assert client.connect() == (False, b"ping\n")
    rec = server.wait_for(lambda r: r.app_end is not None, since=0)
    sent = rec.tickets_sent_mono
    assert len(sent) == len(rec.issued) == (2 if version == "1.3" else 1)
    assert sent == sorted(sent) and sent[0] > _start(rec)
    # OpenSSL writes both versions' tickets as do_handshake returns: TLS 1.3's after
    # the client's Finished, TLS 1.2's in the server's last flight.
    assert rec.mono <= sent[0] <= sent[-1] < rec.mono + 0.5
    assert rec.closed_mono is not None and sent[-1] <= rec.closed_mono
    assert _file_line(server, rec.id)["tickets_sent_mono"] == sent
    # a resumption: TLS 1.3 renews (one ticket), TLS 1.2 keeps its ticket (none sent)
    mark = server.mark()
    assert client.connect()[0] is True
    again = server.wait_for(lambda r: r.app_end is not None, since=mark)
    assert len(again.tickets_sent_mono) == len(again.issued) == (1 if version == "1.3" else 0)


def test_failed_handshake_sends_no_tickets(server):
    with socket.create_connection((server.host, server.port)) as raw:
        raw.sendall(b"GET / HTTP/1.0\r\n\r\n")
        raw.recv(100)
    rec = server.wait_for(since=0)
    assert rec.error and rec.issued == [] and rec.tickets_sent_mono == []


def test_tls13_ticket_delay_holds_tickets_and_what_follows(make_server):
    srv = make_server(ticket_delay=0.3)
    seen = _published(srv)
    ctx = PyClient(srv, version=TLS["1.3"]).context()
    with socket.create_connection((srv.host, srv.port), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname="server.test") as tls:
            shook = clock.now()
            tls.sendall(b"hello\n")
            echo = read_all(tls)
            echoed = clock.now()
            session = tls.session
    assert echo == b"hello\n"
    # the reply was written after the tickets, so it waited with them
    assert echoed - shook >= 0.28, f"the echo came {echoed - shook:.3f} s after the handshake"
    rec = srv.wait_for(lambda r: r.app_end is not None, since=0)
    # published at the handshake's end, long before the tickets went
    published_at, sent_then = seen[0]
    assert sent_then == [] and published_at < rec.mono + 0.2
    sent = rec.tickets_sent_mono
    assert len(sent) == len(rec.issued) == 2
    assert sent == sorted(sent) and sent[0] >= rec.mono + 0.3 and sent[-1] < rec.mono + 2.0
    assert rec.app_end == "server closed after the reply" and rec.closed_mono >= sent[-1]
    # the file line was final only once the tickets were out: it has their times
    # (read right after the client saw the close, which followed the tickets)
    assert _file_line(srv, rec.id)["tickets_sent_mono"] == sent
    # tickets that come late still work
    client = PyClient(srv, version=TLS["1.3"], session=session, _ctx=ctx)
    mark = srv.mark()
    assert client.connect()[0] is True
    assert srv.wait_for(since=mark).resumed_from == rec.id


def test_ticket_delay_with_a_greeting_and_an_idle_client(make_server):
    """What the protocol says first waits behind the tickets; the idle limit counts from their release."""
    srv = make_server(ticket_delay=0.4, protocol="greeting", app_timeout=0.3)
    got = lite_connect(srv, "1.3", line=b"hi\n")
    assert got.error is None and got.echo == GREETING + b"hi\n", got
    assert got.echo_mono - got.handshake_mono >= 0.35, "the greeting came before the tickets"
    rec = srv.wait_for(lambda r: r.app_end is not None, since=0)
    assert rec.tickets_sent_mono[0] >= rec.mono + 0.4
    mark = srv.mark()
    with socket.create_connection((srv.host, srv.port), timeout=10) as raw:
        with PyClient(srv, version=TLS["1.3"]).context().wrap_socket(raw, server_hostname="server.test") as tls:
            data = read_all(tls)  # says nothing: the server closes it when idle
    assert data == GREETING
    idle = srv.wait_for(lambda r: r.app_end is not None, since=mark)
    assert idle.app_end.startswith("idle timeout") and idle.tickets_sent_mono[0] >= idle.mono + 0.4
    assert idle.closed_mono >= idle.tickets_sent_mono[0] + 0.25, "idle counts from the release, not the handshake"


def test_tls12_tickets_are_never_delayed(make_server):
    srv = make_server(ticket_delay=1.0)
    got = lite_connect(srv, "1.2")
    assert got.error is None and got.echo == b"tlslite\n"
    assert got.echo_mono - got.handshake_mono < 0.8
    rec = srv.wait_for(lambda r: r.app_end is not None, since=0)
    assert rec.version == "TLSv1.2" and len(rec.tickets_sent_mono) == 1
    assert rec.tickets_sent_mono[0] < rec.mono + 0.8


def test_client_gone_before_the_tickets(make_server):
    """Tickets never handed to the socket have no time: the list is shorter than ``issued``."""
    srv = make_server(ticket_delay=2.0)
    with socket.create_connection((srv.host, srv.port), timeout=10) as raw:
        tls = PyClient(srv, version=TLS["1.3"]).context().wrap_socket(raw, server_hostname="server.test")
        srv.wait_for(since=0)
        tls.close()
    rec = srv.wait_for(lambda r: r.app_end is not None, since=0, timeout=5)
    assert len(rec.issued) == 2 and rec.tickets_sent_mono == []
    assert rec.closed_mono < rec.mono + 1.5
    assert _file_line(srv, rec.id)["tickets_sent_mono"] == []


def test_stop_sends_what_was_held(make_server):
    srv = make_server(ticket_delay=20.0, app_timeout=30.0)
    with socket.create_connection((srv.host, srv.port), timeout=10) as raw:
        with PyClient(srv, version=TLS["1.3"]).context().wrap_socket(raw, server_hostname="server.test") as tls:
            rec = srv.wait_for(since=0)
            stopped = clock.now()
            srv.stop()
            tls.settimeout(5)
            read_all(tls)
            assert tls.session is not None and tls.session.has_ticket
    assert rec.app_end == "server stopped" and len(rec.tickets_sent_mono) == 2
    assert stopped <= rec.tickets_sent_mono[0] < stopped + 5


def test_ticket_delay_with_openssl_s_client_still_resumes(make_server, tmp_path):
    srv = make_server(ticket_delay=0.2)
    sess = tmp_path / "s.pem"
    assert s_client(srv, tls="1.3", sess_out=sess).status == "New"
    first = srv.wait_for(lambda r: r.app_end is not None, since=0)
    assert first.tickets_sent_mono[0] >= first.mono + 0.2
    mark = srv.mark()
    assert s_client(srv, tls="1.3", sess_in=sess).status == "Reused"
    assert srv.wait_for(since=mark).resumed_from == first.id


# --- the knob ---------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [-0.1, 31, float("nan"), "0.3", True, None])
def test_ticket_delay_validation(bad):
    with pytest.raises(ServerConfigError, match="ticket_delay"):
        ServerConfig(ticket_delay=bad)


def test_ticket_delay_is_a_runtime_knob(server):
    assert server.configure(ticket_delay=0.25).ticket_delay == 0.25
    assert server.config.ticket_delay == 0.25
    with pytest.raises(ServerConfigError, match="ticket_delay"):
        server.configure(ticket_delay=-1)
    assert server.config.ticket_delay == 0.25
    assert ServerConfig().ticket_delay == 0.0 and ServerConfig(ticket_delay=1).ticket_delay == 1.0


def test_ticket_delay_command_line(tmp_path):
    args = build_parser().parse_args(["--ticket-delay", "0.3"])
    assert config_from_args(args).ticket_delay == 0.3
    assert config_from_args(build_parser().parse_args([])).ticket_delay == 0.0
    proc = subprocess.run([sys.executable, "-m", "harness.server", "--ticket-delay", "-1", "--workdir",
                           str(tmp_path)], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "ticket_delay" in proc.stderr and "Traceback" not in proc.stderr


DEVICE = REPO / "devices" / "sim.yaml"


@pytest.mark.parametrize("value,error", [("0.3", None), ("0", None), ("-1", "must be >= 0"),
                                         ("300", "seconds, not milliseconds"), ("soon", "number")])
def test_ticket_delay_in_a_device_file(tmp_path, value, error):
    text = DEVICE.read_text()
    assert "  key_type: ec\n" in text
    path = tmp_path / "dev.yaml"
    path.write_text(text.replace("  key_type: ec\n", f"  key_type: ec\n  ticket_delay: {value}\n"))
    if error is None:
        assert load_device_file(path).server.ticket_delay == float(value)
        return
    with pytest.raises(ConfigError) as info:
        load_device_file(path)
    assert "server.ticket_delay" in str(info.value) and error in str(info.value), str(info.value)
