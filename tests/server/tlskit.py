"""Independent TLS clients for the reference-server tests.

Clients are real and independent of the server's bookkeeping: ``openssl
s_client`` in separate processes (its ``-sess_out``/``-sess_in`` file plays the
device's flash surviving a power cut) and stdlib ``ssl`` clients.

Hostile ones too: hand-built ClientHellos and the abusive clients of
``test_abuse.py`` and ``bench/server_abuse.py`` (``make_abuse``,
``run_abuse``), each with what its record must say.
"""

from __future__ import annotations

import random
import re
import select
import socket
import ssl
import struct
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from harness.server import ReferenceServer

REPO = Path(__file__).resolve().parents[2]


def read_all(tls: ssl.SSLSocket) -> bytes:
    """Read until the server closes (close_notify or TCP close)."""
    out = b""
    while True:
        try:
            chunk = tls.recv(4096)
        except ssl.SSLZeroReturnError:
            break
        if not chunk:
            break
        out += chunk
    return out


@dataclass
class SClient:
    """What ``openssl s_client`` itself said about one connection."""

    status: str | None  # "New" or "Reused" (s_client's own verdict)
    version: str | None
    echoed: bool
    output: str
    returncode: int


def s_client(
    srv: ReferenceServer,
    *,
    tls: str | None = None,
    sess_in: Path | None = None,
    sess_out: Path | None = None,
    extra: tuple[str, ...] = (),
    line: str = "hello server\n",
    ca: Path | None = None,
) -> SClient:
    """One ``openssl s_client`` process: handshake, send a line, read the echo and tickets."""
    cmd = [
        "openssl", "s_client", "-connect", f"{srv.host}:{srv.port}", "-servername", "server.test",
        "-CAfile", str(ca or srv.ca_path), "-verify_return_error", "-ign_eof",
    ]
    if tls:
        cmd.append({"1.2": "-tls1_2", "1.3": "-tls1_3"}[tls])
    if sess_in is not None:
        cmd += ["-sess_in", str(sess_in)]
    if sess_out is not None:
        cmd += ["-sess_out", str(sess_out)]
    cmd += list(extra)
    proc = subprocess.run(cmd, input=line, capture_output=True, text=True, timeout=20)
    out = proc.stdout + proc.stderr
    m = re.search(r"^(New|Reused), (TLSv1\.[23])", out, re.M)
    return SClient(
        status=m.group(1) if m else None,
        version=m.group(2) if m else None,
        echoed=line.strip() in proc.stdout.split("---")[-1] or line.strip() in proc.stdout,
        output=out,
        returncode=proc.returncode,
    )


@dataclass
class PyClient:
    """A stdlib ``ssl`` client keeping its session object between connections."""

    srv: ReferenceServer
    version: ssl.TLSVersion | None = None
    session: ssl.SSLSession | None = None
    cert: tuple[Path, Path] | None = None
    _ctx: ssl.SSLContext | None = None

    def context(self) -> ssl.SSLContext:
        """One context per client: a session only resumes with the context that made it."""
        if self._ctx is not None:
            return self._ctx
        ctx = self._ctx = ssl.create_default_context(cafile=str(self.srv.ca_path))
        if self.version is not None:
            ctx.minimum_version = ctx.maximum_version = self.version
        if self.cert is not None:
            ctx.load_cert_chain(*self.cert)
        return ctx

    def connect(self, line: bytes = b"ping\n", ctx: ssl.SSLContext | None = None) -> tuple[bool, bytes]:
        """Handshake, send a line, read until the server closes; return (reused, echo)."""
        ctx = ctx or self.context()
        with socket.create_connection((self.srv.host, self.srv.port), timeout=10) as raw:
            with ctx.wrap_socket(raw, server_hostname="server.test", session=self.session) as tls:
                tls.sendall(line)
                echo = read_all(tls)
                reused = tls.session_reused
                self.session = tls.session
        return reused, echo


# --- tlslite-ng: a client whose stored session the tests can damage ------------------------


@dataclass
class LiteResult:
    """One tlslite-ng connection: how it went, and the session it ends with."""

    resumed: bool
    echo: bytes
    session: object | None
    error: Exception | None = None
    handshake_mono: float | None = None  # harness clock when the client's handshake completed
    echo_mono: float | None = None  # ... when the server's reply arrived


def _lite_connection_class():
    from tlslite.tlsconnection import TLSConnection

    class FallbackConnection(TLSConnection):
        """tlslite takes any TLS 1.2 ticket offer for accepted; this one sees the refusal and goes on full.

        The server echoes the client's session id only when it takes the
        ticket (RFC 5077 3.4), so the offer carries a fresh random session id.
        """

        def _clientResume(self, session, serverHello, clientRandom, nextProto, settings):  # noqa: N802,N803
            if session is not None and session.tls_1_0_tickets and session.sessionID \
                    and serverHello.session_id != session.sessionID:
                session.tls_1_0_tickets = []
                session.sessionID = bytearray(0)
            yield from super()._clientResume(session, serverHello, clientRandom, nextProto, settings)

    return FallbackConnection


def lite_connect(srv, version: str, session=None, line: bytes = b"tlslite\n") -> LiteResult:
    """Handshake with tlslite-ng (``version`` "1.2" or "1.3"), send a line, read until the server closes.

    ``session`` is used as given (tests damage it on purpose); a TLS 1.2
    ticket offer gets a fresh random session id so a refusal is seen.
    """
    import os

    from tlslite.handshakesettings import HandshakeSettings

    from harness import clock

    settings = HandshakeSettings()
    settings.minVersion = settings.maxVersion = {"1.2": (3, 3), "1.3": (3, 4)}[version]
    if session is not None and version == "1.2" and session.tls_1_0_tickets:
        session.sessionID = bytearray(os.urandom(32))
    with socket.create_connection((srv.host, srv.port), timeout=10) as sock:
        conn = _lite_connection_class()(sock)
        try:
            conn.handshakeClientCert(serverName="server.test", session=session, settings=settings)
        except Exception as e:  # the alert or error the client saw: the test judges it
            return LiteResult(False, b"", None, e)
        shook = clock.now()
        conn.write(line)
        echo = b""
        got = None
        while True:
            data = conn.read()
            if not data:
                break
            got = got or clock.now()
            echo += data
        conn.close()
        return LiteResult(bool(conn.resumed), echo, conn.session, None, shook, got)


def damaged(session, *, secret: bool = False, ticket_byte: int | None = None):
    """A copy of a tlslite session with its secret changed or one byte of its ticket flipped."""
    import copy

    s = copy.deepcopy(session)
    tls13 = bool(s.tickets)
    if secret:
        if tls13:
            s.resumptionMasterSecret = bytearray(s.resumptionMasterSecret)
            s.resumptionMasterSecret[0] ^= 0xFF
        else:
            s.masterSecret = bytearray(s.masterSecret)
            s.masterSecret[0] ^= 0xFF
    if ticket_byte is not None:
        ticket = s.tickets[0] if tls13 else s.tls_1_0_tickets[0]
        raw = bytearray(ticket.ticket)
        raw[ticket_byte] ^= 0xFF
        ticket.ticket = raw
    return s


# --- hand-built ClientHellos and abusive clients (test_abuse.py, bench/server_abuse.py) ------------
#
# Built with struct, not with a TLS library: a library refuses to send what is
# broken, and the point is to send exactly that.  Every generator takes a
# ``random.Random`` so a run is reproducible from its seed.

TLS13_SUITES = (0x1301, 0x1302, 0x1303)
TLS12_SUITES = (0xC02B, 0xC02C, 0xC02F, 0xC030, 0xCCA9, 0xCCA8)
EXT_SNI, EXT_GROUPS, EXT_POINTS, EXT_SIGALGS, EXT_EMS = 0, 10, 11, 13, 23
EXT_TICKET, EXT_PSK, EXT_VERSIONS, EXT_PSK_MODES, EXT_KEY_SHARE = 35, 41, 43, 45, 51
X25519 = 0x001D


def _u8(b: bytes) -> bytes:
    return struct.pack(">B", len(b)) + b


def _u16(b: bytes) -> bytes:
    return struct.pack(">H", len(b)) + b


def _u24(b: bytes) -> bytes:
    return struct.pack(">I", len(b))[1:] + b


def ext(etype: int, body: bytes) -> bytes:
    """One extension: type, 16-bit length, body."""
    return struct.pack(">H", etype) + _u16(body)


@dataclass
class Hello:
    """The fields of a ClientHello to build; the defaults make a well-formed TLS 1.3/1.2 offer."""

    sni: bytes | None = b"server.test"
    versions: tuple[int, ...] = (0x0304, 0x0303)
    session_id: bytes = b"\x11" * 32
    suites: tuple[int, ...] = TLS13_SUITES + TLS12_SUITES
    ticket: bytes | None = None  # RFC 5077 session_ticket extension
    psk: list[tuple[bytes, int]] = field(default_factory=list)  # (identity, obfuscated age); binders follow
    key_share: bytes = b"\x22" * 32  # x25519: any 32 bytes is a public key
    psk_binders: int | None = None  # how many binders (None: one per identity; fewer is malformed)
    extra: list[bytes] = field(default_factory=list)  # whole extensions (``ext()``), before pre_shared_key


def client_hello(h: Hello, random32: bytes = b"\x33" * 32) -> bytes:
    """The handshake message (type 1, 24-bit length, body) for ``h``."""
    exts = []
    if h.sni is not None:
        exts.append(ext(EXT_SNI, _u16(b"\x00" + _u16(h.sni))))
    exts.append(ext(EXT_GROUPS, _u16(struct.pack(">HH", X25519, 0x0017))))
    exts.append(ext(EXT_POINTS, _u8(b"\x00")))
    exts.append(ext(EXT_SIGALGS, _u16(struct.pack(">HHHH", 0x0403, 0x0804, 0x0401, 0x0503))))
    exts.append(ext(EXT_EMS, b""))
    if h.ticket is not None:
        exts.append(ext(EXT_TICKET, h.ticket))
    if h.versions:
        exts.append(ext(EXT_VERSIONS, _u8(b"".join(struct.pack(">H", v) for v in h.versions))))
        exts.append(ext(EXT_PSK_MODES, _u8(b"\x01")))
        exts.append(ext(EXT_KEY_SHARE, _u16(struct.pack(">H", X25519) + _u16(h.key_share))))
    exts.extend(h.extra)
    if h.psk:  # must be the last extension
        identities = b"".join(_u16(i) + struct.pack(">I", age) for i, age in h.psk)
        count = len(h.psk) if h.psk_binders is None else h.psk_binders
        binders = b"".join(_u8(b"\x44" * 32) for _ in range(count))
        exts.append(ext(EXT_PSK, _u16(identities) + _u16(binders)))
    body = (
        b"\x03\x03" + random32 + _u8(h.session_id)
        + _u16(b"".join(struct.pack(">H", s) for s in h.suites)) + _u8(b"\x00") + _u16(b"".join(exts))
    )
    return b"\x01" + _u24(body)


def tls_records(payload: bytes, content_type: int = 22, version: int = 0x0301, size: int = 16384) -> bytes:
    """``payload`` cut into TLS plaintext records of at most ``size`` bytes."""
    out = bytearray()
    for i in range(0, max(len(payload), 1), size):
        chunk = payload[i : i + size]
        out += struct.pack(">BHH", content_type, version, len(chunk)) + chunk
    return bytes(out)


def alert(level: int, description: int) -> bytes:
    """A plaintext alert record (level 1 warning, 2 fatal; 0 close_notify, 40 handshake_failure, 90 user_canceled)."""
    return struct.pack(">BHHBB", 21, 0x0303, 2, level, description)


def random_hello(rng: random.Random) -> Hello:
    """A well-formed offer of a kind a device makes: TLS 1.3 and/or 1.2, maybe a ticket or a PSK."""
    versions = rng.choice([(0x0304, 0x0303), (0x0304,), (0x0303,)])
    sni = rng.choice([b"server.test", b"device-%d.example" % rng.randrange(100), None])
    h = Hello(versions=versions if versions != (0x0303,) else (), session_id=rng.randbytes(rng.choice([0, 32])),
              key_share=rng.randbytes(32), sni=sni)
    if versions == (0x0303,):
        h.suites = TLS12_SUITES
    if rng.random() < 0.3:
        h.ticket = rng.randbytes(rng.choice([0, 100, 200]))
    if 0x0304 in versions and rng.random() < 0.3:
        h.psk = [(rng.randbytes(rng.randint(16, 200)), rng.randrange(1 << 32))]
    return h


@dataclass
class Layout:
    """Where the length fields of a record-wrapped ClientHello (one record) are, as byte offsets."""

    record_len: int = 3  # 2 bytes
    hs_len: int = 6  # 3 bytes
    sid_len: int = 43  # 1 byte
    suites_len: int = 0  # 2 bytes
    comp_len: int = 0  # 1 byte
    exts_len: int = 0  # 2 bytes
    first_ext_len: int = 0  # 2 bytes

    @classmethod
    def of(cls, wire: bytes) -> "Layout":
        lay = cls()
        lay.suites_len = lay.sid_len + 1 + wire[lay.sid_len]
        lay.comp_len = lay.suites_len + 2 + int.from_bytes(wire[lay.suites_len : lay.suites_len + 2], "big")
        lay.exts_len = lay.comp_len + 1 + wire[lay.comp_len]
        lay.first_ext_len = lay.exts_len + 4
        return lay


def _poke(wire: bytes, offset: int, size: int, value: int) -> bytes:
    return wire[:offset] + (value % (1 << (8 * size))).to_bytes(size, "big") + wire[offset + size :]


#: Kinds of abuse, each a family of variants (make_abuse).  ``slow`` and ``idle`` last as long as the
#: server lets them (its handshake timeout, or its connection cap); the others a few milliseconds.
ABUSE_KINDS = ("random", "truncated", "bad_length", "bad_extension", "huge_ticket", "huge_psk", "alert",
               "garbage_after", "slow", "idle")
QUICK_KINDS = ABUSE_KINDS[:-2]

FAILED = r"TLS handshake failed: .+"
CLOSED_MID = r"client closed the connection mid-handshake \(after \d+ bytes\)"


@dataclass
class Abuse:
    """One abusive connection: what it sends, how it behaves, and what its record must say.

    ``mode``: ``send`` sends ``first``, half-closes and reads until the
    server closes; ``read_then`` sends ``first``, waits for the server's
    first flight, then sends ``then``; ``handshake_then`` completes a real
    handshake (stdlib client) and sends ``then`` raw on the socket; ``drip``
    sends ``first`` one byte per interval; ``hold`` sends nothing.  A
    half-close and a read to the server's close end every mode, so the
    server's view (bytes, then FIN) is the same on every run.

    ``expect`` is a regular expression for the record's ``error`` (for
    ``handshake_then``: its ``app_end``, the handshake having completed).
    """

    kind: str
    variant: str
    first: bytes = b""
    mode: str = "send"
    then: bytes = b""
    expect: str = FAILED


def make_abuse(kind: str, rng: random.Random) -> Abuse:
    """One abusive connection of ``kind``, its variant and bytes drawn from ``rng``."""
    return _MAKERS[kind](rng)


def _random(rng: random.Random) -> Abuse:
    variant = rng.choice(["bytes", "text", "tls-header"])
    if variant == "bytes":
        first = bytes([rng.choice([b for b in range(256) if b != 0x16])]) + rng.randbytes(rng.randint(0, 2047))
        # A first byte with the high bit set reads as an SSLv2 record header: the server may wait for the rest.
        return Abuse("random", variant, first, expect=f"{FAILED}|{CLOSED_MID}")
    if variant == "text":
        text = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz /:.") for _ in range(rng.randint(8, 200)))
        first = text.encode() + b"\r\n"
        return Abuse("random", variant, first, expect=FAILED + r"\((plain HTTP request|first bytes are not).*")
    size = rng.randint(4, 2000)  # a plausible handshake record of random content
    return Abuse("random", variant, struct.pack(">BHH", 22, 0x0301, size) + rng.randbytes(size),
                 expect=f"{FAILED}|{CLOSED_MID}")


def _truncated(rng: random.Random) -> Abuse:
    wire = tls_records(client_hello(random_hello(rng), rng.randbytes(32)))
    cut = rng.randint(1, len(wire) - 1)
    # A prefix of a valid ClientHello is valid so far: the server can only wait for the rest.
    return Abuse("truncated", f"cut at {cut}/{len(wire)}", wire[:cut],
                 expect=rf"client closed the connection mid-handshake \(after {cut} bytes\)")


def _bad_length(rng: random.Random) -> Abuse:
    wire = tls_records(client_hello(random_hello(rng), rng.randbytes(32)))
    lay = Layout.of(wire)
    field_ = rng.choice(["record", "record-short", "record-huge", "handshake", "handshake-short", "session-id",
                         "suites", "compression", "extensions", "extension"])
    if field_ == "record":  # longer than what follows: the server waits for the rest
        bad = _poke(wire, lay.record_len, 2, len(wire) - 5 + rng.randint(1, 500))
        return Abuse("bad_length", field_, bad, expect=CLOSED_MID)
    if field_ == "record-short":  # what follows is read as the next record's header: junk, or a long wait
        bad = _poke(wire, lay.record_len, 2, rng.randint(1, len(wire) - 6))
        return Abuse("bad_length", field_, bad, expect=f"{FAILED}|{CLOSED_MID}")
    elif field_ == "record-huge":
        bad = _poke(wire, lay.record_len, 2, rng.randint(16384 + 2049, 65535))
    elif field_ == "handshake":
        bad = _poke(wire, lay.hs_len, 3, rng.randint(len(wire) - 9 + 1, 1 << 24))
        return Abuse("bad_length", field_, bad, expect=f"{FAILED}|{CLOSED_MID}")
    elif field_ == "handshake-short":
        bad = _poke(wire, lay.hs_len, 3, rng.randint(0, len(wire) - 10))
    elif field_ == "session-id":
        bad = _poke(wire, lay.sid_len, 1, rng.randint(33, 255))
    elif field_ == "suites":
        bad = _poke(wire, lay.suites_len, 2, rng.choice([0, 1, 3, 0xFFFF]))
    elif field_ == "compression":
        bad = _poke(wire, lay.comp_len, 1, rng.choice([0, 200]))
    elif field_ == "extensions":
        real = int.from_bytes(wire[lay.exts_len : lay.exts_len + 2], "big")
        bad = _poke(wire, lay.exts_len, 2, real + rng.choice([-3, -1, 1, 7, 1000]))
    else:
        bad = _poke(wire, lay.first_ext_len, 2, rng.choice([0xFFFF, 1000, 1]))
    return Abuse("bad_length", field_, bad, expect=FAILED)


def _bad_extension(rng: random.Random) -> Abuse:
    variant = rng.choice(["versions-odd", "versions-ancient", "sni-overrun", "key-share-short", "duplicate",
                          "psk-not-last", "psk-no-binders", "too-many", "unknown-huge", "groups-empty"])
    h = random_hello(rng)
    h.versions, h.suites = (0x0304, 0x0303), TLS13_SUITES + TLS12_SUITES
    expect = FAILED
    if variant == "versions-odd":
        h.versions = ()
        h.extra = [ext(EXT_VERSIONS, b"\x03\x03\x04\x03")]
    elif variant == "versions-ancient":
        h.versions = ()
        h.extra = [ext(EXT_VERSIONS, _u8(b"\x03\x00\x7f\x00"))]
    elif variant == "sni-overrun":
        h.sni = None
        h.extra = [ext(EXT_SNI, b"\x00\x10\x00\x00\x40server.test")]
    elif variant == "key-share-short":
        h.key_share = rng.randbytes(rng.randint(1, 31))
    elif variant == "duplicate":
        h.extra = [ext(EXT_EMS, b"")]
    elif variant == "psk-not-last":
        h.psk = []
        h.extra = [ext(EXT_PSK, _u16(_u16(b"id") + b"\x00" * 4) + _u16(_u8(b"\x44" * 32))), ext(0xFFCE, b"")]
    elif variant == "psk-no-binders":  # binders are checked only for an identity the server can decrypt
        h.psk = [(rng.randbytes(40), 0)]
        h.psk_binders = 0
        expect = CLOSED_MID
    elif variant == "too-many":  # unknown extensions are legal: OpenSSL answers, the client then leaves
        h.extra = [ext(0x7000 + i, b"") for i in range(rng.randint(129, 3000))]
        expect = CLOSED_MID
    elif variant == "unknown-huge":
        h.extra = [ext(0x7A7A, rng.randbytes(rng.randint(1000, 60000)))]
        expect = CLOSED_MID
    else:
        h.extra = []
        h.key_share = b""
    return Abuse("bad_extension", variant, tls_records(client_hello(h, rng.randbytes(32))), expect=expect)


def _huge_ticket(rng: random.Random) -> Abuse:
    h = random_hello(rng)
    h.ticket = rng.randbytes(rng.randint(4096, 60000))
    h.psk = []
    variant = "TLS 1.2 only" if 0x0304 not in h.versions else "TLS 1.3 too"
    return Abuse("huge_ticket", variant, tls_records(client_hello(h, rng.randbytes(32))),
                 expect=f"{FAILED}|{CLOSED_MID}")


def _huge_psk(rng: random.Random) -> Abuse:
    h = random_hello(rng)
    h.versions, h.suites, h.ticket = (0x0304,), TLS13_SUITES, None
    variant = rng.choice(["many", "many-one-binder", "one-huge"])
    if variant == "many":
        h.psk = [(rng.randbytes(8), rng.randrange(1 << 32)) for _ in range(rng.randint(20, 1200))]  # 47 B each
    elif variant == "many-one-binder":
        h.psk = [(bytes([i % 256]), i) for i in range(rng.randint(20, 9000))]
        h.psk_binders = 1
    else:
        h.psk = [(rng.randbytes(rng.randint(4096, 60000)), 0)]
    return Abuse("huge_psk", variant, tls_records(client_hello(h, rng.randbytes(32))),
                 expect=f"{FAILED}|{CLOSED_MID}")


def _alert(rng: random.Random) -> Abuse:
    msg = client_hello(random_hello(rng), rng.randbytes(32))
    hello = tls_records(msg)
    variant = rng.choice(["instead-of-hello", "fatal", "close_notify", "warning", "inside-hello", "unknown"])
    if variant == "instead-of-hello":
        return Abuse("alert", variant, alert(rng.choice([1, 2]), rng.choice([0, 40, 90])),
                     expect=FAILED + r"\(the client sent an alert instead of a ClientHello\)")
    if variant == "inside-hello":  # the ClientHello in two records, an alert between them
        fragments = tls_records(msg, size=rng.randint(4, len(msg) - 1))
        first = fragments[: 5 + int.from_bytes(fragments[3:5], "big")]
        return Abuse("alert", variant, first + alert(2, 40) + fragments[len(first):], expect=FAILED)
    if variant == "fatal":
        return Abuse("alert", variant, hello, "read_then", alert(2, 40), expect=r"TLS handshake failed: .*alert.*")
    if variant == "close_notify":
        return Abuse("alert", variant, hello, "read_then", alert(1, 0),
                     expect=r"client sent close_notify mid-handshake \(after \d+ bytes\)")
    if variant == "warning":  # user_canceled is a warning: the server waits on, and the client leaves
        return Abuse("alert", variant, hello, "read_then", alert(1, 90), expect=f"{FAILED}|{CLOSED_MID}")
    return Abuse("alert", variant, hello, "read_then", alert(2, 255),
                 expect=FAILED + r"\(the client sent a fatal alert 255 \(unknown\)\)")


AFTER_HANDSHAKE = r"TLS error after the handshake: .+|client closed the TCP connection|client reset the TCP connection"


def _garbage_after(rng: random.Random) -> Abuse:
    variant = rng.choice(["raw", "record", "huge-record"])
    if variant == "raw":
        then = bytes([rng.choice(range(0x20, 0x7F))]) + rng.randbytes(rng.randint(10, 4000))
    elif variant == "record":
        size = rng.randint(20, 4000)
        then = struct.pack(">BHH", 23, 0x0303, size) + rng.randbytes(size)
    else:
        then = struct.pack(">BHH", 23, 0x0303, 0xFFFF) + rng.randbytes(100)
    return Abuse("garbage_after", variant, mode="handshake_then", then=then, expect=AFTER_HANDSHAKE)


ROOM = r"closed to make room for a new connection: .+"


def _slow(rng: random.Random) -> Abuse:
    return Abuse("slow", "byte by byte", tls_records(client_hello(random_hello(rng), rng.randbytes(32))), mode="drip",
                 expect=rf"handshake timed out after [\d.]+ s \(after \d+ bytes from the client\)|{ROOM}")


def _idle(rng: random.Random) -> Abuse:
    return Abuse("idle", "silent", mode="hold",
                 expect=rf"handshake timed out after [\d.]+ s \(client sent nothing\)|{ROOM}")


_MAKERS = {
    "random": _random, "truncated": _truncated, "bad_length": _bad_length, "bad_extension": _bad_extension,
    "huge_ticket": _huge_ticket, "huge_psk": _huge_psk, "alert": _alert, "garbage_after": _garbage_after,
    "slow": _slow, "idle": _idle,
}


def _read_to_close(sock: socket.socket) -> int:
    """Read until the server closes (or resets); the byte count."""
    got = 0
    while True:
        try:
            chunk = sock.recv(65536)
        except (ConnectionError, TimeoutError, OSError):
            return got
        if not chunk:
            return got
        got += len(chunk)


def _bio_handshake(sock: socket.socket, ctx: ssl.SSLContext) -> None:
    """A real client handshake over ``sock`` through memory BIOs, leaving the socket free for raw bytes."""
    inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(inc, out, server_hostname="server.test")
    while True:
        try:
            obj.do_handshake()
            break
        except ssl.SSLWantReadError:
            if out.pending:
                sock.sendall(out.read())
            data = sock.recv(65536)
            if not data:
                raise ConnectionError("server closed during the handshake")
            inc.write(data)
    if out.pending:
        sock.sendall(out.read())


def run_abuse(a: Abuse, address: tuple[str, int], *, ctx: ssl.SSLContext | None = None,
              interval: float = 1.0, timeout: float = 30.0) -> int:
    """Carry out ``a`` against the server; returns the connection's local port (the record's peer).

    Errors of the abuser's own (the server closed first, reset) are part of
    the game and swallowed; only a failed connect raises.
    """
    sock = socket.create_connection(address, timeout=timeout)
    port = sock.getsockname()[1]
    try:
        if a.mode == "send":
            sock.sendall(a.first)
        elif a.mode == "read_then":
            sock.sendall(a.first)
            sock.recv(65536)
            sock.sendall(a.then)
        elif a.mode == "handshake_then":
            _bio_handshake(sock, ctx or ssl.create_default_context())
            sock.sendall(a.then)
        elif a.mode == "drip":
            for i in range(len(a.first)):
                sock.sendall(a.first[i : i + 1])
                readable, _, _ = select.select([sock], [], [], interval)
                if readable:
                    break  # the server closed (timeout or room): nothing more to say
        if a.mode != "hold":
            sock.shutdown(socket.SHUT_WR)
    except (ConnectionError, TimeoutError, OSError, ssl.SSLError):
        pass
    _read_to_close(sock)
    sock.close()
    return port
