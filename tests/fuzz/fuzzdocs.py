"""Hypothesis strategies that make user files: the shipped ones broken, and nonsense.

Five families, for each kind of file (scenario, device, supply dialect):

- :func:`mutated` a shipped file, read as data, with one to three things
  broken (a key deleted, renamed or added, a value replaced by a value of the
  wrong type, a huge one, an alias bomb, a tagged scalar that does not
  construct, ...), written back as YAML in a random style and sometimes also
  broken as text (a tab, a BOM, a NUL, a byte that is not UTF-8, a line
  duplicated or cut, CR line ends, a very long line);
- :func:`at_an_edge`: a shipped file with exactly one value moved to the
  edge of its kind (a NaN, 2**63, a port of 65536, an empty or huge string),
  to find what validation lets through;
- :func:`with_payload`: a shipped file with one value replaced, as text, by
  one of a catalogue of hostile YAML snippets (deep nesting, billion laughs,
  recursive aliases, wrong tags, huge numbers, merge keys, format specs and
  regular expressions that blow up), or the whole file replaced by a hostile
  document;
- :func:`random_yaml`: random documents that use the kind's own keys with
  random values;
- :func:`random_bytes`: bytes, text, and shipped files cut short and
  continued with noise.

A file is ``bytes``: non-UTF-8 and BOMs must reach the loader as they would
from disk.
"""

from __future__ import annotations

import datetime
import functools
import re
from pathlib import Path
from typing import Any, Callable

import yaml
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parents[2]
SOURCES = {"scenario": ROOT / "scenarios", "device": ROOT / "devices", "dialect": ROOT / "harness" / "dialects"}


#: libyaml's reader where there is one: the shipped files are good, only speed matters here
_FAST_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@functools.cache
def seeds(kind: str) -> tuple[tuple[str, str], ...]:
    """The shipped files of ``kind``: (name, text), the starting points of every mutation."""
    return tuple((p.name, p.read_text(encoding="utf-8")) for p in sorted(SOURCES[kind].glob("*.yaml")))


def _words(value: Any, out: set[str]) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            out.add(str(key))
            _words(item, out)
    elif isinstance(value, list):
        for item in value:
            _words(item, out)
    elif isinstance(value, str) and len(value) < 40:
        out.add(value)


@functools.cache
def vocabulary(kind: str) -> tuple[str, ...]:
    """Every key and short string of the shipped files: random documents built from them get past
    the first "unknown key" and reach the deeper checks."""
    out: set[str] = set()
    for _, text in seeds(kind):
        _words(yaml.load(text, Loader=_FAST_LOADER), out)
    return tuple(sorted(out))


@functools.cache
def _seed_data(kind: str) -> tuple[Any, ...]:
    return tuple(yaml.load(text, Loader=_FAST_LOADER) for _, text in seeds(kind))


# -- values that break things ------------------------------------------------------------------


class Raw:
    """YAML text put in a document as written (a tag, a huge number), where PyYAML would not write it."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return f"Raw({self.text[:60]!r}{'...' if len(self.text) > 60 else ''})"


def _bomb_flow(levels: int, width: int = 9) -> str:
    """Billion laughs in one flow list: level n is ``width`` aliases of level n-1."""
    parts = ["&l0 [" + ", ".join(["lol"] * width) + "]"]
    for n in range(1, levels):
        parts.append(f"&l{n} [" + ", ".join([f"*l{n - 1}"] * width) + "]")
    return "[" + ", ".join(parts) + f", *l{levels - 1}]"


def _bomb_map(levels: int, width: int = 9) -> str:
    parts = ["a0: &l0 {" + ", ".join(f"k{i}: lol" for i in range(width)) + "}"]
    for n in range(1, levels):
        parts.append(f"a{n}: &l{n} {{" + ", ".join(f"k{i}: *l{n - 1}" for i in range(width)) + "}")
    return "{" + ", ".join(parts) + "}"


#: hostile scalars and flow values, written inline after a key
INLINE_PAYLOADS: tuple[str, ...] = (
    # tags a value cannot be constructed as
    "!!int abc", "!!int ''", "!!float foo", "!!bool maybe", "!!timestamp foo", "!!timestamp 2001-02-30",
    "!!null x", "!!map foo", "!!seq foo", "!!str [a, b]", "!!str {a: 1}", "!!map [a, b]", "!!seq {a: 1}",
    "!!binary '@@@'", "!!binary aGVsbG8=", "!!set {a, b}", "!!set [a]", "!!omap [a, b]", "!!omap [{a: 1}, {a: 2}]",
    "!!pairs [{a: 1}]", "!!pairs foo", "!!python/object:os.system x", "!!python/name:os.system",
    "!foo bar", "!<tag:yaml.org,2002:int> x", "!!merge x", "!!value x",
    # dates and numbers YAML 1.1 reads implicitly
    "2001-13-45", "2001-02-30", "2001-12-14t21:59:43.10-25:00", "2002-12-14 99:99:99", "0000-00-00",
    "9" * 5000, "-" + "9" * 5000, "0x" + "f" * 5000, "0o" + "7" * 6000, "0b" + "1" * 20000,
    "1" + "0" * 400, "1e999", "-1e999", ".nan", ".NaN", ".inf", "-.inf", "1_000_000", "190:20:30",
    "99999999999999999999:59", "0x_", "1e", "0b2", "+.5", "1.5e-400", "18446744073709551616",
    # aliases
    "*undefined", "&a [*a]", "&a {x: *a}", "&a [1, [2, *a]]", _bomb_flow(9), _bomb_flow(6, 20), _bomb_map(8),
    "&a [x, x] ", "[&a x, *a, *a]",
    # nesting
    "[" * 60 + "]" * 60, "[" * 120 + "]" * 120, "[" * 5000 + "]" * 5000, "{a: " * 100 + "x" + "}" * 100,
    "{a: " * 3000 + "x" + "}" * 3000, "[" * 5000, "{" * 300,
    # keys that are not plain values, merges
    "{[a]: 1}", "{{a: 1}: 2}", "{? [x]: 1}", "{<<: 1}", "{<<: [1]}", "{<<: *undefined}", "{<<: {a: 1}, a: 2}",
    "{a: 1, a: 1}", "{null: 1}", "{~: x}", "{1: 1}", "{true: x}", "{'': x}", "{1.5: x}", "{2001-01-01: x}",
    # huge collections and strings
    "[" + ", ".join(["1"] * 5000) + "]", "{" + ", ".join(f"k{i}: {i}" for i in range(2000)) + "}",
    '"' + "x" * 100000 + '"', "x" * 50000, "'" + "\\" * 5000 + "'",
    # templates and patterns that break late
    '"{host:>999999999}"', '"{volts:>999999999}"', '"{volts:.999999999f}"', '"{channel:999999999999999999999}"',
    '"{channel:,>2000000000d}"', '"{host:zz}"', '"{a"', '"}"', '"{}"', '"{0}"', '"{host!x}"', '"{host.__class__}"',
    '"{volts[0]}"', '"{bench.}"', '"{python:{run_dir}}"',
    '"a{4294967296}"', '"a{1,4294967296}"', '"(?P<value>x){999999999}"', '"' + "(" * 3000 + ")" * 3000 + '"',
    '"(?P<value>"', '"(?P<code>\\d+)(?P<code>x)"', '"[z-a]"', '"(?<=a+)b"', '"\\\\"',
    '"(?P<cause>\\S+)' + "x" * 100000 + '"',
    '"(?P<value>' + "(" * 150 + ")" * 150 + ')"',
    # odd text
    '"\\0"', '"\\x00"', '"\\uFEFF"', '"\\u2028"', '"\\U0001F600"', '"\\e[31m"', "'\ufeff'", "~", "null", "''",
    "|\n", ">-\n", "'unterminated", '"unterminated', "[unclosed", "{unclosed", "@reserved", "`reserved", "%x",
    "- a", "? x", ": x", "&", "*", "!", "!!", "|9", ">9999999",
)

#: whole documents that are hostile as a whole
DOCUMENTS: tuple[str, ...] = (
    "", " ", "\n", "---", "--- !!map", "...", "--- |\n  text\n", "%YAML 1.1\n---\n", "%YAML 2.0\n---\na: 1\n",
    "%YAML 1.1\n%YAML 1.1\n---\n", "%TAG ! tag:example.com,2000:\n---\n!foo x\n", "%FOO bar\n---\n",
    "a: 1\n---\nb: 2\n", "--- 1\n--- 2\n", "- a\n- b\n", "hello\n", "42\n", "~\n", "!!binary aGVsbG8=\n",
    "\ufeff", "\ufeff\ufeffa: 1\n", "\ufeffschema: 1\n", "a: b: c\n", "a:\n\t- b\n", "\ta: 1\n",
    "? [a]\n: 1\n", "? |\n  multi\n: 1\n", "&a a: 1\n", "*a\n", "&a [*a]\n", "<<: {x: 1}\n",
    _bomb_flow(9) + "\n", "lol: " + _bomb_map(9) + "\n",
    "a:\n" + "".join("  " * i + "- \n" for i in range(1, 300)),
    "".join("  " * i + f"k{i}:\n" for i in range(400)) + "  " * 400 + "x\n",
    "".join(" " * i + "- " for i in range(0, 4000, 2)) + "x\n",
    "[" * 20000, "- " * 20000 + "x\n", "x: " + "y" * 300_000 + "\n", "#" + "c" * 300_000 + "\n", "#" * (2**20 + 1),
    "a: 1\n" * 5, "a: &x 1\nb: *x\nc: *y\n", "\x00", "a: \x00\n", "\x1b[31mred\x1b[0m: 1\n",
    "a: 1\r\nb: 2\r\n", "a: 1\rb: 2\r", "a: 1\x85b: 2\n", "a: 1\u2028b: 2\n", "\udcff",
)

#: strings a value of the wrong kind is made from: the dangerous, the plausible, the empty
STRINGS: tuple[str, ...] = (
    "", " ", "{", "}", "{x}", "{version}", "{a", "{host:>999999999}", "{volts:.99999999f}", "{host:zz}", "(",
    "a{4294967296}", "(?P<value>\\S+)", "(?P<cause>x)", "(?P<code>\\d+)", "discharged", "tls1.2", "tls1.3",
    "TLSv1.3", "auto", "on", "off", "yes", "no", "null", "~", ".nan", "0x10", "1e999", "-", "*a", "&a", "!!int",
    "#", ": ", "- ", "@", "`", "%", "'", '"', "\\", "\t", "\u2028", "\ufeff", "\U0001d11e", "\x85",
    "\x1b[31m", "a" * 1000, "é", "refused", "resumed", "full", "ticket", "psk", "connect", "none", "line",
)


#: numbers at the edges: what a valid-looking file may hold where a number goes
EDGE_NUMBERS: tuple[Any, ...] = (
    0, -1, 1, 0.0, -0.0, -0.5, 0.001, 1e-300, 5e-324, 1e300, 1.7976931348623157e308, float("nan"), float("inf"),
    float("-inf"), 2**31, 2**63 - 1, 2**63, -(2**63), 2**64, 10**30, 65535, 65536, 3.3e9, 86400 * 365 * 100,
)


def edges(value: Any) -> st.SearchStrategy[Any]:
    """Values of the same kind as ``value``, at its edges: a number's limits, text's dangers."""
    if isinstance(value, bool):
        return st.sampled_from([not value, "yes", "no", "on", "off", 1, 0, None, "true"])
    if isinstance(value, (int, float)):
        return st.one_of(st.sampled_from([float("nan"), float("inf"), float("-inf")]),
                         st.sampled_from(EDGE_NUMBERS), st.sampled_from(EDGE_NUMBERS), st.just(-value),
                         st.just(value * 1000), st.just(float(value)), st.just(str(value)), st.floats())
    if isinstance(value, str):
        return st.one_of(st.sampled_from(STRINGS), st.just(value * 50 if len(value) < 2000 else value),
                         st.just(value + "{"),
                         st.just(value.upper()), st.just(value[: len(value) // 2]), st.text(max_size=12))
    if isinstance(value, list):
        return st.one_of(st.just([]), st.just(value * 50 if len(value) < 200 else value), st.just(value[:1]),
                         st.just([None]))
    if isinstance(value, dict):
        return st.one_of(st.just({}), st.just(None), st.just(list(value)))
    return st.sampled_from([0, "", [], {}, "x"])


def _huge_list(n: int) -> Raw:
    """A list of ``n`` numbers, as text (writing it with PyYAML would take longer than reading it)."""
    return Raw("[" + ", ".join(map(str, range(n))) + "]")


def _deep(depth: int) -> Any:
    """Nested lists ``depth`` deep, as text (PyYAML's own writer recurses and would fail first)."""
    return Raw("[" * depth + "x" + "]" * depth)


def _bomb(levels: int) -> Any:
    """Billion laughs as Python data: the writer gives repeated objects an anchor and aliases."""
    level: Any = ["lol"] * 9
    for _ in range(levels):
        level = [level] * 9
    return level


@functools.cache
def scalars() -> st.SearchStrategy[Any]:
    return st.one_of(
        st.none(), st.booleans(),
        st.integers(min_value=-5, max_value=100), st.integers(min_value=-(2**70), max_value=2**70),
        st.floats(allow_nan=True, allow_infinity=True),
        st.text(max_size=20), st.sampled_from(STRINGS),
        st.dates(),
        st.datetimes(min_value=datetime.datetime(1, 1, 2), max_value=datetime.datetime(9999, 12, 30)),
        st.sampled_from(INLINE_PAYLOADS).map(Raw),
    )


@functools.cache
def nasty_values(words: tuple[str, ...]) -> st.SearchStrategy[Any]:
    """A value of any kind: scalars, small trees, and the few big ones that blew things up before."""
    keys = st.one_of(st.sampled_from(words), st.text(max_size=8), st.integers(-2, 3), st.booleans(), st.none())
    small = st.recursive(
        st.one_of(scalars(), st.sampled_from(words)),
        lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(keys, inner, max_size=4)),
        max_leaves=12,
    )
    big = st.one_of(
        st.integers(min_value=30, max_value=3000).map(_deep),
        st.integers(min_value=3, max_value=9).map(_bomb),
        st.sampled_from([1000, 5000]).map(_huge_list),
        st.sampled_from([10_000, 50_000]).map(lambda n: Raw("x" * n)),
        st.sampled_from([1000, 5000]).map(lambda n: Raw("'" + "(" * n + ")" * n + "'")),
    )
    # big values are slow to write and read: one draw in sixteen keeps the CI run short
    return st.integers(min_value=0, max_value=15).flatmap(lambda i: big if i == 0 else small)


# -- writing data back as YAML -------------------------------------------------------------------


class _Dumper(yaml.CSafeDumper if hasattr(yaml, "CSafeDumper") else yaml.SafeDumper):  # type: ignore[misc]
    """PyYAML's writer (libyaml's when there is one: the generator's speed is the run's)."""


def _represent_raw(dumper: yaml.SafeDumper, raw: Raw) -> yaml.ScalarNode:
    return dumper.represent_scalar("tag:yaml.org,2002:str", f"RAWTOKEN{id(raw)}X")


def _represent_any(dumper: yaml.SafeDumper, value: Any) -> yaml.Node:
    return dumper.represent_scalar("tag:yaml.org,2002:str", str(value))


_Dumper.add_representer(Raw, _represent_raw)
_Dumper.add_multi_representer(object, _represent_any)   # anything odd a mutation made: as its text


def _raws(value: Any, out: dict[str, str], seen: set[int]) -> None:
    if id(value) in seen:
        return
    seen.add(id(value))
    if isinstance(value, Raw):
        out[f"RAWTOKEN{id(value)}X"] = value.text
    elif isinstance(value, dict):
        for key, item in value.items():
            _raws(key, out, seen)
            _raws(item, out, seen)
    elif isinstance(value, list):
        for item in value:
            _raws(item, out, seen)


def dump(doc: Any, style: dict[str, Any]) -> str:
    """``doc`` as YAML in ``style``, with every :class:`Raw` written as its own text."""
    text = yaml.dump(doc, Dumper=_Dumper, sort_keys=False, **style)
    raws: dict[str, str] = {}
    _raws(doc, raws, set())
    for token, raw in raws.items():
        text = text.replace(token, raw)
    return text


STYLES = st.fixed_dictionaries({
    "default_flow_style": st.sampled_from([False, False, None, True]),
    "indent": st.sampled_from([2, 2, 4, 9]),
    "width": st.sampled_from([80, 80, 20, 100000]),
    "allow_unicode": st.booleans(),
    "explicit_start": st.booleans(),
})


# -- breaking data ---------------------------------------------------------------------------


def _paths(value: Any) -> list[tuple]:
    """The places in a document: the paths of mappings' keys and lists' items.

    Each object is entered once and at most 2,000 places are listed: a
    document that already holds an alias bomb or a 20,000-item list from an
    earlier mutation must not take the generator down with it.
    """
    out: list[tuple] = []
    seen: set[int] = set()
    todo: list[tuple[Any, tuple]] = [(value, ())]
    while todo and len(out) < 2000:
        current, path = todo.pop(0)
        out.append(path)
        if id(current) in seen or len(path) > 12:
            continue
        if isinstance(current, (dict, list)):
            seen.add(id(current))
        if isinstance(current, dict):
            todo.extend((item, path + (key,)) for key, item in list(current.items())[:200])
        elif isinstance(current, list):
            todo.extend((item, path + (index,)) for index, item in enumerate(current[:200]))
    return out


def _copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value


def _get(doc: Any, path: tuple) -> Any:
    for part in path:
        doc = doc[part]
    return doc


def _typo(word: str, how: int) -> str:
    if not word:
        return "x"
    i = how % len(word)
    return [word[:i] + word[i + 1:], word[:i] + word[i] * 2 + word[i + 1:], word.upper(),
            word[:i] + "_" + word[i:], word + " ", word.replace("_", "-")][how % 6]


@st.composite
def mutated(draw: st.DrawFn, kind: str) -> bytes:
    """A shipped file with one to three things broken, as data, then maybe as text."""
    index = draw(st.integers(min_value=0, max_value=len(seeds(kind)) - 1))
    doc = _copy(_seed_data(kind)[index])
    words = vocabulary(kind)
    values = nasty_values(words)
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        doc = _mutate_once(draw, doc, words, values, kind)
    text = dump(doc, draw(STYLES))
    data = text.encode("utf-8", "surrogatepass")
    if draw(st.integers(min_value=0, max_value=3)) == 0:
        data = draw(text_damage(data))
    return data


@st.composite
def at_an_edge(draw: st.DrawFn, kind: str) -> bytes:
    """A shipped file with exactly one value moved to an edge of its kind (a NaN voltage, a
    port of 65536, an empty pattern): a file that still looks right, to find what is let through."""
    index = draw(st.integers(min_value=0, max_value=len(seeds(kind)) - 1))
    doc = _copy(_seed_data(kind)[index])
    leaves = [path for path in _paths(doc) if path and not isinstance(_get(doc, path), (dict, list))]
    numbers = [path for path in leaves if isinstance(_get(doc, path), (int, float))]
    if numbers and draw(st.booleans()):   # numbers are few and most of what validation checks
        leaves = numbers
    path = draw(st.sampled_from(leaves or _paths(doc)[1:] or [()]))
    if path:
        parent = _get(doc, path[:-1])
        parent[path[-1]] = draw(edges(parent[path[-1]]))
    return dump(doc, {"default_flow_style": False, "allow_unicode": True}).encode("utf-8", "surrogatepass")


def _mutate_once(draw: st.DrawFn, doc: Any, words: tuple[str, ...], values: st.SearchStrategy[Any],
                 kind: str) -> Any:
    path = draw(st.sampled_from(_paths(doc)))
    op = draw(st.sampled_from(["edge", "edge", "edge", "replace", "replace", "delete", "rename", "insert", "wrap",
                               "swap", "alias"]))
    if not path:   # the whole document
        return draw(values) if op in ("replace", "delete") else [doc] if op == "wrap" else doc
    parent, last = _get(doc, path[:-1]), path[-1]
    if op == "edge":   # the same kind of value at its edges: the file still looks right
        parent[last] = draw(edges(parent[last]))
    elif op == "replace":
        parent[last] = draw(values)
    elif op == "delete":
        del parent[last]
    elif op == "wrap":
        parent[last] = draw(st.sampled_from([[parent[last]], {"x": parent[last]}, {parent[last]: 1}
                                             if isinstance(parent[last], (str, int, type(None))) else []]))
    elif op == "swap":   # a real value from elsewhere in a shipped file of the same kind: plausible, misplaced
        other = _copy(draw(st.sampled_from(_seed_data(kind))))
        parent[last] = _get(other, draw(st.sampled_from(_paths(other))))
    elif op == "alias":   # the same object twice: the writer makes an anchor and an alias
        target = _get(doc, draw(st.sampled_from(_paths(doc))))
        if not any(target is _get(doc, path[:i]) for i in range(len(path) + 1)):
            parent[last] = target
    elif isinstance(parent, dict):
        if op == "rename":
            new = draw(st.one_of(st.integers(0, 20).map(lambda n: _typo(str(last), n)), st.sampled_from(words),
                                 st.text(max_size=10), st.integers(-3, 3), st.booleans(), st.none(),
                                 st.sampled_from(["on", "yes", "no", "~", "<<", "1.5", "2001-01-01"])))
            items = list(parent.items())
            parent.clear()
            parent.update((new if k == last else k, v) for k, v in items)
        else:   # insert a key, known or not
            parent[draw(st.one_of(st.sampled_from(words), st.text(max_size=10)))] = draw(values)
    elif isinstance(parent, list):
        parent.insert(draw(st.integers(0, len(parent))), draw(values))
    return doc


# -- breaking text ---------------------------------------------------------------------------

_BAD_BYTES = (b"\xff", b"\xfe\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\x80", b"\xc0\xaf",
              b"\xe2\x82")
_INSERTS = ("\t", "\x00", "\ufeff", "\r", "\x85", "\u2028", "\x1b", "\x7f", "\x0c", "\x0b", " \t ", ":", "- ",
            "#", "&a ", "*a ", "!!", "{", "[", "'", '"', "|", ">", "? ", "---\n", "...\n", "%YAML 1.1\n",
            "<<: ", "\\", "\U0001F600", "\ud800")


@st.composite
def text_damage(draw: st.DrawFn, data: bytes) -> bytes:
    """``data`` broken as a file on disk can be: bytes, line ends, indentation, one line."""
    lines = data.split(b"\n")
    at = draw(st.integers(min_value=0, max_value=len(data)))
    row = draw(st.integers(min_value=0, max_value=max(0, len(lines) - 1)))
    op = draw(st.sampled_from(["insert", "insert", "bad_byte", "bom", "tab_indent", "dup_line", "del_line",
                               "truncate", "long_line", "crlf", "cr", "utf16", "noise", "swap_lines", "indent"]))
    if op == "insert":
        piece = draw(st.sampled_from(_INSERTS)).encode("utf-8", "surrogatepass")
        return data[:at] + piece + data[at:]
    if op == "bad_byte":
        return data[:at] + draw(st.sampled_from(_BAD_BYTES)) + data[at:]
    if op == "bom":
        return draw(st.sampled_from([b"\xef\xbb\xbf", b"\xef\xbb\xbf\xef\xbb\xbf", b"\xff\xfe"])) + data
    if op == "tab_indent":
        lines[row] = re.sub(rb"^ +", lambda m: b"\t" * max(1, len(m.group()) // 2), lines[row])
        if not lines[row].startswith(b"\t"):
            lines[row] = b"\t" + lines[row]
    elif op == "dup_line":
        lines.insert(row, lines[row])
    elif op == "del_line":
        del lines[row]
    elif op == "truncate":
        return data[:at]
    elif op == "long_line":
        size = draw(st.sampled_from([5_000, 50_000, 300_000]))
        lines[row] = lines[row] + draw(st.sampled_from([b" # ", b"", b"x"])) + b"y" * size
    elif op == "crlf":
        return data.replace(b"\n", b"\r\n")
    elif op == "cr":
        return data.replace(b"\n", b"\r")
    elif op == "utf16":
        return data.decode("utf-8", "replace").encode(draw(st.sampled_from(["utf-16", "utf-16-le", "utf-32"])))
    elif op == "noise":
        return data[:at] + draw(st.binary(max_size=20)) + data[at:]
    elif op == "swap_lines":
        other = draw(st.integers(min_value=0, max_value=max(0, len(lines) - 1)))
        lines[row], lines[other] = lines[other], lines[row]
    elif op == "indent":
        lines[row] = draw(st.sampled_from([b" ", b"  ", b"   "])) + lines[row] if draw(st.booleans()) \
            else lines[row][1:]
    return b"\n".join(lines)


# -- hostile snippets in shipped files ------------------------------------------------------------

_KEY_LINE = re.compile(r"^(\s*(?:- )?[\w.-]+:)[ \t]*(.*)$")


@st.composite
def with_payload(draw: st.DrawFn, kind: str) -> bytes:
    """A shipped file with one value replaced by a hostile snippet, or a hostile whole document."""
    if draw(st.integers(min_value=0, max_value=5)) == 0:
        text = draw(st.sampled_from(DOCUMENTS))
        return text.encode("utf-8", "surrogatepass")
    _, text = draw(st.sampled_from(seeds(kind)))
    lines = text.split("\n")
    rows = [i for i, line in enumerate(lines) if _KEY_LINE.match(line) and not line.lstrip().startswith("#")]
    row = draw(st.sampled_from(rows))
    head = _KEY_LINE.match(lines[row]).group(1)
    payload = draw(st.sampled_from(INLINE_PAYLOADS))
    if "\n" in payload:   # a block scalar header: its content goes on the next lines
        indent = len(head) - len(head.lstrip()) + 2
        payload = payload + " " * indent + "content\n"
    lines[row] = f"{head} {payload}"
    others = [i for i in rows if i != row]
    if others and draw(st.integers(min_value=0, max_value=3)) == 0:   # and an alias of it (&a) elsewhere
        other = draw(st.sampled_from(others))
        lines[other] = f"{_KEY_LINE.match(lines[other]).group(1)} *a"
    data = "\n".join(lines).encode("utf-8", "surrogatepass")
    if draw(st.integers(min_value=0, max_value=4)) == 0:
        data = draw(text_damage(data))
    return data


# -- random documents --------------------------------------------------------------------------


@st.composite
def random_yaml(draw: st.DrawFn, kind: str) -> bytes:
    """A random document made of the kind's own words: keys it knows, values of every kind."""
    return dump(draw(_documents(vocabulary(kind))), draw(STYLES)).encode("utf-8", "surrogatepass")


@functools.cache
def _documents(words: tuple[str, ...]) -> st.SearchStrategy[Any]:
    values = nasty_values(words)
    plausible = st.recursive(st.one_of(st.sampled_from(words), scalars()),
                             lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                     st.dictionaries(st.sampled_from(words), inner, max_size=5)),
                             max_leaves=12)
    return st.one_of(
        st.dictionaries(st.sampled_from(words), st.one_of(plausible, plausible, values), max_size=10),
        st.dictionaries(st.one_of(st.sampled_from(words), st.text(max_size=10), st.integers()), values,
                        max_size=6),
        values,
    )


@st.composite
def random_bytes(draw: st.DrawFn, kind: str) -> bytes:
    """Noise: bytes, text, and a shipped file cut short and continued with noise."""
    how = draw(st.integers(min_value=0, max_value=3))
    if how == 0:
        return draw(st.binary(max_size=2000))
    if how == 1:
        return draw(st.text(max_size=400)).encode("utf-8", "surrogatepass")
    _, text = draw(st.sampled_from(seeds(kind)))
    data = text.encode("utf-8")
    cut = draw(st.integers(min_value=0, max_value=len(data)))
    tail = draw(st.one_of(st.binary(max_size=200), st.text(max_size=100).map(
        lambda t: t.encode("utf-8", "surrogatepass"))))
    return data[:cut] + tail + (data[cut:] if how == 3 else b"")


FAMILIES: dict[str, Callable[[str], st.SearchStrategy[bytes]]] = {
    "mutated": mutated, "edge": at_an_edge, "payload": with_payload, "random_yaml": random_yaml,
    "random_bytes": random_bytes,
}
