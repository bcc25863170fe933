"""A child pytest on a simulated bench with one fault injected (devices/sim/faults.py).

The child is what a lab runs: its own bench, server and watchdog, its JUnit
XML and terminal summary.  Two scenarios in order, so a test sees both the
scenario the fault hit and the one after it.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SIM = ROOT / "devices" / "sim.yaml"

SCENARIO = """schema: 1
name: {name}
description: connect, cut the power, connect again and resume
timeout: 120
steps:
  - power_on:
  - connect: {{version: tls1.2}}
  - expect_server: full
  - power_cycle: {{off_time: discharged}}
  - connect: {{version: tls1.2}}
  - expect_server: resumed_across_power_loss
"""


@dataclass
class Case:
    name: str
    outcome: str                 # passed, failed, error, skipped
    message: str
    properties: dict[str, str] = field(default_factory=dict)


@dataclass
class ChildRun:
    cases: dict[str, Case]
    suite_properties: dict[str, str]
    stdout: str
    returncode: int
    run_root: Path

    def result(self, name: str) -> dict:
        return json.loads((self.run_root / name / "result.json").read_text())

    def supply_log(self) -> list[dict]:
        path = self.run_root / "supply.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []

    def bench_log(self) -> str:
        path = self.run_root / "sim-bench.log"
        return path.read_text(errors="replace") if path.exists() else ""


def device_file(tmp: Path, *faults: str, boot_timeout: float | None = None, port: int | None = None) -> Path:
    """sim.yaml with ``--fault`` options added to the bench command (and a shorter boot timeout)."""
    text = SIM.read_text()
    extra = "".join(f', "--fault", "{f}"' for f in faults)
    text = text.replace('"--set", "ca={server_ca}"]', f'"--set", "ca={{server_ca}}"{extra}]', 1)
    assert extra == "" or extra in text
    if boot_timeout is not None:
        text = re.sub(r"(?m)^  boot_timeout: .*$", f"  boot_timeout: {boot_timeout}", text)
    if port is not None:
        text = re.sub(r"(?m)^  bind: 127.0.0.1$", f"  bind: 127.0.0.1\n  port: {port}", text)
    path = tmp / "bench-with-fault.yaml"
    path.write_text(text)
    return path


def command(tmp: Path, device: Path | list[Path], *args: str, scenarios: tuple[str, ...] = ("a_first", "b_second"),
            scenario: str = SCENARIO, label: str = "") -> list[str]:
    """The child pytest's command line: the scenarios written to ``tmp/scenarios``, one ``--device`` per rig.

    Its rig locks live in ``tmp/locks``: a test never waits for (or blocks) another run on this machine.
    """
    folder = tmp / "scenarios"
    folder.mkdir(exist_ok=True)
    for name in scenarios:
        (folder / f"{name}.yaml").write_text(scenario.format(name=name))
    devices = [device] if isinstance(device, Path) else list(device)
    return [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", str(tmp), "-c",
            str(ROOT / "pytest.ini"), *[a for d in devices for a in ("--device", str(d))],
            "--run-dir", str(tmp / f"runs{label}"), "--junitxml", str(tmp / f"junit{label}.xml"),
            "--history", str(tmp / "history.jsonl"), "--lock-dir", str(tmp / "locks"), *args, str(folder)]


def run(tmp: Path, device: Path | list[Path], *args: str, scenarios: tuple[str, ...] = ("a_first", "b_second"),
        timeout: float = 300, scenario: str = SCENARIO, label: str = "") -> ChildRun:
    cmd = command(tmp, device, *args, scenarios=scenarios, scenario=scenario, label=label)
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    return read_run(tmp, label, proc.stdout + proc.stderr, proc.returncode, cmd)


def read_run(tmp: Path, label: str, output: str, returncode: int, cmd: list[str]) -> ChildRun:
    """A finished child's JUnit XML, output and run folder."""
    xml = tmp / f"junit{label}.xml"
    run_root = tmp / f"runs{label}"
    if not xml.exists():
        raise AssertionError(f"no JUnit XML from {' '.join(cmd)}:\n{output}")
    root = ET.parse(xml).getroot()
    suite = root if root.tag == "testsuite" else root.find("testsuite")
    assert suite is not None
    props = {p.get("name", ""): p.get("value", "") for p in suite.findall("properties/property")}
    cases: dict[str, Case] = {}
    for tc in suite.iter("testcase"):
        outcome, message = "passed", ""
        for tag, word in (("failure", "failed"), ("error", "error"), ("skipped", "skipped")):
            node = tc.find(tag)
            if node is not None:
                outcome, message = word, (node.get("message") or "") + "\n" + (node.text or "")
        case_props = {p.get("name", ""): p.get("value", "") for p in tc.findall("properties/property")}
        cases[tc.get("name", "")] = Case(tc.get("name", ""), outcome, message, case_props)
    return ChildRun(cases, props, output, returncode, run_root)


_OUTPUT = re.compile(r"^(?P<time>\S+ \S+) simbench \w+ \S+: (?:channel 1: output (?P<state>ON|OFF)|"
                     r"channel 1: (?P<trip>.*protection tripped.*)|fault injected: (?P<fault>.*))$")


def output_after_fault(run: ChildRun) -> list[str]:
    """The simulated supply's own record of its output after the fault fired: ON, OFF, TRIP, in order.

    Read from the bench's log (the instrument's side, not the harness's
    belief): the safe state is reached when OFF comes before any ON.
    """
    seen: list[str] = []
    fired = False
    for line in (run.run_root / "bench.log").read_text(errors="replace").splitlines():
        line = line.removeprefix("[stdout] ")
        m = _OUTPUT.match(line)
        if not m:
            continue
        if m.group("fault"):
            fired = True
        elif fired:
            seen.append(m.group("state") or "TRIP")
    assert fired, "the fault never fired"
    return seen
