"""``python -m harness.server`` as a lab runs it: JSON lines, readable lines, clean exit."""

from __future__ import annotations

import json
import signal
import socket
import ssl
import subprocess
import sys
from types import SimpleNamespace

import pytest

from tlskit import REPO, s_client


def _start(tmp_path, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "harness.server", "--port", "0", "--workdir", str(tmp_path), *args],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _stop(proc: subprocess.Popen, sig: int) -> tuple[int, str, str]:
    proc.send_signal(sig)
    try:
        out, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode, out, err


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_json_mode(tmp_path, sig):
    proc = _start(tmp_path, "--json", "--tls13-only", "--lifetime", "60")
    try:
        listening = json.loads(proc.stdout.readline())
        assert listening["event"] == "listening" and listening["ca"].endswith("ca.pem")
        srv = SimpleNamespace(host=listening["host"], port=listening["port"], ca_path=listening["ca"])
        sess = tmp_path / "s.pem"
        assert s_client(srv, sess_out=sess).status == "New"
        assert s_client(srv, sess_in=sess).status == "Reused"
        events = [json.loads(proc.stdout.readline()) for _ in range(4)]
    finally:
        rc, out, err = _stop(proc, sig)
    # Each connection: its handshake the moment it completes, then its end.
    assert [(e["event"], e["id"]) for e in events] == [("handshake", 1), ("closed", 1), ("handshake", 2), ("closed", 2)]
    first, closed, second = events[0], events[1], events[2]
    assert first["event"] == "handshake" and first["version"] == "TLSv1.3" and not first["resumed"]
    assert first["app_end"] is None and first["protocol"] == "line"
    assert closed["app"] == ["line 13 bytes"] and closed["app_end"] == "server closed after the reply"
    assert second["resumed"] and second["resumed_from"] == first["id"]
    assert rc == 0 and "Traceback" not in err


def test_greeting_protocol_option(tmp_path):
    proc = _start(tmp_path, "--json", "--protocol", "greeting", "--greeting", "hello lab", "--app-timeout", "5")
    try:
        listening = json.loads(proc.stdout.readline())
        ctx = ssl.create_default_context(cafile=listening["ca"])
        with socket.create_connection((listening["host"], listening["port"]), timeout=5) as raw:
            with ctx.wrap_socket(raw, server_hostname="server.test") as tls:
                assert tls.recv(100) == b"hello lab\n"
        handshake = json.loads(proc.stdout.readline())
        closed = json.loads(proc.stdout.readline())
    finally:
        rc, out, err = _stop(proc, signal.SIGTERM)
    assert handshake["event"] == "handshake" and handshake["protocol"] == "greeting" and handshake["error"] is None
    assert closed["event"] == "closed" and closed["app"] == ["greeting sent"]
    assert closed["app_end"] in ("client closed (close_notify)", "client closed the TCP connection")
    assert rc == 0 and "Traceback" not in err


def test_readable_mode(tmp_path):
    proc = _start(tmp_path, "--tls12-only", "--names", "server.test,b.test")
    try:
        first = proc.stdout.readline()
        assert first.startswith("listening on 127.0.0.1:"), first
        port = int(first.split()[2].rsplit(":", 1)[1].rstrip(";"))
        srv = SimpleNamespace(host="127.0.0.1", port=port, ca_path=tmp_path / "ca.pem")
        assert s_client(srv).version == "TLSv1.2"
        line = proc.stdout.readline()
        closed = proc.stdout.readline()
    finally:
        rc, out, err = _stop(proc, signal.SIGTERM)
    assert line.startswith("#1 127.0.0.1:") and "TLSv1.2" in line and " full " in line, line
    assert "| line: no messages; open" in line, line
    assert closed.startswith("#1 127.0.0.1:") and " closed after " in closed, closed
    assert "line: line 13 bytes; server closed after the reply" in closed, closed
    assert rc == 0 and "Traceback" not in err


@pytest.mark.parametrize(
    "args,message",
    [
        (["--lifetime", "0"], "ticket_lifetime"),
        (["--versions", "TLSv1.1"], "TLS version"),
        (["--tls12-only", "--tls13-only"], "not allowed with"),
        (["--cert", "/nonexistent.pem"], "cert, key and ca"),
        (["--ips", "not-an-ip"], "not an IP address"),
        (["--port", "nine"], "invalid int"),
        (["--protocol", "smtp"], "invalid choice"),
        (["--greeting", "two\nlines"], "greeting must be one line"),
    ],
)
def test_bad_options(tmp_path, args, message):
    proc = subprocess.run(
        [sys.executable, "-m", "harness.server", "--workdir", str(tmp_path), *args],
        cwd=REPO, capture_output=True, text=True, timeout=20,
    )
    assert proc.returncode == 2
    assert message in proc.stderr and "error:" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_user_certificate_that_does_not_load(tmp_path):
    bad = tmp_path / "bad.pem"
    bad.write_text("not a certificate\n")
    proc = subprocess.run(
        [sys.executable, "-m", "harness.server", "--port", "0", "--cert", str(bad), "--key-file", str(bad), "--ca", str(bad)],
        cwd=REPO, capture_output=True, text=True, timeout=20,
    )
    assert proc.returncode == 2 and "cannot load certificate" in proc.stderr
    assert "Traceback" not in proc.stderr
