"""The capture file: written as lines arrive, lossless, survives a killed test process."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from consolekit import wait_until
from harness import consolefile

ROOT = Path(__file__).resolve().parents[2]


def test_capture_is_flushed_while_running(pty_device, console_factory, tmp_path):
    capture = tmp_path / "live.txt"
    con = console_factory(pty_device.link, capture_path=capture)
    pty_device.write(b"simfw 1.0 variant=correct\r\nreset cause: power-on\nsim> ")
    con.expect("reset cause", timeout=5)
    con.send("session")
    recs = list(consolefile.read(capture))   # console still open
    kinds = [r.kind for r in recs]
    assert kinds[:3] == [consolefile.EVENT, consolefile.LINE_CRLF, consolefile.LINE_LF]
    assert recs[1].text == "simfw 1.0 variant=correct" and recs[1].raw.endswith(b"\r\n")
    assert recs[2].raw == b"reset cause: power-on\n"
    assert recs[-1].kind == consolefile.SENT and recs[-1].raw == b"session\r\n"
    assert abs(recs[1].mono - con.lines[0].mono) < 1e-6
    assert abs(recs[1].wall - con.lines[0].wall) < 0.002
    con.close()
    recs = list(consolefile.read(capture))
    assert any(r.kind == consolefile.PARTIAL and r.raw == b"sim> " for r in recs)
    assert "closed" in recs[-1].raw.decode()


def test_capture_round_trips_arbitrary_bytes(pty_device, console_factory, tmp_path):
    capture = tmp_path / "bytes.txt"
    con = console_factory(pty_device.link, capture_path=capture)
    rnd = random.Random(4)
    stream = b"".join(bytes(rnd.randrange(256) for _ in range(rnd.randrange(0, 120))) + b"\n"
                      for _ in range(200))
    stream += b"back\\slash \\x41 trailing space \r\n"
    pty_device.write(stream)
    wait_until(lambda: con.position == len(stream), what="all bytes")
    con.expect("trailing space", timeout=5)
    assert consolefile.received(capture) == stream
    text = capture.read_text(encoding="utf-8")   # always valid UTF-8 text
    assert "| back\\\\slash \\\\x41 trailing space\\x20\n" in text


@pytest.mark.parametrize("raw", [b"", b" ", b"\\", b"\\x41", b"\xc3\xa9", b"\xc3", b"\xed\xa0\x80",
                                 b"a\tb", b"\x00\x7f\x1b[0m", "ü€😀".encode()])
def test_escape_unescape(raw):
    text = consolefile.escape(raw)
    assert "\n" not in text and "\r" not in text
    text.encode("utf-8")  # no lone surrogates leak into the file
    assert consolefile.unescape(text) == raw


def test_malformed_capture_named_with_line(tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_text("1.0 2026-01-01T00:00:00.000+00:00 | ok\nnot a record\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"bad.txt:2"):
        list(consolefile.read(bad))


CHILD = r"""
import sys, time
from harness.console import Console
con = Console(sys.argv[1], capture_path=sys.argv[2])
con.expect("line 0099", timeout=20)
print("got", flush=True)
time.sleep(60)
"""


@pytest.mark.timeout(60)
def test_capture_survives_sigkill_of_the_test_process(pty_device, tmp_path):
    capture = tmp_path / "killed.txt"
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(pty_device.link), str(capture)],
                            cwd=ROOT, stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        wait_until(lambda: capture.exists() and capture.stat().st_size > 0, timeout=20, what="console opened")
        stream = b"".join(b"line %04d \xfe\r\n" % i for i in range(100))
        pty_device.write(stream)
        assert proc.stdout is not None and proc.stdout.readline().strip() == "got"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        assert proc.stdout is not None
        proc.stdout.close()
    assert consolefile.received(capture) == stream
