"""Malformed device files: each answered with file, line and key, never a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness import devicefile
from harness.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
SIM = (ROOT / "devices" / "sim.yaml").read_text()


def _edit(old: str, new: str) -> str:
    assert old in SIM, old
    return SIM.replace(old, new, 1)


def _line_of(text: str, needle: str) -> int:
    for number, line in enumerate(text.splitlines(), 1):
        if (line == needle) if needle.endswith(":") else (needle in line):
            return number
    raise AssertionError(needle)


# (edited file text, text of the line the error must point at, key, words in the message)
CASES = [
    (_edit("schema: 1", "schema: 7"), "schema: 7", "schema", "unsupported schema version"),
    (_edit("  dialect: keysight-e36300\n", ""), "supply:", "supply.dialect", "missing"),
    (_edit("  channel: 1\n", "  channel: 0\n"), "channel: 0", "supply.channel", "start at 1"),
    (_edit("  ovp: 3.6", "  ovp: 3.0"), "ovp: 3.0", "supply.ovp", "below the set-point"),
    (_edit("  baudrate: 115200", "  baudrate: fast"), "baudrate: fast", "console.baudrate", "expected a baud rate"),
    (_edit("  boot_ready: \"^ready$\"", "  boot_ready: \"^ready($\""), "boot_ready: \"^ready($", "firmware.boot_ready",
     "regular expression"),
    (_edit("  reset_cause: \"^reset cause: (?P<cause>\\\\S+)\"", "  reset_cause: \"^reset cause: \\\\S+\""),
     "reset_cause: \"^reset", "firmware.reset_cause", "(?P<cause>"),
    (_edit("      send: \"connect {host} {port} {version} {sni}\"",
           "      send: \"connect {hots} {port} {version} {sni}\""), "connect {hots}",
     "firmware.commands.connect.send", "unknown placeholder {hots}"),
    (_edit("  key_type: ec", "  key_type: dsa"), "key_type: dsa", "server.key_type", "ec or rsa"),
    (_edit("  safe_state: {output: off}", "  safe_state: {output: on}"), "safe_state: {output: on}",
     "supply.safe_state", "output on needs volts"),
    (_edit("  safe_state: {output: off}", "  safe_state: {output: off, volt: 3}"), "safe_state: {output: off, volt",
     "supply.safe_state", "unknown key(s) volt"),
    (_edit("  safe_state: {output: off}", "  safe_state: {output: maybe}"), "safe_state: {output: maybe}", "supply.safe_state.output",
     "on or off"),
    (_edit("  discharge_below: 0.3 ", "  dischrge_below: 0.3 "), "dischrge_below", "supply.dischrge_below",
     "did you mean 'discharge_below'"),
    (_edit("    uart: \"^uart (?P<value>\\\\S+)$\"", "    uart: \"^uart (\\\\S+)$\""), "uart: \"^uart",
     "bench.resources.uart", "(?P<value>"),
    (_edit("  url: \"{bench.uart}\"", "  url: \"{bench.uarts}\""), "{bench.uarts}", "console.url",
     "unknown placeholder"),
    (_edit("  key_type: ec", "  key_type: ec\n  protocol: mqqt"), "protocol: mqqt", "server.protocol",
     "did you mean 'mqtt'"),
    (_edit("  prompt: \"sim> \"", "  prompt: \"sim> \"\n  versions: [tls1.2, tls13]"), "versions: [tls1.2, tls13]",
     "firmware.versions", "did you mean 'tls1.3'"),
    (_edit("  prompt: \"sim> \"", "  prompt: \"sim> \"\n  version_tokens:\n    tls1.4: \"1.4\""), "tls1.4: ",
     "firmware.version_tokens.tls1.4", "unknown version"),
    (_edit("  prompt: \"sim> \"", "  prompt: \"sim> \"\n  events:\n    offer: \"^tls: (offer\""), "offer: ",
     "firmware.events.offer", "regular expression"),
    (_edit("  prompt: \"sim> \"", "  prompt: \"sim> \"\n  autoconnect: true"), "    connect:",
     "firmware.commands.connect", "connects by itself"),
    (_edit("  session_stored: \"^session stored$\"\n", "  autoconnect: true\n").replace(
        "    connect:\n      send: \"connect {host} {port} {version} {sni}\"\n"
        "      ok: \"^connect ok resumed=(?P<resumed>yes|no)\"\n"
        "      fail: \"^connect failed: (?P<reason>.*)\"\n      timeout: 30\n", ""),
     "autoconnect: true", "firmware.autoconnect", "needs firmware.session_stored"),
]


@pytest.mark.parametrize("text,needle,key,words", CASES, ids=[c[2] for c in CASES])
def test_malformed_device_file(tmp_path: Path, text: str, needle: str, key: str, words: str) -> None:
    path = tmp_path / "bench.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        devicefile.load(path)
    err = info.value
    assert err.key == key, str(err)
    assert err.line == _line_of(text, needle), str(err)
    assert words in str(err), str(err)
    assert str(err).startswith(f"{path}:{err.line}: {key}: ")


def test_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="nowhere.yaml: file not found"):
        devicefile.load(tmp_path / "nowhere.yaml")


@pytest.mark.parametrize("path", sorted((ROOT / "devices").glob("*.yaml")), ids=lambda p: p.stem)
def test_shipped_device_files_load(path: Path) -> None:
    spec = devicefile.load(path)
    assert spec.name and spec.supply.dialect


def test_autoconnect_device_needs_no_shell(tmp_path: Path) -> None:
    """A device that connects on its own after boot is expressible: no connect command."""
    text = SIM.replace("  commands:\n    connect:\n      send: \"connect {host} {port} {version} {sni}\"\n"
                       "      ok: \"^connect ok resumed=(?P<resumed>yes|no)\"\n"
                       "      fail: \"^connect failed: (?P<reason>.*)\"\n      timeout: 30\n",
                       "  autoconnect: true\n  commands:\n")
    assert "autoconnect: true" in text
    path = tmp_path / "auto.yaml"
    path.write_text(text)
    spec = devicefile.load(path)
    assert spec.firmware.autoconnect and "connect" not in spec.firmware.commands


def test_versions_tokens_protocol_are_read(tmp_path: Path) -> None:
    text = _edit("  prompt: \"sim> \"", "  prompt: \"sim> \"\n  versions: [tls1.2]\n  version_tokens:\n"
                 "    tls1.2: \"1.2\"\n    auto: \"\"\n  events:\n    offer: \"^tls: offer\"")
    text = text.replace("  key_type: ec", "  key_type: ec\n  protocol: mqtt\n  app_timeout: 120")
    path = tmp_path / "dev.yaml"
    path.write_text(text)
    spec = devicefile.load(path)
    fw = spec.firmware
    assert fw.versions == ["tls1.2"]
    assert fw.version_tokens == {"tls1.2": "1.2", "tls1.3": "tls1.3", "auto": ""}
    assert fw.event("offer") == "^tls: offer" and fw.event("flash_write") == "^flash: writing slot"
    assert fw.event("nothing") is None
    assert (spec.server.protocol, spec.server.app_timeout) == ("mqtt", 120)


def test_bad_device_file_stops_pytest_with_one_line(tmp_path: Path) -> None:
    """`pytest --device bad.yaml`: exit code 4, file:line: key, no traceback, nothing powered."""
    import subprocess
    import sys

    bad = tmp_path / "bad.yaml"
    bad.write_text(CASES[2][0])
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--device", str(bad),
                           "--run-dir", str(tmp_path / "runs"), "scenarios/first_boot_full_handshake.yaml"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 4, out
    assert f"device file error: {bad}:{_line_of(CASES[2][0], 'channel: 0')}: supply.channel:" in out, out
    assert "Traceback" not in out and not (tmp_path / "runs").exists()
