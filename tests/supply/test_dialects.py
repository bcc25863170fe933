"""Every dialect against a pyvisa-sim instrument that encodes its manual."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness import dialect as dialects
from harness.errors import ConfigError, HarnessError, InstrumentError
from harness.supply import Supply

from supplykit import INSTRUMENTS, sim_instrument

ALL = dialects.available()

#: What each simulated model answers to *IDN? (from its manual's example).
IDENTITY = {
    "keysight-e36300": "E36312A", "keysight-e3631a": "E3631A", "rigol-dp800": "DP832",
    "rs-hmc804x": "HMC8043", "rs-nge100": "NGE103B", "siglent-spd3303x": "SPD3303X",
    "tti-cpx": "CPX400DP", "korad-ka3005p": "KA3005P",
}
#: The instrument's own error text for an out-of-range voltage (None: no error reporting).
ERROR_TEXT = {
    "keysight-e36300": '-222,"Data out of range"', "keysight-e3631a": '-222,"Data out of range"',
    "rigol-dp800": '-222,"Data out of range"', "rs-hmc804x": '-222,"Data out of range"',
    "rs-nge100": '-222,"Data out of range"', "siglent-spd3303x": "Parameter out of range",
    "tti-cpx": "120 (the numerical value sent with the command was too big or too small)",
    "korad-ka3005p": None,
}


def test_eight_dialects_each_with_a_manual_and_a_sim_description() -> None:
    assert set(ALL) == set(IDENTITY)
    for name in ALL:
        loaded = dialects.load(name)
        assert loaded.name == name
        assert len(loaded.manual) > 20, f"{name}: cite the programming manual"
        assert (INSTRUMENTS / f"{name}.yaml").exists(), f"{name}: no pyvisa-sim description"


@pytest.fixture(params=ALL)
def sim_supply(request: pytest.FixtureRequest, tmp_path: Path):
    resource, library = sim_instrument(request.param)
    supply = Supply(resource, request.param, channel=1, visa_library=library,
                    log_path=tmp_path / "supply.jsonl", watchdog=False)
    with supply:
        yield supply


def test_identify_configure_on_off_measure(sim_supply: Supply) -> None:
    name = sim_supply.dialect.name
    assert IDENTITY[name] in sim_supply.identify()
    sim_supply.configure(voltage=3.3, current_limit=0.5,
                         ovp=4.0 if sim_supply.dialect.has("ovp") else None)
    edge = sim_supply.on(settle=False)
    assert edge.kind == "on" and edge.volts == 3.3
    if sim_supply.dialect.has("output_state"):
        assert sim_supply.output_state() is True
    # Every description reads a constant 12-12.3 mA: proves the reply parsing
    # (TTi "0.012A", Korad five bytes "0.012", SCPI "0.0123").
    assert sim_supply.measure_current() == pytest.approx(0.012, abs=0.0005)
    assert sim_supply.measure_voltage() == pytest.approx(0.0)
    off = sim_supply.off(discharge_below=0.3)
    assert off.kind == "off"
    if sim_supply.dialect.has("output_state"):
        assert sim_supply.output_state() is False
    kinds = [e.kind for e in sim_supply.events]
    assert kinds.index("on") < kinds.index("off") < kinds.index("discharged")
    assert all(a.mono <= b.mono for a, b in zip(sim_supply.events, sim_supply.events[1:]))


def test_out_of_range_value_raises_with_the_instruments_own_text(sim_supply: Supply) -> None:
    name = sim_supply.dialect.name
    expected = ERROR_TEXT[name]
    command = sim_supply.dialect.render("voltage", channel=1, volts=99.0)[0]
    if expected is None:
        assert sim_supply.dialect.errors == ()  # said so in the data: nothing to ask
        sim_supply.configure(voltage=99.0)      # the real unit ignores it silently too
        return
    with pytest.raises(InstrumentError) as info:
        sim_supply.configure(voltage=99.0)
    assert expected in info.value.text
    assert info.value.command == command
    assert command in str(info.value) and expected in str(info.value)
    # The queue was drained: the next command goes through cleanly.
    sim_supply.configure(voltage=3.3)


def test_every_command_and_measurement_is_logged_with_both_clocks(tmp_path: Path) -> None:
    resource, library = sim_instrument("tti-cpx")
    log_path = tmp_path / "supply.jsonl"
    with Supply(resource, "tti-cpx", visa_library=library, log_path=log_path,
                watchdog=False) as supply:
        supply.configure(voltage=5.0, current_limit=0.1)
        supply.on(settle=False)
        supply.measure_voltage()
    records = [json.loads(line) for line in log_path.read_text().splitlines()]
    assert all("mono" in r and "wall" in r and "time" in r for r in records)
    writes = [r["command"] for r in records if r["kind"] == "write"]
    assert "V1 5.000" in writes and "I1 0.100" in writes and "OP1 1" in writes
    assert "V1O?" in writes and "EER?" in writes and "LOCAL" in writes
    replies = [r["reply"] for r in records if r["kind"] == "reply"]
    assert "0.000V" in replies
    assert [r["kind"] for r in records if r["kind"] in ("voltage", "on", "measure")] == \
        ["voltage", "on", "measure"]


def test_master_switch_and_selection_are_sent_from_the_data(tmp_path: Path) -> None:
    import pyvisa

    resource, library = sim_instrument("rs-hmc804x")
    with Supply(resource, "rs-hmc804x", channel=2, visa_library=library,
                watchdog=False) as supply:
        supply.configure(voltage=12.0)
        supply.on(settle=False)
        # Same simulated instrument, asked directly.
        probe = pyvisa.ResourceManager(library).open_resource(
            resource, read_termination="\n", write_termination="\n")
        assert probe.query("OUTP:MAST?") == "ON"
        probe.write("INST:NSEL 2")
        assert probe.query("VOLT?") == "12.000"
        assert probe.query("OUTP:CHAN?") == "ON"
        probe.write("INST:NSEL 1")
        assert probe.query("OUTP:CHAN?") == "OFF"
        probe.close()


def test_lan_port_comes_from_the_dialect() -> None:
    _, library = sim_instrument("tti-cpx")
    supply = Supply("TCPIP::localhost::SOCKET", "tti-cpx", visa_library=library, watchdog=False)
    assert supply.resource == "TCPIP::localhost::9221::SOCKET"
    with supply:
        assert "CPX400DP" in supply.identify()


def test_safe_is_idempotent_and_cheap(tmp_path: Path) -> None:
    resource, library = sim_instrument("keysight-e36300")
    log_path = tmp_path / "supply.jsonl"
    with Supply(resource, "keysight-e36300", visa_library=library, log_path=log_path,
                watchdog=False) as supply:
        supply.configure(voltage=3.3)
        supply.on(settle=False)
        assert supply.safe() is not None
        assert supply.safe() is None
        assert supply.output_state() is False
        supply.on(settle=False)           # on again re-arms it
        assert supply.safe() is not None
    writes = [json.loads(l).get("command") for l in log_path.read_text().splitlines()]
    assert writes.count("OUTP OFF,(@1)") == 2


def test_safe_state_on_at_a_voltage(tmp_path: Path) -> None:
    resource, library = sim_instrument("keysight-e36300")
    with Supply(resource, "keysight-e36300", visa_library=library, watchdog=False,
                safe_state={"output": "on", "volts": 3.3}) as supply:
        supply.safe()
        assert supply.output_state() is True
        assert supply.setpoint == 3.3


def test_exception_inside_with_applies_safe_state(tmp_path: Path) -> None:
    resource, library = sim_instrument("rigol-dp800")
    log_path = tmp_path / "supply.jsonl"
    with pytest.raises(RuntimeError):
        with Supply(resource, "rigol-dp800", visa_library=library, log_path=log_path,
                    watchdog=False) as supply:
            supply.configure(voltage=3.3)
            supply.on(settle=False)
            raise RuntimeError("scenario failed")
    kinds = [json.loads(l)["kind"] for l in log_path.read_text().splitlines()]
    assert kinds.index("safe") > kinds.index("on")
    assert ":OUTP CH1,OFF" in log_path.read_text()


def test_channel_and_ovp_that_the_model_does_not_have() -> None:
    _, library = sim_instrument("korad-ka3005p")
    with pytest.raises(ConfigError) as info:
        Supply("ASRL1::INSTR", "korad-ka3005p", channel=2, visa_library=library)
    assert "channel 2" in str(info.value) and "korad-ka3005p.yaml" in str(info.value)
    with Supply("ASRL1::INSTR", "korad-ka3005p", visa_library=library, watchdog=False) as s:
        with pytest.raises(HarnessError, match="no programmable OVP"):
            s.configure(ovp=5.0)


def test_unknown_dialect_names_the_known_ones() -> None:
    with pytest.raises(ConfigError, match="keysight-e36300"):
        dialects.load("agilent-e9999")


GOOD = (dialects.DIALECT_DIR / "keysight-e36300.yaml").read_text()


@pytest.mark.parametrize("old, new, key, message", [
    ('voltage: "VOLT {volts:.3f},(@{channel})"', 'voltage: "VOLT {volt:.3f},(@{channel})"',
     "commands.voltage", "unknown placeholder {volt}"),
    ('  output_off: "OUTP OFF,(@{channel})"\n', '  output_of: "OUTP OFF,(@{channel})"\n',
     "commands.output_of", "unknown command"),
    ("pattern: '^\\s*(?P<code>", "pattern: '^\\s*(?P<cod>", "errors[0].pattern",
     "named group (?P<code>"),
    ("channels: [1, 2, 3]", "channels: one", "channels", "expected a list"),
    ("  timeout: 2.0\n", "  timeout: fast\n", "transport.timeout", "expected a number"),
    ("  measure_current: \"MEAS:CURR? (@{channel})\"\n", "", "commands.measure_current",
     "is required"),
    ("replies:\n", "replies:\n  voltage: {length: 5}\n", "replies.voltage",
     "only for queries"),
])
def test_malformed_dialect_file_names_file_line_and_key(tmp_path: Path, old: str, new: str,
                                                        key: str, message: str) -> None:
    assert old in GOOD, old
    bad = GOOD.replace(old, new, 1)
    path = tmp_path / "broken.yaml"
    path.write_text(bad)
    with pytest.raises(ConfigError) as info:
        dialects.load(path)
    err = info.value
    assert err.file == str(path)
    assert err.key == key
    assert message in err.message
    assert err.line is not None
    line_text = bad.splitlines()[err.line - 1]
    leaf = key.split(".")[-1].split("[")[0]
    assert leaf in line_text or err.key.startswith("commands.measure_current"), \
        (err.line, line_text)
    # The driver refuses it the same way, before touching any instrument.
    with pytest.raises(ConfigError):
        Supply("TCPIP::localhost::5025::SOCKET", path, watchdog=False)


def test_yaml_syntax_error_has_a_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text(GOOD.replace("channels: [1, 2, 3]", "channels: [1, 2, 3"))
    with pytest.raises(ConfigError) as info:
        dialects.load(path)
    assert info.value.line is not None and "YAML syntax" in info.value.message
