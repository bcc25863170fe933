"""Handshake throughput of the reference server against ``openssl s_server``.

Both servers run in this same run with the same certificate and key, and are
driven one after the other, alternating, by ``openssl s_time``:
``-new`` (full handshakes, default version negotiation: TLS 1.3) and
``-reuse -tls1_2`` (resumed handshakes: s_time closes each connection right
after the handshake, so it never reads TLS 1.3 tickets and can only resume in
TLS 1.2, where the ticket arrives inside the handshake).  The reference server
runs standalone (``python -m harness.server --quiet``) with its JSON-lines
handshake log on, i.e. recording on.

Figures: connections per real second (wall clock around each s_time run) and
server CPU per connection (from /proc, less sensitive to other load on the
machine).  The last line is ``ratio_full=<x> ratio_resumed=<y>``, this
server / s_server in connections per real second.

Usage: python bench/server_handshakes.py [--time 4] [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass
class Target:
    name: str
    proc: subprocess.Popen
    port: int
    conns: dict[str, int] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    cpu: dict[str, float] = field(default_factory=dict)
    reused: dict[str, int] = field(default_factory=dict)

    def cpu_seconds(self) -> float:
        fields_ = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields_[11]) + int(fields_[12])) / CLK_TCK  # utime + stime


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_listening(port: int, proc: subprocess.Popen, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode} before listening")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listening on port {port} after {timeout} s")


def s_time(target: Target, mode: str, args: list[str], seconds: int) -> None:
    cmd = ["openssl", "s_time", "-connect", f"127.0.0.1:{target.port}", *args, "-time", str(seconds)]
    cpu0, t0 = target.cpu_seconds(), time.monotonic()
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60).stdout
    elapsed, cpu = time.monotonic() - t0, target.cpu_seconds() - cpu0
    m = re.search(r"^(\d+) connections in [\d.]+s;", out, re.M)
    if not m:
        raise SystemExit(f"s_time against {target.name} printed no count:\n{out[-500:]}")
    n = int(m.group(1))
    target.conns[mode] = target.conns.get(mode, 0) + n
    target.seconds[mode] = target.seconds.get(mode, 0.0) + elapsed
    target.cpu[mode] = target.cpu.get(mode, 0.0) + cpu
    progress = "".join(line for line in out.splitlines() if line and set(line) <= {"*", "r"})
    target.reused[mode] = target.reused.get(mode, 0) + progress.count("r")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--time", type=int, default=4, help="seconds per s_time run (default 4)")
    ap.add_argument("--rounds", type=int, default=2, help="alternating rounds per mode (default 2)")
    opts = ap.parse_args()
    if not shutil.which("openssl"):
        raise SystemExit("openssl CLI not found")
    work = Path(tempfile.mkdtemp(prefix="bench-server-"))
    procs: list[subprocess.Popen] = []
    try:
        ours_port = free_port()
        log_path = work / "handshakes.jsonl"
        ours = subprocess.Popen(
            [sys.executable, "-m", "harness.server", "--port", str(ours_port), "--quiet",
             "--workdir", str(work), "--log", str(log_path), "--handshake-timeout", "5"],
            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        procs.append(ours)
        wait_listening(ours_port, ours)
        ss_port = free_port()
        ref = subprocess.Popen(
            ["openssl", "s_server", "-accept", str(ss_port), "-cert", str(work / "server-cert.pem"),
             "-key", str(work / "server-key.pem"), "-quiet"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        procs.append(ref)
        wait_listening(ss_port, ref)
        targets = [Target("reference server", ours, ours_port), Target("openssl s_server", ref, ss_port)]
        before = sum(1 for _ in log_path.open()) if log_path.exists() else 0
        modes = {"full": ["-new"], "resumed": ["-reuse", "-tls1_2"]}
        for mode, args in modes.items():
            for r in range(opts.rounds):
                order = targets if r % 2 == 0 else targets[::-1]
                for t in order:
                    s_time(t, mode, args, opts.time)
        time.sleep(0.5)  # let the last connections be recorded
        records = [json.loads(line) for line in log_path.read_text().splitlines()[before:]]
        ours_t, ref_t = targets
        ratios = {}
        print(f"{'mode':8} {'server':18} {'conns':>7} {'conn/s':>9} {'cpu us/conn':>12} {'reused':>7}")
        for mode in modes:
            for t in targets:
                rate = t.conns[mode] / t.seconds[mode]
                print(
                    f"{mode:8} {t.name:18} {t.conns[mode]:7d} {rate:9.1f} "
                    f"{t.cpu[mode] / t.conns[mode] * 1e6:12.0f} {t.reused[mode] / t.conns[mode]:7.0%}"
                )
            ratios[mode] = (ours_t.conns[mode] / ours_t.seconds[mode]) / (ref_t.conns[mode] / ref_t.seconds[mode])
        total = sum(ours_t.conns.values())
        resumed = sum(1 for r in records if r.get("resumed"))
        errors = sum(1 for r in records if r.get("error") and not r.get("version"))
        print(
            f"recording: {len(records)} records for {total} connections "
            f"({resumed} resumed, {errors} failed handshakes), log {log_path.stat().st_size} bytes"
        )
        print(f"load average during run: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
        print(f"ratio_full={ratios['full']:.2f} ratio_resumed={ratios['resumed']:.2f}")
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
