"""The wolfSSL TLS port of the C firmware (``devices/cfirmware/src/tls_wolfssl.c``) against the reference server.

Builds ``devices/cfirmware/tests_c/wolfssl_port_check.c`` (the port plus a stub
device clock) with ``cc`` into tmp_path, runs it against two standalone
reference servers (TLS 1.2+1.3, and TLS 1.2 only with other ticket keys but
the same certificate), and checks both sides: the driver's own checks (exit
status, ``ok``/``FAIL`` lines) and what the server recorded for every
connection (full, resumed from which handshake, refused and why, the client's
claimed ticket age).  Nothing is skipped: without a C compiler or the wolfSSL
headers the test fails and says what to install.
"""

from __future__ import annotations

import contextlib
import json
import re
import select
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
FIRMWARE = REPO / "devices" / "cfirmware"
DRIVER = FIRMWARE / "tests_c" / "wolfssl_port_check.c"
PORT = FIRMWARE / "src" / "tls_wolfssl.c"
NET = FIRMWARE / "src" / "net_posix.c"   # the board's TCP connect, which the port uses
LIFETIME = 300
LIFETIME12 = 2  # the TLS 1.2-only server: its tickets expire while the test waits
INSTALL = "apt-get install gcc libwolfssl-dev"


def _build(tmp_path: Path) -> Path:
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.fail(f"no C compiler (cc) on the PATH: {INSTALL}", pytrace=False)
    exe = tmp_path / "wolfssl_port_check"
    cmd = [cc, "-Wall", "-Wextra", "-Werror", "-O2", "-I", str(FIRMWARE / "src"), str(DRIVER), str(PORT),
           str(NET), "-lwolfssl", "-o", str(exe)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        missing = "wolfssl/" in proc.stderr or "lwolfssl" in proc.stderr
        what = "the wolfSSL development files are missing" if missing else "cannot build the wolfSSL port check"
        pytest.fail(f"{what} ({INSTALL} if gcc or wolfSSL is missing):\n{' '.join(cmd)}\n{proc.stderr}",
                    pytrace=False)
    return exe


class Server:
    """``python -m harness.server`` in its own process, ended through its handle."""

    def __init__(self, workdir: Path, *args: str, lifetime: int = LIFETIME):
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.stderr = workdir / "stderr.txt"
        self._err = self.stderr.open("w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "harness.server", "--port", "0", "--json", "-q", "--workdir", str(workdir),
             "--lifetime", str(lifetime), *args],
            cwd=REPO, stdout=subprocess.PIPE, stderr=self._err, text=True,
        )
        ready, _, _ = select.select([self.proc.stdout], [], [], 60)
        line = self.proc.stdout.readline() if ready else ""
        if not line:
            self.stop()
            pytest.fail(f"reference server did not start: {self.stderr.read_text()}")
        listening = json.loads(line)
        self.port = listening["port"]
        self.ca = listening["ca"]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout:
            self.proc.stdout.close()
        self._err.close()

    def records(self) -> dict[int, dict]:
        """Every connection's final record (the log gets it when the connection ends), by id."""
        path = self.workdir / "handshakes.jsonl"
        recs = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        return {r["id"]: r for r in recs}


def _start_servers(tmp_path: Path, stack: contextlib.ExitStack) -> tuple[Server, Server]:
    """The main server (TLS 1.2 + 1.3) and a TLS 1.2-only one with its own ticket keys but the same certificate."""
    main = Server(tmp_path / "main")
    stack.callback(main.stop)
    certs = tmp_path / "main"
    only12 = Server(tmp_path / "only12", "--tls12-only", "--cert", str(certs / "server-cert.pem"),
                    "--key-file", str(certs / "server-key.pem"), "--ca", str(certs / "ca.pem"),
                    lifetime=LIFETIME12)
    stack.callback(only12.stop)
    return main, only12


def _conns(out: str, tag: str) -> dict[str, int]:
    return {m.group(2): int(m.group(1)) for m in re.finditer(rf"^{tag} (\d+) (\S+)$", out, re.M)}


def test_wolfssl_port_against_reference_server(tmp_path):
    exe = _build(tmp_path)  # before any server starts: without gcc or wolfSSL this fails, saying what to install
    with contextlib.ExitStack() as stack:
        main, only12 = _start_servers(tmp_path, stack)
        _check(exe, main, only12)


def _check(exe: Path, main: Server, only12: Server) -> None:
    proc = subprocess.run([str(exe), "127.0.0.1", str(main.port), main.ca, str(LIFETIME), str(only12.port),
                           str(LIFETIME12)],
                          capture_output=True, text=True, timeout=180)
    out = proc.stdout
    print(out)  # shown by pytest on failure: every step, no secrets
    fails = [line for line in out.splitlines() if line.startswith("FAIL")]
    assert proc.returncode == 0 and not fails and "PASSED" in out, "driver failed:\n" + "\n".join(fails) + proc.stderr

    blobs = {m.group(1): int(m.group(2)) for m in re.finditer(r"^BLOB (\S+) (-?\d+)$", out, re.M)}
    assert blobs["tls13-after-connect"] == 0  # saved before the tickets arrived: nothing resumable
    assert 600 < blobs["tls12"] < 4096 and 600 < blobs["tls13"] < 4096
    assert blobs["tls13-after-refused"] == blobs["tls13"]  # no peer-chain growth after a refused offer

    # Stop the servers so their logs hold every connection's final record.
    main.stop()
    only12.stop()
    conn, recs = _conns(out, "CONN"), main.records()
    rec = {step: recs[n] for step, n in conn.items()}
    assert len(recs) == len(conn), f"server saw {len(recs)} connections, driver made {len(conn)}"

    # the cipher the port reports is named as the server (OpenSSL) names it
    for step, cipher in re.findall(r"^  (\S+): connected \S+ (\S+) resumed=", out, re.M):
        if step in rec:
            assert rec[step]["cipher"] == cipher, (step, cipher, rec[step]["cipher"])

    def full(r, version):
        assert r["error"] is None and r["version"] == version and not r["resumed"] and r["mechanism"] == "full", r

    full(rec["full12"], "TLSv1.2")
    assert rec["full12"]["client_versions"] == ["TLSv1.2"] and len(rec["full12"]["issued"]) == 1
    assert rec["full12"]["sni"] == "server.test"
    for step in ("resume12", "resume12-again", "auto-blob12"):
        r = rec[step]
        assert r["resumed"] and r["mechanism"] == "ticket" and r["resumed_from"] == rec["full12"]["id"], (step, r)
    # wolfSSL resumes a TLS 1.2 session with a TLS 1.2-only ClientHello, even with TLS_AUTO
    assert rec["auto-blob12"]["client_versions"] == ["TLSv1.2"]
    # a damaged TLS 1.2 ticket ("decrypt": OpenSSL's HMAC check failed): the server went for a full
    # handshake and wolfSSL 5.5.4 could not follow it
    assert rec["bad-ticket12"]["rejected"] == "decrypt" and "unexpected message" in rec["bad-ticket12"]["error"]
    full(rec["bad-ticket12-retry"], "TLSv1.2")
    # the server resumed, the client (wrong secret) could not read its Finished
    assert rec["bad-secret12"]["rejected"] == "finished" and "bad record mac" in rec["bad-secret12"]["error"]

    full(rec["full13"], "TLSv1.3")
    assert rec["full13"]["client_versions"] == ["TLSv1.3"] and len(rec["full13"]["issued"]) == 2
    assert rec["resume13"]["resumed"] and rec["resume13"]["mechanism"] == "psk"
    assert rec["resume13"]["resumed_from"] == rec["full13"]["id"]
    assert rec["resume13"]["offered"]["psk"][0] in rec["full13"]["issued"]
    # the blob saved after the resumption holds the ticket issued by that resumption
    assert rec["clock+5s13"]["resumed_from"] == rec["resume13"]["id"]
    # the device clock ran 5 s ahead: wolfSSL's claimed ticket age follows port_clock_ms (gettimeofday hook)
    skew = rec["clock+5s13"]["claimed_age_ms"] - rec["clock+5s13"]["ticket_age_ms"]
    assert 4000 <= skew <= 6000, rec["clock+5s13"]
    assert abs(rec["resume13"]["claimed_age_ms"] - rec["resume13"]["ticket_age_ms"]) < 1000
    # wolfSSL's own lifetime check (host clock) is out of the way: offered, and the server judged
    assert rec["old-born13"]["resumed"] and rec["old-born13"]["resumed_from"] == rec["full13"]["id"]
    # a device clock past the lifetime: wolfSSL still offers the PSK, claiming an age over the lifetime
    r = rec["clock-past-lifetime13"]
    assert r["offered"]["psk"] and r["claimed_age_ms"] > LIFETIME * 1000 and r["resumed"], r
    # an uptime clock restarted behind ticketSeen: the claimed age wraps (the server still resumes: no early data)
    assert rec["uptime13"]["resumed"] and rec["uptime13"]["claimed_age_ms"] > LIFETIME * 1000
    r = rec["bad-ticket13"]
    assert r["error"] is None and not r["resumed"] and r["rejected"] == "decrypt" and r["offered"]["psk"], r
    assert rec["bad-secret13"]["rejected"] == "binder" and "binder" in rec["bad-secret13"]["error"]
    full(rec["bad-secret13-retry"], "TLSv1.3")
    assert rec["auto-blob13"]["resumed"] and rec["auto-blob13"]["client_versions"] == ["TLSv1.2", "TLSv1.3"]
    full(rec["auto-full"], "TLSv1.3")
    assert rec["auto-full"]["client_versions"] == ["TLSv1.2", "TLSv1.3"]  # TLS_AUTO: no TLS 1.1
    assert rec["wrong-name"]["error"] and "bad certificate" in rec["wrong-name"]["error"]
    full(rec["ip-no-sni"], "TLSv1.3")
    assert rec["ip-no-sni"]["sni"] is None

    conn12, recs12 = _conns(out, "CONN12"), only12.records()
    rec12 = {step: recs12[n] for step, n in conn12.items()}
    assert len(recs12) == len(conn12)
    assert rec12["b-pinned13"]["client_versions"] == ["TLSv1.3"] and rec12["b-pinned13"]["error"]
    full(rec12["b-auto"], "TLSv1.2")
    assert rec12["b-resume12"]["resumed"] and rec12["b-resume12"]["resumed_from"] == rec12["b-auto"]["id"]
    assert rec12["b-expired12"]["rejected"] == "expired" and rec12["b-expired12"]["error"]
    assert rec12["b-foreign12"]["rejected"] == "foreign"
    assert rec12["b-auto-blob13"]["offered"]["psk"] and rec12["b-auto-blob13"]["error"]
    full(rec12["b-auto-blob13-retry"], "TLSv1.2")
