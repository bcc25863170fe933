"""The C firmware on its own (no bench): shell dialect, boot checks, session policy, variants.

Each test runs the binary on a pseudo-terminal against an in-process
reference server (MQTT unless said), as tests/cfirmware/cfwkit.py explains.
"""

from __future__ import annotations

import os
import re
import struct
import time
from pathlib import Path

import pytest

from cfwkit import SLOT, Fw, firmware, read_slots, rewrite_record

LOG_LINE = re.compile(r"^\[\d\d:\d\d:\d\d\.\d{3},\d{3}\] <(inf|wrn|err)> [a-z_]+: ")


def _stored(tmp_path: Path, server, variant: str = "correct", **kw) -> Path:
    """A flash image holding one session for server.test (a full handshake)."""
    flash = tmp_path / "flash.bin"
    with Fw(firmware("mbedtls", variant), flash, server.ca_path, **kw) as fw:
        fw.boot()
        m = fw.connect(server.port)
        assert m.group(1) == "TLSv1.2" and m.group(3) == "no", fw.text()
    return flash


# ------------------------------------------------------------------- shell

def test_shell_looks_like_zephyr(tmp_path: Path, server) -> None:
    with Fw(firmware("mbedtls", "correct"), tmp_path / "flash.bin", server.ca_path) as fw:
        fw.boot()
        os.write(fw.slave, b"hepl\x7f\x7flp\r")      # typed with two backspaces, CR alone ends the line
        fw.expect(r"^Available commands:$")
        os.write(fw.slave, b"frobnicate\n")
        fw.expect(r"^frobnicate: command not found$")
        fw.send("date set 1700000000.5")
        fw.expect(r"<inf> date: 2023-11-14 22:13:20 UTC$")
        raw = bytes(fw.raw)
    assert b"\x1b[1;32muart:~$ \x1b[m" in raw                  # bold green prompt, Zephyr's reset
    assert b"hepl\b \b\b \blp\r\n" in raw                       # echo, backspace erases on screen
    assert b"\x1b[1;31mfrobnicate: command not found\x1b[0m" in raw
    lines = [ln.text for ln in fw.lines if re.search(r"<(inf|wrn|err)>", ln.text)]
    assert lines and all(LOG_LINE.match(t) for t in lines), lines
    assert re.search(rb"\r\n\*\*\* Booting tlsfw v1\.0\.0 \(mbedtls 2\.28\.\d+, variant correct\) \*\*\*\r\n", raw)


def test_warnings_are_yellow_errors_red(tmp_path: Path, server) -> None:
    with Fw(firmware("mbedtls", "correct"), tmp_path / "flash.bin", server.ca_path) as fw:
        fw.boot()
        fw.send("tls connect 127.0.0.1 1 1.2 server.test")        # nothing listens on port 1
        fw.expect(r"<err> tls: connect failed: tcp: ")
        raw = bytes(fw.raw)
    assert re.search(rb"\x1b\[1;31m\[[0-9:.,]+\] <err> tls: connect failed: tcp: [^\r]*\x1b\[0m\r\n", raw)


def test_state_words_follow_the_activity(tmp_path: Path, server) -> None:
    with Fw(firmware("mbedtls", "correct"), tmp_path / "flash.bin", server.ca_path) as fw:
        fw.boot()
        fw.connect(server.port)
        # The words come on their own pipe, so they may be read just after the connected line.
        deadline = time.monotonic() + 10
        while len(fw.states) < 6 and time.monotonic() < deadline:
            time.sleep(0.01)
        states = list(fw.states)
    assert states[:2] == ["boot", "idle"], states
    assert states[2:] == ["radio", "idle", "flash", "idle"], states   # connect, then the flash write


def test_software_reset_keeps_the_pid_and_says_why(tmp_path: Path, server) -> None:
    with Fw(firmware("mbedtls", "correct"), tmp_path / "flash.bin", server.ca_path) as fw:
        fw.boot()
        pid = fw.proc.pid
        fw.send("kernel reboot cold")
        fw.expect(r"^\*\*\* Booting tlsfw")
        fw.expect(r"<inf> main: reset cause: software$")
        fw.expect(r"<inf> main: ready$")
        assert fw.proc.pid == pid and fw.proc.poll() is None


# ------------------------------------------------------------ clock / RTC

def test_rtc_survives_power_loss_beside_the_flash(tmp_path: Path, server) -> None:
    flash = tmp_path / "flash.bin"
    with Fw(firmware("mbedtls", "correct"), flash, server.ca_path) as fw:
        fw.boot()
        fw.send("date set 2000000000")
        fw.expect(r"<inf> date: 2033-05-18 03:33:\d\d UTC$")
    assert (tmp_path / "rtc").exists()
    with Fw(firmware("mbedtls", "correct"), flash, server.ca_path) as fw:
        fw.boot()
        fw.send("date")
        fw.expect(r"<inf> date: 2033-05-18 03:33:\d\d UTC$")


def test_uptime_clock_restarts_at_every_boot(tmp_path: Path, server) -> None:
    flash = tmp_path / "flash.bin"
    with Fw(firmware("mbedtls", "uptime-clock"), flash, server.ca_path) as fw:
        fw.boot()
        fw.send("date set 2000000000")
        fw.expect(r"<inf> date: 2033-")
    with Fw(firmware("mbedtls", "uptime-clock"), flash, server.ca_path) as fw:
        fw.boot()
        fw.send("date")
        fw.expect(r"<inf> date: 1970-01-01 00:00:0\d UTC$")


def test_without_rtc_the_clock_resumes_from_the_stored_session(tmp_path: Path, server) -> None:
    """no-rtc: the clock restarts where the stored session's time left off, never behind it."""
    flash = tmp_path / "flash.bin"
    with Fw(firmware("mbedtls", "no-rtc"), flash, server.ca_path) as fw:
        fw.boot()
        fw.send("date set 2000000000")
        fw.expect(r"<inf> date: 2033-05-18 03:33:20 UTC \(no RTC: until the next reset\)$")
        assert fw.connect(server.port).group(1) == "TLSv1.2"
    assert read_slots(flash)[0].status == "valid"
    with Fw(firmware("mbedtls", "no-rtc"), flash, server.ca_path) as fw:
        fw.boot()
        fw.send("date")
        fw.expect(r"<inf> date: 2033-05-18 03:33:2\d UTC \(no RTC: until the next reset\)$")


def test_expired_ticket_is_not_offered_with_an_rtc_but_is_without(tmp_path: Path, server) -> None:
    flash = _stored(tmp_path, server)
    with Fw(firmware("mbedtls", "correct"), flash, server.ca_path) as fw:
        fw.boot()
        fw.send(f"date set {int(time.time()) + 7300}")       # past the 7200 s lifetime
        fw.expect(r"<inf> date: ")
        fw.send(f"tls connect 127.0.0.1 {server.port} 1.2 server.test")
        fw.expect(r"<inf> tls: offering nothing \(ticket expired \(age 7[23]\d\d s, lifetime 7200 s\)\)$")
        fw.expect(r"<inf> tls: connected ")
    # A board without RTC cannot tell: it offers, and the server decides (here: still valid).
    with Fw(firmware("mbedtls", "no-rtc"), flash, server.ca_path) as fw:
        text = fw.boot()
        assert "<wrn> rtc: no RTC on this board" in text
        fw.send(f"tls connect 127.0.0.1 {server.port} 1.2 server.test")
        fw.expect(r"<inf> tls: offering stored session \(TLSv1\.2, slot B seq 2, \d+ bytes, age unknown\)$")
        assert fw.expect(r"<inf> tls: connected TLSv1\.2 \S+ resumed=(yes|no)$").group(1) == "yes"


def test_uptime_clock_thinks_a_fresh_ticket_expired(tmp_path: Path, server) -> None:
    """The field bug: unsigned uptime arithmetic after a reset wraps the age to ~49 days."""
    flash = _stored(tmp_path, server, variant="uptime-clock")
    with Fw(firmware("mbedtls", "uptime-clock"), flash, server.ca_path) as fw:
        fw.boot()
        fw.send(f"tls connect 127.0.0.1 {server.port} 1.2 server.test")
        fw.expect(r"<inf> tls: offering nothing \(ticket expired \(age 42949\d\d s, lifetime 7200 s\)\)$")


# ------------------------------------------------------------ session policy

def test_resume_across_power_loss_and_no_secret_on_the_console(tmp_path: Path, server) -> None:
    flash = _stored(tmp_path, server)
    blob = read_slots(flash)[0].payload
    mark = server.mark()
    with Fw(firmware("mbedtls", "correct"), flash, server.ca_path) as fw:
        text = fw.boot()
        assert "tls_store: using slot A seq 1 (TLSv1.2 session)" in text, text
        fw.send(f"tls connect 127.0.0.1 {server.port} 1.2 server.test")
        fw.expect(rf"<inf> tls: offering stored session \(TLSv1\.2, slot A seq 1, {len(blob)} bytes, age \d+ s\)$")
        assert fw.expect(r"<inf> tls: connected TLSv1\.2 \S+ resumed=(yes|no)$").group(1) == "yes"
        fw.send("tls session")
        fw.expect(rf"<inf> tls_store: session: TLSv1\.2 for server\.test, slot A seq 1, {len(blob)} bytes, "
                  r"crc 0x[0-9a-f]{8}, age \d+ s, lifetime 7200 s$")
        raw = bytes(fw.raw).lower()
    recs = server.since(mark)
    assert [r.mechanism for r in recs] == ["ticket"], recs
    # mbedtls_ssl_session_save layout (2.28): 5 header, 8 start, 2 suite, 1 compression, 1 id length,
    # 32 id, 48 master secret, 4 verify result, 3 + certificate, 3 + ticket, 4 lifetime, 3 flags.
    master = blob[49:97]
    cert_len = int.from_bytes(blob[101:104], "big")
    at = 104 + cert_len
    ticket = blob[at + 3:at + 3 + int.from_bytes(blob[at:at + 3], "big")]
    assert len(ticket) > 32 and len(blob) == at + 3 + len(ticket) + 4 + 3
    # No 8-byte run of the secrets appears on the console, raw or in hex.
    for secret in (master, ticket):
        for i in range(0, len(secret) - 8, 2):
            chunk = secret[i:i + 8]
            assert chunk.hex().encode() not in raw and chunk.lower() not in raw


def test_stored_session_only_offered_to_its_server(tmp_path: Path, server) -> None:
    flash = _stored(tmp_path, server)
    with Fw(firmware("mbedtls", "correct"), flash, server.ca_path) as fw:
        fw.boot()
        fw.send(f"tls connect 127.0.0.1 {server.port} 1.2 localhost")
        fw.expect(r"<inf> tls: offering nothing \(stored session is for another server\)$")
        fw.expect(r"<inf> tls: connected TLSv1\.2 \S+ resumed=no$")


def test_refused_session_falls_back_and_the_new_one_is_stored(tmp_path: Path, server) -> None:
    flash = _stored(tmp_path, server)
    server.rotate_keys()
    with Fw(firmware("mbedtls", "correct"), flash, server.ca_path) as fw:
        fw.boot()
        fw.send(f"tls connect 127.0.0.1 {server.port} 1.2 server.test")
        fw.expect(r"<wrn> tls: server refused the stored session: full handshake$")
        fw.expect(r"<inf> tls_store: writing slot B seq 2 \(\d+ bytes, \d+ pages\)$")
        fw.expect(r"<inf> tls_store: session stored in slot B seq 2$")
        fw.expect(r"<inf> tls: connected TLSv1\.2 \S+ resumed=no$")


@pytest.mark.parametrize("stack", ["mbedtls", "wolfssl"])
def test_refused_session_is_erased_so_a_power_cycle_offers_nothing(tmp_path: Path, server, stack: str) -> None:
    """A server that stopped issuing tickets refuses the stored one and gives none: the dead session
    leaves flash too, or every boot would offer it again (Mbed TLS: the server's full handshake is the
    fallback; wolfSSL 5.5.4 TLS 1.2 aborts and connects a second time)."""
    binary = firmware(stack, "correct")
    flash = tmp_path / "flash.bin"
    with Fw(binary, flash, server.ca_path) as fw:
        fw.boot()
        assert fw.connect(server.port).group(3) == "no", fw.text()
    assert read_slots(flash)[0].status == "valid"
    server.configure(tickets=False)
    with Fw(binary, flash, server.ca_path) as fw:
        fw.boot()
        fw.send(f"tls connect 127.0.0.1 {server.port} 1.2 server.test")
        fw.expect(r"<inf> tls: offering stored session \(TLSv1\.2, slot A seq 1, ")
        fw.expect(r"<wrn> tls: (server refused the stored session: full handshake"
                  r"|stored session refused \(.*\): full handshake without it)$")
        fw.expect(r"<wrn> tls_store: session not stored: the server issued no ticket$")
        fw.expect(r"<wrn> tls_store: refused session erased from slot A$")
        fw.expect(r"<inf> tls: connected TLSv1\.2 \S+ resumed=no$")
    assert [s.status for s in read_slots(flash)] == ["empty", "empty"]
    mark = server.mark()
    with Fw(binary, flash, server.ca_path) as fw:
        assert "tls_store: no stored session" in fw.boot()
        fw.send(f"tls connect 127.0.0.1 {server.port} 1.2 server.test")
        fw.expect(r"<inf> tls: offering nothing \(no stored session\)$")
        fw.expect(r"<inf> tls: connected TLSv1\.2 \S+ resumed=no$")
    recs = server.since(mark)
    assert len(recs) == 1 and recs[0].offered.ticket is None and not recs[0].error, recs


def test_no_fallback_gives_up(tmp_path: Path, server) -> None:
    flash = _stored(tmp_path, server, variant="no-fallback")
    server.rotate_keys()
    with Fw(firmware("mbedtls", "no-fallback"), flash, server.ca_path) as fw:
        fw.boot()
        fw.send(f"tls connect 127.0.0.1 {server.port} 1.2 server.test")
        fw.expect(r"<err> tls: connect failed: server refused the stored session$")


def test_ticket_only_fails_the_finished_then_falls_back(tmp_path: Path, server) -> None:
    """No master secret stored: the server resumes the ticket, the Finished cannot verify."""
    flash = _stored(tmp_path, server, variant="ticket-only")
    assert read_slots(flash)[0].payload[:4] == b"TKO1"
    mark = server.mark()
    with Fw(firmware("mbedtls", "ticket-only"), flash, server.ca_path) as fw:
        fw.boot()
        fw.send(f"tls connect 127.0.0.1 {server.port} 1.2 server.test")
        fw.expect(r"<wrn> tls: stored session refused \(handshake: .*\): full handshake without it$")
        fw.expect(r"<inf> tls: connected TLSv1\.2 \S+ resumed=no$")
    recs = server.since(mark)
    assert len(recs) == 2 and recs[0].error and not recs[1].error, recs


def test_ram_only_forgets_at_power_loss(tmp_path: Path, server) -> None:
    flash = tmp_path / "flash.bin"
    with Fw(firmware("mbedtls", "ram-only"), flash, server.ca_path) as fw:
        fw.boot()
        fw.send(f"tls connect 127.0.0.1 {server.port} 1.2 server.test")
        fw.expect(r"<inf> tls_store: session kept in RAM \(\d+ bytes\)$")
        assert fw.expect(r"resumed=(yes|no)$").group(1) == "no"
        assert fw.connect(server.port).group(3) == "yes"          # resumes from RAM while powered
    assert all(s.status == "empty" for s in read_slots(flash))
    with Fw(firmware("mbedtls", "ram-only"), flash, server.ca_path) as fw:
        assert "tls_store: no stored session" in fw.boot()


def test_http_application(tmp_path: Path) -> None:
    from harness.server import ReferenceServer

    with ReferenceServer(workdir=tmp_path / "srv", protocol="http") as srv:
        mark = srv.mark()
        with Fw(firmware("mbedtls", "correct"), tmp_path / "flash.bin", srv.ca_path, app="http") as fw:
            fw.boot()
            fw.send(f"tls connect 127.0.0.1 {srv.port} auto server.test")
            fw.expect(r"<inf> app: http: GET /status -> 200, \d+ bytes$")
            fw.expect(r"<inf> tls: connected TLSv1\.2 ")
        # The app fields are final once the server has seen the connection end.
        rec = srv.wait_for(lambda r: r.app_end, since=mark, timeout=10)
        assert rec.app == ["http GET /status"] and "close" in rec.app_end, rec


# ------------------------------------------------------------ boot checks

def test_blob_refused_by_the_library_is_discarded_once(tmp_path: Path, server) -> None:
    """As after a library update: mbedtls_ssl_session_load says VERSION_MISMATCH; erased, not retried."""
    flash = _stored(tmp_path, server)
    blob = bytearray(read_slots(flash)[0].payload)
    blob[0] ^= 0x01                                  # the library version in the blob's own header
    rewrite_record(flash, 0, bytes(blob))            # CRC correct: the record is intact, the stack refuses it
    assert read_slots(flash)[0].status == "valid"
    with Fw(firmware("mbedtls", "correct"), flash, server.ca_path) as fw:
        text = fw.boot()
    assert re.search(r"<wrn> tls_store: stored session refused by mbedtls 2\.28\.\d+ \(mbedtls_ssl_session_load: "
                     r".*\(-0x5f00\)\): discarded", text), text
    assert "tls_store: no stored session" in text
    assert read_slots(flash)[0].status == "empty"
    with Fw(firmware("mbedtls", "correct"), flash, server.ca_path) as fw:
        text = fw.boot()
    assert "refused" not in text and "slot A: empty" in text, text


def test_record_of_another_stack_is_discarded(tmp_path: Path, server) -> None:
    flash = _stored(tmp_path, server)
    data = bytearray(flash.read_bytes())
    data[5] = 2                                       # stack id: wolfSSL
    flash.write_bytes(bytes(data))
    rewrite_record(flash, 0)                          # fix the CRC
    with Fw(firmware("mbedtls", "correct"), flash, server.ca_path) as fw:
        text = fw.boot()
    assert "stored session refused by mbedtls" in text and "written by another TLS stack (id 2)" in text, text


def _copy_record(flash: Path, src: int, dst: int, seq: int) -> None:
    """Slot ``dst`` gets slot ``src``'s record with sequence number ``seq``, its CRC computed as store.c does
    (zlib.crc32 over header bytes 0..91 and the payload, in rewrite_record)."""
    data = bytearray(flash.read_bytes())
    data[dst * SLOT:(dst + 1) * SLOT] = data[src * SLOT:(src + 1) * SLOT]
    struct.pack_into("<I", data, dst * SLOT + 8, seq)
    flash.write_bytes(bytes(data))
    rewrite_record(flash, dst)


def test_sequence_number_wraps(tmp_path: Path, server) -> None:
    """The record after seq 0xFFFFFFFF has seq 0 and is the newer one (serial-number arithmetic)."""
    flash = _stored(tmp_path, server)                 # slot A seq 1: a real blob
    _copy_record(flash, 0, 0, 0xFFFFFFFF)
    _copy_record(flash, 0, 1, 0)
    assert [(s.status, s.seq) for s in read_slots(flash)] == [("valid", 0xFFFFFFFF), ("valid", 0)]
    with Fw(firmware("mbedtls", "correct"), flash, server.ca_path) as fw:
        text = fw.boot()
        assert "tls_store: using slot B seq 0 (TLSv1.2 session)" in text, text
        fw.send("tls session")
        fw.expect(r"<inf> tls_store: session: TLSv1\.2 for server\.test, slot B seq 0, ")
    # The write that follows 0xFFFFFFFF gets seq 0, in the other slot, and wins at the next boot.
    data = bytearray(flash.read_bytes())
    data[SLOT:2 * SLOT] = b"\xff" * SLOT
    flash.write_bytes(bytes(data))
    with Fw(firmware("mbedtls", "correct"), flash, server.ca_path) as fw:
        assert "tls_store: using slot A seq 4294967295 (TLSv1.2 session)" in fw.boot()
        fw.send(f"tls connect 127.0.0.1 {server.port} 1.2 localhost")   # another server: a new session
        fw.expect(r"<inf> tls: offering nothing \(stored session is for another server\)$")
        fw.expect(r"<inf> tls_store: session stored in slot B seq 0$")
        fw.expect(r"<inf> tls: connected TLSv1\.2 \S+ resumed=no$")
    with Fw(firmware("mbedtls", "correct"), flash, server.ca_path) as fw:
        text = fw.boot()
        assert "tls_store: using slot B seq 0 (TLSv1.2 session)" in text, text
        fw.send("tls session")
        fw.expect(r"<inf> tls_store: session: TLSv1\.2 for localhost, slot B seq 0, ")


def test_flipped_bit_is_caught_by_the_crc_but_not_by_no_crc(tmp_path: Path, server) -> None:
    flash = _stored(tmp_path, server)
    data = bytearray(flash.read_bytes())
    length = read_slots(flash)[0].length
    data[96 + length - 40] ^= 0x10                    # in the ticket, near the blob's end
    flash.write_bytes(bytes(data))
    with Fw(firmware("mbedtls", "correct"), flash, server.ca_path) as fw:
        text = fw.boot()
        assert "<wrn> tls_store: slot A: bad CRC, seq 1" in text and "no stored session" in text, text
        fw.send(f"tls connect 127.0.0.1 {server.port} 1.2 server.test")
        fw.expect(r"<inf> tls: offering nothing \(no stored session\)$")
    with Fw(firmware("mbedtls", "no-crc"), flash, server.ca_path) as fw:
        text = fw.boot()
        assert "slot A: valid, seq 1" in text and "using slot A seq 1" in text, text
        fw.send(f"tls connect 127.0.0.1 {server.port} 1.2 server.test")
        fw.expect(r"<inf> tls: offering stored session \(TLSv1\.2, slot A seq 1")


def test_garbage_flash_boots(tmp_path: Path, server) -> None:
    """A flash image of random bytes (or a short one) never stops the boot."""
    flash = tmp_path / "flash.bin"
    flash.write_bytes(os.urandom(5000))
    with Fw(firmware("mbedtls", "correct"), flash, server.ca_path) as fw:
        text = fw.boot()
        assert "slot A: unreadable (no record magic)" in text and "no stored session" in text, text
        assert fw.connect(server.port).group(1) == "TLSv1.2"
    assert flash.stat().st_size == 2 * 8192
    assert read_slots(flash)[1].status == "valid" or read_slots(flash)[0].status == "valid"
