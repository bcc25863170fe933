"""YAML that remembers where every value came from.

Device files and scenario files are written by people; a mistake must be
reported as ``file:line: key: what is wrong``, never as a traceback.  PyYAML's
node tree knows the line of every node, so mappings and lists built here keep
the line of each key and item beside the value.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import yaml

from .errors import ConfigError


class Map(dict):
    """A mapping that knows its file, its line and the line of each key."""

    file: str = "?"
    line: int | None = None
    #: line of the key this mapping is the value of (``supply:``), for "missing" errors
    owner_line: int | None = None
    key_lines: dict

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
        result = Map()
        result.file = file
        result.line = node.start_mark.line + 1
        result.key_lines = {}
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
