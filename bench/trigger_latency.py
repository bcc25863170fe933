"""How quickly does a console line cut the power, compared with the simplest possible script?

Fault injection ("cut the power the moment the firmware prints 'flash:
writing'") is only as precise as the path from the UART to the supply.  This
runs that path on the simulated bench (``devices.sim.SimBench``: firmware on a
pty, Keysight-dialect SCPI supply on a loopback socket) 200 times through the
harness and 200 times through a bare pyserial + pyvisa loop, interleaved in
blocks in the same run so both see the same machine load.

One trial: the test sends ``trial<N>``; the firmware answers
``error: unknown command 'trial<N>' (try help)``; that line must switch the
output off.  Then the output goes back on at once (the rail time constant is
set to 1 s, so the device never browns out and the next trial needs no
reboot).

Harness path: ``Console.trigger(pattern, lambda: supply.off(discharge_below=None))``
with ``harness.supply.Supply`` (keysight-e36300 dialect, supply log on).
Bare path: ``serial.Serial.readline()`` + ``re.search`` +
``inst.write("OUTP OFF,(@1)")`` + ``inst.query("SYST:ERR?")``, the same SCPI
traffic the driver sends (it checks the error queue after every command).

What is measured, on the one harness clock (CLOCK_MONOTONIC):

* start: the line's arrival stamp, i.e. right after the read() that returned
  its newline (harness: ``Line.mono`` taken by the reader thread; bare: right
  after ``readline()`` returned).  The firmware's own write time is not
  observable here, and the kernel pty hop before it is the same for both.
* acknowledged (the headline figure): the instrument has answered the
  ``SYST:ERR?`` that follows ``OUTP OFF``, so it has executed the cut
  (harness: the ``off`` PowerEvent stamp; bare: after ``query`` returned).
* issued: just before the ``OUTP OFF`` bytes were handed to the socket
  (harness: the supply log's stamp of the write; bare: before ``write``).

Prints ``p50_ms=<x> p99_ms=<y> ratio_p99=<z>`` as the last line: harness
line->acknowledged percentiles and harness p99 / bare p99.  Goal: p99 at most
1 ms and ratio at most 2.

``--sampling RATE`` adds three harness paths (default trigger thread) run
with a :class:`harness.rail.RailSampler` sampling the same supply at RATE
Hz, started and stopped around their blocks so the other paths stay the
baseline without sampling: ``sampled`` as the pytest plugin wires it
(paused from arming until the cut, ``pause_when``); ``sampled-idle``, the
same plus ``supply.wait_idle()`` right after arming, so that a query the
sampler started just before arming is over before the line can come; and
``sampled-nopause`` with the supply's lock priority alone, the worst case,
for a cut armed on the console directly where the sampler cannot see it (a
query already in flight when the line arrives delays the cut by its
remainder).  Trials here follow each other within ~5 ms, so the race at
arming that ``wait_idle`` closes is far likelier than in a scenario, where
the line comes long after the cut was armed.  It prints, before the last
line, ``sampling_hz=<r> paused_p50_ms= paused_p99_ms= idle_... nopause_...
off_p99_ms= ratio_p99=<paused p99 / p99 without sampling> ...`` and, per
path, how many samples were taken and how many lines arrived while a
sample's query was in flight.  Goal: p99 with sampling under 1 ms.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import re
import socket
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import pyvisa  # noqa: E402
import serial  # noqa: E402

from devices.sim import SimBench  # noqa: E402
from harness import clock  # noqa: E402
from harness.console import Console, Trigger  # noqa: E402
from harness.rail import RailSampler  # noqa: E402
from harness.supply import PowerEvent, Supply  # noqa: E402

OFF = "OUTP OFF,(@1)"
ON = "OUTP ON,(@1)"
log = logging.getLogger("bench.trigger_latency")


@dataclass
class Samples:
    ack: list[float] = field(default_factory=list)       # line -> OUTP OFF acknowledged (s)
    issued: list[float] = field(default_factory=list)    # line -> OUTP OFF about to be written (s)
    hop: list[float] = field(default_factory=list)       # line -> action started (harness only)
    lines: list[float] = field(default_factory=list)     # the lines' arrival stamps (harness only)
    rail_taken: int = 0                                  # rail samples taken during this path's blocks
    rail_paused: int = 0
    overlaps: int = 0                                    # lines that arrived while a rail query was in flight


def set_nodelay(inst: object) -> bool:
    """Disable Nagle on a pyvisa-py TCPIP SOCKET session; True if it applied.

    pyvisa-py leaves Nagle on for raw sockets and its VI_ATTR_TCPIP_NODELAY
    setter raises UnknownAttribute (NI-VISA turns Nagle off by default).  With
    Nagle on, a write followed by a query (``OUTP OFF`` then ``SYST:ERR?``)
    waits for the peer's delayed ACK: about 40 ms on Linux, which would
    swamp everything this benchmark is about.  Reaches the socket directly.
    """
    try:
        session = inst.visalib.sessions[inst.session]  # type: ignore[attr-defined]
        sock = session.interface
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return True
    except Exception:  # not pyvisa-py, or not a socket session
        return False


def pct(values: list[float], p: float) -> float:
    """Nearest-rank percentile, in milliseconds."""
    s = sorted(values)
    return s[max(0, math.ceil(p / 100 * len(s)) - 1)] * 1e3


def summary(name: str, values: list[float]) -> str:
    return (f"{name:<34} n={len(values)} p50={pct(values, 50):.3f} p90={pct(values, 90):.3f} "
            f"p99={pct(values, 99):.3f} max={max(values) * 1e3:.3f} ms")


def wait_booted(bench_uart: Path, capture: Path) -> None:
    with Console(str(bench_uart), capture_path=capture, name="boot") as con:
        con.expect(r"^ready$", timeout=20, since=0)


def harness_block(uart: Path, supply: Supply, capture: Path, first: int, count: int, out: Samples,
                  supply_log: Path, inline: bool, armed: list[Trigger] | None = None,
                  wait_idle: bool = False) -> None:
    with Console(str(uart), capture_path=capture, name="harness") as con:
        for n in range(first, first + count):
            edges: list[PowerEvent] = []
            trig = con.trigger(rf"unknown command 'trial{n}'",
                               lambda: edges.append(supply.off(discharge_below=None)), inline=inline)
            if armed is not None:
                armed[:] = [trig]       # what the sampler's pause_when looks at
            if wait_idle:
                supply.wait_idle()      # a rail query started just before arming is over
            con.send(f"trial{n}")
            firing = trig.wait(10)
            supply.on(settle=False)
            if firing.error or not edges:
                raise RuntimeError(f"trial {n}: trigger action failed: {firing.error}")
            out.ack.append(edges[0].mono - firing.line.mono)
            out.lines.append(firing.line.mono)
            out.hop.append(firing.started - firing.line.mono)
            out.issued.append(_issued_stamp(supply_log, firing.line.mono) - firing.line.mono)
            time.sleep(0.005)
        con.check()


def _issued_stamp(supply_log: Path, after: float) -> float:
    """The supply log's stamp of the first OUTP OFF write after ``after`` (taken just before the write)."""
    with open(supply_log, encoding="utf-8") as f:
        for raw in reversed(f.readlines()[-40:]):
            rec = json.loads(raw)
            if rec.get("kind") == "write" and rec.get("command") == OFF and rec["mono"] >= after:
                return float(rec["mono"])
    raise RuntimeError("OUTP OFF write not found in the supply log")


def bare_block(uart: Path, inst: object, first: int, count: int, out: Samples) -> None:
    with serial.Serial(str(uart), 115200, timeout=10) as ser:
        for n in range(first, first + count):
            pattern = re.compile(rf"unknown command 'trial{n}'")
            ser.write(f"trial{n}\r\n".encode())
            while True:
                raw = ser.readline()
                t_line = clock.now()
                if not raw:
                    raise RuntimeError(f"bare trial {n}: no answer")
                if pattern.search(raw.decode("utf-8", "replace")):
                    break
            t_issue = clock.now()
            inst.write(OFF)  # type: ignore[attr-defined]
            inst.query("SYST:ERR?")  # type: ignore[attr-defined]
            t_ack = clock.now()
            inst.write(ON)  # type: ignore[attr-defined]
            inst.query("SYST:ERR?")  # type: ignore[attr-defined]
            out.ack.append(t_ack - t_line)
            out.issued.append(t_issue - t_line)
            time.sleep(0.005)


def sampled_block(uart: Path, supply: Supply, capture: Path, first: int, count: int, out: Samples,
                  supply_log: Path, rate: float, pause: bool, wait_idle: bool = False) -> None:
    """A harness block (default trigger thread) with the rail sampler running on the same supply."""
    armed: list[Trigger] = []
    pause_when = (lambda: bool(armed) and not armed[0].fired) if pause else None
    rail = RailSampler(supply, rate, pause_when=pause_when)
    with rail:
        harness_block(uart, supply, capture, first, count, out, supply_log, inline=False, armed=armed,
                      wait_idle=wait_idle)
    out.rail_taken += rail.counts.taken
    out.rail_paused += rail.counts.paused
    spans = [(s.mono - s.span / 2, s.mono + s.span / 2) for s in rail.samples]
    out.overlaps += sum(1 for t in out.lines[-count:] if any(a <= t <= b for a, b in spans))


def run(workdir: Path, trials: int, blocks: int, nagle: bool,
        sampling: float = 0.0) -> tuple[dict[str, Samples], int]:
    per = trials // blocks
    paths = {"threaded": Samples(), "inline": Samples(), "bare": Samples()}
    if sampling:
        paths.update({"sampled": Samples(), "sampled-idle": Samples(), "sampled-nopause": Samples()})
    capture = workdir / "console.txt"
    supply_log = workdir / "supply.jsonl"
    with SimBench(workdir=workdir / "bench", uart_mode="stable", tau=1.0, log_level="WARNING") as bench, \
            Supply(bench.supply_resource, "keysight-e36300", watchdog=False, log_path=supply_log) as supply:
        supply.configure(voltage=3.3, current_limit=0.5)
        supply.on()
        wait_booted(bench.uart_path, capture)
        rm = pyvisa.ResourceManager("@py")
        inst = rm.open_resource(bench.supply_resource, read_termination="\n", write_termination="\n",
                                timeout=5000)
        if not nagle:
            # Same socket setting for both paths, so the comparison is about
            # the console and driver, not about TCP (see set_nodelay).
            if not (set_nodelay(supply._inst) and set_nodelay(inst)):
                log.warning("could not disable Nagle on the supply sessions")
        try:
            n = 0
            names = list(paths)
            for b in range(blocks):
                k = b % len(names)
                for which in names[k:] + names[:k]:   # rotate the order block by block
                    if which == "bare":
                        bare_block(bench.uart_path, inst, n, per, paths[which])
                    elif which.startswith("sampled"):
                        sampled_block(bench.uart_path, supply, capture, n, per, paths[which], supply_log,
                                      sampling, pause=(which != "sampled-nopause"),
                                      wait_idle=(which == "sampled-idle"))
                    else:
                        harness_block(bench.uart_path, supply, capture, n, per, paths[which], supply_log,
                                      inline=(which == "inline"))
                    n += per
        finally:
            inst.close()
        with Console(str(bench.uart_path), capture_path=capture, name="check") as con:
            con.send("session")
            con.expect(r"^session: ", timeout=10)
        boots = sum(1 for raw in capture.read_text(encoding="utf-8", errors="replace").splitlines()
                    if "simfw 1.0" in raw)
    return paths, boots


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=200, help="per path (default 200)")
    ap.add_argument("--blocks", type=int, default=10, help="interleaved blocks (default 10)")
    ap.add_argument("--nagle", action="store_true",
                    help="leave pyvisa-py's Nagle on (expect ~40 ms stalls on both paths)")
    ap.add_argument("--workdir", type=Path, help="keep logs and captures here (default: a temp dir)")
    ap.add_argument("--sampling", type=float, default=0.0, metavar="RATE",
                    help="also run two harness paths with the rail sampler at RATE Hz (paused while armed, "
                         "and lock priority only) against the same run's paths without it")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        workdir = args.workdir or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        paths, boots = run(workdir, args.trials, args.blocks, args.nagle, args.sampling)
    ours, inline, bare = paths["threaded"], paths["inline"], paths["bare"]
    print(f"{len(ours.ack)} trials per path (harness default = action in the console's trigger thread; "
          f"harness inline = trigger(..., inline=True); bare), interleaved in {args.blocks} blocks on one "
          f"simulated bench; device booted {boots} time(s) (1 = no trial browned it out); TCP_NODELAY "
          f"{'off (pyvisa-py default)' if args.nagle else 'on for both supply sessions'}")
    print(summary("default line->action start", ours.hop))
    print(summary("inline  line->action start", inline.hop))
    print(summary("default line->OUTP OFF issued", ours.issued))
    print(summary("inline  line->OUTP OFF issued", inline.issued))
    print(summary("bare    line->OUTP OFF issued", bare.issued))
    print(summary("bare    issued->acknowledged (sim RTT)", [a - i for a, i in zip(bare.ack, bare.issued)]))
    print(summary("default line->OUTP OFF acknowledged", ours.ack))
    print(summary("inline  line->OUTP OFF acknowledged", inline.ack))
    print(summary("bare    line->OUTP OFF acknowledged", bare.ack))
    if args.sampling:
        paused, idle, nopause = paths["sampled"], paths["sampled-idle"], paths["sampled-nopause"]
        print(summary(f"sampled {args.sampling:g} Hz line->acknowledged", paused.ack))
        print(summary("sampled + wait_idle line->acknowledged", idle.ack))
        print(summary("sampled, no pause, line->acknowledged", nopause.ack))
        for name, s in (("sampled (paused while armed)", paused), ("sampled (paused, wait_idle at arming)", idle),
                        ("sampled (lock priority only)", nopause)):
            print(f"{name}: {s.rail_taken} rail samples taken, {s.rail_paused} ticks paused; "
                  f"{s.overlaps} of {len(s.ack)} lines arrived while a rail query was in flight")
        print(f"sampling_hz={args.sampling:g} paused_p50_ms={pct(paused.ack, 50):.3f} "
              f"paused_p99_ms={pct(paused.ack, 99):.3f} idle_p50_ms={pct(idle.ack, 50):.3f} "
              f"idle_p99_ms={pct(idle.ack, 99):.3f} nopause_p50_ms={pct(nopause.ack, 50):.3f} "
              f"nopause_p99_ms={pct(nopause.ack, 99):.3f} off_p99_ms={pct(ours.ack, 99):.3f} "
              f"ratio_p99={pct(paused.ack, 99) / pct(ours.ack, 99):.2f} "
              f"ratio_p99_idle={pct(idle.ack, 99) / pct(ours.ack, 99):.2f} "
              f"ratio_p99_nopause={pct(nopause.ack, 99) / pct(ours.ack, 99):.2f}")
    print(f"inline: p50_ms={pct(inline.ack, 50):.3f} p99_ms={pct(inline.ack, 99):.3f} "
          f"ratio_p99={pct(inline.ack, 99) / pct(bare.ack, 99):.2f}")
    print(f"p50_ms={pct(ours.ack, 50):.3f} p99_ms={pct(ours.ack, 99):.3f} "
          f"ratio_p99={pct(ours.ack, 99) / pct(bare.ack, 99):.2f}")


if __name__ == "__main__":
    main()
