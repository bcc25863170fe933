"""Run the scenario suite in a child pytest and read back every verdict.

A child process is the honest way to test the product: it is exactly what a
user runs (`pytest --sim-variant NAME scenarios/...`), with its own bench,
server and watchdog, and the JUnit XML it writes is what a lab CI reads.
"""

from __future__ import annotations

import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Outcome:
    name: str
    outcome: str          # passed, failed, skipped, error
    message: str


def run_suite(tmp: Path, *args: str, timeout: float = 900) -> tuple[dict[str, Outcome], subprocess.CompletedProcess]:
    xml = tmp / "junit.xml"
    # A lock folder of the child's own: suites of one device file run side by side here (the variant
    # matrix runs three at a time), and a shared folder would refuse all but one of them (rig-busy).
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--run-dir", str(tmp / "runs"),
           "--junitxml", str(xml), "--lock-dir", str(tmp / "locks"), *args]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    if not xml.exists():
        raise AssertionError(f"no JUnit XML from {' '.join(cmd)}:\n{proc.stdout}\n{proc.stderr}")
    results: dict[str, Outcome] = {}
    for case in ET.parse(xml).getroot().iter("testcase"):
        name = case.get("name", "")
        outcome, message = "passed", ""
        for tag in ("failure", "error", "skipped"):
            node = case.find(tag)
            if node is not None:
                outcome = {"failure": "failed", "error": "error", "skipped": "skipped"}[tag]
                message = (node.get("message") or "") + "\n" + (node.text or "")
        results[name] = Outcome(name, outcome, message)
    return results, proc


def without_rig(name: str) -> str:
    """A test name with the simulated rig it ran on taken off: ``x[tls1.3-sim#2]`` -> ``x[tls1.3]``."""
    return re.sub(r"\[sim#\d+\]$", "", re.sub(r"-sim#\d+\]$", "]", name))
