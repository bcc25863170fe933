"""Flash record format: A/B selection, CRC, and no crash on any bytes.

Runs the firmware's own flash module in-process for the fuzzing (fast), and
the whole bench for a boot from tampered flash (what a user would see).
"""

from __future__ import annotations

import random
import re
import struct
import zlib

import pytest

from simkit import Console, open_psu, power_on
from devices.sim.firmware import flash as fl


def session(name: str = "server.test", ticket: bytes = b"T" * 200) -> fl.StoredSession:
    return fl.StoredSession(tls_version=4, server_name=name, cipher_suite=0x1302, secret=b"S" * 48,
                            ticket=ticket, lifetime_s=7200, received_ms=1_700_000_000_000, age_add=12345,
                            nonce=b"\x00\x01")


def slot_image(record: bytes) -> bytes:
    return record + b"\xff" * (fl.SLOT_SIZE - len(record))


def test_roundtrip_and_selection(tmp_path):
    rec = fl.encode_record(session(), 7)
    st = fl.parse_slot("A", slot_image(rec))
    assert st.status == "valid" and st.seq == 7 and st.session == session()
    assert fl.parse_slot("B", b"\xff" * fl.SLOT_SIZE).status == "empty"
    flash = fl.Flash(tmp_path / "flash.bin", page_ms=0, erase_ms=0)
    flash.ensure()
    for expected_slot in (0, 1, 0, 1):
        plan = flash.plan(len(rec))
        assert plan.slot == expected_slot
        flash.write(plan, fl.encode_record(session(), plan.seq))
    states = flash.scan()
    assert [s.seq for s in states] == [3, 4] and fl.Flash.newest(states).name == "B"


def test_crc_and_header_checks():
    rec = bytearray(fl.encode_record(session(), 1))
    rec[40] ^= 0x01
    assert fl.parse_slot("A", slot_image(bytes(rec))).reason == "crc mismatch"
    bad_magic = b"XXXX" + bytes(rec[4:])
    assert fl.parse_slot("A", slot_image(bad_magic)).reason == "bad magic"
    v2 = bytearray(fl.encode_record(session(), 1))
    v2[4] = 2
    assert "unsupported format version 2" in fl.parse_slot("A", slot_image(bytes(v2))).reason
    long = bytearray(fl.encode_record(session(), 1))
    struct.pack_into("<I", long, 12, 60000)
    assert fl.parse_slot("A", slot_image(bytes(long))).reason == "length out of range"


def _recrc(raw: bytearray) -> bytes:
    """Tamper like an attacker who knows the format: fix the CRC afterwards."""
    length = struct.unpack_from("<I", raw, 12)[0]
    length = min(length, len(raw) - 20)
    struct.pack_into("<I", raw, 16, zlib.crc32(bytes(raw[:16]) + bytes(raw[20:20 + length])))
    return bytes(raw)


def test_fuzz_parse_never_raises():
    rnd = random.Random(1234)
    base = fl.encode_record(session(), 3)
    outcomes = {"valid": 0, "corrupt": 0, "empty": 0}
    for i in range(4000):
        raw = bytearray(slot_image(base))
        kind = i % 5
        if kind == 0:      # random bit flips
            for _ in range(rnd.randint(1, 8)):
                raw[rnd.randrange(len(raw))] ^= 1 << rnd.randrange(8)
        elif kind == 1:    # torn: a prefix of pages written, rest erased or old
            cut = rnd.randrange(len(base))
            raw[cut:] = (b"\xff" if rnd.random() < 0.5 else b"\x00") * (len(raw) - cut)
        elif kind == 2:    # tampered payload with a valid CRC
            for _ in range(rnd.randint(1, 6)):
                raw[rnd.randrange(20, len(base))] = rnd.randrange(256)
            raw = bytearray(_recrc(raw))
        elif kind == 3:    # pure noise, sometimes with the right magic/version
            raw = bytearray(rnd.randbytes(fl.SLOT_SIZE))
            if rnd.random() < 0.5:
                raw[0:5] = b"TLSS\x01"
                raw = bytearray(_recrc(raw))
        else:              # short reads
            raw = raw[:rnd.randrange(0, 40)]
        st = fl.parse_slot("A", bytes(raw))
        outcomes[st.status] += 1
        if st.status == "valid":
            assert isinstance(st.session, fl.StoredSession) and st.session.server_name.isprintable()
        else:
            assert st.session is None
        st.describe()
        fl.parse_slot("A", bytes(raw), check_crc=False)  # the torn-write variant's reader too
    assert outcomes["corrupt"] > 2000


@pytest.mark.parametrize("damage", ["tampered", "noise"])
def test_boot_from_damaged_flash(make_bench, damage):
    bench = make_bench()
    good = fl.encode_record(session(), 5)
    if damage == "tampered":
        raw = bytearray(slot_image(fl.encode_record(session(ticket=b"X" * 100), 6)))
        raw[20] = 0x7F  # first TLV tag: unknown; length now overruns
        raw[21:23] = b"\xff\xff"
        other = _recrc(raw)
        expect = r"slot A seq 5 valid, slot B corrupt \(bad record: [^)]*\); using slot A"
    else:
        other = random.Random(5).randbytes(fl.SLOT_SIZE)
        expect = r"slot A seq 5 valid, slot B corrupt \(bad magic\); using slot A"
    bench.flash_path.write_bytes(slot_image(good) + other)
    rm, psu = open_psu(bench)
    con = Console(bench.uart_path)
    try:
        text = power_on(psu, con)
        assert re.search(expect, text), text
        assert "session: TLSv1.3 server.test" in con.command("session", r"sim> $")
    finally:
        con.close()
        psu.close()
        rm.close()


def test_erase(rig, server):
    bench, psu, con = rig
    power_on(psu, con)
    con.command(f"connect 127.0.0.1 {server.port} tls1.3 server.test", r"connect (ok|failed).*")
    assert "session erased" in con.command("erase", r"sim> $")
    assert "session: none" in con.command("session", r"sim> $")
    psu.write("OUTP OFF")
    import time
    time.sleep(0.2)
    assert "flash: no stored session" in power_on(psu, con)
    assert bench.flash_path.read_bytes() == b"\xff" * fl.FLASH_SIZE
