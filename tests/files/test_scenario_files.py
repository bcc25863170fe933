"""Malformed scenario files: each answered with file, line and key, never a traceback.

Also checks that every shipped scenario parses, and that a malformed file in
a scenarios/ folder fails collection with the same one-line message.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from harness.errors import ConfigError
from harness.scenario import load

ROOT = Path(__file__).resolve().parents[2]

GOOD = """\
schema: 1
name: ok
description: a valid scenario
steps:
  - power_on:
  - connect: {version: tls1.3}
  - expect_server: full
"""

# (file text, expected line, expected key, words in the message)
MALFORMED = [
    ("name: x\ndescription: d\nsteps: [{power_on: }]\n", 1, "schema", "missing"),
    ("schema: 2\nname: x\ndescription: d\nsteps: [{power_on: }]\n", 1, "schema", "unsupported"),
    ("schema: 1\nname: x\ndescription: d\nsteps:\n  - power_on:\n  - powr_cycle: {}\n", 6,
     "steps[1].powr_cycle", "did you mean 'power_cycle'"),
    ("schema: 1\nname: x\ndescription: d\nsteps:\n  - power_off: {off_time: soon}\n", 5,
     "steps[0].power_off.off_time", "discharged"),
    ("schema: 1\nname: x\ndescription: d\nsteps:\n  - connect: {version: tls1.4}\n", 5,
     "steps[0].connect.version", "tls1.2"),
    ("schema: 1\nname: x\ndescription: d\nsteps:\n  - power_on:\n  - expect_server: resumd\n", 6,
     "steps[1].expect_server.outcome", "did you mean 'resumed'"),
    ("schema: 1\nname: x\ndescription: d\nsteps:\n  - expect_server:\n      outcome: refused\n"
     "      reason: too-old\n", 7, "steps[0].expect_server.reason", "expired"),
    ("schema: 1\nname: x\ndescription: d\nsteps:\n  - cut_power_when: {line: '(unclosed', delay: 0}\n", 5,
     "steps[0].cut_power_when.line", "regular expression"),
    ("schema: 1\nname: x\ndescription: d\ntimeout: -3\nsteps:\n  - power_on:\n", 4, "timeout", "> 0"),
    ("schema: 1\nname: x\ndescription: d\nparameters:\n  version: [tls1.2]\nsteps:\n"
     "  - connect: {version: '{versoin}'}\n", 7, "connect.version", "unknown parameter"),
    ("schema: 1\nname: x\ndescription: d\nserver:\n  lifetime: 10\n  tikets: false\nsteps: [{power_on: }]\n",
     6, "server.tikets", "did you mean 'tickets'"),
    ("schema: 1\nname: x\ndescription: d\nsteps:\n  - repeat:\n      times: 0\n      steps: [{power_cycle: }]\n",
     6, "steps[0].repeat.times", "at least 1"),
    ("schema: 1\nname: x\ndescription: d\nsteps:\n  - wait: 1\n    power_on:\n", 5, "steps[0]", "exactly one"),
    ("schema: 1\nname: x\nsteps:\n  - power_on:\n", 1, "description", "missing"),
    ("schema: 1\nname: x\ndescription: d\nsteps:\n  - wait: {seconds: 1\n", 6, None, "YAML syntax"),
]


@pytest.mark.parametrize("text,line,key,words", MALFORMED, ids=[f"case{i}" for i in range(len(MALFORMED))])
def test_malformed_scenario_named_by_file_line_key(tmp_path: Path, text: str, line: int, key: str | None,
                                                   words: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load(path)
    err = info.value
    assert err.file == str(path)
    assert err.line == line, str(err)
    assert err.key == key, str(err)
    assert words in str(err), str(err)
    assert str(err).startswith(f"{path}:{line}: ")


def test_good_scenario_parses(tmp_path: Path) -> None:
    path = tmp_path / "good.yaml"
    path.write_text(GOOD)
    scenario = load(path)
    assert [s.action for s in scenario.steps] == ["power_on", "connect", "expect_server"]
    assert scenario.steps[2].line == 7


@pytest.mark.parametrize("path", sorted((ROOT / "scenarios").glob("*.yaml")), ids=lambda p: p.stem)
def test_shipped_scenarios_parse(path: Path) -> None:
    scenario = load(path)
    assert scenario.name == path.stem
    assert scenario.description


def test_parameters_expand_into_tests(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(GOOD.replace("steps:", "parameters:\n  version: [tls1.2, tls1.3]\nrepeat: 2\nsteps:"))
    ids = [suffix for suffix, _ in load(path).expand()]
    assert ids == ["tls1.2-1", "tls1.2-2", "tls1.3-1", "tls1.3-2"]


def test_collection_error_is_one_clear_line(tmp_path: Path) -> None:
    """pytest on a folder with a broken scenario: the message, not a traceback."""
    scen = tmp_path / "scenarios"
    scen.mkdir()
    (scen / "broken.yaml").write_text(MALFORMED[2][0])
    proc = subprocess.run([sys.executable, "-m", "pytest", "-p", "fixtures.plugin", "--collect-only", "-q",
                           "--rootdir", str(tmp_path), "-c", "/dev/null", str(scen)],
                          capture_output=True, text=True, cwd=tmp_path, env={"PYTHONPATH": str(ROOT),
                                                                               "PATH": "/usr/bin:/bin"})
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert f"{scen / 'broken.yaml'}:6: steps[1].powr_cycle: unknown step action" in out, out
    assert "Traceback" not in out, out


# Inputs an earlier version answered with a traceback (found in review).
MORE_MALFORMED = [
    ("schema: 1\nname: x\ndescription: d\nparameters: {d: [1]}\nsteps:\n  - brownout: {volts: 1.8, duration: '{d}'}\n"
     "  - repeat: {times: '{d}', steps: [{power_cycle: }]}\n", 7, "steps[1].repeat.times", "whole number"),
    ("schema: 1\nname: x\ndescription: d\nserver: {versions: 5}\nsteps: [{power_on: }]\n", 4, "server.versions",
     "expected list or str"),
    ("schema: 1\nname: x\ndescription: d\nserver:\n  lifetime: abc\nsteps: [{power_on: }]\n", 5, "server.lifetime",
     "expected number"),
    ("schema: 1\nname: x\ndescription: d\nsteps:\n  - power_off:\n  - corrupt_session: {bytes: 0}\n", 6,
     "steps[1].corrupt_session.bytes", "at least 1"),
    ("schema: 1\nname: x\ndescription: d\nsteps:\n  - device: {command: set_clock, args: {unix: '{typo}'}}\n", 5,
     "device.args.unix", "unknown parameter {typo}"),
    # Found by fuzzing the schema helper: each was a traceback before.
    ("schema: 1\nname: x\ndescription: d\nsteps:\n  - cut_power_when: ''\n", 5, "steps[0].cut_power_when.line",
     "an empty pattern"),
    ("schema: 1\nname: x\ndescription: d\nparameters: {p: [1]}\nsteps:\n  - repeat: {times: 2, steps: '{p}'}\n", 6,
     "steps[0].repeat.steps", "expected a list of steps"),
    ("schema: 1\nname: x\ndescription: d\nparameters:\n  no: [1]\nsteps:\n  - wait: '{x}'\n", 5,
     "parameters.False", "YAML reads an unquoted yes/no"),
    ("schema: 1\nname: x\ndescription: d\nsteps:\n  - cut_power_when: {on: flash_write}\n", 5,
     "steps[0].cut_power_when.True", "YAML reads an unquoted on/off"),
]


@pytest.mark.parametrize("text,line,key,words", MORE_MALFORMED,
                         ids=[f"more{i}" for i in range(len(MORE_MALFORMED))])
def test_more_malformed_scenarios(tmp_path: Path, text: str, line: int, key: str, words: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load(path)
    assert (info.value.line, info.value.key) == (line, key), str(info.value)
    assert words in str(info.value), str(info.value)
