"""Does rail sampling slow the scenario suite?  Wall time with ``supply.sample_rate`` on vs off.

What is run: a representative subset of the shipped scenarios on the
simulated bench, each run a child ``pytest`` exactly as a user runs it
(its own bench, server and watchdog), with a temporary copy of the device
file whose ``supply.sample_rate`` is RATE (on, default 10 Hz: the default)
or 0 (off).  Runs alternate on, off, off, on, ... (ABBA) in the same
minutes with the same ``--seed``, so drift in the machine's load falls on
both sides alike.

The subset (7 tests, about 35-45 s a run on a shared 2-core machine, where
the whole default suite takes ~3.7 min once and far longer interleaved):

* ``resume_after_power_loss`` (tls1.2, tls1.3): power cycles with verified
  discharge, whose polling competes with the sampler for the supply;
* ``brownout_during_idle`` (tls1.2, tls1.3): voltage-step edges;
* ``power_cut_during_session_write[0.5]``: a cut armed on a console line,
  during which the sampler pauses;
* ``test_energy_per_handshake`` (tls1.2, tls1.3): the Python scenario that
  runs its own back-to-back current sampling thread against the same lock.

Prints one line per run, the median wall time and the median sum of test
durations (JUnit; without pytest start-up and the bench launch) for each
side, and as the last line ``ratio=<on/off>``: total wall time with
sampling over total without.  Goal: at most 1.10.
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SUBSET = [
    "scenarios/resume_after_power_loss.yaml",
    "scenarios/brownout_during_idle.yaml",
    "scenarios/power_cut_during_session_write.yaml::power_cut_during_session_write[0.5]",
    "scenarios/test_energy_per_handshake.py",
]


@dataclass
class Run:
    rate: float
    wall: float        # child process start to exit (s)
    tests: float       # sum of the JUnit test times (s)
    passed: int
    failed: int


def device_copy(source: Path, rate: float, out: Path) -> Path:
    """The device file with ``supply.sample_rate`` set: replaced if present, else first in the section."""
    text = source.read_text(encoding="utf-8")
    line = f"  sample_rate: {rate:g}"
    if re.search(r"^  sample_rate:.*$", text, flags=re.M):
        text = re.sub(r"^  sample_rate:.*$", line, text, count=1, flags=re.M)
    else:
        text, n = re.subn(r"^supply:\n", f"supply:\n{line}\n", text, count=1, flags=re.M)
        if n != 1:
            raise SystemExit(f"{source}: no 'supply:' section to put sample_rate in")
    out.write_text(text, encoding="utf-8")
    return out


def run_once(device: Path, rate: float, work: Path, seed: int, n: int) -> Run:
    xml = work / f"junit-{n}.xml"
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--device", str(device),
           "--run-dir", str(work / f"runs-{n}"), "--seed", str(seed), "--junitxml", str(xml), *SUBSET]
    start = time.monotonic()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=1800)
    wall = time.monotonic() - start
    if not xml.exists():
        raise SystemExit(f"no JUnit XML from {' '.join(cmd)}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    cases = list(ET.parse(xml).getroot().iter("testcase"))
    failed = sum(1 for c in cases if c.find("failure") is not None or c.find("error") is not None)
    return Run(rate, wall, sum(float(c.get("time", 0)) for c in cases), len(cases) - failed, failed)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rate", type=float, default=10.0, help="sample rate with sampling on (Hz, default 10)")
    ap.add_argument("--pairs", type=int, default=2, help="on/off pairs, in ABBA order (default 2: 4 runs)")
    ap.add_argument("--device", type=Path, default=ROOT / "devices" / "sim.yaml", help="device file to copy")
    ap.add_argument("--seed", type=int, default=1, help="the same scenario seed for every run")
    ap.add_argument("--keep", type=Path, help="keep the device files, JUnit XML and run dirs here")
    args = ap.parse_args()
    runs: list[Run] = []
    with tempfile.TemporaryDirectory(prefix="sampling-overhead-") as tmp:
        work = args.keep or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        on = device_copy(args.device, args.rate, work / "device-on.yaml")
        off = device_copy(args.device, 0, work / "device-off.yaml")
        order = [(on, args.rate), (off, 0.0), (off, 0.0), (on, args.rate)] * ((args.pairs + 1) // 2)
        for n, (device, rate) in enumerate(order[:2 * args.pairs]):
            r = run_once(device, rate, work, args.seed, n)
            runs.append(r)
            print(f"run {n}: sampling {'on ' if rate else 'off'} ({rate:g} Hz) wall {r.wall:6.1f} s, "
                  f"tests {r.tests:6.1f} s, {r.passed} passed, {r.failed} failed", flush=True)
    on_runs = [r for r in runs if r.rate]
    off_runs = [r for r in runs if not r.rate]
    if any(r.failed for r in runs):
        print("warning: some tests failed; their times still count")
    print(f"subset: {' '.join(SUBSET)}")
    print(f"median wall: on {statistics.median(r.wall for r in on_runs):.1f} s, "
          f"off {statistics.median(r.wall for r in off_runs):.1f} s; median test time: on "
          f"{statistics.median(r.tests for r in on_runs):.1f} s, off {statistics.median(r.tests for r in off_runs):.1f} s "
          f"(ratio {sum(r.tests for r in on_runs) / sum(r.tests for r in off_runs):.3f})")
    print(f"ratio={sum(r.wall for r in on_runs) / sum(r.wall for r in off_runs):.3f}")


if __name__ == "__main__":
    main()
