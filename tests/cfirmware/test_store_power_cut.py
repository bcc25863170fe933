"""The session store survives a power loss at any moment of a flash write.

The firmware loses power (SIGKILL, as the bench does) during its own
session write, then boots again.  The flash is judged with the record format
(store.h) read independently in Python, and the firmware must agree with it:
every boot reaches its ready line, every slot is reported as what it is, the
session offered is always the newest record whose CRC checks, and a record
with a bad CRC is never offered.  The correct build keeps the older record
through every cut; the single-slot build loses it.

Where a test needs the cut at a given point of the write, the firmware cuts
its own power there (TLSFW_CUT_AT_FLASH_OP, port_posix.c): a sleep-then-kill
would race the firmware's timing on a loaded machine.  One test still kills
from outside, at seeded moments, as the bench does; it asserts only what
holds wherever the cut lands.
"""

from __future__ import annotations

import random
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from cfwkit import Fw, firmware, newest_valid, read_slots

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


CONNECT = "tls connect 127.0.0.1 {port} 1.2 server.test"


def _power_cut_at(fw: Fw) -> None:
    """Wait for the firmware's own cut (TLSFW_CUT_AT_FLASH_OP): it must die of SIGKILL, not exit."""
    try:
        code = fw.proc.wait(timeout=40)
    except subprocess.TimeoutExpired:
        raise AssertionError("the firmware did not reach the flash operation to cut at:\n" + fw.text()) from None
    assert code == -signal.SIGKILL, f"exit {code}:\n{fw.text()}"


def _cut_at_every_step(binary: Path, tmp_path: Path, server) -> tuple[int, int, list[str]]:
    """First a stored session, then a cut at each flash operation of the next writes, twice over.
    Returns the torn records seen, the pages of a record, and a log line per cut.

    Each round the ticket keys rotate, so the stored session is refused, the full handshake brings a
    new one and the firmware writes it: op 1 erases the target slot, ops 2 .. pages+1 program its pages,
    op pages+2 erases the refused record.  A cut during an operation leaves the state before it, so
    these cuts reach every state a power loss can leave.
    """
    flash = tmp_path / "flash.bin"
    with Fw(binary, flash, server.ca_path) as fw:
        fw.boot()
        fw.send(CONNECT.format(port=server.port))
        pages = int(fw.expect(r"<inf> tls_store: writing slot A seq 1 \(\d+ bytes, (\d+) pages\)$").group(1))
        fw.expect(r"<inf> tls: connected ")
    assert pages >= 2, pages            # a header page and payload pages: a cut can tear the record
    torn, log = 0, []
    for i, op in enumerate(list(range(1, pages + 3)) * 2):
        server.rotate_keys()
        fw = Fw(binary, flash, server.ca_path, env={"TLSFW_CUT_AT_FLASH_OP": str(op)})
        try:
            _check_boot(fw, flash)
            before = newest_valid(read_slots(flash))
            image = flash.read_bytes()
            fw.send(CONNECT.format(port=server.port))
            m = fw.expect(r"<inf> tls_store: writing slot ([AB]) seq (\d+)", timeout=40)
            _power_cut_at(fw)
        finally:
            fw.cut()
        target, seq = "AB".index(m.group(1)), int(m.group(2))
        after = read_slots(flash)
        states = ", ".join(f"{s.name}={s.status}" for s in after)
        log.append(f"cut {i} at flash op {op} (write of slot {m.group(1)} seq {seq}): {states}")
        report = "\n".join(log)
        assert before is not None and before.name != m.group(1), report      # written beside the newest
        t = after[target]
        if op == 1:          # during the erase: the target slot as it was
            assert flash.read_bytes() == image, report
        elif op == 2:        # erased, nothing programmed yet
            assert t.status == "empty", report
        elif op <= pages + 1:  # the header page and some payload pages: torn
            assert t.status == "bad-crc" and t.seq == seq, report
            torn += 1
        else:                # written and verified; the refused record not yet erased
            assert t.status == "valid" and t.seq == seq, report
            assert after["AB".index(before.name)].status == "valid", report
        # A/B: the record that was newest before the write is still there,
        # or the new one (complete) replaced it as the newest.
        best = newest_valid(after)
        assert best is not None and best.seq >= before.seq, report
    return torn, pages, log


def test_correct_store_survives_a_cut_at_every_step_of_the_write(tmp_path: Path, server) -> None:
    binary = firmware("mbedtls", "correct")
    flash = tmp_path / "flash.bin"
    torn, pages, log = _cut_at_every_step(binary, tmp_path, server)
    report = "\n".join(log)
    # Cuts landed inside writes and tore records (in each round, a cut during page 2 .. the last page),
    # so the test proves something.
    assert torn == 2 * (pages - 1) and torn > 0, report
    # After every cut one valid record was left: the older one or the new one.
    assert newest_valid(read_slots(flash)) is not None, report
    # Boot once more: the newest valid record is picked and offered, the torn one never.
    mark = server.mark()
    with Fw(binary, flash, server.ca_path) as fw:
        _check_boot(fw, flash)
        best = newest_valid(read_slots(flash))
        fw.send(CONNECT.format(port=server.port))
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
    # Op 1 erases the only slot, op 2 programs the header page, the cut comes during op 3.
    fw = Fw(binary, flash, server.ca_path, env={"TLSFW_CUT_AT_FLASH_OP": "3"})
    try:
        fw.boot()
        fw.send(CONNECT.format(port=server.port))
        fw.expect(r"<inf> tls_store: writing slot A seq 2", timeout=40)
        _power_cut_at(fw)
    finally:
        fw.cut()
    assert read_slots(flash)[0].status == "bad-crc"
    with Fw(binary, flash, server.ca_path) as fw:
        text = fw.boot()
        assert "slot A: bad CRC" in text and "tls_store: no stored session" in text, text
        assert "slot B" not in text, text   # one slot only
