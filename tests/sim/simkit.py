"""Helpers for the simulated-bench tests: certificates, a stdlib TLS server
(echo by default; also none, http, mqtt, greeting, as the firmware's
personalities speak), a tiny expect() over pyserial, pyvisa sessions.

Deliberately no harness code: these tests prove the bench behaves like
hardware to *any* client, so they use only what a person at a real bench
would use (pyvisa '@py', pyserial, ssl, cryptography).  A uniquely named
module, not ``conftest``, so ``pytest tests`` with several conftest.py files
imports the right one.
"""

from __future__ import annotations

import datetime
import re
import socket
import sys
import ssl
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pyvisa
import serial
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # pytest.ini's pythonpath adds it; do not depend on that
    sys.path.insert(0, str(ROOT))

from devices.sim import SimBench  # noqa: E402

TAU = 0.02  # rail time constant for tests: 3.3 V -> 2.5 V in ~6 ms, < 1 V in ~24 ms


# ------------------------------------------------------------------ certificates
@dataclass
class Pki:
    ca_pem: Path
    server_pem: Path  # cert + key for server.test (ECDSA P-256)
    rsa_pem: Path     # cert + key for rsa.test (RSA-2048)


def _cert(subject: str, key, issuer_name: x509.Name, issuer_key, ca: bool, sans: list[str]) -> x509.Certificate:
    now = datetime.datetime.now(datetime.timezone.utc)
    b = (x509.CertificateBuilder()
         .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
         .issuer_name(issuer_name).public_key(key.public_key())
         .serial_number(x509.random_serial_number())
         .not_valid_before(now - datetime.timedelta(days=1))
         .not_valid_after(now + datetime.timedelta(days=365))
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if sans:
        b = b.add_extension(x509.SubjectAlternativeName([x509.DNSName(s) for s in sans]), critical=False)
    return b.sign(issuer_key, hashes.SHA256())


def _pem(cert: x509.Certificate, key=None) -> bytes:
    out = cert.public_bytes(serialization.Encoding.PEM)
    if key is not None:
        out += key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption())
    return out


def make_pki(d: Path) -> Pki:
    """A CA, an ECDSA P-256 leaf (server.test, other.test) and an RSA-2048 leaf (rsa.test)."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Sim Test CA")])
    ca = _cert("Sim Test CA", ca_key, ca_name, ca_key, True, [])
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = _cert("server.test", key, ca_name, ca_key, False, ["server.test", "other.test"])
    rkey = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    rleaf = _cert("rsa.test", rkey, ca_name, ca_key, False, ["rsa.test"])
    (d / "ca.pem").write_bytes(_pem(ca))
    (d / "server.pem").write_bytes(_pem(leaf, key))
    (d / "rsa.pem").write_bytes(_pem(rleaf, rkey))
    return Pki(d / "ca.pem", d / "server.pem", d / "rsa.pem")


# -------------------------------------------------------------- stdlib TLS server
PROTOCOLS = ("line", "none", "http", "mqtt", "greeting")


@dataclass
class Handshake:
    version: str
    resumed: bool
    sni: str | None
    app: list[str] = field(default_factory=list)  # what the server saw after the handshake
    opened: float = 0.0                           # monotonic: handshake done
    closed: float = 0.0                           # monotonic: connection over

    @property
    def duration(self) -> float:
        return self.closed - self.opened


@dataclass
class EchoServer:
    """A stdlib ssl server speaking one application protocol, recording each handshake.

    ``line`` (the default): echo one line, close.  ``none``: say nothing,
    wait for the client to close.  ``http``: answer ``GET`` with
    ``http_status``, close.  ``mqtt``: CONNACK a CONNECT, PINGRESP a
    PINGREQ, record PUBLISH, until DISCONNECT or close.  ``greeting``: send
    ``banner`` first, then as ``line``.  A record is appended when the
    connection ends; ``open_since`` tells whether one is open right now.

    One SSLContext = one ticket key; :meth:`rotate` makes a new context so
    every earlier ticket is refused (the fallback case).
    """

    cert: Path
    host: str = "127.0.0.1"
    port: int = 0
    protocol: str = "line"
    banner: bytes = b"simsrv ready\r\n"
    http_status: str = "200 OK"
    connack_rc: int = 0
    idle_timeout: float = 5.0
    records: list[Handshake] = field(default_factory=list)
    open_since: float | None = None
    ctx: ssl.SSLContext = field(init=False)
    _sock: socket.socket = field(init=False)
    _stop: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self.rotate()
        self._sock = socket.create_server((self.host, 0))
        self._sock.settimeout(0.2)
        self.port = self._sock.getsockname()[1]
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def rotate(self) -> None:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(self.cert)
        self._sni: list[str | None] = []
        ctx.sni_callback = lambda s, name, c: self._sni.append(name)
        self.ctx = ctx

    def _serve(self) -> None:
        assert self.protocol in PROTOCOLS, self.protocol
        while not self._stop.is_set():
            try:
                raw, _ = self._sock.accept()
            except (socket.timeout, OSError):
                continue
            raw.settimeout(self.idle_timeout)
            rec: Handshake | None = None
            try:
                with self.ctx.wrap_socket(raw, server_side=True) as tls:
                    sni = self._sni[-1] if self._sni else None
                    rec = Handshake(tls.version() or "?", tls.session_reused, sni, opened=time.monotonic())
                    self.open_since = rec.opened
                    getattr(self, f"_talk_{self.protocol}")(tls, rec)
            except (OSError, ssl.SSLError) as exc:
                if rec is None:
                    rec = Handshake(f"error: {exc}", False, None, opened=time.monotonic())
                else:
                    rec.app.append(f"error: {exc}")
            finally:
                raw.close()
                self.open_since = None
                if rec is not None:
                    rec.closed = time.monotonic()
                    self.records.append(rec)

    @staticmethod
    def _read_line(tls: ssl.SSLSocket) -> bytes:
        data = b""
        while not data.endswith(b"\n"):
            chunk = tls.recv(1024)
            if not chunk:
                break
            data += chunk
        return data

    def _talk_line(self, tls: ssl.SSLSocket, rec: Handshake) -> None:
        data = self._read_line(tls)
        rec.app.append(data.decode(errors="replace"))
        tls.sendall(data)

    def _talk_greeting(self, tls: ssl.SSLSocket, rec: Handshake) -> None:
        tls.sendall(self.banner)
        self._talk_line(tls, rec)

    def _talk_none(self, tls: ssl.SSLSocket, rec: Handshake) -> None:
        while True:
            chunk = tls.recv(1024)
            if not chunk:
                rec.app.append("closed by client")
                return
            rec.app.append(f"unexpected {chunk!r}")

    def _talk_http(self, tls: ssl.SSLSocket, rec: Handshake) -> None:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = tls.recv(1024)
            if not chunk:
                break
            data += chunk
        rec.app.extend(data.decode(errors="replace").split("\r\n")[:4])
        tls.sendall(f"HTTP/1.1 {self.http_status}\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n"
                    .encode())

    def _talk_mqtt(self, tls: ssl.SSLSocket, rec: Handshake) -> None:
        buf = b""
        while True:
            while True:  # one packet: first byte, remaining length, body
                if len(buf) >= 2:
                    length, mult, i = 0, 1, 1
                    while i < len(buf) and i < 5:
                        length += (buf[i] & 0x7F) * mult
                        mult *= 128
                        if not buf[i] & 0x80:
                            break
                        i += 1
                    if i < len(buf) and len(buf) >= i + 1 + length:
                        first, body, buf = buf[0], buf[i + 1:i + 1 + length], buf[i + 1 + length:]
                        break
                chunk = tls.recv(1024)
                if not chunk:
                    rec.app.append("EOF")
                    return
                buf += chunk
            kind = first >> 4
            if kind == 1:  # CONNECT
                name_len = int.from_bytes(body[0:2], "big")
                level, flags = body[2 + name_len], body[3 + name_len]
                keepalive = int.from_bytes(body[4 + name_len:6 + name_len], "big")
                cid_len = int.from_bytes(body[6 + name_len:8 + name_len], "big")
                cid = body[8 + name_len:8 + name_len + cid_len].decode()
                rec.app.append(f"CONNECT {body[2:2 + name_len].decode()} level={level} flags=0x{flags:02x} "
                               f"keepalive={keepalive} id={cid}")
                tls.sendall(bytes([0x20, 0x02, 0x00, self.connack_rc]))
            elif kind == 3:  # PUBLISH, QoS 0
                topic_len = int.from_bytes(body[0:2], "big")
                rec.app.append(f"PUBLISH {body[2:2 + topic_len].decode()} {body[2 + topic_len:].decode()}")
            elif kind == 12:  # PINGREQ
                rec.app.append("PINGREQ")
                tls.sendall(b"\xd0\x00")
            elif kind == 14:  # DISCONNECT
                rec.app.append("DISCONNECT")
                return
            else:
                rec.app.append(f"packet 0x{first:02x}")

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self._sock.close()


# ------------------------------------------------------------------ bench helpers
class Console:
    """Minimal expect() over a pyserial port: what a person's script would do."""

    def __init__(self, path: Path):
        self.port = serial.Serial(str(path), 115200, timeout=0.05)
        self.text = ""

    def read(self) -> None:
        data = self.port.read(1)  # returns as soon as a byte arrives (or after 50 ms)
        if data and self.port.in_waiting:
            data += self.port.read(self.port.in_waiting)
        self.text += data.decode("utf-8", "replace")

    def expect(self, pattern: str, timeout: float = 10.0, start: int = 0) -> re.Match:
        deadline = time.monotonic() + timeout
        rx = re.compile(pattern, re.M)
        while True:
            m = rx.search(self.text, start)
            if m:
                return m
            if time.monotonic() > deadline:
                raise AssertionError(f"{pattern!r} not seen in {timeout}s; console:\n{self.text[start:]}")
            self.read()

    def mark(self) -> int:
        self.read()
        return len(self.text)

    def send(self, line: str) -> None:
        self.port.write(line.encode() + b"\r\n")

    def command(self, line: str, until: str, timeout: float = 10.0) -> str:
        """Send a line, wait for ``until``, return everything printed since."""
        start = self.mark()
        self.send(line)
        m = self.expect(until, timeout, start)
        return self.text[start:m.end()]

    def close(self) -> None:
        self.port.close()


def open_psu(bench: SimBench):
    rm = pyvisa.ResourceManager("@py")
    psu = rm.open_resource(bench.supply_resource, read_termination="\n", write_termination="\n", timeout=3000)
    return rm, psu


def wait_for(predicate, timeout: float = 5.0, interval: float = 0.01):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(interval)


def power_on(psu, con: Console, cause: str = "power-on") -> str:
    start = con.mark()
    psu.write("OUTP ON")
    m = con.expect(r"^sim> ", 10, start)
    text = con.text[start:m.end()]
    assert f"reset cause: {cause}" in text, text
    return text


def power_off(psu, off_time: float = 0.2) -> None:
    """Cut power and wait clearly longer than the decay (tau) to below 1 V."""
    psu.write("OUTP OFF")
    time.sleep(off_time)
