"""The pieces behind the personalities, without a bench: exact bytes and rules.

The end-to-end proofs are in test_personalities.py; these pin the formats a
device file's patterns depend on (log prefixes, line ends, MQTT bytes, the
``{extra}`` placeholder) so a change to them fails here, precisely.
"""

from __future__ import annotations

import warnings

import pytest

from devices.sim.power import DEFAULT_FIRMWARE, DEFAULT_SETTINGS, FirmwareStartError, build_command

with warnings.catch_warnings():  # tlslite-ng imports asyncore (deprecated in 3.11): not ours to fix
    warnings.simplefilter("ignore", DeprecationWarning)
    from devices.sim.firmware.appproto import mqtt_connect, mqtt_publish
    from devices.sim.firmware.personality import Personality, Target, UsageError, parse_tokens, parse_versions
    from devices.sim.firmware.style import Level, LineEditor, Style


def fixed_clock(t: float):
    return lambda: t


VALUES = dict(DEFAULT_SETTINGS, python="py", flash="f.bin", variant="correct", reset_cause="power-on",
              state_fd="5", workdir="/w")
TODAY = ["py", "-m", "devices.sim.firmware", "--flash", "f.bin", "--variant", "correct", "--reset-cause",
         "power-on", "--state-fd", "5", "--ca", "", "--page-ms", "15"]


def test_default_template_unchanged_without_extra():
    assert build_command(DEFAULT_FIRMWARE, VALUES) == TODAY


def test_extra_is_split_like_a_shell():
    values = dict(VALUES, extra="--app mqtt --prompt 'dev$ ' --hold 5")
    assert build_command(DEFAULT_FIRMWARE, values) == TODAY + ["--app", "mqtt", "--prompt", "dev$ ", "--hold", "5"]
    # Inside a word it is plain text, like any placeholder.
    assert build_command("fw --x={extra}", dict(VALUES, extra="a b")) == ["fw", "--x=a b"]
    with pytest.raises(FirmwareStartError, match="bad value of {extra}"):
        build_command(DEFAULT_FIRMWARE, dict(VALUES, extra="'unclosed"))


def test_own_placeholders_from_set_values():
    template = DEFAULT_FIRMWARE.replace("{extra}", "--app {app} --autoconnect {target}")
    argv = build_command(template, dict(VALUES, app="mqtt", target="127.0.0.1:4433:server.test"))
    assert argv[-4:] == ["--app", "mqtt", "--autoconnect", "127.0.0.1:4433:server.test"]


def test_log_prefixes():
    boot = 100.0
    esp = Style(log_format="espidf", clock=fixed_clock(boot + 1.2345), booted=boot)
    assert esp.line("session stored") == "I (1234) fw: session stored\r\n"
    assert esp.line("connect failed: x", Level.ERROR) == "E (1234) fw: connect failed: x\r\n"
    zep = Style(log_format="zephyr", clock=fixed_clock(boot + 3723.004005), booted=boot)
    assert zep.line("ready", Level.WARN) == "[01:02:03.004,005] <wrn> fw: ready\r\n"
    assert Style().line("ready") == "ready\r\n"


def test_colour_prompt_and_erase_line():
    s = Style(shell="plain", prompt="dev$ ", color=True, eol="lf")
    assert s.line("ready") == "\x1b[0;32mready\x1b[0m\n"
    assert s.line("oops", Level.WARN) == "\x1b[0;33moops\x1b[0m\n"
    assert [s.prompt_text() for _ in range(3)] == [
        "\x1b[1;32mdev$ \x1b[m", "\r\x1b[K\x1b[1;32mdev$ \x1b[m", "\x1b[1;32mdev$ \x1b[m"]
    assert Style().prompt_text() == "sim> "


def test_mixed_eol_cycles():
    s = Style(eol="mixed")
    assert [s.line_end() for _ in range(4)] == ["\r\n", "\n", "\r", "\r\n"]


@pytest.mark.parametrize("shell, echo", [("sim", ["ab", "\r\n"]), ("plain", [])])
def test_line_editor_echo(shell, echo):
    ed = LineEditor(Style(shell=shell))
    actions = ed.feed(b"ab") + ed.feed(b"\r\n")
    assert [t for k, t in actions if k == "echo"] == echo
    assert [t for k, t in actions if k == "line"] == ["ab"]


def test_version_words():
    p = Personality(tokens=parse_tokens("tls1.2=1.2,tls1.3=1.3,auto=any"), unknown_version="auto")
    assert p.split_connect_args("h", ["1.2", "server.test"]) == ("tls1.2", "server.test")
    assert p.split_connect_args("h", ["tls1.2", "server.test"]) == ("auto", "server.test")
    assert p.split_connect_args("h", ["tls1.3"]) == ("auto", "h")
    assert p.split_connect_args("h", []) == ("auto", "h")
    assert p.connect_usage() == "connect <host> <port> [1.2|1.3|any] [<server-name>]"
    default = Personality()
    with pytest.raises(UsageError, match=r"unknown TLS version '1.2' \(tls1.2, tls1.3, auto\)"):
        default.split_connect_args("h", ["1.2", "server.test"])
    omit = Personality(tokens=parse_tokens("tls1.2=1.2,tls1.3=1.3,auto="), unknown_version="auto")
    assert omit.split_connect_args("h", ["server.test"]) == ("auto", "server.test")
    assert omit.split_connect_args("h", ["1.3"]) == ("tls1.3", "h")
    with pytest.raises(ValueError):
        parse_tokens("tls1.4=x")


def test_stack_versions_limit_the_offer():
    only12 = Personality(versions=parse_versions("tls1.2"))
    assert only12.offer_range("tls1.3") == ((3, 3), (3, 3))
    assert only12.offer_range("auto") == ((3, 3), (3, 3))
    assert Personality().offer_range("auto") == ((3, 3), (3, 4))
    assert Personality(versions=("tls1.3",)).offer_range("tls1.2") == ((3, 4), (3, 4))
    with pytest.raises(ValueError):
        parse_versions("tls1.1")


def test_autoconnect_target():
    assert Target.parse("127.0.0.1:4433:server.test") == Target("127.0.0.1", 4433, "server.test")
    assert Target.parse("10.0.0.1:443") == Target("10.0.0.1", 443, "10.0.0.1")
    for bad in ("host", "host:x", "host:0", ":1"):
        with pytest.raises(ValueError):
            Target.parse(bad)


def test_mqtt_packets():
    assert mqtt_connect("simfw-1") == (b"\x10\x13\x00\x04MQTT\x04\x02\x00\x3c\x00\x07simfw-1")
    assert mqtt_publish("simfw/state", b"online") == b"\x30\x13\x00\x0bsimfw/stateonline"
    long = mqtt_publish("t", b"x" * 200)
    assert long[:3] == b"\x30\xcb\x01"  # 203 = 0x4b | 0x80, then 1: the variable-length encoding
