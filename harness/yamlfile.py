"""YAML that remembers where every value came from, and one way to check it.

Device files, scenario files and supply dialects are written by people; a
mistake must be reported as ``file:line: key: what is wrong``, never as a
traceback.  PyYAML's node tree knows the line of every node, so mappings and
lists built here keep the line of each key and item beside the value.

:class:`Fields` reads one such mapping key by key (required keys, types where
a YAML ``true`` is not a number, ranges, regular expressions that compile,
lists, unknown keys with a "did you mean"), so that the three kinds of file
share one set of checks and differ only in their schema and their words.
"""

from __future__ import annotations

import difflib
import enum
import math
import re
import reprlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Collection, Iterable, Iterator

import yaml

from .errors import ConfigError


class Map(dict):
    """A mapping that knows its file, its line and the line of each key."""

    file: str = "?"
    line: int | None = None
    #: line of the key this mapping is the value of (``supply:``), for "missing" errors
    owner_line: int | None = None
    key_lines: dict

    @classmethod
    def at(cls, file: str, line: int | None, values: dict | None = None, *,
           owner_line: int | None = None) -> "Map":
        """A mapping at ``line`` of ``file`` with no key lines yet.

        The loader adds the line of each key; a mapping a shorthand stands for
        (``wait: 1.5`` is ``{seconds: 1.5}``) has none, so every complaint
        about it points at the shorthand's own line.
        """
        made = cls(values or {})
        made.file, made.line, made.owner_line, made.key_lines = file, line, owner_line, {}
        return made

    def line_of(self, key: str) -> int | None:
        return self.key_lines.get(key, self.line)

    def error(self, key: str | None, message: str, *, path: str | None = None) -> ConfigError:
        line = self.line_of(key) if key is not None else self.line
        return ConfigError(self.file, line, path or (None if key is None else _key_text(key)), message)


class Seq(list):
    """A list that knows its file, its line and the line of each item."""

    file: str = "?"
    line: int | None = None
    owner_line: int | None = None
    item_lines: list

    def line_of(self, index: int) -> int | None:
        if 0 <= index < len(self.item_lines):
            return self.item_lines[index]
        return self.line


#: How deep a file may nest mappings and lists.  The deepest shipped file nests
#: about eight levels; the limit keeps PyYAML's recursive composer, and every
#: check that walks a value, far from Python's recursion limit.
MAX_DEPTH = 64
#: How many values a file may hold once every alias is expanded.  An alias
#: costs nothing to parse but everything to walk: nine levels of nine aliases
#: ("billion laughs") are 387 million values to any check, repr or copy.
MAX_VALUES = 100_000
#: The largest file read.  The shipped files are a few kilobytes; PyYAML reads
#: about a megabyte a second, so a log or a dump named by mistake would look
#: like a hang before it looked like a mistake.
MAX_BYTES = 2**20
#: The largest whole number a file may hold: bigger ones mean nothing to a
#: bench, and past 4300 digits Python refuses to print them at all.
MAX_INT = 2**63

#: what YAML counts as a line break, for turning a character position into a line
_BREAKS = re.compile("\r\n|[\r\n\x85\u2028\u2029]")
#: the words for a tag when a value cannot be read as it
_TAG_WORDS = {"int": "a whole number", "float": "a number", "bool": "true or false", "null": "null",
              "timestamp": "a date", "binary": "base64 data", "str": "a string", "map": "a mapping",
              "seq": "a list", "set": "a set", "omap": "an ordered mapping", "pairs": "a list of pairs"}
#: the kind of node each collection tag needs (``!!map foo`` is a tag on the wrong kind)
_COLLECTION_TAGS = {"map": yaml.MappingNode, "set": yaml.MappingNode, "seq": yaml.SequenceNode,
                    "omap": yaml.SequenceNode, "pairs": yaml.SequenceNode}


class _Brief(reprlib.Repr):
    """``repr`` cut short: a complaint quotes a value, never a megabyte of it."""

    def __init__(self) -> None:
        super().__init__()
        self.maxlevel, self.maxdict, self.maxlist, self.maxtuple, self.maxset = 2, 4, 6, 6, 6
        self.maxstring, self.maxother, self.maxlong = 80, 80, 40

    def repr_Map(self, value: dict, level: int) -> str:
        return self.repr_dict(value, level)

    def repr_Seq(self, value: list, level: int) -> str:
        return self.repr_list(value, level)


_BRIEF = _Brief()


def brief(value: Any) -> str:
    """The ``repr`` of a user's value for a message: whole when short, cut with ``...`` when long."""
    text = _BRIEF.repr(value)
    return text if len(text) <= 200 else f"{text[:180]}...{text[-10:]}"


class Brief:
    """A value that formats as :func:`brief` (``{value!r}`` and ``{value}`` alike) and keeps
    number formats (``{value:g}``), for the message templates of :class:`Wording`."""

    def __init__(self, value: Any) -> None:
        self.value = value

    def __repr__(self) -> str:
        return brief(self.value)

    def __str__(self) -> str:
        return self.value if isinstance(self.value, str) and len(self.value) <= 80 else brief(self.value)

    def __format__(self, spec: str) -> str:
        return format(self.value, spec) if spec and isinstance(self.value, (int, float)) else str(self)


def _line_at(text: str, position: int) -> int:
    return len(_BREAKS.findall(text, 0, max(0, position))) + 1


def _tag_words(tag: str) -> str:
    name = tag.rsplit(":", 1)[-1]
    return _TAG_WORDS.get(name, f"tag {tag}")


def _make_loader(file: str) -> type:
    class Loader(yaml.SafeLoader):
        """PyYAML's safe loader, bounded: depth, expanded size, numbers, and every value it
        cannot build, each a :class:`ConfigError` at its line instead of a crash or a hang."""

        def __init__(self, stream: str) -> None:
            super().__init__(stream)
            self.depth = 0
            #: where the value being built sits: keys and [indexes] from the top
            self.path: list[str] = []

        def compose_node(self, parent: Any, index: Any) -> yaml.Node:
            if self.depth >= MAX_DEPTH:
                mark = self.peek_event().start_mark
                raise ConfigError(file, mark.line + 1, self.dotted(), f"nested more than {MAX_DEPTH} levels deep")
            self.depth += 1
            try:
                return super().compose_node(parent, index)
            finally:
                self.depth -= 1

        def dotted(self) -> str | None:
            """The dotted path of the value being built (``supply.voltage``, ``steps[2]``)."""
            out = ""
            for part in self.path:
                out += part if part.startswith("[") or not out else f".{part}"
            return out or None

        def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
            try:
                value = super().construct_object(node, deep)
            except (ConfigError, yaml.YAMLError):
                raise
            except Exception as exc:  # noqa: BLE001 - any value PyYAML cannot build is the user's mistake
                name = node.tag.rsplit(":", 1)[-1]
                what = _tag_words(node.tag)
                needs = _COLLECTION_TAGS.get(name)
                given = node.value if isinstance(node, yaml.ScalarNode) else f"a {node.id}"
                if needs is not None and not isinstance(node, needs):
                    message = f"the tag {node.tag} needs {what} here"
                elif name == "int" and isinstance(given, str) and len(given) > 40:
                    message = f"number too large ({len(given)} characters): expected at most {MAX_INT - 1}"
                else:
                    # Python's reason helps for a date (month 13) or base64; elsewhere it repeats the value
                    why = f" ({brief(str(exc))[1:-1]})" if isinstance(exc, ValueError) and name in (
                        "timestamp", "binary") and " object " not in str(exc) else ""
                    message = f"cannot read {brief(given)} as {what}{why}"
                raise ConfigError(file, node.start_mark.line + 1, self.dotted(), message) from None
            if isinstance(value, int) and not isinstance(value, bool) and not -MAX_INT < value < MAX_INT:
                raise ConfigError(file, node.start_mark.line + 1, self.dotted(),
                                  f"number too large ({len(node.value)} characters): "
                                  f"expected at most {MAX_INT - 1}")
            if isinstance(value, float) and not math.isfinite(value):
                raise ConfigError(file, node.start_mark.line + 1, self.dotted(),
                                  f"expected a finite number, got {brief(node.value)[1:-1]}")
            return value

    def construct_mapping(loader: Loader, node: yaml.MappingNode) -> Map:
        if not isinstance(node, yaml.MappingNode):
            raise TypeError("not a mapping node")
        own = {id(key_node) for key_node, _ in node.value}
        loader.flatten_mapping(node)
        result = Map.at(file, node.start_mark.line + 1)
        written: set = set()   # keys written in this mapping, not merged in with <<
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node, deep=True)
            try:
                hash(key)
            except TypeError:
                raise ConfigError(file, key_node.start_mark.line + 1, loader.dotted(),
                                  "a mapping key must be a plain value") from None
            if id(key_node) in own:
                if key in written:
                    raise ConfigError(file, key_node.start_mark.line + 1, _key_text(key),
                                      "key appears twice in the same mapping")
                written.add(key)
            loader.path.append(_key_text(key))
            try:
                value = loader.construct_object(value_node, deep=True)
            finally:
                loader.path.pop()
            if isinstance(value, (Map, Seq)):
                value.owner_line = key_node.start_mark.line + 1
            result.pop(key, None)   # a key written here after a merge: placed (and ordered) as written
            result[key] = value
            result.key_lines[key] = key_node.start_mark.line + 1
        return result

    def construct_sequence(loader: Loader, node: yaml.SequenceNode) -> Seq:
        if not isinstance(node, yaml.SequenceNode):
            raise TypeError("not a sequence node")
        items = []
        for index, child in enumerate(node.value):
            loader.path.append(f"[{index}]")
            try:
                items.append(loader.construct_object(child, deep=True))
            finally:
                loader.path.pop()
        result = Seq(items)
        result.file = file
        result.line = node.start_mark.line + 1
        result.item_lines = [child.start_mark.line + 1 for child in node.value]
        return result

    Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, construct_mapping)
    Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, construct_sequence)
    return Loader


def _key_text(key: Any) -> str:
    """A key as a message names it: YAML's ``~`` and ``""`` keys too, and never a megabyte of it."""
    if key is None:
        return "null"
    if key == "" and isinstance(key, str):
        return '""'
    return key if isinstance(key, str) and len(key) <= 80 else brief(key) if isinstance(key, str) else str(key)


def _check_size(node: yaml.Node, file: str) -> None:
    """Refuse a document whose aliases expand past :data:`MAX_VALUES` or into themselves.

    Counted on the node graph, each node once (an alias is the node it names),
    so the count is cheap however large the expansion.
    """
    sizes: dict[int, int] = {}
    open_: set[int] = set()

    def size(current: yaml.Node) -> int:
        key = id(current)
        if key in sizes:
            return sizes[key]
        if key in open_:
            raise ConfigError(file, current.start_mark.line + 1, None,
                              "an alias inside the value it names: the value would contain itself")
        open_.add(key)
        total = 1
        if isinstance(current, yaml.SequenceNode):
            total += sum(size(child) for child in current.value)
        elif isinstance(current, yaml.MappingNode):
            total += sum(size(k) + size(v) for k, v in current.value)
        open_.discard(key)
        if total > MAX_VALUES:
            raise ConfigError(file, current.start_mark.line + 1, None,
                              f"expands to more than {MAX_VALUES} values (aliases of aliases?): "
                              "write the values out, or split the file")
        sizes[key] = total
        return total

    size(node)


def loads(text: str, file: str = "<string>") -> Any:
    """Parse YAML text; a syntax error, or a file too deep, too big or unreadable as YAML,
    becomes a :class:`ConfigError` with the line."""
    try:
        loader = _make_loader(file)(text)
        try:
            node = loader.get_single_node()
            if node is None:
                return None
            _check_size(node, file)
            return loader.construct_document(node)
        finally:
            loader.dispose()
    except ConfigError:
        raise
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        problem = exc.problem or exc.context or "invalid YAML"
        if len(problem) > 200:   # PyYAML quotes what it found: an alias name can be a megabyte
            problem = f"{problem[:120]}...{problem[-40:]}"
        raise ConfigError(file, line, None, f"YAML syntax: {problem}") from None
    except yaml.reader.ReaderError as exc:
        code = exc.character if isinstance(exc.character, int) else ord(exc.character)
        raise ConfigError(file, _line_at(text, exc.position), None,
                          f"character {chr(code)!r} (#x{code:04x}) is not allowed in a YAML file") from None
    except yaml.YAMLError as exc:
        raise ConfigError(file, None, None, f"YAML syntax: {brief(str(exc))[1:-1]}") from None


def load(path: str | Path) -> Any:
    path = Path(path)
    try:
        with path.open("rb") as stream:
            data = stream.read(MAX_BYTES + 1)   # bounded: a wrong path to a log or a device reads no further
    except FileNotFoundError:
        raise ConfigError(str(path), None, None, "file not found") from None
    except OSError as exc:
        raise ConfigError(str(path), None, None, f"cannot read: {exc}") from None
    if len(data) > MAX_BYTES:
        raise ConfigError(str(path), None, None, f"more than {MAX_BYTES // 2**20} MiB: not a file a person "
                          "wrote (is it the right file?)")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        hint = " (it looks like UTF-16 or UTF-32)" if data[:2] in (b"\xff\xfe", b"\xfe\xff") else ""
        raise ConfigError(str(path), line, None, f"not UTF-8 text: byte 0x{data[exc.start]:02x} cannot be "
                          f"read{hint}; save the file as UTF-8") from None
    return loads(text, str(path))


#: the widest field or precision a template may ask for: a command line is short
MAX_FIELD_WIDTH = 1000


def spec_problem(spec: str, *, nested: bool = True) -> str | None:
    """What is wrong with a template's format spec (the ``.3f`` of ``{volts:.3f}``), or None.

    ``format`` builds whatever width it is asked for: ``{volts:>999999999}``
    would be a gigabyte for one command line, in the middle of a run.  A spec
    that formats neither text nor a number (``{host:zz}``) would fail there too.
    ``nested``: the template is filled by ``str.format``, which fills a
    placeholder inside a spec (``{volts:{width}}``); other fillers do not.
    """
    for digits in re.findall(r"\d+", spec):
        if len(digits) > 4 or int(digits) > MAX_FIELD_WIDTH:
            return f"field width or precision {brief(digits)[1:-1]} is more than {MAX_FIELD_WIDTH}"
    if "{" in spec:   # a nested placeholder: the spec is known only when it is filled
        return None if nested else f"a placeholder inside a format spec ({brief(spec)}) is not filled"
    for sample in ("x", 1, 1.5):
        try:
            format(sample, spec)
            return None
        except (ValueError, TypeError):
            continue
    return f"format spec {brief(spec)} formats neither text nor a number"


def walk(value: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """Yield ``(dotted.path, value)`` for every leaf, for diagnostics."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield from walk(item, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from walk(item, f"{prefix}[{index}]")
    else:
        yield prefix, value


# -- checking a mapping key by key ---------------------------------------------------


class _Required(enum.Enum):
    REQUIRED = "required"


#: the ``default`` of a key that must be there
REQUIRED = _Required.REQUIRED


def closest(word: str, choices: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the choice nearest a misspelt word, or nothing.

    A typo is the commonest mistake in a hand-written file; naming the word
    the writer probably meant saves a trip to the reference.
    """
    match = difflib.get_close_matches(word, sorted(choices), n=1)
    return f" (did you mean '{match[0]}'?)" if match else ""


def listing(choices: Collection[str]) -> str:
    """A set is listed sorted; a tuple, list or dict keeps the order its author chose."""
    return ", ".join(sorted(choices) if isinstance(choices, (set, frozenset)) else choices)


def unknown(what: str, word: Any, choices: Collection[str], *, intro: str = "allowed:",
            hint: str | None = None) -> str:
    """``unknown WHAT (did you mean 'x'?); INTRO a, b``; ``hint=""`` leaves the guess out."""
    guess = closest(str(word), choices) if hint is None else hint
    return f"unknown {what}{guess}; {intro} {listing(choices)}"


@dataclass(frozen=True)
class Wording:
    """How one kind of file words the complaints all kinds share.

    Device files, scenario files and supply dialects were written apart and
    word the same mistake differently.  What a user reads is part of the
    interface (the tests pin much of it), so each kind keeps its words, here
    in one place, instead of keeping its own copy of every check.  The
    defaults are the device and scenario files' words.  Templates see
    ``what``, ``value``, ``type`` (the name of the value's type), ``minimum``,
    ``error`` and ``group``.
    """

    missing: str = "missing (expected {what})"
    wrong_type: str = "expected {what}, got {value!r}"
    wrong_text: str = "expected a string, got {value!r}"
    wrong_mapping: str = "expected a mapping"
    wrong_list: str = "expected a list, got {type}"
    below: str = "must be >= {minimum}, got {value}"
    missing_section: str = "missing section"
    #: a pattern that is not text; ``None``: check it as text (``missing``, ``wrong_text``)
    not_regex: str | None = None
    bad_regex: str = "not a valid regular expression: {error}"
    needs_group: str = "needs a named group (?P<{group}>...)"
    unknown_intro: str = "allowed:"
    did_you_mean: bool = True
    #: name a key as YAML read it, and place a null key at its mapping's first line, as
    #: :meth:`Map.error` does; otherwise a top-level key is named as text, a null key at its line
    raw_keys: bool = False


PLAIN = Wording()

#: a type, a tuple of types, or a test, for the items of a list
ItemCheck = type | tuple[type, ...] | Callable[[Any], bool]


def _passes(item: Any, each: ItemCheck) -> bool:
    if isinstance(each, (type, tuple)):
        return isinstance(item, each)
    return each(item)


class Fields:
    """One mapping of a user's file, read key by key.

    Every complaint names the file, the line of the key (or of the mapping,
    for a key that is not there) and the dotted path from the top of the
    file, so ``bench.yaml:27: supply.voltage: ...`` is found at once, and the
    checks run in the order the caller asks, so a file with two mistakes is
    always answered with the same one.  ``if_null`` says what a ``~`` reads
    as where a kind of file lets it mean "empty"; unset, a null is checked
    like any other value.
    """

    def __init__(self, map_: Map, path: str = "", wording: Wording = PLAIN) -> None:
        self.map = map_
        self.path = path
        self.wording = wording

    @classmethod
    def document(cls, doc: Any, file: str, message: str, *, wording: Wording = PLAIN,
                 line_if_scalar: int | None = 1) -> "Fields":
        """The whole file; a list or a bare word instead is answered with what the file should hold."""
        if not isinstance(doc, Map):
            raise ConfigError(file, getattr(doc, "line", line_if_scalar), None, message)
        return cls(doc, "", wording)

    @property
    def file(self) -> str:
        return self.map.file

    def where(self, key: Any) -> Any:
        """The dotted path of ``key`` from the top of the file.

        A key YAML read as something else than text (``0:``, ``on:``, ``"":``)
        is still named as text: a message drops a key that is not.
        """
        if self.path:
            return f"{self.path}.{_key_text(key)}"
        return None if key is None and self.wording.raw_keys else _key_text(key)

    def error(self, key: Any, message: str, *, where: str | None = None) -> ConfigError:
        """A complaint about ``key`` (any key, ``null`` too), at its line, to raise."""
        line = self.map.line if key is None and self.wording.raw_keys else self.map.line_of(key)
        return ConfigError(self.file, line, self.where(key) if where is None else where, message)

    def error_here(self, message: str, *, where: str | None = None) -> ConfigError:
        """A complaint about this mapping as a whole, at its first line."""
        return ConfigError(self.file, self.map.line, where if where is not None else self.path or None, message)

    def error_above(self, message: str, *, where: str | None = None) -> ConfigError:
        """A complaint about what this mapping lacks, at the line that names it (``supply:``)."""
        return ConfigError(self.file, self.map.owner_line or self.map.line,
                           where if where is not None else self.path or None, message)

    def missing(self, key: Any, message: str) -> ConfigError:
        """An absent key has no line of its own: point at the section that should hold it."""
        return self.error_above(message, where=self.where(key))

    def value(self, key: Any, kinds: tuple[type, ...], default: Any = REQUIRED, *, what: str,
              if_null: Any = REQUIRED) -> Any:
        """The value of ``key`` if it is one of ``kinds``.

        YAML reads ``yes`` and ``on`` as true, and Python counts a bool as an
        int, so a bool passes only where ``kinds`` names it.
        """
        given, value = self._lookup(key, default, what, if_null)
        return self._check(key, value, kinds, what) if given else value

    def text(self, key: Any, default: Any = REQUIRED, *, if_null: Any = REQUIRED) -> Any:
        given, value = self._lookup(key, default, "a string", if_null)
        return self._check(key, value, (str,), "a string", self.wording.wrong_text) if given else value

    def num(self, key: Any, default: Any = REQUIRED, *, minimum: float | None = 0.0, whole: bool = False,
            if_null: Any = REQUIRED) -> Any:
        """A number of at least ``minimum``; ``whole`` refuses ``2.5`` with its own message."""
        given, value = self._lookup(key, default, "a number", if_null)
        if not given:
            return value
        self._check(key, value, (int, float), "a number")
        if whole:
            self._check(key, value, (int,), "a whole number")
        if minimum is not None and value < minimum:
            raise self.error(key, self.wording.below.format(minimum=minimum, value=value))
        return int(value) if whole else float(value)

    def regex(self, key: Any, default: Any = REQUIRED, *, groups: tuple[str, ...] = (),
              not_regex: str | None = None) -> Any:
        """The text of a pattern checked now, so a typo fails at load time, not mid-run."""
        compiled = self.pattern(key, default, groups=groups, not_regex=not_regex)
        return compiled.pattern if isinstance(compiled, re.Pattern) else compiled

    def pattern(self, key: Any, default: Any = REQUIRED, *, groups: tuple[str, ...] = (),
                not_regex: str | None = None) -> Any:
        """As :meth:`regex`, compiled, for callers that keep the pattern object."""
        if key not in self.map and default is not REQUIRED:
            return default
        not_regex = not_regex or self.wording.not_regex
        if not_regex is None:
            text = self.text(key)
        elif not isinstance(text := self.map.get(key), str):
            raise self.error(key, not_regex)
        return self.compile(key, text, groups=groups)

    def compile(self, key: Any, text: str, *, groups: tuple[str, ...] = (), where: str | None = None) -> re.Pattern:
        """Compile ``text`` (found at ``key``); the complaint quotes Python's own reason.

        The named ``groups`` are what the engine reads out of a match, so a
        pattern without one would match and still tell the engine nothing.
        """
        try:
            compiled = re.compile(text)
        except (re.error, OverflowError) as exc:   # a{4294967296} is an OverflowError, not an re.error
            raise self.error(key, self.wording.bad_regex.format(error=exc), where=where) from None
        except RecursionError:   # thousands of nested groups
            raise self.error(key, self.wording.bad_regex.format(error="groups nested too deeply"),
                             where=where) from None
        for group in groups:
            if group not in compiled.groupindex:
                raise self.error(key, self.wording.needs_group.format(group=group), where=where)
        return compiled

    def section(self, key: Any, *, required: bool = True, if_null: Any = REQUIRED,
                message: str | None = None) -> "Fields | None":
        """The mapping under ``key``, read with this one's path and words (None: optional, absent)."""
        if key not in self.map:
            if required:
                raise self.error_here(self.wording.missing_section, where=self.where(key))
            return None
        value = self.map[key]
        if value is None and if_null is not REQUIRED:
            return if_null
        if not isinstance(value, Map):
            raise self.error(key, message or self.wording.wrong_mapping.format(type=type(value).__name__))
        return Fields(value, self.where(key), self.wording)

    def list_of(self, key: Any, each: ItemCheck | None = None, *, message: str | None = None,
                default: Any = None, non_empty: bool = False, single: bool = False,
                if_null: Any = REQUIRED) -> Any:
        """The list under ``key``, returned as given so its item lines stay at hand.

        An absent key reads as ``default`` and is checked the same way (a
        ``None`` default thus makes the list required, with ``message``).
        ``each`` is a test or types checked with a plain isinstance (a true
        passes for an int, as lists of codes always allowed); ``single``
        reads a lone string as a list of one.
        """
        value = self.map.get(key, default)
        if value is None and if_null is not REQUIRED:
            return if_null
        if single and isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or (non_empty and not value) \
                or (each is not None and not all(_passes(item, each) for item in value)):
            raise self.error(key, message or self.wording.wrong_list.format(type=type(value).__name__))
        return value

    def known(self, key: Any, allowed: Collection[str], *, what: str = "key", intro: str | None = None,
              hint: str | None = None) -> None:
        """Refuse ``key`` unless it is one of ``allowed``: a typo is named, not silently ignored."""
        if key not in allowed:
            if not self.wording.did_you_mean:
                hint = ""
            raise self.error(key, unknown(what, key, allowed, intro=intro or self.wording.unknown_intro,
                                          hint=hint))

    def no_unknown(self, allowed: Collection[str], *, what: str = "key", intro: str | None = None) -> None:
        """Refuse the first key not in ``allowed``: an ignored misspelt key would silently keep a default."""
        for key in self.map:
            self.known(key, allowed, what=what, intro=intro)

    def _lookup(self, key: Any, default: Any, what: str, if_null: Any) -> tuple[bool, Any]:
        """``(True, value)`` for a value to check, ``(False, value)`` for a default standing in."""
        if key not in self.map:
            if default is REQUIRED:
                raise self.missing(key, self.wording.missing.format(what=what))
            return False, default
        value = self.map[key]
        if value is None and if_null is not REQUIRED:
            return False, if_null
        return True, value

    def _check(self, key: Any, value: Any, kinds: tuple[type, ...], what: str, template: str | None = None) -> Any:
        if (isinstance(value, bool) and bool not in kinds) or not isinstance(value, kinds):
            template = template or self.wording.wrong_type
            raise self.error(key, template.format(what=what, value=Brief(value), type=type(value).__name__))
        return value

