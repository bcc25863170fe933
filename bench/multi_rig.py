"""Wall time of the default scenario suite on N simulated rigs against one rig, measured in the same run.

    python bench/multi_rig.py [--rigs 4] [--reps 5]

First the suite on one rig (``pytest --device devices/sim.yaml``), then
``--reps`` times on ``--rigs`` rigs (``pytest -n N --device devices/sim.yaml``
N times over), each a separate pytest as a lab runs it, report included.
Every run must pass every scenario; a run that does not is printed and
the benchmark exits non-zero.  The last line is ``ratio=`` (the slowest
multi-rig run over the one-rig run: this machine is shared and noisy, so
the baseline is measured here, now, not remembered).
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run_suite(workdir: Path, rigs: int, label: str) -> tuple[float, int, int, str]:
    """One pytest run of the default suite; (wall seconds, passed, not passed, last lines)."""
    args = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--run-dir", str(workdir / label),
            "--history", str(workdir / "history.jsonl"), "--lock-dir", str(workdir / "locks")]
    if rigs > 1:
        args += ["-n", str(rigs)]
    for _ in range(rigs):
        args += ["--device", str(ROOT / "devices" / "sim.yaml")]
    start = time.monotonic()
    proc = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=1800)
    wall = time.monotonic() - start
    tail = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else proc.stderr[-500:]
    passed = int(m.group(1)) if (m := re.search(r"(\d+) passed", tail)) else 0
    bad = sum(int(n) for n in re.findall(r"(\d+) (?:failed|errors?)", tail)) + (proc.returncode != 0)
    return wall, passed, bad, proc.stdout[-3000:] if bad else tail


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rigs", type=int, default=4)
    parser.add_argument("--reps", type=int, default=1, help="multi-rig runs in a row (each must pass)")
    args = parser.parse_args()
    ok = True
    with tempfile.TemporaryDirectory(prefix="multi-rig-") as tmp:
        work = Path(tmp)
        one, passed, bad, tail = run_suite(work, 1, "one")
        print(f"one rig: wall_s={one:.1f} passed={passed} not_passed={bad}", flush=True)
        ok &= bad == 0
        walls = []
        streak = 0
        for rep in range(1, args.reps + 1):
            wall, passed_n, bad_n, tail_n = run_suite(work, args.rigs, f"multi-{rep}")
            walls.append(wall)
            print(f"{args.rigs} rigs, run {rep}/{args.reps}: wall_s={wall:.1f} passed={passed_n} "
                  f"not_passed={bad_n} ratio={wall / one:.3f}", flush=True)
            if bad_n or passed_n != passed:
                ok = False
                streak = 0
                print(tail_n)
            else:
                streak += 1
    print(f"passed_in_a_row={streak}/{args.reps}")
    print(f"ratio={max(walls) / one:.3f}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
