"""The reference server under abuse: every connection recorded, the loop alive, memory bounded, devices served.

The server is the judge of every scenario, so it must survive what a broken
or hostile client does and still tell the truth about the device under test.
This benchmark starts a ``ReferenceServer`` on 127.0.0.1 and, on loopback
only, sends it at least ``--inputs`` (default 10,000) malformed inputs of
every kind in ``tests/server/tlskit.py`` (``ABUSE_KINDS``): random bytes,
truncated ClientHellos, ClientHellos with bad lengths and bad extensions,
huge session tickets and PSK identities, alerts mid-handshake, garbage after
a completed handshake (hand-built with ``struct``, never by a TLS library),
plus ``--slow`` clients sending a ClientHello a byte a second and ``--idle``
connections that say nothing, all at once, while ``--clients`` (50)
well-formed stdlib ``ssl`` clients do full and resumed handshakes.  Every
input is drawn from ``random.Random`` seeded by ``--seed`` and its own index,
so a run is reproducible whichever worker sends it.

What is measured, and why:

* ``records`` / ``connections`` and ``lost``: every TCP connection any
  client made (matched to the server's records by the client's port, in
  time order) must have its record, because a verdict that cannot find a
  connection would blame the device.  The per-kind table also counts the
  records whose ``error`` (``app_end`` for garbage after the handshake) says
  what that kind did wrong (the expectation in ``tlskit.make_abuse``).
* ``crashed``: the loop thread died, the server process died, or an
  exception escaped a connection's step (an ERROR line from
  ``harness.server``).  Must be 0.
* Memory: the server process's RSS after the warm-up, its peak during the
  abuse (``VmHWM``, reset after the warm-up) and at the end, once every
  connection is closed.  The server keeps every record in memory on
  purpose (the query API), so the end figure is also given per record;
  open connections and timer entries at the end must be ~0.
* ``p99_ratio``: a probe client in this process does handshakes one at a
  time (alternately full and resumed, TCP connect included, timed to the
  end of ``do_handshake``), in quiet windows (no abuse at all) and abuse
  windows, interleaved ``--rounds`` times in the same run because the
  machine is shared and noisy.  The figure is the worse of p99(abuse) /
  p99(quiet) for full and for resumed handshakes.

Processes: the server runs in a process of its own, so that no client's
Python competes with its loop for a GIL (the server is one thread by
design); the malformed inputs come from ``--workers`` processes of
``--threads`` threads each, sending back to back; slow and idle clients,
and the well-formed clients (each pausing ``--think`` seconds between
connections, as a device fleet does), from one process each; the probe from
this one.  The server runs with ``handshake_timeout`` and ``app_timeout`` of
``--timeout`` seconds (5) and the default ``max_connections``.

Last line: ``records=<n>/<connections> lost=<n> crashed=<n> p99_ratio=<x>``.

Usage: python bench/server_abuse.py [--inputs 10000] [--quick] [--seed 13]
"""

from __future__ import annotations

import argparse
import collections
import logging
import multiprocessing as mp
import os
import random
import re
import shutil
import socket
import ssl
import statistics
import sys
import tempfile
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "server"))  # tlskit: the abusive clients the tests use too

from harness.server import ReferenceServer, ServerConfig  # noqa: E402
from tlskit import QUICK_KINDS, make_abuse, run_abuse  # noqa: E402

#: a connection as its client saw it: (start on the monotonic clock, local port, kind, variant, expectation, mode)
Conn = tuple[float, int, str, str, str, str]


# --- the server's process ---------------------------------------------------------------------


class _Errors(logging.Handler):
    """Counts ERROR lines from the server: an exception that escaped a connection's step, or the loop."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def _memory() -> dict[str, int]:
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0]) * 1024
    return out


def serve(pipe: Any, workdir: str, knobs: dict[str, Any]) -> None:
    """Run the server; answer ``stats``, ``records``, ``reset-peak`` and ``stop`` on ``pipe``."""
    errors = _Errors()
    logging.getLogger("harness.server").addHandler(errors)
    srv = ReferenceServer(ServerConfig(**knobs), workdir=workdir).start()
    pipe.send((srv.host, srv.port, str(srv.ca_path)))
    while True:
        cmd = pipe.recv()
        if cmd == "reset-peak":
            Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
            pipe.send(None)
        elif cmd == "stats":
            pipe.send({
                **_memory(), "records": len(srv.records()), "serving": srv.serving, "errors": list(errors.lines),
                "open": srv._call(lambda: len(srv._conns)), "timers": srv._call(lambda: len(srv._timers)),
            })
        elif cmd == "records":
            pipe.send([(r.id, r.peer, r.version, r.error, r.app_end, r.duration_ms) for r in srv.records()])
        elif cmd == "stop":
            srv.stop()
            pipe.send(list(errors.lines))
            return


# --- abusers ------------------------------------------------------------------------------------


def abuse_worker(address: tuple[str, int], ca: str, seed: int, threads: int, counter: Any, quota: Any,
                 go: Any, stop: Any, out: Any) -> None:
    """Send malformed inputs back to back while ``go`` is set, taking indices from ``counter`` up to ``quota``."""
    ctx = ssl.create_default_context(cafile=ca)
    done: list[Conn] = []
    lock = threading.Lock()

    def run() -> None:
        while not stop.is_set():
            if not go.wait(0.2):
                continue
            with counter.get_lock():
                index = counter.value
                if index >= quota.value:
                    index = -1
                else:
                    counter.value += 1
            if index < 0:  # this window's share is sent: wait for the next one
                time.sleep(0.05)
                continue
            rng = random.Random(seed * 1_000_003 + index)
            start = time.monotonic()
            try:
                abuse = make_abuse(rng.choice(QUICK_KINDS), rng)
                port = run_abuse(abuse, address, ctx=ctx, timeout=30)
            except OSError:
                continue  # no connection, no record owed (never seen on loopback)
            except Exception:  # a bug of this benchmark's: say so, and go on with the next input
                traceback.print_exc()
                continue
            with lock:
                done.append((start, port, abuse.kind, abuse.variant, abuse.expect, abuse.mode))

    pool = [threading.Thread(target=run) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    out.put(done)


def holder(address: tuple[str, int], seed: int, idle: int, slow: int, go: Any, stop: Any, out: Any) -> None:
    """Keep ``idle`` silent connections and ``slow`` byte-a-second ClientHellos open while ``go`` is set.

    When the server ends one (its handshake timeout), a new one takes its
    place.  At the end no new ones are opened and the open ones are left to
    the server's timeout, so each record says what the server did to it.
    """
    done: list[Conn] = []
    lock = threading.Lock()

    def keep(kind: str, rng: random.Random) -> None:
        while not stop.is_set():
            if not go.wait(0.2):
                continue
            abuse = make_abuse(kind, rng)
            start = time.monotonic()
            try:
                port = run_abuse(abuse, address, interval=1.0, timeout=120)
            except OSError:
                continue
            with lock:
                done.append((start, port, abuse.kind, abuse.variant, abuse.expect, abuse.mode))

    kinds = ["idle"] * idle + ["slow"] * slow
    pool = [threading.Thread(target=keep, args=(kind, random.Random(seed * 7919 + i))) for i, kind in enumerate(kinds)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    out.put(done)


def fleet(address: tuple[str, int], ca: str, clients: int, think: float, go: Any, stop: Any, out: Any) -> None:
    """``clients`` well-formed devices, each a full handshake then a resumed one, again and again."""
    done: list[Conn] = []
    failures: list[str] = []
    lock = threading.Lock()

    def device(i: int) -> None:
        ctx = ssl.create_default_context(cafile=ca)
        if i % 2:
            ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        session = None
        while not stop.is_set():
            if not go.wait(0.2):
                continue
            start = time.monotonic()
            try:
                with socket.create_connection(address, timeout=30) as raw:
                    port = raw.getsockname()[1]
                    with ctx.wrap_socket(raw, server_hostname="server.test", session=session) as tls:
                        tls.sendall(b"device %d\n" % i)
                        echo = _read_all(tls)
                        reused = tls.session_reused
                        session = None if session is not None else tls.session  # full, resumed, full, ...
                ok = echo == b"device %d\n" % i and (reused or session is not None)
            except (OSError, ssl.SSLError) as e:
                ok, port = False, -1
                with lock:
                    failures.append(f"device {i}: {type(e).__name__}: {e}")
            with lock:
                if port >= 0:
                    done.append((start, port, "well-formed", "resumed" if session is None else "full",
                                 r"ok" if ok else "failed", "device"))
            time.sleep(think)

    pool = [threading.Thread(target=device, args=(i,)) for i in range(clients)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    out.put((done, failures))


def _read_all(tls: ssl.SSLSocket) -> bytes:
    out = b""
    while True:
        try:
            chunk = tls.recv(4096)
        except (ssl.SSLZeroReturnError, ConnectionError):
            break
        if not chunk:
            break
        out += chunk
    return out


# --- the probe -----------------------------------------------------------------------------------


@dataclass
class Probe:
    """A well-formed client timing its handshakes: alternately full and resumed."""

    address: tuple[str, int]
    ctx: ssl.SSLContext
    session: ssl.SSLSession | None = None
    times: dict[tuple[str, str], list[float]] = field(default_factory=lambda: collections.defaultdict(list))
    conns: list[Conn] = field(default_factory=list)
    failures: int = 0

    def once(self, condition: str) -> None:
        resume = self.session is not None
        start = time.monotonic()
        t0 = time.perf_counter()
        try:
            with socket.create_connection(self.address, timeout=30) as raw:
                port = raw.getsockname()[1]
                with self.ctx.wrap_socket(raw, server_hostname="server.test", session=self.session) as tls:
                    took = time.perf_counter() - t0
                    tls.sendall(b"probe\n")
                    _read_all(tls)  # the TLS 1.3 tickets come with the echo
                    reused = tls.session_reused
                    self.session = None if resume else tls.session
        except (OSError, ssl.SSLError):
            self.failures += 1
            return
        self.conns.append((start, port, "probe", condition, "ok", "device"))
        if resume and not reused:
            self.failures += 1
            return
        self.times[(condition, "resumed" if resume else "full")].append(took)


def p99(values: list[float]) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[98] if len(values) > 1 else values[0]


# --- the run -------------------------------------------------------------------------------------


def match(conns: list[Conn], records: list[tuple]) -> tuple[dict[str, collections.Counter], list, int]:
    """Pair connections with records by local port, in time order.

    Returns per-kind counts (connections, records, explained), the pairs
    (connection, record or None) and the number of records no client made.
    """
    by_port: dict[int, list[tuple]] = collections.defaultdict(list)
    for rec in sorted(records):
        by_port[int(rec[1].rsplit(":", 1)[1])].append(rec)
    table: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    shown: collections.Counter = collections.Counter()
    pairs = []
    for conn in sorted(conns):
        _, port, kind, _, expect, mode = conn
        table[kind]["connections"] += 1
        if not by_port.get(port):
            pairs.append((conn, None))
            continue
        rec = by_port[port].pop(0)
        pairs.append((conn, rec))
        _, _, version, error, app_end, _ = rec
        table[kind]["records"] += 1
        if mode == "device":
            said_ok = expect == "ok" and version is not None and error is None
        elif mode == "handshake_then":
            said_ok = version is not None and error is None and bool(re.fullmatch(expect, app_end or ""))
        else:
            said_ok = version is None and bool(re.fullmatch(expect, error or ""))
        table[kind]["explained"] += said_ok
        if not said_ok and shown[kind] < 3:
            shown[kind] += 1
            print(f"  unexplained {kind}/{conn[3]}: version={version} error={error!r} app_end={app_end!r}")
    extra = sum(len(v) for v in by_port.values())
    return table, pairs, extra


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--inputs", type=int, default=10_000, help="malformed inputs, quick kinds (default 10000)")
    ap.add_argument("--quick", action="store_true",
                    help="a smaller run: 1500 inputs, 3 rounds of 50 probes, 100 idle and 10 slow clients")
    ap.add_argument("--rounds", type=int, default=5, help="quiet/abuse window pairs (default 5)")
    ap.add_argument("--probes", type=int, default=100, help="probe handshakes per window, at least (default 100)")
    ap.add_argument("--clients", type=int, default=50, help="well-formed clients during abuse (default 50)")
    ap.add_argument("--think", type=float, default=2.0,
                    help="a well-formed client's pause between connections, s (default 2)")
    ap.add_argument("--idle", type=int, default=200, help="idle connections held during abuse (default 200)")
    ap.add_argument("--slow", type=int, default=20, help="byte-a-second clients during abuse (default 20)")
    ap.add_argument("--workers", type=int, default=2, help="processes sending malformed inputs (default 2)")
    ap.add_argument("--threads", type=int, default=4, help="threads per such process (default 4)")
    ap.add_argument("--timeout", type=float, default=5.0, help="server handshake and idle timeout, s (default 5)")
    ap.add_argument("--seed", type=int, default=13)
    opts = ap.parse_args()
    if opts.quick:
        opts.inputs, opts.rounds, opts.probes, opts.idle, opts.slow = min(opts.inputs, 1500), 3, 50, 100, 10
    spawn = mp.get_context("spawn")
    t_run = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="bench-abuse-"))
    ours, theirs = spawn.Pipe()
    knobs = {"handshake_timeout": opts.timeout, "app_timeout": opts.timeout}
    server = spawn.Process(target=serve, args=(theirs, str(work), knobs), name="server", daemon=True)
    server.start()
    host, port, ca = ours.recv()
    address = (host, port)

    def ask(cmd: str, dead: Any = None) -> Any:
        """The server process's answer, or ``dead`` if it no longer answers (it crashed)."""
        try:
            ours.send(cmd)
            return ours.recv() if ours.poll(60) else dead
        except (EOFError, OSError):
            return dead

    counter, quota = spawn.Value("q", 0), spawn.Value("q", 0)
    go, stop, out = spawn.Event(), spawn.Event(), spawn.Queue()
    workers = [spawn.Process(target=abuse_worker, daemon=True,
                             args=(address, ca, opts.seed, opts.threads, counter, quota, go, stop, out))
               for _ in range(opts.workers)]
    workers.append(spawn.Process(target=holder, daemon=True,
                                 args=(address, opts.seed, opts.idle, opts.slow, go, stop, out)))
    workers.append(spawn.Process(target=fleet, daemon=True,
                                 args=(address, ca, opts.clients, opts.think, go, stop, out)))
    for w in workers:
        w.start()

    probe = Probe(address, ssl.create_default_context(cafile=ca))
    for _ in range(20):  # warm-up: caches, the first tickets
        probe.once("warm-up")
    probe.times.clear()
    ask("reset-peak")
    baseline = ask("stats")
    per_round = -(-opts.inputs // opts.rounds)
    for r in range(opts.rounds):
        for _ in range(opts.probes):
            probe.once("quiet")
        quota.value = min(opts.inputs, per_round * (r + 1))
        go.set()
        n = 0
        while counter.value < quota.value or n < opts.probes:
            probe.once("abuse")
            n += 1
        go.clear()
        # Abuse winds down before the next quiet window: slow and idle holders are waiting out
        # their server's timeout, in-flight inputs end.
        time.sleep(opts.timeout + 1.0)
        print(f"round {r + 1}/{opts.rounds}: {counter.value} inputs sent, {n} probes under abuse", flush=True)
    stop.set()
    results: list[Any] = [out.get(timeout=opts.timeout * 4 + 120) for _ in workers]
    for w in workers:
        w.join(timeout=30)
    time.sleep(1.0)
    gone = {"VmRSS": 0, "VmHWM": 0, "records": 0, "serving": False, "errors": [], "open": -1, "timers": -1}
    end = ask("stats", gone)
    records = ask("records", [])
    errors = ask("stop", ["the server process did not answer"])
    server.join(timeout=30)
    shutil.rmtree(work, ignore_errors=True)

    conns: list[Conn] = list(probe.conns)
    fleet_failures: list[str] = []
    for res in results:
        if isinstance(res, tuple):
            conns += res[0]
            fleet_failures = res[1]
        else:
            conns += res
    table, pairs, extra = match(conns, records)
    lost = [conn for conn, rec in pairs if rec is None]
    crashed = len(errors) + (0 if end["serving"] else 1) + (0 if server.exitcode == 0 else 1)
    malformed = sum(c["connections"] for k, c in table.items() if k not in ("well-formed", "probe"))

    print(f"\n{'kind':14} {'conns':>7} {'records':>8} {'explained':>10}")
    for kind in list(QUICK_KINDS) + ["slow", "idle", "well-formed", "probe"]:
        c = table.get(kind, collections.Counter())
        print(f"{kind:14} {c['connections']:7d} {c['records']:8d} {c['explained']:10d}")
    print(f"malformed inputs: {malformed} ({counter.value} quick, the rest slow and idle); "
          f"well-formed clients: {opts.clients}, {len(fleet_failures)} failed connections")
    for line in fleet_failures[:5]:
        print("  " + line)
    print(f"\n{'probe':18} {'n':>5} {'p50 ms':>8} {'p99 ms':>8}")
    ratios = []
    for kind in ("full", "resumed"):
        quiet, abused = probe.times[("quiet", kind)], probe.times[("abuse", kind)]
        for cond, values in (("quiet", quiet), ("abuse", abused)):
            print(f"{kind + ' ' + cond:18} {len(values):5d} {statistics.median(values) * 1e3:8.2f} "
                  f"{p99(values) * 1e3:8.2f}")
        ratios.append(p99(abused) / p99(quiet))
    print(f"probe failures: {probe.failures}")
    served = collections.defaultdict(list)  # the probe's handshakes as the server timed them (accept to end)
    for conn, rec in pairs:
        if rec is not None and conn[2] == "probe":
            served[conn[3]].append(rec[5] / 1e3)
    quiet, abused = served["quiet"], served["abuse"]
    print(f"server side, probe handshakes (accept to handshake end): p50/p99 quiet "
          f"{statistics.median(quiet) * 1e3:.2f}/{p99(quiet) * 1e3:.2f} ms, under abuse "
          f"{statistics.median(abused) * 1e3:.2f}/{p99(abused) * 1e3:.2f} ms")
    mb = 1 << 20
    per_record = (end["VmRSS"] - baseline["VmRSS"]) / max(1, end["records"] - baseline["records"])
    print(f"\nserver memory: RSS {baseline['VmRSS'] / mb:.1f} MB after warm-up, peak {end['VmHWM'] / mb:.1f} MB "
          f"during abuse, {end['VmRSS'] / mb:.1f} MB at the end with {end['records']} records kept "
          f"({per_record:.0f} bytes per record); open connections {end['open']}, timer entries {end['timers']}")
    for line in errors[:5]:
        print("server ERROR: " + line)
    print(f"extra records (no client connection): {extra}; load average {os.getloadavg()[0]:.2f} on "
          f"{os.cpu_count()} CPUs; wall time {time.monotonic() - t_run:.0f} s")
    recorded = len(conns) - len(lost)
    print(f"records={recorded}/{len(conns)} lost={len(lost)} crashed={crashed} p99_ratio={max(ratios):.2f}")
    return 1 if lost or crashed else 0


if __name__ == "__main__":
    sys.exit(main())
