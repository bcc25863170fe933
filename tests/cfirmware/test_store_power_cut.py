"""The session store survives a power loss at any moment of a flash write.

The firmware is killed (SIGKILL, as the bench does at a power loss) at
random moments during its own session write, then booted again.  The flash
is judged with the record format (store.h) read independently in Python,
and the firmware must agree with it: every boot reaches its ready line,
every slot is reported as what it is, the session offered is always the
newest record whose CRC checks, and a record with a bad CRC is never
offered.  The correct build keeps the older record through every cut; the
single-slot build loses it (so the cuts really land inside writes).
"""

from __future__ import annotations

import random
import re
import time
from pathlib import Path

import pytest

from cfwkit import Fw, firmware, newest_valid, read_slots

CUTS = 12
STATUS = {"empty": "empty", "valid": "valid", "bad-crc": "bad CRC"}


def _check_boot(fw: Fw, flash: Path) -> None:
    """The boot log says exactly what the flash holds, and picks the newest valid record."""
    text = fw.boot()
    slots = read_slots(flash)
    for s in slots:
        shown = re.search(rf"tls_store: slot {s.name}: (empty|valid|bad CRC|unreadable)", text)
        assert shown, text
        if s.status == "bad-header":
            assert shown.group(1) == "unreadable", text
        else:
            assert shown.group(1) == STATUS[s.status], f"slot {s.name} is {s.status}:\n{text}"
    best = newest_valid(slots)
    if best is None:
        assert "tls_store: no stored session" in text, text
    else:
        assert f"tls_store: using slot {best.name} seq {best.seq} " in text, text


def _write_time(fw: Fw) -> float:
    fw.expect(r"<inf> tls_store: writing slot [AB] seq \d+")
    start = fw.last.mono
    fw.expect(r"<inf> tls_store: session stored in slot [AB] seq \d+$")
    return fw.last.mono - start


def _cut_during_writes(binary: Path, tmp_path: Path, server, seed: int) -> tuple[int, list[str]]:
    """First a stored session, then CUTS connects each cut during the write of the new session."""
    flash = tmp_path / "flash.bin"
    rng = random.Random(seed)
    with Fw(binary, flash, server.ca_path) as fw:
        fw.boot()
        fw.send(f"tls connect 127.0.0.1 {server.port} 1.2 server.test")
        write_s = _write_time(fw)
        fw.expect(r"<inf> tls: connected ")
    assert 0.05 < write_s < 2.0, write_s
    torn, log = 0, []
    for i in range(CUTS):
        # New ticket keys: the stored ticket is refused, the full handshake
        # brings a new session, and the firmware writes it.
        server.rotate_keys()
        fw = Fw(binary, flash, server.ca_path)
        try:
            _check_boot(fw, flash)
            before = newest_valid(read_slots(flash))
            fw.send(f"tls connect 127.0.0.1 {server.port} 1.2 server.test")
            fw.expect(r"<inf> tls_store: writing slot ([AB]) seq (\d+)", timeout=40)
            delay = rng.uniform(0.0, 1.1 * write_s)
            time.sleep(delay)
        finally:
            fw.cut()
        after = read_slots(flash)
        states = ", ".join(f"{s.name}={s.status}" for s in after)
        log.append(f"cut {i} at {delay * 1000:.0f} ms of a {write_s * 1000:.0f} ms write: {states}")
        if any(s.status in ("bad-crc", "bad-header") for s in after):
            torn += 1
        # A/B: the record that was newest before the write is still there,
        # or the new one (complete) replaced it as the newest.
        best = newest_valid(after)
        assert before is not None and best is not None and best.seq >= before.seq, "\n".join(log)
    return torn, log


def test_correct_store_survives_cuts_at_random_moments(tmp_path: Path, server) -> None:
    binary = firmware("mbedtls", "correct")
    seed = random.SystemRandom().randrange(1 << 30)
    flash = tmp_path / "flash.bin"
    torn, log = _cut_during_writes(binary, tmp_path, server, seed)
    report = f"seed {seed}\n" + "\n".join(log)
    # The cuts landed inside writes (a torn slot was seen), so the test proves something.
    assert torn >= CUTS // 3, report
    # After every cut one valid record was left: the older one or the new one.
    assert newest_valid(read_slots(flash)) is not None, report
    # Boot once more: the newest valid record is picked and offered, the torn one never.
    mark = server.mark()
    with Fw(binary, flash, server.ca_path) as fw:
        _check_boot(fw, flash)
        best = newest_valid(read_slots(flash))
        fw.send(f"tls connect 127.0.0.1 {server.port} 1.2 server.test")
        fw.expect(rf"<inf> tls: offering stored session \(TLSv1\.2, slot {best.name} seq {best.seq},")
        m = fw.expect(r"<inf> tls: connected \S+ \S+ resumed=(yes|no)$|connect failed", timeout=40)
        assert m.group(1) is not None, fw.text()
    records = server.since(mark)
    assert len(records) == 1 and not records[0].error, records
    # What was offered is a ticket this server issued (refused only because the keys rotated).
    assert records[0].rejected in (None, "rotated"), records[0]


def test_every_cut_leaves_a_bootable_device_that_never_offers_a_bad_record(tmp_path: Path, server) -> None:
    """Each boot after a cut: the firmware's slot report and choice match the flash (checked in _check_boot)."""
    binary = firmware("mbedtls", "correct")
    flash = tmp_path / "flash.bin"
    rng = random.Random(7)
    with Fw(binary, flash, server.ca_path) as fw:
        fw.boot()
        assert fw.connect(server.port).group(1)
    for i in range(6):
        server.rotate_keys()
        fw = Fw(binary, flash, server.ca_path)
        try:
            _check_boot(fw, flash)
            fw.send(f"tls connect 127.0.0.1 {server.port} 1.2 server.test")
            fw.expect(r"<inf> tls_store: writing slot", timeout=40)
            time.sleep(rng.uniform(0, 0.09))
        finally:
            fw.cut()
        slots = read_slots(flash)
        assert sum(s.status == "valid" for s in slots) >= 1, slots


def test_single_slot_loses_the_session_on_a_cut(tmp_path: Path, server) -> None:
    """The single-slot variant erases its only copy first: a cut mid-write leaves nothing to resume."""
    binary = firmware("mbedtls", "single-slot")
    flash = tmp_path / "flash.bin"
    with Fw(binary, flash, server.ca_path) as fw:
        fw.boot()
        assert fw.connect(server.port).group(1)
    assert read_slots(flash)[0].status == "valid"
    server.rotate_keys()
    fw = Fw(binary, flash, server.ca_path)
    try:
        fw.boot()
        fw.send(f"tls connect 127.0.0.1 {server.port} 1.2 server.test")
        fw.expect(r"<inf> tls_store: writing slot A seq 2", timeout=40)
        time.sleep(0.04)   # erase (20 ms) done, a page or two programmed
    finally:
        fw.cut()
    assert read_slots(flash)[0].status == "bad-crc"
    with Fw(binary, flash, server.ca_path) as fw:
        text = fw.boot()
        assert "slot A: bad CRC" in text and "tls_store: no stored session" in text, text
        assert "slot B" not in text, text   # one slot only
