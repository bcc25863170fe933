"""Parse the handshake messages the server's message callback hands us.

Why parse by hand: OpenSSL decides whether to resume, but only the raw
messages say *what* was on offer (the RFC 5077 ticket, the TLS 1.3 PSK
identities with their obfuscated ages, the legacy session id), which PSK the
server picked, and which tickets it issued.  The callback delivers each
message in plaintext (TLS 1.3 NewSessionTickets included, although they are
encrypted on the wire), so a small, bounds-checked reader is all it takes.
Every parser raises :class:`ParseError` on malformed input, never IndexError.

What a ClientHello can make the server keep is bounded whatever its size
(up to 64 KiB of extensions), and so is the time it takes to read: at most
:data:`MAX_EXTENSIONS` extensions are walked (a real client sends about
twenty; sixteen thousand empty ones cost this reader tens of milliseconds of
the server's only thread), at most :data:`MAX_PSK_IDENTITIES` PSK identities
are kept (a real client offers one or two; thousands of one-byte identities
made a record of hundreds of kilobytes), and the server name is cut to
:data:`MAX_SNI` printable characters (it is printed on consoles and in
reports).
"""

from __future__ import annotations

from dataclasses import dataclass, field

CLIENT_HELLO = 1
SERVER_HELLO = 2
NEW_SESSION_TICKET = 4
FINISHED = 20

EXT_SERVER_NAME = 0
EXT_SESSION_TICKET = 35
EXT_PRE_SHARED_KEY = 41
EXT_SUPPORTED_VERSIONS = 43

#: extensions walked in one ClientHello; more is a ParseError
MAX_EXTENSIONS = 128
#: PSK identities kept from one ClientHello; ``psk_more`` says that more followed
MAX_PSK_IDENTITIES = 16
#: characters of the server name kept (a DNS name has at most 253)
MAX_SNI = 255

TLS12 = 0x0303
TLS13 = 0x0304
VERSION_NAMES = {0x0300: "SSLv3", 0x0301: "TLSv1.0", 0x0302: "TLSv1.1", TLS12: "TLSv1.2", TLS13: "TLSv1.3"}

# ServerHello.random of a HelloRetryRequest (RFC 8446 4.1.3)
HRR_RANDOM = bytes.fromhex("CF21AD74E59A6111BE1D8C021E65B891C2A211167ABB8C5E079E09E2C8A8339C")


class ParseError(ValueError):
    """A handshake message is shorter or shaped differently than its lengths say."""


def _vec(msg: bytes, pos: int, len_bytes: int, end: int) -> tuple[int, int]:
    """Bounds of a length-prefixed vector at ``pos``: (first byte, one past the last)."""
    start = pos + len_bytes
    if start > end:
        raise ParseError("truncated message")
    stop = start + int.from_bytes(msg[pos:start], "big")
    if stop > end:
        raise ParseError("vector runs past the end of the message")
    return start, stop


def _header(msg: bytes, expected_type: int) -> int:
    """Check the 4-byte handshake header the callback includes; return the body's end."""
    if len(msg) < 4 or msg[0] != expected_type:
        raise ParseError(f"not a handshake message of type {expected_type}")
    end = 4 + int.from_bytes(msg[1:4], "big")
    if end > len(msg):
        raise ParseError("truncated handshake message")
    return end


def _extensions(msg: bytes, pos: int, end: int) -> dict[int, tuple[int, int]]:
    """Extension type -> (start, stop) of its data; an absent block is no extensions."""
    exts: dict[int, tuple[int, int]] = {}
    if pos >= end:
        return exts
    pos, stop = _vec(msg, pos, 2, end)
    count = 0
    while pos < stop:
        count += 1
        if count > MAX_EXTENSIONS:
            raise ParseError(f"more than {MAX_EXTENSIONS} extensions")
        if pos + 4 > stop:
            raise ParseError("truncated extension header")
        etype = int.from_bytes(msg[pos : pos + 2], "big")
        start, pos = _vec(msg, pos + 2, 2, stop)
        exts[etype] = (start, pos)
    return exts


@dataclass
class PskIdentity:
    identity: bytes
    obfuscated_age: int


@dataclass
class ClientHello:
    """What a client offered.  Holds secrets: never log it, only fingerprints."""

    legacy_version: int
    session_id: bytes
    sni: str | None = None
    versions: list[int] = field(default_factory=list)
    ticket: bytes | None = None  # RFC 5077 ticket; b"" = "I support tickets, have none"
    psk: list[PskIdentity] = field(default_factory=list)  # the first MAX_PSK_IDENTITIES
    psk_more: bool = False  # the client offered more PSK identities than ``psk`` holds

    @property
    def offers_tls13(self) -> bool:
        return TLS13 in self.versions

    @property
    def max_version(self) -> int:
        return max(self.versions) if self.versions else self.legacy_version

    def version_names(self) -> list[str]:
        """The versions offered, by name, ascending: supported_versions, else legacy_version.

        Lets a failed handshake say "the device offered only TLSv1.2".  GREASE
        and unknown values are left out.
        """
        codes = self.versions or [self.legacy_version]
        return [VERSION_NAMES[c] for c in sorted(set(codes)) if c in VERSION_NAMES]


def parse_client_hello(msg: bytes) -> ClientHello:
    end = _header(msg, CLIENT_HELLO)
    if 4 + 2 + 32 > end:
        raise ParseError("truncated ClientHello")
    legacy_version = int.from_bytes(msg[4:6], "big")
    sid_start, pos = _vec(msg, 38, 1, end)
    ch = ClientHello(legacy_version=legacy_version, session_id=msg[sid_start:pos])
    _, pos = _vec(msg, pos, 2, end)  # cipher suites
    _, pos = _vec(msg, pos, 1, end)  # compression methods
    exts = _extensions(msg, pos, end)
    if EXT_SERVER_NAME in exts:
        start, stop = exts[EXT_SERVER_NAME]
        pos, stop = _vec(msg, start, 2, stop)
        for _ in range(4):  # one name per type (RFC 6066 3), and type 0 is the only one defined
            if pos + 3 > stop:
                break
            name_type = msg[pos]
            n_start, pos = _vec(msg, pos + 1, 2, stop)
            if name_type == 0:
                ch.sni = _printable(msg[n_start:pos])
                break
    if EXT_SUPPORTED_VERSIONS in exts:
        start, stop = exts[EXT_SUPPORTED_VERSIONS]
        pos, stop = _vec(msg, start, 1, stop)
        ch.versions = [int.from_bytes(msg[i : i + 2], "big") for i in range(pos, stop - 1, 2)]
    if EXT_SESSION_TICKET in exts:
        start, stop = exts[EXT_SESSION_TICKET]
        ch.ticket = msg[start:stop]
    if EXT_PRE_SHARED_KEY in exts:
        start, stop = exts[EXT_PRE_SHARED_KEY]
        pos, stop = _vec(msg, start, 2, stop)
        while pos < stop:
            if len(ch.psk) == MAX_PSK_IDENTITIES:
                ch.psk_more = True
                break
            i_start, pos = _vec(msg, pos, 2, stop)
            if pos + 4 > stop:
                raise ParseError("truncated PSK identity")
            ch.psk.append(PskIdentity(msg[i_start:pos], int.from_bytes(msg[pos : pos + 4], "big")))
            pos += 4
    return ch


def _printable(raw: bytes) -> str:
    """A server name fit for a console line: ASCII, control characters as ``?``, at most MAX_SNI characters.

    OpenSSL refuses names over 255 bytes or with a NUL, but lets escape
    sequences and newlines through, and the record of a *failed* handshake
    keeps whatever the ClientHello said.
    """
    text = raw[: MAX_SNI + 1].decode("ascii", errors="replace")
    text = "".join(ch if " " <= ch <= "~" else "?" for ch in text)
    return text if len(text) <= MAX_SNI else text[: MAX_SNI - 3] + "..."


@dataclass
class ServerHello:
    version: int
    session_id: bytes
    selected_psk: int | None
    hello_retry: bool


def parse_server_hello(msg: bytes) -> ServerHello:
    end = _header(msg, SERVER_HELLO)
    if 4 + 2 + 32 > end:
        raise ParseError("truncated ServerHello")
    version = int.from_bytes(msg[4:6], "big")
    random = msg[6:38]
    sid_start, pos = _vec(msg, 38, 1, end)
    session_id = msg[sid_start:pos]
    if pos + 3 > end:
        raise ParseError("truncated ServerHello")
    exts = _extensions(msg, pos + 3, end)  # after cipher suite and compression
    if EXT_SUPPORTED_VERSIONS in exts:
        start, stop = exts[EXT_SUPPORTED_VERSIONS]
        if stop - start == 2:
            version = int.from_bytes(msg[start:stop], "big")
    selected = None
    if EXT_PRE_SHARED_KEY in exts:
        start, stop = exts[EXT_PRE_SHARED_KEY]
        if stop - start == 2:
            selected = int.from_bytes(msg[start:stop], "big")
    return ServerHello(version, session_id, selected, random == HRR_RANDOM)


@dataclass
class NewSessionTicket:
    """A ticket the server issued; ``age_add``/``nonce`` exist in TLS 1.3 only."""

    lifetime: int
    ticket: bytes
    age_add: int | None = None


def parse_new_session_ticket(msg: bytes, tls13: bool) -> NewSessionTicket:
    end = _header(msg, NEW_SESSION_TICKET)
    if 8 > end:
        raise ParseError("truncated NewSessionTicket")
    lifetime = int.from_bytes(msg[4:8], "big")
    if not tls13:
        start, stop = _vec(msg, 8, 2, end)
        return NewSessionTicket(lifetime, msg[start:stop])
    if 12 > end:
        raise ParseError("truncated NewSessionTicket")
    age_add = int.from_bytes(msg[8:12], "big")
    _, pos = _vec(msg, 12, 1, end)  # nonce
    start, stop = _vec(msg, pos, 2, end)
    return NewSessionTicket(lifetime, msg[start:stop], age_add)
