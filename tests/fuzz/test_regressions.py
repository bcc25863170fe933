"""Each loader bug the file fuzzer found, pinned by the smallest file that showed it.

Every test names the input, what the loader did before the fix (in its
docstring) and the clear ``file:line: key: message`` it gives now.  They run
in the pytest process, without the fuzzer's worker, so each is a plain
reproduction; the ones that used to hang carry a timeout so a regression
fails instead of stalling the suite.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import pytest

from harness import devicefile, dialect, scenario
from harness.errors import ConfigError

SCENARIO = """\
schema: 1
name: fuzz_regression
description: A minimal scenario the regressions break one way at a time.
timeout: 90
parameters:
  version: [tls1.2, tls1.3]
steps:
  - power_on:
  - connect: {version: "{version}"}
  - expect_server: full
"""

DEVICE = """\
schema: 1
name: fuzz-regression
supply:
  resource: "TCPIP::127.0.0.1::5025::SOCKET"
  dialect: keysight-e36300
  voltage: 3.3
  safe_state: {output: off}
console:
  url: "socket://127.0.0.1:7000"
firmware:
  boot_ready: "^ready$"
  commands:
    connect:
      send: "connect {host} {port} {version} {sni}"
      ok: "^connect ok"
    erase_session:
      send: erase
      ok: "^erased$"
"""

DIALECT = """\
name: fuzz-regression
manual: "A programming manual, chapter SCPI"
channels: [1, 2]
commands:
  identify: "*IDN?"
  voltage: "VOLT {volts:.3f},(@{channel})"
  current_limit: "CURR {amps:.4f},(@{channel})"
  output_on: "OUTP ON,(@{channel})"
  output_off: "OUTP OFF,(@{channel})"
  measure_voltage: "MEAS:VOLT? (@{channel})"
  measure_current: "MEAS:CURR? (@{channel})"
errors: []
"""

LOADERS: dict[str, tuple[str, Callable[[Path], Any]]] = {
    "scenario": (SCENARIO, scenario.load), "device": (DEVICE, devicefile.load), "dialect": (DIALECT, dialect.load),
}


def _bomb(levels: int = 9) -> str:
    """Billion laughs in one flow list: nine levels of nine aliases are 387 million values."""
    parts = ["&l0 [" + ", ".join(["lol"] * 9) + "]"]
    parts += [f"&l{n} [" + ", ".join([f"*l{n - 1}"] * 9) + "]" for n in range(1, levels)]
    return "[" + ", ".join(parts) + f", *l{levels - 1}]"


def _write(tmp_path: Path, kind: str, data: str | bytes) -> Path:
    path = tmp_path / f"{kind}.yaml"
    path.write_bytes(data if isinstance(data, bytes) else data.encode("utf-8"))
    return path


def _refused(tmp_path: Path, kind: str, old: str, new: str | bytes) -> ConfigError:
    """Load the minimal file of ``kind`` with ``old`` replaced by ``new``; it must be refused clearly."""
    text, load = LOADERS[kind]
    assert old in text, old
    data = text.encode("utf-8").replace(old.encode("utf-8"), new if isinstance(new, bytes) else new.encode("utf-8"))
    path = _write(tmp_path, kind, data)
    with pytest.raises(ConfigError) as info:
        load(path)
    err = info.value
    assert err.file == str(path), str(err)
    assert len(str(err)) < 600, f"{len(str(err))} characters: {str(err)[:300]}"
    return err


def _where(err: ConfigError) -> tuple[int | None, str | None]:
    return err.line, err.key


def test_the_minimal_files_load(tmp_path: Path) -> None:
    """The starting points of every regression below are good files."""
    for kind, (text, load) in LOADERS.items():
        load(_write(tmp_path, kind, text))


# -- values PyYAML cannot build --------------------------------------------------------------


@pytest.mark.parametrize("value, words", [
    ("2001-13-45", "cannot read '2001-13-45' as a date (month must be in 1..12)"),   # was ValueError
    ("!!bool maybe", "cannot read 'maybe' as true or false"),                         # was KeyError
    ("!!int abc", "cannot read 'abc' as a whole number"),                             # was ValueError
    ("!!float foo", "cannot read 'foo' as a number"),                                 # was ValueError
    ("!!timestamp foo", "cannot read 'foo' as a date"),                               # was AttributeError
    ("!!map foo", "the tag tag:yaml.org,2002:map needs a mapping here"),              # was ValueError
    ("!!seq foo", "the tag tag:yaml.org,2002:seq needs a list here"),                 # was AttributeError
])
def test_a_value_yaml_cannot_build_is_named_at_its_line(tmp_path: Path, value: str, words: str) -> None:
    """``timeout: 2001-13-45`` (and tags on values they do not fit) raised PyYAML's own
    ValueError, KeyError or AttributeError out of the loader: a traceback."""
    err = _refused(tmp_path, "scenario", "timeout: 90", f"timeout: {value}")
    assert _where(err) == (4, "timeout") and err.message == words


def test_a_number_too_large_to_print(tmp_path: Path) -> None:
    """``timeout: 999...`` (5,000 digits) raised ValueError (Python's 4,300-digit limit)."""
    err = _refused(tmp_path, "scenario", "timeout: 90", "timeout: " + "9" * 5000)
    assert _where(err) == (4, "timeout")
    assert err.message == "number too large (5000 characters): expected at most 9223372036854775807"


def test_a_hex_number_too_large_for_a_float(tmp_path: Path) -> None:
    """``voltage: 0xfff...`` raised OverflowError from ``float()`` in the supply section."""
    err = _refused(tmp_path, "device", "voltage: 3.3", "voltage: 0x" + "f" * 5000)
    assert _where(err) == (6, "supply.voltage") and err.message.startswith("number too large")


@pytest.mark.parametrize("value", [".nan", ".inf", "-.inf", "1.0e+999"])
def test_a_number_that_is_not_finite_is_refused(tmp_path: Path, value: str) -> None:
    """``voltage: .nan`` was accepted: a NaN set-point would have reached the supply."""
    err = _refused(tmp_path, "device", "voltage: 3.3", f"voltage: {value}")
    assert _where(err) == (6, "supply.voltage") and err.message.startswith("expected a finite number")


# -- size, depth and aliases -------------------------------------------------------------------


@pytest.mark.timeout(60)
@pytest.mark.parametrize("nesting", ["[" * 3000 + "]" * 3000, "{a: " * 3000 + "x" + "}" * 3000])
def test_deep_nesting_is_refused_not_a_recursion_error(tmp_path: Path, nesting: str) -> None:
    """``timeout: [[[...]]]`` 3,000 deep raised RecursionError in PyYAML's composer."""
    err = _refused(tmp_path, "scenario", "timeout: 90", f"timeout: {nesting}")
    assert err.line == 4 and err.message == "nested more than 64 levels deep"


@pytest.mark.timeout(60)
@pytest.mark.parametrize("old", ["timeout: 90", "version: [tls1.2, tls1.3]"])
def test_billion_laughs_is_refused_before_anything_walks_it(tmp_path: Path, old: str) -> None:
    """Nine levels of nine aliases under ``timeout`` or a parameter: the complaint's repr, or
    ``expand()`` over 387 million values, ran out of time and memory (killed after 10 s)."""
    key = old.split(":")[0]
    err = _refused(tmp_path, "scenario", old, f"{key}: {_bomb()}")
    assert err.message.startswith("expands to more than 100000 values")


def test_an_alias_inside_its_own_anchor(tmp_path: Path) -> None:
    """``&a [*a]`` is refused with its line (it was, by PyYAML; the size check must not loop on it)."""
    err = _refused(tmp_path, "scenario", "timeout: 90", "timeout: &a [1, *a]")
    assert err.line == 4


def test_a_complaint_quotes_a_big_value_briefly(tmp_path: Path) -> None:
    """``schema: [bomb of 4 levels]`` gave a 101,161-character message quoting all of it."""
    err = _refused(tmp_path, "scenario", "schema: 1", f"schema: {_bomb(4)}")
    assert _where(err) == (1, "schema") and "..." in err.message


def test_a_complaint_about_a_parameter_value_is_short(tmp_path: Path) -> None:
    """A parameter value of nested lists of long strings was quoted twice in full (3,746 characters)."""
    value = "[" + ", ".join(["[" + ", ".join(["x" * 100] * 6) + "]"] * 6) + "]"
    err = _refused(tmp_path, "scenario", "version: [tls1.2, tls1.3]", f"version: [{value}]")
    assert _where(err) == (9, "steps[1].connect.version") and err.message.startswith("with parameter version")


def test_a_long_undefined_alias_is_quoted_briefly(tmp_path: Path) -> None:
    """``manual: *ayyy...`` (5,000 characters): PyYAML's message quoted the whole name."""
    err = _refused(tmp_path, "dialect", "manual:", "manual: *a" + "y" * 5000 + "\nmanual2:")
    assert err.line == 2 and "undefined alias" in err.message


@pytest.mark.timeout(60)
def test_a_repeat_that_expands_forever(tmp_path: Path) -> None:
    """``repeat: 1000000000000``: ``expand()`` (what collection calls next) built a list of
    10**12 tests, a hang."""
    err = _refused(tmp_path, "scenario", "timeout: 90", "repeat: 1000000000000")
    assert _where(err) == (4, "repeat") and err.message.startswith("expands to more than 10000 tests")


# -- what the text of a file can hold --------------------------------------------------------


@pytest.mark.timeout(60)
def test_a_file_too_big_to_be_written_by_hand(tmp_path: Path) -> None:
    """A 28 MB scenario (a description repeated 125,000 times) kept PyYAML busy for minutes."""
    err = _refused(tmp_path, "scenario", "description: A minimal",
                   "description: " + "A minimal scenario. " * 100_000 + "\n  A minimal")
    assert err.line is None and err.message.startswith("more than 1 MiB")


def test_a_nul_byte_has_a_line(tmp_path: Path) -> None:
    """A NUL said ``position 514`` of ``<unicode string>``: now the line."""
    err = _refused(tmp_path, "scenario", "timeout: 90", "timeout: 9\0")
    assert err.line == 4 and "'\\x00'" in err.message


def test_text_that_is_not_utf8_has_a_line(tmp_path: Path) -> None:
    """A stray 0xff byte said ``can't decode byte 0xff in position 514``: now the line."""
    err = _refused(tmp_path, "scenario", "timeout: 90", b"timeout: 9\xff")
    assert err.line == 4 and err.message.startswith("not UTF-8 text: byte 0xff")


@pytest.mark.parametrize("text", ["", "hello\n", "- a\n"])
def test_an_empty_or_bare_dialect_names_its_file(tmp_path: Path, text: str) -> None:
    """An empty dialect file (or a bare word) was reported as ``?: a dialect file must be a mapping``."""
    path = _write(tmp_path, "dialect", text)
    with pytest.raises(ConfigError) as info:
        dialect.load(path)
    assert info.value.file == str(path) and str(info.value).startswith(str(path))


def test_a_key_yaml_reads_as_zero_is_named(tmp_path: Path) -> None:
    """A dialect key ``0:`` gave ``unknown key`` with no key: ConfigError drops a falsy key."""
    err = _refused(tmp_path, "dialect", "errors: []\n", "errors: []\n0: 1\n")
    assert _where(err) == (13, "0")


def test_a_merge_key_may_be_overridden(tmp_path: Path) -> None:
    """``{<<: {output: on}, output: off}`` was refused as ``key appears twice``; YAML lets a
    mapping override what it merges."""
    path = _write(tmp_path, "device", DEVICE.replace("safe_state: {output: off}",
                                                     "safe_state: {<<: {output: on}, output: off}"))
    assert devicefile.load(path).supply.safe_state["output"] == "off"


def test_a_key_written_twice_is_still_refused(tmp_path: Path) -> None:
    err = _refused(tmp_path, "device", "voltage: 3.3", "voltage: 3.3\n  voltage: 3.0")
    assert _where(err) == (7, "voltage") and err.message == "key appears twice in the same mapping"


def test_safe_state_keys_that_are_not_text(tmp_path: Path) -> None:
    """``safe_state: {output: off, 1: x}`` said ``'<' not supported between instances of 'str' and 'int'``."""
    err = _refused(tmp_path, "device", "safe_state: {output: off}", "safe_state: {output: off, 1: x, a: b}")
    assert _where(err) == (7, "supply.safe_state") and "unknown key(s) 1, a" in err.message


# -- patterns and templates that break late ----------------------------------------------------


@pytest.mark.parametrize("pattern, words", [
    ("a{4294967296}", "the repetition number is too large"),   # was OverflowError
    ("(" * 3000 + ")" * 3000, "groups nested too deeply"),      # was RecursionError
])
def test_a_pattern_python_cannot_compile(tmp_path: Path, pattern: str, words: str) -> None:
    err = _refused(tmp_path, "device", 'boot_ready: "^ready$"', f'boot_ready: "{pattern}"')
    assert _where(err) == (11, "firmware.boot_ready") and words in err.message


@pytest.mark.timeout(60)
def test_a_dialect_template_with_a_huge_width(tmp_path: Path) -> None:
    """``identify: "{volts:>900000000}"`` was accepted after formatting a 900 MB string at load."""
    err = _refused(tmp_path, "dialect", '"*IDN?"', '"{volts:>900000000}"')
    assert _where(err) == (5, "commands.identify") and "900000000 is more than 1000" in err.message


@pytest.mark.parametrize("send, words", [
    ("erase {python:{run_dir}}", "a placeholder inside a format spec"),   # was ValueError in fill()
    ("erase {}", "{} needs a name"),                                      # was HarnessError in fill()
    ("erase {python:zz}", "formats neither text nor a number"),          # was ValueError in fill()
    ("erase {python:>999999999}", "999999999 is more than 1000"),         # was a gigabyte in fill()
])
def test_a_device_template_that_cannot_be_filled(tmp_path: Path, send: str, words: str) -> None:
    """Accepted at load, these failed in ``fill()`` when the run sent the command."""
    err = _refused(tmp_path, "device", "send: erase", f'send: "{send}"')
    assert _where(err) == (17, "firmware.commands.erase_session.send") and words in err.message


def test_a_parameter_value_of_the_wrong_type(tmp_path: Path) -> None:
    """``wait: "{t}"`` with ``t: [abc]`` was accepted; the engine's ``float("abc")`` failed mid-run."""
    text = SCENARIO.replace("  version: [tls1.2, tls1.3]\n", "  version: [tls1.2, tls1.3]\n  t: [1, abc]\n")
    err = _refused(tmp_path, "scenario", SCENARIO, text.replace("  - power_on:\n", '  - power_on:\n  - wait: "{t}"\n'))
    assert _where(err) == (10, "steps[1].wait.seconds")
    assert err.message.startswith("with parameter t = 'abc': expected number")


def test_a_parameter_value_that_breaks_a_pattern(tmp_path: Path) -> None:
    """``expect_console: "^{p}$"`` with ``p: ["("]`` was accepted; ``re.compile`` failed mid-run."""
    text = SCENARIO.replace("  version: [tls1.2, tls1.3]\n", '  version: [tls1.2, tls1.3]\n  p: ["("]\n')
    err = _refused(tmp_path, "scenario", SCENARIO,
                   text.replace("  - power_on:\n", '  - power_on:\n  - expect_console: "^{p}$"\n'))
    assert _where(err) == (10, "steps[1].expect_console.pattern") and "with parameter p = '('" in err.message


def test_a_parameter_value_holding_a_placeholder(tmp_path: Path) -> None:
    """``seed: "{t}"`` with ``t: ['{version}']`` reached the engine's ``int()`` as ``'{version}'``."""
    text = SCENARIO.replace("  version: [tls1.2, tls1.3]\n", "  version: [tls1.2, tls1.3]\n  t: ['{version}']\n")
    err = _refused(tmp_path, "scenario", SCENARIO,
                   text.replace("  - power_on:\n", '  - power_on:\n  - corrupt_session: {seed: "{t}"}\n'))
    assert _where(err) == (7, "parameters.t") and "cannot hold a {placeholder}" in err.message
