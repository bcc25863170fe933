"""The ``labgrid`` section of a device file: mistakes named by file, line and key before anything runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness import devicefile
from harness.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
SIM = (ROOT / "devices" / "sim.yaml").read_text()


def _file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "dev.yaml"
    path.write_text(text)
    return path


def test_the_console_comes_from_the_place_when_the_file_names_none(tmp_path: Path) -> None:
    text = SIM.replace('  url: "{bench.uart}"\n', "", 1) + "\nlabgrid:\n  place: rig1\n  coordinator: 'h:20408'\n"
    spec = devicefile.load(_file(tmp_path, text))
    assert spec.console.url == devicefile.LABGRID_CONSOLE
    assert (spec.labgrid.place, spec.labgrid.coordinator, spec.labgrid.power) == ("rig1", "h:20408", "supply")


def test_the_coordinator_defaults_to_lg_coordinator(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LG_COORDINATOR", "lab:20408")
    spec = devicefile.load(_file(tmp_path, SIM + "\nlabgrid:\n  place: rig1\n"))
    assert spec.labgrid.coordinator == "lab:20408"
    monkeypatch.delenv("LG_COORDINATOR")
    with pytest.raises(ConfigError, match=r"dev.yaml:\d+: labgrid.coordinator: missing"):
        devicefile.load(_file(tmp_path, SIM + "\nlabgrid:\n  place: rig1\n"))


@pytest.mark.parametrize("section, expected", [
    ("labgrid:\n  place: rig1\n  coordinator: h:1\n  power: relay\n",
     r"labgrid.power: expected supply .* or labgrid .*, got 'relay'"),
    ("labgrid:\n  place: rig1\n  coordinator: h:1\n  plcae: x\n", r"labgrid.plcae: unknown key"),
    ("labgrid:\n  coordinator: h:1\n", r"labgrid.place: missing"),
    ("labgrid:\n  place: rig1\n  coordinator: h:1\n  power: labgrid\n  off_time: 0\n",
     r"labgrid.off_time: must be more than 0 s"),
])
def test_labgrid_section_mistakes(tmp_path: Path, section: str, expected: str) -> None:
    with pytest.raises(ConfigError, match=expected):
        devicefile.load(_file(tmp_path, SIM + "\n" + section))


def test_a_power_switch_sets_and_measures_nothing(tmp_path: Path) -> None:
    """With power: labgrid the supply section may only give the safe state; the reset cause is required."""
    switched = SIM + "\nlabgrid:\n  place: rig1\n  coordinator: h:1\n  power: labgrid\n"
    with pytest.raises(ConfigError, match=r"supply.resource: .*with labgrid.power: labgrid"):
        devicefile.load(_file(tmp_path, switched))
    only_safe = devicefile.load(_file(tmp_path, switched.replace(
        SIM[SIM.index("supply:\n"):SIM.index("\nconsole:")], "supply:\n  safe_state: {output: off}\n")))
    assert only_safe.supply.voltage is None and only_safe.supply.min_off == 2.0
    assert only_safe.supply.sample_rate == 0
    no_cause = switched.replace(SIM[SIM.index("supply:\n"):SIM.index("\nconsole:")], "")
    no_cause = no_cause.replace('  reset_cause: "^reset cause: (?P<cause>\\\\S+)"\n', "")
    assert "reset_cause" not in no_cause
    with pytest.raises(ConfigError, match=r"labgrid.power: .*firmware.reset_cause is required"):
        devicefile.load(_file(tmp_path, no_cause))
