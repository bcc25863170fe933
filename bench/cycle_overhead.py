"""What does the harness cost per resume-after-power-loss cycle, against a bare script?

One cycle = the heart of ``scenarios/resume_after_power_loss.yaml``: cut the
power until the rail is really discharged, keep it off ``min_off``, power up,
wait for the boot-ready line, connect in TLS 1.3, and check on the reference
server that the first handshake after the cut resumed the session issued
right before it.  50 cycles through the harness and 50 through a bare
pyvisa + pyserial + server-records script, on ONE simulated bench and ONE
reference server started by this script (so both arms measure the same
physics: the same rail time constant, the same firmware, the same TLS stack).

Harness arm (what a scenario run really executes, nothing hand-picked): the
fixtures' wiring done by hand -- the bench started from ``devices/sim.yaml``
with ``harness.launcher``, ``harness.supply.Supply`` (keysight-e36300
dialect, supply log on, watchdog process armed), ``harness.console.Console``
(capture file on, the device file's forbid guards), ``harness.device.Device``
-- and ``harness.engine.Engine`` running an inline scenario parsed by
``harness.scenario.parse``::

    keep_session: false
    steps:
      - power_on:
      - connect: {version: tls1.3}
      - expect_server: full
      - repeat: {times: 10, steps: [power_cycle: {off_time: discharged},
                                    connect: {version: tls1.3},
                                    expect_server: resumed_across_power_loss]}

Only the repeated steps are timed: from the engine's ``on_step`` call for the
``repeat`` step to ``Trace.end``.  ``Engine.prepare()`` (server defaults,
verified power-off, session erase, clock set) and the first full handshake
are set-up, as the brief asks.  Per-cycle times are the gaps between the
``on_step`` calls of successive ``power_cycle`` steps (the last one ends at
``Trace.end``); the sum of the cycles is the block total.

Bare arm, the same steps written the shortest honest way: ``pyvisa``
(``ResourceManager('@py')``, TCP_NODELAY set on its socket exactly as the
driver's ``_no_delay`` does) writes ``OUTP OFF,(@1)``, polls
``MEAS:VOLT? (@1)`` every 5 ms (the driver's ``off()`` interval) until below
``discharge_below`` (0.3 V), sleeps ``min_off`` (0.05 s), writes
``OUTP ON,(@1)``; ``pyserial`` (``serial_for_url`` on the bench's UART) reads
lines until ``ready``, sends ``connect 127.0.0.1 <port> tls1.3 server.test``
and reads until ``connect ok``; the newest server record must be resumed
with ``resumed_from`` equal to the previous handshake's id.  It does NOT do
what the harness adds on purpose (error-queue check after each command, the
rail measured before power returns, settle check after ON, logs, evidence
and verdict): that is the overhead this benchmark measures.  Its set-up per
block (untimed): power on if needed, one connect to learn the current id.

Fairness on a shared, noisy machine: the arms alternate in blocks of 10
cycles (H B B H H B ...: the order flips every pair, so neither arm always
follows the other) until both have 50; the console and the bare serial port
are never open at the same time (two readers on one pty would steal each
other's bytes), so each block opens its own and closes it untimed.  The
figure is total harness time / total bare time over the 50 cycles; per-arm
medians and p90 per cycle, and a per-phase split (power: off..ready,
connect: ..connect ok, check: ..verdict) are printed too, with the SCPI
round trips per cycle counted from the supply log / the bare script.

Last line: ``ratio=<harness/bare>`` (3 decimals).  Goal: at most 1.10.

Usage: python bench/cycle_overhead.py [--cycles 50] [--block 10] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import re
import signal
import socket
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import pyvisa  # noqa: E402
import serial  # noqa: E402

from harness import clock, devicefile, yamlfile  # noqa: E402
from harness.console import Console  # noqa: E402
from harness.device import Device  # noqa: E402
from harness.engine import SERVER_DEFAULTS, Engine, Rig, ScenarioFailure  # noqa: E402
from harness.launcher import launch  # noqa: E402
from harness.scenario import parse as parse_scenario  # noqa: E402
from harness.server import ReferenceServer, ServerConfig  # noqa: E402
from harness.supply import Supply  # noqa: E402

log = logging.getLogger("bench.cycle_overhead")

DEVICE_FILE = ROOT / "devices" / "sim.yaml"
VERSION = "tls1.3"
POLL = 0.005            # harness/supply.py off(): time.sleep(0.005) between MEAS:VOLT? polls

SCENARIO = """\
schema: 1
name: cycle_overhead_block
description: >
  Benchmark block: after a full handshake, {times} resume-after-power-loss
  cycles (verified discharge, boot, TLS 1.3 connect, lineage verdict).
keep_session: false
steps:
  - power_on:
  - connect: {{version: {version}}}
  - expect_server: full
  - repeat:
      times: {times}
      steps:
        - power_cycle: {{off_time: discharged}}
        - connect: {{version: {version}}}
        - expect_server: resumed_across_power_loss
"""


@dataclass
class Arm:
    name: str
    cycles: list[float] = field(default_factory=list)              # seconds per cycle
    phases: dict[str, list[float]] = field(default_factory=lambda: {"power": [], "connect": [], "check": []})
    windows: list[tuple[float, float]] = field(default_factory=list)  # timed intervals (mono)
    scpi: int = 0                                                  # SCPI commands sent while timed

    @property
    def total(self) -> float:
        return sum(self.cycles)


def pct(values: list[float], p: float) -> float:
    """Nearest-rank percentile."""
    s = sorted(values)
    return s[max(0, math.ceil(p / 100 * len(s)) - 1)]


def no_delay(inst: Any) -> None:
    """TCP_NODELAY on a pyvisa-py raw socket, as harness.supply._no_delay does."""
    session = inst.visalib.sessions[inst.session]
    session.interface.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _sigterm(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


# -- harness arm ------------------------------------------------------------------

def harness_block(spec: devicefile.DeviceSpec, values: dict[str, Any], supply: Supply, server: ReferenceServer,
                  flash: Path, capture: Path, times: int, seed: int, arm: Arm) -> None:
    scenario = parse_scenario(yamlfile.loads(SCENARIO.format(times=times, version=VERSION), "<cycle_overhead>"),
                              "<cycle_overhead>")
    c = spec.console
    with Console(devicefile.fill(c.url, values, "console.url"), baudrate=c.baudrate, capture_path=capture,
                 line_ending=c.line_ending, char_delay=c.char_delay) as con:
        for pattern in spec.firmware.forbid:
            con.forbid(pattern)
        device = Device(spec, supply, con, values)
        rig = Rig(spec=spec, device=device, supply=supply, console=con, server=server, values=values,
                  flash_file=flash)
        stamps: list[tuple[str, float]] = []
        timing = [False]

        def on_step(step: Any, args: dict[str, Any]) -> None:
            if step.action == "repeat":
                timing[0] = True
            if timing[0]:
                stamps.append((step.action, clock.now()))

        engine = Engine(rig, scenario, {"seed": seed}, on_step=on_step)
        trace = engine.run()
        end = trace.end
        assert end is not None
        con.check()
    # stamps: repeat, then (power_cycle, connect, expect_server) x times
    marks = stamps[1:]
    starts = [t for a, t in marks if a == "power_cycle"]
    if len(starts) != times or len(trace.verdicts) != times + 1 or not all(v.ok for v in trace.verdicts):
        raise RuntimeError(f"harness block did not run {times} judged cycles: {trace.verdicts}")
    arm.windows.append((stamps[0][1], end))
    bounds = starts + [end]
    for i in range(times):
        arm.cycles.append(bounds[i + 1] - bounds[i])
        t_pc, t_conn, t_exp = (marks[3 * i + k][1] for k in range(3))
        arm.phases["power"].append(t_conn - t_pc)
        arm.phases["connect"].append(t_exp - t_conn)
        arm.phases["check"].append(bounds[i + 1] - t_exp)
    # The block's first timed cycle starts at the repeat step, not at its power_cycle: count that sliver too.
    arm.cycles[-times] += starts[0] - stamps[0][1]


# -- bare arm ---------------------------------------------------------------------

class Bare:
    """The same cycle with plain pyvisa + pyserial + the server's record list."""

    OK = re.compile(r"^connect ok resumed=(yes|no)")
    FAIL = re.compile(r"^connect failed: (.*)")

    def __init__(self, inst: Any, uart: str, server: ReferenceServer, spec: devicefile.DeviceSpec):
        self.inst = inst
        self.uart = uart
        self.server = server
        s = spec.supply
        self.threshold = s.discharge_below
        self.min_off = s.min_off
        self.timeout = s.discharge_timeout
        self.connect_cmd = (f"connect {spec.server.reach_host} {server.port} {VERSION} "
                            f"{server.names[0]}\r\n").encode()
        self.scpi = 0

    def write(self, cmd: str) -> None:
        self.scpi += 1
        self.inst.write(cmd)

    def query(self, cmd: str) -> str:
        self.scpi += 1
        return self.inst.query(cmd)

    @staticmethod
    def read_until(ser: serial.SerialBase, rx: re.Pattern[str], what: str) -> re.Match[str]:
        while True:
            raw = ser.readline()
            if not raw.endswith(b"\n"):
                raise RuntimeError(f"bare: no {what!r} line (got {raw!r})")
            text = raw.decode("utf-8", "replace").replace("\r", "").rstrip("\n")
            m = rx.search(text)
            if m:
                return m
            if Bare.FAIL.search(text):
                raise RuntimeError(f"bare: {text}")

    def connect(self, ser: serial.SerialBase) -> bool:
        ser.write(self.connect_cmd)
        return self.read_until(ser, self.OK, "connect ok").group(1) == "yes"

    def block(self, times: int, arm: Arm) -> None:
        with serial.serial_for_url(self.uart, baudrate=115200, timeout=20) as ser:
            ser.reset_input_buffer()
            # Set-up (untimed): powered and booted, one connect for a current session id.
            if self.query("OUTP? (@1)").strip() not in ("1", "ON"):
                self.write("OUTP ON,(@1)")
                self.read_until(ser, re.compile(r"^ready$"), "ready")
            self.connect(ser)
            prev = self.server.records()[-1]
            if prev.error or not prev.version:
                raise RuntimeError(f"bare set-up: last handshake failed: {prev.summary()}")
            scpi0 = self.scpi
            w0 = clock.now()
            for _ in range(times):
                t0 = clock.now()
                self.write("OUTP OFF,(@1)")
                t_off = clock.now()
                volts = float(self.query("MEAS:VOLT? (@1)"))
                while volts >= self.threshold:
                    if clock.now() - t_off > self.timeout:
                        raise RuntimeError(f"bare: rail still at {volts} V")
                    time.sleep(POLL)
                    volts = float(self.query("MEAS:VOLT? (@1)"))
                time.sleep(self.min_off)
                self.write("OUTP ON,(@1)")
                self.read_until(ser, re.compile(r"^ready$"), "ready")
                t1 = clock.now()
                resumed = self.connect(ser)
                t2 = clock.now()
                rec = self.server.records()[-1]
                if not (resumed and rec.resumed and rec.resumed_from == prev.id and rec.id > prev.id):
                    raise RuntimeError(f"bare: not resumed across the cut: {rec.summary()} (previous #{prev.id})")
                prev = rec
                t3 = clock.now()
                arm.cycles.append(t3 - t0)
                arm.phases["power"].append(t1 - t0)
                arm.phases["connect"].append(t2 - t1)
                arm.phases["check"].append(t3 - t2)
            arm.windows.append((w0, clock.now()))
            arm.scpi += self.scpi - scpi0


# -- the run ----------------------------------------------------------------------

def scpi_in_windows(supply_log: Path, windows: list[tuple[float, float]]) -> int:
    n = 0
    with open(supply_log, encoding="utf-8") as f:
        for raw in f:
            rec = json.loads(raw)
            if rec.get("kind") == "write" and any(a <= rec["mono"] <= b for a, b in windows):
                n += 1
    return n


def run(workdir: Path, cycles: int, block: int) -> tuple[Arm, Arm]:
    spec = devicefile.load(DEVICE_FILE)
    assert spec.bench is not None
    harness, bare = Arm("harness"), Arm("bare")
    s = spec.server
    config = ServerConfig(host=s.bind, port=s.port, names=tuple(s.names), ips=tuple(s.ips), key_type=s.key_type,
                          log_path=workdir / "handshakes.jsonl")
    supply_log = workdir / "supply.jsonl"
    with contextlib.ExitStack() as stack:
        server = stack.enter_context(ReferenceServer(config, workdir=workdir / "server"))
        server.configure(**SERVER_DEFAULTS)
        values: dict[str, Any] = {
            "run_dir": str(workdir), "bench_dir": str(workdir / "bench"), "python": sys.executable,
            "server_ca": str(server.ca_path),
            "server_host": s.reach_host, "server_port": server.port, "server_name": server.names[0],
            "sim_variant": "correct", "sim_uart_mode": "stable", **spec.variables,
        }
        argv = [devicefile.fill(a, values, "bench.start") for a in spec.bench.start]
        bench = stack.enter_context(launch(spec.bench, argv, workdir / "bench.log", env={"PYTHONPATH": str(ROOT)}))
        values["bench"] = dict(bench.resources)
        sp = spec.supply
        supply = stack.enter_context(Supply(resource=devicefile.fill(sp.resource, values, "supply.resource"),
                                            dialect=sp.dialect, channel=sp.channel, visa_library=sp.visa_library,
                                            log_path=supply_log, safe_state=sp.safe_state, watchdog=True))
        # Whatever happens below (Ctrl-C included), leave the output off. safe() alone could be a
        # no-op after the bare arm switched the output on behind the driver's back, so cut first.
        stack.callback(supply.safe)
        stack.callback(lambda: supply.off(discharge_below=None) if supply.is_open else None)
        supply.configure(voltage=sp.voltage, current_limit=sp.current_limit, ovp=sp.ovp)
        flash = Path(devicefile.fill(spec.flash_file, values, "flash_file")) if spec.flash_file else None
        rm = pyvisa.ResourceManager("@py")
        inst = rm.open_resource(supply.resource, read_termination="\n", write_termination="\n",
                                timeout=int(supply.dialect.transport.timeout * 1000))
        stack.callback(inst.close)
        no_delay(inst)
        uart = devicefile.fill(spec.console.url, values, "console.url")
        bare_runner = Bare(inst, uart, server, spec)

        order = ["harness", "bare"]
        n_block = 0
        while len(harness.cycles) < cycles or len(bare.cycles) < cycles:
            pair = order if (n_block // 2) % 2 == 0 else order[::-1]
            which = pair[n_block % 2]
            arm = harness if which == "harness" else bare
            n = min(block, cycles - len(arm.cycles))
            n_block += 1
            if n <= 0:
                continue
            t = time.monotonic()
            if which == "harness":
                harness_block(spec, values, supply, server, flash, workdir / f"console-{n_block}.capture",
                              n, n_block, harness)
            else:
                bare_runner.block(n, bare)
            print(f"block {n_block:2d} {which:<7} {n} cycles, {sum(arm.cycles[-n:]):.3f} s timed "
                  f"({time.monotonic() - t:.1f} s with set-up)", flush=True)
    harness.scpi = scpi_in_windows(supply_log, harness.windows)
    return harness, bare


def report(harness: Arm, bare: Arm) -> None:
    print()
    print(f"{len(harness.cycles)} cycles per arm, interleaved blocks, one simulated bench and one reference server "
          f"(TLS 1.3, verified discharge < 0.3 V, min_off 0.05 s)")
    for arm in (harness, bare):
        c = arm.cycles
        print(f"{arm.name:<8} total={arm.total:8.3f} s  per cycle: median={statistics.median(c) * 1e3:7.1f} ms "
              f"p90={pct(c, 90) * 1e3:7.1f} ms  min={min(c) * 1e3:7.1f} ms  max={max(c) * 1e3:7.1f} ms  "
              f"SCPI commands/cycle={arm.scpi / len(c):.1f}")
    print("per-phase medians (ms):      power(off..ready)  connect(..connect ok)  check(verdict)")
    for arm in (harness, bare):
        p = arm.phases
        print(f"  {arm.name:<8} {statistics.median(p['power']) * 1e3:26.1f} {statistics.median(p['connect']) * 1e3:22.1f}"
              f" {statistics.median(p['check']) * 1e3:15.2f}")
    print(f"median ratio={statistics.median(harness.cycles) / statistics.median(bare.cycles):.3f}")
    print(f"ratio={harness.total / bare.total:.3f}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cycles", type=int, default=50, help="cycles per arm (default 50)")
    ap.add_argument("--block", type=int, default=10, help="cycles per interleaved block (default 10)")
    ap.add_argument("--workdir", type=Path, help="keep logs, captures and records here (default: a temp dir)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    signal.signal(signal.SIGTERM, _sigterm)
    try:
        with tempfile.TemporaryDirectory(prefix="cycle-overhead-") as tmp:
            workdir = args.workdir or Path(tmp)
            workdir.mkdir(parents=True, exist_ok=True)
            harness, bare = run(workdir, args.cycles, args.block)
    except ScenarioFailure as exc:
        print(f"harness arm failed: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted; bench left with output off", file=sys.stderr)
        return 130
    report(harness, bare)
    return 0


if __name__ == "__main__":
    sys.exit(main())
