"""Supply dialects: how one model of bench supply is spoken to, as data.

Every vendor spells "set 3.3 V on channel 1" differently (``VOLT 3.3,(@1)``,
``INST:NSEL 1`` then ``VOLT 3.3``, ``:SOUR1:VOLT 3.3``, ``V1 3.3``,
``VSET1:03.30``), answers differently (``3.300``, ``3.300V``, ``03.30`` with no
terminator at all) and reports errors differently (a SCPI queue, TTi's EER?
register, or nothing).  Keeping all of that in ``harness/dialects/<name>.yaml``
means adding a supply model is writing a data file from its programming
manual, never an ``if vendor == ...`` in the driver.

A mistake in a dialect file is a :class:`~harness.errors.ConfigError` naming
the file, the line and the key, raised when the file is loaded rather than in
the middle of a power cycle at 3 a.m.
"""

from __future__ import annotations

import logging
import re
import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from . import yamlfile
from .errors import ConfigError

log = logging.getLogger(__name__)

DIALECT_DIR = Path(__file__).resolve().parent / "dialects"

#: Commands the driver knows how to use; ``required`` ones must be present.
REQUIRED_COMMANDS = ("identify", "voltage", "current_limit", "output_on", "output_off",
                     "measure_voltage", "measure_current")
OPTIONAL_COMMANDS = ("remote", "local", "clear", "select", "ovp", "output_state")
#: Commands whose answer is read back (all others are plain writes).
QUERIES = ("identify", "output_state", "measure_voltage", "measure_current")
#: The only placeholders a template may use.
PLACEHOLDERS = {"channel": 1, "volts": 3.3, "amps": 0.5}

NUMBER = r"(?P<value>[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)"


@dataclass(frozen=True)
class Reply:
    """How to read and parse the answer to one query.

    ``length`` is for instruments without a reply terminator (Korad sends
    exactly five bytes for ``VOUT1?``): read that many bytes.  ``None`` with
    no terminator means "read until the line goes quiet".
    """

    pattern: re.Pattern = re.compile(NUMBER)
    length: int | None = None
    on_values: tuple[str, ...] = ("1", "ON")


@dataclass(frozen=True)
class ErrorCheck:
    """One query that reports instrument errors, and how to read its answer.

    SCPI queues (``drain: true``) are read until they say "no error";
    registers such as TTi's ``EER?`` are read once.  ``texts`` maps codes to
    the manual's wording for instruments whose own answer is only a number.
    """

    query: str
    pattern: re.Pattern
    ok_codes: tuple[int, ...] = (0,)
    texts: Mapping[int, str] = field(default_factory=dict)
    drain: bool = True
    max_reads: int = 20


@dataclass(frozen=True)
class Transport:
    """Terminators, pacing and connection defaults of one model."""

    write_termination: str = "\n"
    read_termination: str = "\n"
    command_gap: float = 0.0
    timeout: float = 2.0
    quiet: float = 0.15
    default_port: int | None = None
    baud_rate: int | None = None
    data_bits: int | None = None
    stop_bits: float | None = None


@dataclass(frozen=True)
class Dialect:
    """Everything the driver needs to speak to one supply model."""

    name: str
    file: str
    manual: str
    models: tuple[str, ...]
    channels: tuple[int, ...]
    commands: Mapping[str, tuple[str, ...]]
    replies: Mapping[str, Reply]
    errors: tuple[ErrorCheck, ...]
    transport: Transport
    lines: Mapping[str, int | None] = field(default_factory=dict)

    def has(self, command: str) -> bool:
        return bool(self.commands.get(command))

    def render(self, command: str, **values: Any) -> list[str]:
        """The concrete command strings for ``command`` with placeholders filled."""
        return [template.format(**values) for template in self.commands.get(command, ())]

    def reply(self, command: str) -> Reply:
        return self.replies.get(command, Reply())

    def where(self, key: str) -> str:
        """``file:line`` of a key, for messages that send the reader to the data."""
        line = self.lines.get(key)
        return f"{self.file}:{line}" if line else self.file

    def socket_resource(self, host: str) -> str:
        """A raw-socket VISA resource for ``host`` on this model's LAN port."""
        if self.transport.default_port is None:
            raise ConfigError(self.file, self.lines.get("transport"), "transport.default_port",
                              f"dialect {self.name} has no LAN port; give a full VISA resource")
        return f"TCPIP::{host}::{self.transport.default_port}::SOCKET"


def available() -> list[str]:
    """Names of the dialects shipped with the harness."""
    return sorted(p.stem for p in DIALECT_DIR.glob("*.yaml"))


def load(name_or_path: str | Path) -> Dialect:
    """Load a dialect by name (``keysight-e36300``) or from a path to a YAML file."""
    path = Path(name_or_path)
    if path.suffix not in (".yaml", ".yml"):
        path = DIALECT_DIR / f"{name_or_path}.yaml"
        if not path.exists():
            raise ConfigError(str(name_or_path), None, "dialect",
                              f"unknown supply dialect; known: {', '.join(available())}")
    loaded = parse(yamlfile.load(path), default_name=path.stem)
    log.debug("supply dialect %s loaded from %s", loaded.name, path)
    return loaded


def parse(doc: Any, default_name: str = "?") -> Dialect:
    """Validate a loaded dialect document; every complaint names file/line/key."""
    if not isinstance(doc, yamlfile.Map):
        raise ConfigError(getattr(doc, "file", "?"), getattr(doc, "line", None), None,
                          "a dialect file must be a mapping")
    known = {"name", "manual", "models", "channels", "transport", "commands", "replies",
             "errors"}
    for key in doc:
        if key not in known:
            raise doc.error(key, f"unknown key; expected one of {', '.join(sorted(known))}")
    name = _text(doc, "name", default=default_name)
    manual = _text(doc, "manual")
    if not manual:
        raise doc.error("manual" if "manual" in doc else None,
                        "cite the programming manual (title and section) this dialect follows")
    models = tuple(str(m) for m in _seq(doc, "models", default=[]))
    channels = tuple(_int_list(doc, "channels"))
    if not channels:
        raise doc.error("channels" if "channels" in doc else None,
                        "list the channel numbers this model has, e.g. [1, 2, 3]")
    transport = _transport(doc)
    commands = _commands(doc)
    replies = _replies(doc, commands)
    errors = _errors(doc)
    lines = {key: doc.line_of(key) for key in doc}
    for section in ("commands", "replies", "transport"):
        sub = doc.get(section)
        if isinstance(sub, yamlfile.Map):
            lines.update({f"{section}.{k}": sub.line_of(k) for k in sub})
    return Dialect(name=name, file=doc.file, manual=manual, models=models, channels=channels,
                   commands=commands, replies=replies, errors=errors, transport=transport,
                   lines=lines)


# --- validation helpers -------------------------------------------------------------------

def _text(doc: yamlfile.Map, key: str, default: str | None = None) -> str:
    value = doc.get(key, default)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise doc.error(key, f"expected text, got {type(value).__name__}")
    return value


def _seq(doc: yamlfile.Map, key: str, default: Any = None) -> list:
    value = doc.get(key, default)
    if value is None:
        return []
    if not isinstance(value, list):
        raise doc.error(key, f"expected a list, got {type(value).__name__}")
    return value


def _int_list(doc: yamlfile.Map, key: str) -> list[int]:
    items = _seq(doc, key)
    for item in items:
        if not isinstance(item, int) or isinstance(item, bool):
            raise doc.error(key, f"expected whole channel numbers, got {item!r}")
    return items


def _map(doc: yamlfile.Map, key: str) -> yamlfile.Map | None:
    value = doc.get(key)
    if value is None:
        return None
    if not isinstance(value, yamlfile.Map):
        raise doc.error(key, f"expected a mapping, got {type(value).__name__}")
    return value


def _number(section: yamlfile.Map, key: str, path: str, *, kind: type = float,
            minimum: float = 0.0) -> Any:
    value = section.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise section.error(key, f"expected a number, got {value!r}", path=path)
    if kind is int and not isinstance(value, int):
        raise section.error(key, f"expected a whole number, got {value!r}", path=path)
    if value < minimum:
        raise section.error(key, f"must be at least {minimum}, got {value!r}", path=path)
    return kind(value)


def _terminator(section: yamlfile.Map, key: str, default: str) -> str:
    if key not in section:
        return default
    value = section[key]
    if value is None:
        return ""
    if not isinstance(value, str):
        raise section.error(key, f"expected a string such as \"\\n\" or null, got {value!r}",
                            path=f"transport.{key}")
    return value


def _transport(doc: yamlfile.Map) -> Transport:
    section = _map(doc, "transport")
    if section is None:
        return Transport()
    known = {"write_termination", "read_termination", "command_gap", "timeout", "quiet",
             "default_port", "baud_rate", "data_bits", "stop_bits"}
    for key in section:
        if key not in known:
            raise section.error(key, f"unknown transport key; expected one of "
                                     f"{', '.join(sorted(known))}", path=f"transport.{key}")
    defaults = Transport()

    def num(key: str, kind: type = float) -> Any:
        value = _number(section, key, f"transport.{key}", kind=kind)
        return getattr(defaults, key) if value is None else value

    return Transport(
        write_termination=_terminator(section, "write_termination", defaults.write_termination),
        read_termination=_terminator(section, "read_termination", defaults.read_termination),
        command_gap=num("command_gap"), timeout=num("timeout"), quiet=num("quiet"),
        default_port=num("default_port", int), baud_rate=num("baud_rate", int),
        data_bits=num("data_bits", int), stop_bits=num("stop_bits"))


def _commands(doc: yamlfile.Map) -> dict[str, tuple[str, ...]]:
    section = _map(doc, "commands")
    if section is None:
        raise doc.error(None, "missing 'commands' mapping")
    known = set(REQUIRED_COMMANDS) | set(OPTIONAL_COMMANDS)
    result: dict[str, tuple[str, ...]] = {}
    for key, value in section.items():
        path = f"commands.{key}"
        if key not in known:
            raise section.error(key, f"unknown command; expected one of {', '.join(sorted(known))}",
                                path=path)
        if value is None:
            templates: list = []
        elif isinstance(value, str):
            templates = [value]
        elif isinstance(value, list) and all(isinstance(v, str) for v in value):
            templates = list(value)
        else:
            raise section.error(key, "expected a command string, a list of them, or null",
                                path=path)
        if key in QUERIES and len(templates) > 1:
            raise section.error(key, "a query must be a single command string", path=path)
        for template in templates:
            _check_template(section, key, path, template)
        result[key] = tuple(templates)
    for key in REQUIRED_COMMANDS:
        if not result.get(key):
            raise section.error(None, f"command '{key}' is required", path=f"commands.{key}")
    return result


def _check_template(section: yamlfile.Map, key: str, path: str, template: str) -> None:
    """Fail at load time on a placeholder the driver will never supply."""
    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
    except ValueError as exc:
        raise section.error(key, f"bad template {template!r}: {exc}", path=path) from None
    for name in fields:
        if name not in PLACEHOLDERS:
            raise section.error(key, f"unknown placeholder {{{name}}} in {template!r}; "
                                     f"allowed: {', '.join('{' + p + '}' for p in PLACEHOLDERS)}",
                                path=path)
    try:
        template.format(**PLACEHOLDERS)
    except (ValueError, KeyError, IndexError) as exc:
        raise section.error(key, f"template {template!r} does not format: {exc}",
                            path=path) from None


def _regex(section: yamlfile.Map, key: str, path: str, groups: tuple[str, ...]) -> re.Pattern:
    value = section.get(key)
    if not isinstance(value, str):
        raise section.error(key, "expected a regular expression string", path=path)
    try:
        pattern = re.compile(value)
    except re.error as exc:
        raise section.error(key, f"bad regular expression: {exc}", path=path) from None
    for group in groups:
        if group not in pattern.groupindex:
            raise section.error(key, f"the pattern needs a named group (?P<{group}>...)",
                                path=path)
    return pattern


def _replies(doc: yamlfile.Map, commands: Mapping[str, tuple[str, ...]]) -> dict[str, Reply]:
    section = _map(doc, "replies")
    result: dict[str, Reply] = {}
    if section is None:
        return result
    for key, value in section.items():
        path = f"replies.{key}"
        if key not in QUERIES:
            raise section.error(key, f"replies are only for queries: {', '.join(QUERIES)}",
                                path=path)
        if not isinstance(value, yamlfile.Map):
            raise section.error(key, "expected a mapping with pattern/length/on_values", path=path)
        for sub in value:
            if sub not in ("pattern", "length", "on_values"):
                raise value.error(sub, "unknown reply key; expected pattern, length, on_values",
                                  path=f"{path}.{sub}")
        pattern = (_regex(value, "pattern", f"{path}.pattern", ("value",))
                   if "pattern" in value else Reply().pattern)
        length = _number(value, "length", f"{path}.length", kind=int, minimum=1)
        on_values = value.get("on_values", list(Reply().on_values))
        if not isinstance(on_values, list) or not all(isinstance(v, (str, int)) for v in on_values):
            raise value.error("on_values", "expected a list of replies meaning 'output on'",
                              path=f"{path}.on_values")
        result[key] = Reply(pattern=pattern, length=length,
                            on_values=tuple(str(v) for v in on_values))
    return result


def _errors(doc: yamlfile.Map) -> tuple[ErrorCheck, ...]:
    if "errors" not in doc:
        raise doc.error(None, "missing 'errors': list the error queries, or [] and say in a "
                              "comment that the model has no error reporting")
    items = _seq(doc, "errors")
    checks = []
    for index, item in enumerate(items):
        path = f"errors[{index}]"
        if not isinstance(item, yamlfile.Map):
            raise ConfigError(doc.file, items.line_of(index), path,
                              "expected a mapping with query/pattern")
        for key in item:
            if key not in ("query", "pattern", "ok_codes", "texts", "drain", "max_reads"):
                raise item.error(key, "unknown key; expected query, pattern, ok_codes, texts, "
                                      "drain, max_reads", path=f"{path}.{key}")
        query = item.get("query")
        if not isinstance(query, str) or not query:
            raise item.error("query" if "query" in item else None, "expected the error query",
                             path=f"{path}.query")
        pattern = _regex(item, "pattern", f"{path}.pattern", ("code",))
        ok = item.get("ok_codes", [0])
        if not isinstance(ok, list) or not all(isinstance(c, int) for c in ok):
            raise item.error("ok_codes", "expected a list of whole numbers", path=f"{path}.ok_codes")
        texts = item.get("texts", {}) or {}
        if not isinstance(texts, dict) or not all(isinstance(k, int) and isinstance(v, str)
                                                  for k, v in texts.items()):
            raise item.error("texts", "expected a mapping of code -> text", path=f"{path}.texts")
        drain = item.get("drain", True)
        if not isinstance(drain, bool):
            raise item.error("drain", "expected true or false", path=f"{path}.drain")
        max_reads = _number(item, "max_reads", f"{path}.max_reads", kind=int, minimum=1) or 20
        checks.append(ErrorCheck(query=query, pattern=pattern, ok_codes=tuple(ok),
                                 texts=dict(texts), drain=drain, max_reads=max_reads))
    return tuple(checks)
