"""What a lab CI page and a person at a terminal see: JUnit suite properties, the console under a failure, progress.

A child pytest, as a lab runs it.  The failing run uses a really broken
firmware (``ram-only``: it never stores its session), so the JUnit XML is
the one a nightly produces for a real regression.
"""

from __future__ import annotations

import hashlib
import os
import pty
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from labkit import ROOT, device_file, run

pytestmark = pytest.mark.slow


def test_junit_of_a_failing_run_names_the_rig_and_shows_the_console(tmp_path: Path) -> None:
    dev = device_file(tmp_path)
    child = run(tmp_path, dev, "--sim-variant", "ram-only", "--seed", "4242", scenarios=("a_first",))
    props = child.suite_properties
    assert props["rig"] == "sim"
    assert props["device_file"] == str(dev)
    assert props["device_file_sha256"] == hashlib.sha256(dev.read_bytes()).hexdigest()[:16]
    assert props["supply_idn"].startswith("Keysight Technologies,E36312A,"), props
    assert props["firmware_version"] == "1.0 variant=ram-only", props      # from the boot banner
    assert re.fullmatch(r"\d+\.\d+\.\d+", props["harness_version"]), props
    assert re.fullmatch(r"[0-9a-f]{12}|unknown", props["harness_commit"]), props
    assert props["seed"] == "4242"
    case = child.cases["a_first"]
    assert case.outcome == "failed"
    assert "FAIL [nothing-offered]" in case.message
    excerpt = case.message.split("console around the cut:", 1)[1]
    # The cut and the boot after it, stamped, as the device printed them.
    assert re.search(r"\d\d:\d\d:\d\d\.\d{3}\s+reset cause: power-on", excerpt), excerpt
    assert "connect ok resumed=no" in excerpt, excerpt


REPEAT = """schema: 1
name: cycles
description: three power cycles, each judged
steps:
  - power_on:
  - connect: {version: tls1.2}
  - expect_server: full
  - repeat:
      times: 3
      steps:
        - power_cycle: {off_time: discharged}
        - connect: {version: tls1.2}
        - expect_server: resumed_across_power_loss
"""


def _child(tmp: Path, tty: bool) -> str:
    folder = tmp / "scenarios"
    folder.mkdir(parents=True)
    (folder / "cycles.yaml").write_text(REPEAT)
    cmd = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--rootdir", str(tmp), "-c",
           str(ROOT / "pytest.ini"), "--run-dir", str(tmp / "runs"), str(folder)]
    if not tty:
        return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300).stdout
    leader, follower = pty.openpty()
    proc = subprocess.Popen(cmd, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=follower, stderr=follower)
    os.close(follower)
    out = b""
    deadline = time.monotonic() + 300
    try:
        while time.monotonic() < deadline:
            try:
                chunk = os.read(leader, 65536)
            except OSError:           # EIO: the child closed its end
                break
            if not chunk:
                break
            out += chunk
    finally:
        proc.wait(timeout=60)
        os.close(leader)
    return out.decode(errors="replace")


def test_progress_on_a_terminal_and_quiet_elsewhere(tmp_path: Path) -> None:
    on_tty = _child(tmp_path / "tty", tty=True)
    for n in (1, 2, 3):
        assert f"cycle {n}/3: {n}/{n} verdicts passed (100%), last resumed" in on_tty, on_tty[-3000:]
    piped = _child(tmp_path / "pipe", tty=False)
    assert "1 passed" in piped and "cycle 1/3" not in piped, piped[-3000:]
