"""The emulated firmware's session store: two flash slots, A and B.

Why two slots, a sequence number and a CRC: a power cut can land in the
middle of a flash write.  Writing the new record into the slot that does
NOT hold the newest valid record, and trusting a slot only when its CRC
checks, means a torn write costs at most the newest session, never the
device.  The ``torn-write`` variant deliberately skips all of that.

Flash file layout (``flash.bin``)
---------------------------------
``2 * SLOT_SIZE`` bytes; slot A at offset 0, slot B at ``SLOT_SIZE``.
``SLOT_SIZE = PAGE_SIZE * PAGES_PER_SLOT = 64 * 32 = 2048`` bytes.
Erased flash reads ``0xFF``; a slot whose header bytes are all ``0xFF`` is
*empty*.  Writes happen one 64-byte page at a time, each page taking
``page_ms`` (default 15 ms), after an erase of the whole slot taking
``erase_ms`` (default 20 ms); a TLS 1.2 or 1.3 record from OpenSSL is
300-400 bytes, 5-7 pages, so a write is a window of roughly
20 + 6 x 15 = 110 ms in which a power cut tears it.

Record (all integers little-endian), format version 1::

    offset size  field
    0      4     magic  b"TLSS"
    4      1     format version (1)
    5      1     TLS version of the session: 3 = TLS 1.2, 4 = TLS 1.3
    6      2     reserved, 0
    8      4     sequence number (u32; newest valid slot wins)
    12     4     payload length in bytes (<= SLOT_SIZE - 20)
    16     4     CRC32 (zlib.crc32) of bytes 0..15 followed by the payload
    20     n     payload: TLV fields

Payload TLV: ``tag u8, length u16, value``.  Unknown tags are skipped, so a
newer firmware can add fields without breaking an older reader.

    tag  field              value
    1    server_name        UTF-8
    2    cipher_suite       u16
    3    secret             TLS 1.2 master secret / TLS 1.3 resumption master secret
    4    ticket             opaque ticket bytes from the server
    5    lifetime_s         u32, ticket lifetime hint from the server
    6    received_ms        i64, RTC time (ms since epoch) the ticket arrived
    7    age_add            u32, TLS 1.3 ticket_age_add
    8    nonce              TLS 1.3 ticket_nonce
    9    session_id         TLS 1.2 session id (may be empty)
    10   ext_master_secret  u8 0/1
    11   clock              u8: 0 = RTC (wall clock), 1 = uptime clock

Nothing here ever raises on bad flash contents: every read path returns a
:class:`SlotState` saying *why* a slot is unusable.
"""

from __future__ import annotations

import logging
import os
import struct
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

log = logging.getLogger(__name__)

PAGE_SIZE = 64
PAGES_PER_SLOT = 32
SLOT_SIZE = PAGE_SIZE * PAGES_PER_SLOT
FLASH_SIZE = 2 * SLOT_SIZE
MAGIC = b"TLSS"
FORMAT_VERSION = 1
HEADER = struct.Struct("<4sBBHIII")
HEADER_SIZE = HEADER.size  # 20
MAX_PAYLOAD = SLOT_SIZE - HEADER_SIZE
SLOT_NAMES = ("A", "B")

TAG_SERVER_NAME = 1
TAG_CIPHER = 2
TAG_SECRET = 3
TAG_TICKET = 4
TAG_LIFETIME = 5
TAG_RECEIVED = 6
TAG_AGE_ADD = 7
TAG_NONCE = 8
TAG_SESSION_ID = 9
TAG_EMS = 10
TAG_CLOCK = 11


class RecordError(ValueError):
    """A record that cannot be decoded; the message is shown on the console."""


@dataclass
class StoredSession:
    """Everything needed to resume a TLS session after RAM is gone."""

    tls_version: int  # 3 = TLS 1.2, 4 = TLS 1.3
    server_name: str
    cipher_suite: int
    secret: bytes
    ticket: bytes
    lifetime_s: int
    received_ms: int
    age_add: int = 0
    nonce: bytes = b""
    session_id: bytes = b""
    ext_master_secret: bool = True
    uptime_clock: bool = False

    @property
    def version_name(self) -> str:
        return "TLSv1.3" if self.tls_version == 4 else "TLSv1.2"


def _tlv(tag: int, value: bytes) -> bytes:
    return struct.pack("<BH", tag, len(value)) + value


def encode_payload(s: StoredSession) -> bytes:
    return b"".join([
        _tlv(TAG_SERVER_NAME, s.server_name.encode("utf-8")),
        _tlv(TAG_CIPHER, struct.pack("<H", s.cipher_suite)),
        _tlv(TAG_SECRET, bytes(s.secret)),
        _tlv(TAG_TICKET, bytes(s.ticket)),
        _tlv(TAG_LIFETIME, struct.pack("<I", s.lifetime_s & 0xFFFFFFFF)),
        _tlv(TAG_RECEIVED, struct.pack("<q", s.received_ms)),
        _tlv(TAG_AGE_ADD, struct.pack("<I", s.age_add & 0xFFFFFFFF)),
        _tlv(TAG_NONCE, bytes(s.nonce)),
        _tlv(TAG_SESSION_ID, bytes(s.session_id)),
        _tlv(TAG_EMS, bytes([1 if s.ext_master_secret else 0])),
        _tlv(TAG_CLOCK, bytes([1 if s.uptime_clock else 0])),
    ])


def _int(fields: dict[int, bytes], tag: int, fmt: str, default: int | None = None) -> int:
    raw = fields.get(tag)
    if raw is None:
        if default is None:
            raise RecordError(f"field {tag} missing")
        return default
    if len(raw) != struct.calcsize(fmt):
        raise RecordError(f"field {tag} has length {len(raw)}")
    return struct.unpack(fmt, raw)[0]


def decode_payload(tls_version: int, payload: bytes) -> StoredSession:
    """Parse TLV fields with bounds checks; raises :class:`RecordError` only."""
    fields: dict[int, bytes] = {}
    pos = 0
    while pos < len(payload):
        if pos + 3 > len(payload):
            raise RecordError("truncated field header")
        tag, length = struct.unpack_from("<BH", payload, pos)
        pos += 3
        if pos + length > len(payload):
            raise RecordError(f"field {tag} overruns the record")
        fields[tag] = payload[pos:pos + length]
        pos += length
    if tls_version not in (3, 4):
        raise RecordError(f"unknown TLS version code {tls_version}")
    for tag in (TAG_SERVER_NAME, TAG_SECRET, TAG_TICKET):
        if tag not in fields:
            raise RecordError(f"field {tag} missing")
    try:
        name = fields[TAG_SERVER_NAME].decode("utf-8")
    except UnicodeDecodeError:
        raise RecordError("server name is not UTF-8") from None
    if not name.isprintable():
        raise RecordError("server name is not printable")
    if not fields[TAG_SECRET]:
        raise RecordError("empty secret")  # a session without a ticket (TLS 1.3, stored early) is still a record
    return StoredSession(
        tls_version=tls_version,
        server_name=name,
        cipher_suite=_int(fields, TAG_CIPHER, "<H"),
        secret=fields[TAG_SECRET],
        ticket=fields[TAG_TICKET],
        lifetime_s=_int(fields, TAG_LIFETIME, "<I", 0),
        received_ms=_int(fields, TAG_RECEIVED, "<q", 0),
        age_add=_int(fields, TAG_AGE_ADD, "<I", 0),
        nonce=fields.get(TAG_NONCE, b""),
        session_id=fields.get(TAG_SESSION_ID, b""),
        ext_master_secret=_int(fields, TAG_EMS, "<B", 1) == 1,
        uptime_clock=_int(fields, TAG_CLOCK, "<B", 0) == 1,
    )


def encode_record(s: StoredSession, seq: int, with_crc: bool = True) -> bytes:
    payload = encode_payload(s)
    if len(payload) > MAX_PAYLOAD:
        raise RecordError(f"session of {len(payload)} bytes does not fit a slot")
    head = HEADER.pack(MAGIC, FORMAT_VERSION, s.tls_version, 0, seq & 0xFFFFFFFF, len(payload), 0)
    crc = zlib.crc32(head[:16] + payload) if with_crc else 0
    return head[:16] + struct.pack("<I", crc) + payload


@dataclass
class SlotState:
    """What boot found in one slot: ``status`` is empty, valid or corrupt."""

    name: str
    status: str
    seq: int = 0
    reason: str = ""
    session: StoredSession | None = None

    def describe(self) -> str:
        if self.status == "valid":
            return f"slot {self.name} seq {self.seq} valid"
        if self.status == "corrupt":
            return f"slot {self.name} corrupt ({self.reason})"
        return f"slot {self.name} empty"


def parse_slot(name: str, raw: bytes, check_crc: bool = True) -> SlotState:
    """Judge one slot's bytes; never raises, whatever the bytes are."""
    if len(raw) < HEADER_SIZE:
        return SlotState(name, "corrupt", reason="short slot")
    if raw[:HEADER_SIZE] == b"\xff" * HEADER_SIZE:
        return SlotState(name, "empty")
    magic, version, tls_version, _rsv, seq, length, crc = HEADER.unpack_from(raw, 0)
    if magic != MAGIC:
        return SlotState(name, "corrupt", reason="bad magic")
    if version != FORMAT_VERSION:
        return SlotState(name, "corrupt", seq=seq, reason=f"unsupported format version {version}")
    if length > MAX_PAYLOAD or HEADER_SIZE + length > len(raw):
        return SlotState(name, "corrupt", seq=seq, reason="length out of range")
    payload = raw[HEADER_SIZE:HEADER_SIZE + length]
    if check_crc and zlib.crc32(raw[:16] + payload) != crc:
        return SlotState(name, "corrupt", seq=seq, reason="crc mismatch")
    try:
        session = decode_payload(tls_version, payload)
    except RecordError as exc:
        return SlotState(name, "corrupt", seq=seq, reason=f"bad record: {exc}")
    return SlotState(name, "valid", seq=seq, session=session)


@dataclass
class WritePlan:
    """Where the next record goes; printed before the (slow) write starts."""

    slot: int
    seq: int
    pages: int


@dataclass
class Flash:
    """The flash chip: a file, page-granular slow writes, A/B slot logic.

    ``on_busy(True/False)`` is told when a write or erase starts and ends
    so the current model can show the flash-write current.
    """

    path: Path
    page_ms: float = 15.0
    erase_ms: float = 20.0
    check_crc: bool = True
    on_busy: Callable[[bool], None] = field(default=lambda busy: None)

    def ensure(self) -> None:
        """An absent or short flash file is a factory-fresh (erased) chip."""
        size = self.path.stat().st_size if self.path.exists() else 0
        if size < FLASH_SIZE:
            with open(self.path, "ab") as f:
                f.write(b"\xff" * (FLASH_SIZE - size))

    def read_slot(self, index: int) -> bytes:
        try:
            with open(self.path, "rb") as f:
                f.seek(index * SLOT_SIZE)
                return f.read(SLOT_SIZE)
        except OSError as exc:
            log.warning("flash read failed: %s", exc)
            return b""

    def scan(self) -> list[SlotState]:
        return [parse_slot(SLOT_NAMES[i], self.read_slot(i), self.check_crc) for i in range(2)]

    @staticmethod
    def newest(states: list[SlotState]) -> SlotState | None:
        valid = [s for s in states if s.status == "valid"]
        # u32 sequence numbers: a plain max is fine for a bench's lifetime.
        return max(valid, key=lambda s: s.seq) if valid else None

    def plan(self, record_len: int, in_place: bool = False) -> WritePlan:
        """Pick the slot that does not hold the newest valid record."""
        states = self.scan()
        best = self.newest(states)
        # Only a CRC-checked sequence number counts: a corrupt slot's header
        # could claim anything (0xFFFFFFFF would wrap the counter).
        top = best.seq if best is not None else 0
        if in_place:
            slot = 0
        elif best is None:
            slot = 0
        else:
            slot = 1 - SLOT_NAMES.index(best.name)
        pages = max(1, -(-record_len // PAGE_SIZE))
        return WritePlan(slot=slot, seq=top + 1, pages=pages)

    def write(self, plan: WritePlan, record: bytes, erase: bool = True) -> None:
        """Erase the slot, then program it page by page, each page taking time.

        A SIGKILL between two pages leaves exactly what real NOR flash would:
        an erased tail or the previous record's tail.
        """
        base = plan.slot * SLOT_SIZE
        self.on_busy(True)
        try:
            fd = os.open(self.path, os.O_WRONLY)
            try:
                if erase:
                    time.sleep(self.erase_ms / 1000.0)
                    os.pwrite(fd, b"\xff" * SLOT_SIZE, base)
                for page in range(plan.pages):
                    chunk = record[page * PAGE_SIZE:(page + 1) * PAGE_SIZE]
                    time.sleep(self.page_ms / 1000.0)
                    os.pwrite(fd, chunk, base + page * PAGE_SIZE)
            finally:
                os.close(fd)
        finally:
            self.on_busy(False)

    def erase_all(self) -> None:
        self.on_busy(True)
        try:
            time.sleep(2 * self.erase_ms / 1000.0)
            with open(self.path, "r+b") as f:
                f.write(b"\xff" * FLASH_SIZE)
        finally:
            self.on_busy(False)
