"""The shipped catalog is device-neutral: no scenario names a console line of the emulated firmware.

A scenario that triggers on ``^flash: writing slot`` only works on the
simulator; on a real device the trigger never fires and the scenario fails
for the wrong reason.  Console patterns belong in device files
(``firmware.flash_write``, ``firmware.events``); scenarios name them
(``cut_power_when: {after: flash_write}``, ``requires: [...]``).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from harness.scenario import Step, load, walk

ROOT = Path(__file__).resolve().parents[2]
FIRMWARE = ROOT / "devices" / "sim" / "firmware"


def firmware_lines() -> set[str]:
    """The fixed text at the start of every console line the emulated firmware prints."""
    found: set[str] = set()
    for source in FIRMWARE.glob("*.py"):
        for literal in re.findall(r"""\.line\(\s*f?["']([^"'{]+)""", source.read_text()):
            text = literal.strip()
            if len(text) >= 5:
                found.add(text.lower())
    return found


#: step keys whose values are names the harness resolves, not console text
NAME_KEYS = {"after", "version", "command", "server", "expect", "outcome", "reason", "mechanism", "cause"}


def step_strings(steps: list[Step]) -> list[str]:
    out: list[str] = []

    def visit(value: object) -> None:
        if isinstance(value, str):
            out.append(value)
        elif isinstance(value, dict):
            for key, item in value.items():
                if key not in NAME_KEYS:
                    visit(item)
        elif isinstance(value, list):
            for item in value:
                visit(item)

    for step in walk(steps):
        visit(step.args)
    return out


def firmware_text_in(path: Path, lines: set[str]) -> list[str]:
    hits = []
    for value in step_strings(load(path).steps):
        plain = re.sub(r"[\^$\\]", "", value).lower()
        hits.extend(f"{value!r} matches the firmware's {line!r}" for line in lines
                    if line in plain or (len(plain) >= 6 and line.startswith(plain)))
    return hits


def test_the_firmware_line_list_is_real() -> None:
    lines = firmware_lines()
    # The list the check relies on holds the lines the old catalog used.
    for old in ("flash: writing slot", "tls: offering", "session stored"):
        assert any(line.startswith(old) for line in lines), (old, sorted(lines))


@pytest.mark.parametrize("path", sorted((ROOT / "scenarios").glob("*.yaml")), ids=lambda p: p.stem)
def test_shipped_scenario_names_no_firmware_line(path: Path) -> None:
    assert firmware_text_in(path, firmware_lines()) == []


def test_the_check_catches_a_firmware_line(tmp_path: Path) -> None:
    """The old power-cut sweep, as it was: the check must flag it."""
    old = tmp_path / "old.yaml"
    old.write_text("schema: 1\nname: old\ndescription: d\nsteps:\n  - power_on:\n"
                   "  - cut_power_when: {line: \"^flash: writing slot\", delay: 0.01}\n"
                   "  - connect: {version: tls1.3}\n")
    assert firmware_text_in(old, firmware_lines())
