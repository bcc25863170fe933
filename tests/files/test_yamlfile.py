"""The one schema helper the device, scenario and dialect readers share.

Each complaint must name file, line and dotted key; these pin the rules the
three kinds of file rely on (a YAML true is not a number, an absent key is
placed at the line naming its section, a typo gets a "did you mean").
"""

from __future__ import annotations

import re

import pytest

from harness.errors import ConfigError
from harness.yamlfile import REQUIRED, Fields, Map, Wording, closest, listing, loads, unknown

TEXT = """\
supply:
  voltage: 3.3
  channel: true
  dialect: keysight
  ok: "^ok (?P<cause>x)$"
  bad: "^(unclosed"
  names: [a, b]
  empty: []
  nothing: ~
  section: {x: 1}
top: 1
"""


def _supply() -> Fields:
    doc = loads(TEXT, "bench.yaml")
    return Fields(doc).section("supply")


def _raises(call, line: int | None, key: str | None, message: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        call()
    err = info.value
    assert (err.file, err.line, err.key) == ("bench.yaml", line, key), str(err)
    assert message in err.message, str(err)
    return err


def test_closest_and_unknown_message() -> None:
    assert closest("voltge", {"voltage", "channel"}) == " (did you mean 'voltage'?)"
    assert closest("zzz", {"voltage"}) == ""
    assert listing({"b", "a"}) == "a, b" and listing(("b", "a")) == "b, a"
    assert unknown("key", "chanel", {"channel", "ovp"}) == \
        "unknown key (did you mean 'channel'?); allowed: channel, ovp"
    assert unknown("reason", "x", ("b", "a"), intro="known:", hint="") == "unknown reason; known: b, a"


def test_values_types_and_defaults() -> None:
    sec = _supply()
    assert sec.num("voltage") == 3.3 and isinstance(sec.num("voltage"), float)
    assert sec.num("current", 0.5) == 0.5
    assert sec.text("dialect") == "keysight"
    assert sec.text("nothing", if_null="") == ""
    _raises(lambda: sec.num("channel"), 3, "supply.channel", "expected a number, got True")
    assert sec.value("channel", (bool,), what="true or false") is True
    _raises(lambda: sec.num("voltage", whole=True), 2, "supply.voltage", "expected a whole number, got 3.3")
    _raises(lambda: sec.num("voltage", minimum=5), 2, "supply.voltage", "must be >= 5, got 3.3")


def test_absent_key_points_at_its_section() -> None:
    sec = _supply()
    err = _raises(lambda: sec.text("resource"), 1, "supply.resource", "missing (expected a string)")
    assert str(err) == "bench.yaml:1: supply.resource: missing (expected a string)"
    assert sec.text("resource", None) is None
    assert REQUIRED is not None


def test_regex_compiles_with_groups() -> None:
    sec = _supply()
    assert sec.regex("ok", groups=("cause",)) == "^ok (?P<cause>x)$"
    assert isinstance(sec.pattern("ok"), re.Pattern)
    assert sec.regex("absent", None) is None
    _raises(lambda: sec.regex("bad"), 6, "supply.bad", "not a valid regular expression")
    _raises(lambda: sec.regex("ok", groups=("value",)), 5, "supply.ok", "needs a named group (?P<value>...)")
    _raises(lambda: sec.regex("voltage", not_regex="expected a regular expression"), 2, "supply.voltage",
            "expected a regular expression")


def test_lists() -> None:
    sec = _supply()
    assert sec.list_of("names", str) == ["a", "b"]
    assert sec.list_of("dialect", str, single=True) == ["keysight"]
    assert sec.list_of("absent", default=[]) == []
    _raises(lambda: sec.list_of("empty", str, message="expected names", non_empty=True), 8, "supply.empty",
            "expected names")
    _raises(lambda: sec.list_of("names", lambda n: n == "a", message="only a"), 7, "supply.names", "only a")
    # an absent list has no line of its own: the complaint points at the section's first key
    _raises(lambda: sec.list_of("absent", message="expected the command"), 2, "supply.absent",
            "expected the command")
    assert sec.list_of("nothing", if_null=[]) == []


def test_sections_and_unknown_keys() -> None:
    top = Fields(loads(TEXT, "bench.yaml"))
    assert top.section("absent", required=False) is None
    _raises(lambda: top.section("absent"), 1, "absent", "missing section")
    _raises(lambda: top.section("top"), 11, "top", "expected a mapping")
    inner = top.section("supply").section("section")
    assert inner.path == "supply.section" and inner.map == {"x": 1}
    _raises(lambda: top.no_unknown({"supply", "tpo"}), 11, "top", "unknown key (did you mean 'tpo'?); allowed:")
    top.no_unknown({"supply", "top"})


def test_whole_mapping_complaints() -> None:
    sec = _supply()
    here, above = sec.error_here("say what"), sec.error_above("say what")
    assert (here.line, here.key, above.line, above.key) == (2, "supply", 1, "supply")
    with pytest.raises(ConfigError) as info:
        Fields.document(loads("- a\n", "f.yaml"), "f.yaml", "a device file is a mapping")
    assert str(info.value) == "f.yaml:1: a device file is a mapping"


def test_a_kind_of_file_keeps_its_own_words() -> None:
    wording = Wording(wrong_text="expected text, got {type}", unknown_intro="expected one of",
                      did_you_mean=False, raw_keys=True)
    doc = loads("name: 5\nnam: x\n", "d.yaml")
    top = Fields(doc, wording=wording)
    with pytest.raises(ConfigError, match="name: expected text, got int"):
        top.text("name")
    with pytest.raises(ConfigError) as info:
        top.no_unknown({"name"})
    assert info.value.message == "unknown key; expected one of name"


def test_a_shorthand_mapping_points_at_its_own_line() -> None:
    made = Fields(Map.at("s.yaml", 7, {"seconds": "soon"}, owner_line=6), "steps[0].wait")
    with pytest.raises(ConfigError) as info:
        made.num("seconds")
    assert (info.value.line, info.value.key) == (7, "steps[0].wait.seconds")
    assert made.error_above("x").line == 6
