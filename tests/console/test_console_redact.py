"""Secrets a firmware prints (an Mbed TLS debug dump) never reach lines, matches or the capture file."""

from __future__ import annotations

from pathlib import Path

from harness.fingerprint import fp

SECRET = "5f0e3a9d7c41b2e8a6f0c3d9e1b7a4c2" * 3


def test_redacted_secret_is_replaced_by_its_fingerprint(pty_device, console_factory, tmp_path: Path) -> None:
    con = console_factory(pty_device.link, redact=[r"(?<=master secret: )[0-9a-f]{96}"])
    pty_device.write(f"ssl_tls.c:0712: master secret: {SECRET}\r\nhandshake done\r\n".encode())
    done = con.expect("^handshake done", timeout=5)
    dumped = con.since(0)[0].text
    assert SECRET not in dumped and f"<redacted {fp(SECRET.encode())}>" in dumped
    assert done.line.text == "handshake done"
    con.close()
    capture = (tmp_path / "capture0.txt").read_text()
    assert SECRET not in capture and fp(SECRET.encode()) in capture
