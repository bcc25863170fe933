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
import re
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
        return ConfigError(self.file, line, path or key, message)


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


def _make_loader(file: str) -> type:
    class Loader(yaml.SafeLoader):
        pass

    def construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> Map:
        loader.flatten_mapping(node)
        result = Map.at(file, node.start_mark.line + 1)
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node, deep=True)
            try:
                hash(key)
            except TypeError:
                raise ConfigError(file, key_node.start_mark.line + 1, None,
                                  "a mapping key must be a plain value") from None
            if key in result:
                raise ConfigError(file, key_node.start_mark.line + 1, str(key),
                                  "key appears twice in the same mapping")
            value = loader.construct_object(value_node, deep=True)
            if isinstance(value, (Map, Seq)):
                value.owner_line = key_node.start_mark.line + 1
            result[key] = value
            result.key_lines[key] = key_node.start_mark.line + 1
        return result

    def construct_sequence(loader: yaml.SafeLoader, node: yaml.SequenceNode) -> Seq:
        result = Seq(loader.construct_object(child, deep=True) for child in node.value)
        result.file = file
        result.line = node.start_mark.line + 1
        result.item_lines = [child.start_mark.line + 1 for child in node.value]
        return result

    Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, construct_mapping)
    Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, construct_sequence)
    return Loader


def loads(text: str, file: str = "<string>") -> Any:
    """Parse YAML text; syntax errors become a :class:`ConfigError` with the line."""
    try:
        return yaml.load(text, Loader=_make_loader(file))  # noqa: S506 - SafeLoader subclass
    except ConfigError:
        raise
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        problem = exc.problem or exc.context or "invalid YAML"
        raise ConfigError(file, line, None, f"YAML syntax: {problem}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(file, None, None, f"YAML syntax: {exc}") from None


def load(path: str | Path) -> Any:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(str(path), None, None, "file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(str(path), None, None, f"cannot read: {exc}") from None
    return loads(text, str(path))


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
        """The dotted path of ``key`` from the top of the file."""
        if self.path:
            return f"{self.path}.{key}"
        return key if self.wording.raw_keys else str(key)

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
        except re.error as exc:
            raise self.error(key, self.wording.bad_regex.format(error=exc), where=where) from None
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
            raise self.error(key, template.format(what=what, value=value, type=type(value).__name__))
        return value

