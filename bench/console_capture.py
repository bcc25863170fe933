"""How much faster than a 921600-baud UART can the console capture, losing nothing?

A device at 921600 baud 8N1 delivers at most 92160 bytes/s.  This pushes
10 MiB through a pseudo-terminal (termios set to 921600, which a pty ignores,
so the link itself is not the limit) into a :class:`harness.console.Console`
with everything on: reader thread, per-chunk timestamps, line splitting,
decoding, and the capture file written and flushed as the data arrives.

The "device" is a separate process writing to the pty master, as a real
device is not in our process (it does not compete for our GIL).  It stamps
CLOCK_MONOTONIC (system wide, the harness clock) just before its first
write; the run ends when ``expect`` sees the last line, which is after the
reader has written and flushed it to the capture file.

Data: numbered log-like lines of 40..140 bytes (``\\r\\n`` ended); every 50th
carries bytes that are not UTF-8 (the escape path of the capture writer).
Lost bytes are counted from the capture file (the evidence that must not lose
anything), line by line against what the writer sent.

Prints ``lost_bytes=<n> speed_x_921600=<x>`` as the last line
(speed_x_921600 = bytes/s achieved / 92160).  Goal: 0 lost, at least 50.
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import subprocess
import sys
import tempfile
import termios
import tty
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from harness import clock, consolefile  # noqa: E402
from harness.console import Console  # noqa: E402

TOTAL = 10 * 1024 * 1024
BAUD = 921600
UART_BYTES_PER_S = BAUD / 10  # 8N1: 10 bits per byte
WRITE_CHUNK = 4096


def make_lines(total: int = TOTAL, seed: int = 921600) -> list[bytes]:
    """Deterministic device output of exactly ``total`` bytes (same in writer and checker)."""
    rnd = random.Random(seed)
    words = [b"flash:", b"tls:", b"app:", b"writing", b"slot", b"seq", b"ticket", b"offering", b"psk",
             b"age", b"done", b"radio", b"rssi=-67", b"heap=41232", b"TLSv1.3", b"resumed"]
    lines: list[bytes] = []
    size = 0
    n = 0
    while size < total:
        body = b" ".join(rnd.choice(words) for _ in range(rnd.randrange(3, 18)))
        if n % 50 == 49:
            body += b" \xff\xfe\x80 \x1b[0m"
        line = b"%08d %s\r\n" % (n, body)
        if size + len(line) > total:
            line = (b"%08d " % n + b"z" * 200)[: total - size - 2] + b"\r\n"
        lines.append(line)
        size += len(line)
        n += 1
    return lines


def writer(fd: int) -> None:
    """Child process: the device.  Writes, reports its start stamp, keeps the pty open until told."""
    data = b"".join(make_lines())
    view = memoryview(data)
    t0 = clock.now()
    while view:
        for_now = view[:WRITE_CHUNK]
        n = os.write(fd, for_now)
        view = view[n:]
    print(f"{t0!r}", flush=True)
    sys.stdin.readline()  # closing the master hangs up the slave: wait until the reader is done
    os.close(fd)


def lost_bytes(expected: list[bytes], capture: Path) -> int:
    got = consolefile.received(capture)
    if got == b"".join(expected):
        return 0
    want = {ln[:8]: ln for ln in expected}
    ok = 0
    for ln in got.split(b"\n"):
        if want.get(ln[:8]) == ln + b"\n":
            ok += len(ln) + 1
    return sum(map(len, expected)) - ok


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--writer", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--workdir", type=Path, help="keep the capture file here (default: a temp dir)")
    args = ap.parse_args()
    if args.writer is not None:
        writer(args.writer)
        return
    logging.basicConfig(level=logging.WARNING)
    expected = make_lines()
    total = sum(map(len, expected))
    master, slave = os.openpty()
    tty.setraw(slave)
    attrs = termios.tcgetattr(slave)
    attrs[4] = attrs[5] = termios.B921600
    termios.tcsetattr(slave, termios.TCSANOW, attrs)
    path = os.ttyname(slave)
    with tempfile.TemporaryDirectory() as tmp:
        workdir = args.workdir or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        capture = workdir / "capture.txt"
        capture.unlink(missing_ok=True)
        with Console(path, baudrate=BAUD, capture_path=capture, name="bench") as con:
            proc = subprocess.Popen([sys.executable, __file__, "--writer", str(master)], pass_fds=[master],
                                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT)
            try:
                last = expected[-1][:8].decode()
                con.expect(f"^{last} ", timeout=300)
                t1 = clock.now()
                assert proc.stdout is not None and proc.stdin is not None
                t0 = float(proc.stdout.readline())
                lines_seen = len(con.lines)
                position = con.position
                proc.stdin.write("done\n")
                proc.stdin.flush()
                proc.wait(timeout=30)
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
                for f in (proc.stdin, proc.stdout):
                    if f is not None:
                        f.close()
        os.close(master)
        os.close(slave)
        lost = lost_bytes(expected, capture)
        cap_size = capture.stat().st_size
    elapsed = t1 - t0
    rate = total / elapsed
    print(f"sent {total} bytes in {len(expected)} lines through {path} (termios {BAUD} baud)")
    print(f"console: {position} bytes, {lines_seen} lines; capture file {cap_size} bytes")
    print(f"elapsed {elapsed:.3f} s from the writer's first byte to the last line captured: "
          f"{rate / 1e6:.2f} MB/s; a {BAUD}-baud UART needs {total / UART_BYTES_PER_S:.1f} s")
    print(f"lost_bytes={lost} speed_x_921600={rate / UART_BYTES_PER_S:.1f}")


if __name__ == "__main__":
    main()
