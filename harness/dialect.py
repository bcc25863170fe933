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
from .yamlfile import Fields, Wording, brief, spec_problem

log = logging.getLogger(__name__)

DIALECT_DIR = Path(__file__).resolve().parent / "dialects"

#: Commands the driver knows how to use; ``required`` ones must be present.
REQUIRED_COMMANDS = ("identify", "voltage", "current_limit", "output_on", "output_off",
                     "measure_voltage", "measure_current")
OPTIONAL_COMMANDS = ("remote", "local", "clear", "select", "ovp", "output_state", "clear_protection")
#: Commands whose answer is read back (all others are plain writes).
QUERIES = ("identify", "output_state", "measure_voltage", "measure_current")
#: The only placeholders a template may use.
PLACEHOLDERS = {"channel": 1, "volts": 3.3, "amps": 0.5}

NUMBER = r"(?P<value>[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)"

_SOCKET_NO_PORT = re.compile(r"^(TCPIP\d*)::([^:]+)::SOCKET$", re.IGNORECASE)


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

    def socket_resource(self, resource: str) -> str:
        """``TCPIP::host::SOCKET`` without a port gets this model's LAN port (data of the dialect,
        from its manual); any other resource is used as given."""
        match = _SOCKET_NO_PORT.match(resource)
        if match and self.transport.default_port:
            return f"{match.group(1)}::{match.group(2)}::{self.transport.default_port}::SOCKET"
        return resource


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
    loaded = parse(yamlfile.load(path), default_name=path.stem, file=str(path))
    log.debug("supply dialect %s loaded from %s", loaded.name, path)
    return loaded


#: How a dialect words the mistakes every kind of file shares: its own way since it was
#: written, kept so that what users and tests quote still matches (see yamlfile.Wording).
_WORDING = Wording(wrong_text="expected text, got {type}", wrong_mapping="expected a mapping, got {type}",
                   below="must be at least {minimum}, got {value!r}",
                   not_regex="expected a regular expression string", bad_regex="bad regular expression: {error}",
                   needs_group="the pattern needs a named group (?P<{group}>...)",
                   unknown_intro="expected one of", did_you_mean=False, raw_keys=True)
_TOP_KEYS = {"name", "manual", "models", "channels", "transport", "commands", "replies", "errors"}


def parse(doc: Any, default_name: str = "?", file: str | None = None) -> Dialect:
    """Validate a loaded dialect document; every complaint names file/line/key.

    ``file`` names the file when the document is empty or a bare word, which
    carry no file of their own.
    """
    file = file or getattr(doc, "file", "?")
    top = Fields.document(doc, file, "a dialect file must be a mapping",
                          wording=_WORDING, line_if_scalar=None)
    top.no_unknown(_TOP_KEYS)
    name = top.text("name", default_name, if_null="")
    manual = top.text("manual", "", if_null="")
    if not manual:
        message = "cite the programming manual (title and section) this dialect follows"
        raise top.error("manual", message) if "manual" in doc else top.error_here(message)
    models = tuple(str(m) for m in top.list_of("models", default=[], if_null=[]))
    channels = tuple(_channels(top))
    if not channels:
        message = "list the channel numbers this model has, e.g. [1, 2, 3]"
        raise top.error("channels", message) if "channels" in doc else top.error_here(message)
    transport = _transport(top)
    commands = _commands(top)
    replies = _replies(top)
    errors = _errors(top)
    lines = {key: doc.line_of(key) for key in doc}
    for section in ("commands", "replies", "transport"):
        sub = doc.get(section)
        if isinstance(sub, yamlfile.Map):
            lines.update({f"{section}.{k}": sub.line_of(k) for k in sub})
    return Dialect(name=name, file=file, manual=manual, models=models, channels=channels,
                   commands=commands, replies=replies, errors=errors, transport=transport,
                   lines=lines)


# --- sections -----------------------------------------------------------------------------

def _channels(top: Fields) -> list[int]:
    items = top.list_of("channels", if_null=[])
    for item in items:
        if not isinstance(item, int) or isinstance(item, bool):
            raise top.error("channels", f"expected whole channel numbers, got {brief(item)}")
    return items


def _transport(top: Fields) -> Transport:
    section = top.section("transport", required=False, if_null=None)
    if section is None:
        return Transport()
    section.no_unknown({"write_termination", "read_termination", "command_gap", "timeout", "quiet",
                        "default_port", "baud_rate", "data_bits", "stop_bits"}, what="transport key")
    defaults = Transport()

    def num(key: str, whole: bool = False) -> Any:
        default = getattr(defaults, key)
        return section.num(key, default, whole=whole, if_null=default)

    def terminator(key: str) -> str:
        return section.value(key, (str,), getattr(defaults, key), what='a string such as "\\n" or null',
                             if_null="")

    return Transport(
        write_termination=terminator("write_termination"), read_termination=terminator("read_termination"),
        command_gap=num("command_gap"), timeout=num("timeout"), quiet=num("quiet"),
        default_port=num("default_port", True), baud_rate=num("baud_rate", True),
        data_bits=num("data_bits", True), stop_bits=num("stop_bits"))


def _commands(top: Fields) -> dict[str, tuple[str, ...]]:
    section = top.section("commands", required=False, if_null=None)
    if section is None:
        raise top.error_here("missing 'commands' mapping")
    known = set(REQUIRED_COMMANDS) | set(OPTIONAL_COMMANDS)
    result: dict[str, tuple[str, ...]] = {}
    for key, value in section.map.items():
        section.known(key, known, what="command")
        if value is None:
            templates: list = []
        elif isinstance(value, str):
            templates = [value]
        elif isinstance(value, list) and all(isinstance(v, str) for v in value):
            templates = list(value)
        else:
            raise section.error(key, "expected a command string, a list of them, or null")
        if key in QUERIES and len(templates) > 1:
            raise section.error(key, "a query must be a single command string")
        for template in templates:
            _check_template(section, key, template)
        result[key] = tuple(templates)
    for key in REQUIRED_COMMANDS:
        if not result.get(key):
            raise section.error_here(f"command '{key}' is required", where=section.where(key))
    return result


def _check_template(section: Fields, key: str, template: str) -> None:
    """Fail at load time on a placeholder the driver will never supply."""
    try:
        parsed = [(f, spec) for _, f, spec, _ in string.Formatter().parse(template) if f is not None]
    except ValueError as exc:
        raise section.error(key, f"bad template {brief(template)}: {exc}") from None
    for name, spec in parsed:
        if name not in PLACEHOLDERS:
            raise section.error(key, f"unknown placeholder {{{brief(name)[1:-1]}}} in {brief(template)}; "
                                     f"allowed: {', '.join('{' + p + '}' for p in PLACEHOLDERS)}")
        problem = spec_problem(spec or "")
        if problem:   # checked before formatting: a huge width would be built first
            raise section.error(key, f"template {brief(template)}: {problem}")
    try:
        template.format(**PLACEHOLDERS)
    except (ValueError, KeyError, IndexError) as exc:
        raise section.error(key, f"template {brief(template)} does not format: {brief(str(exc))[1:-1]}") from None


def _replies(top: Fields) -> dict[str, Reply]:
    section = top.section("replies", required=False, if_null=None)
    result: dict[str, Reply] = {}
    if section is None:
        return result
    for key in section.map:
        if key not in QUERIES:
            raise section.error(key, f"replies are only for queries: {', '.join(QUERIES)}")
        reply = section.section(key, message="expected a mapping with pattern/length/on_values")
        reply.no_unknown(("pattern", "length", "on_values"), what="reply key", intro="expected")
        pattern = reply.pattern("pattern", Reply().pattern, groups=("value",))
        length = reply.num("length", None, whole=True, minimum=1, if_null=None)
        on_values = reply.list_of("on_values", (str, int), default=list(Reply().on_values),
                                  message="expected a list of replies meaning 'output on'")
        result[key] = Reply(pattern=pattern, length=length,
                            on_values=tuple(str(v) for v in on_values))
    return result


def _errors(top: Fields) -> tuple[ErrorCheck, ...]:
    if "errors" not in top.map:
        raise top.error_here("missing 'errors': list the error queries, or [] and say in a "
                             "comment that the model has no error reporting")
    items = top.list_of("errors", if_null=[])
    checks = []
    for index, item in enumerate(items):
        path = f"errors[{index}]"
        if not isinstance(item, yamlfile.Map):
            raise ConfigError(top.file, items.line_of(index), path, "expected a mapping with query/pattern")
        checks.append(_error_check(Fields(item, path, _WORDING)))
    return tuple(checks)


def _error_check(item: Fields) -> ErrorCheck:
    item.no_unknown(("query", "pattern", "ok_codes", "texts", "drain", "max_reads"), intro="expected")
    query = item.map.get("query")
    if not isinstance(query, str) or not query:
        raise item.error("query", "expected the error query") if "query" in item.map \
            else item.error_here("expected the error query", where=item.where("query"))
    pattern = item.pattern("pattern", groups=("code",))
    ok = item.list_of("ok_codes", int, message="expected a list of whole numbers", default=[0])
    texts = item.map.get("texts", {}) or {}
    if not isinstance(texts, dict) or not all(isinstance(k, int) and isinstance(v, str)
                                              for k, v in texts.items()):
        raise item.error("texts", "expected a mapping of code -> text")
    drain = item.map.get("drain", True)
    if not isinstance(drain, bool):
        raise item.error("drain", "expected true or false")
    max_reads = item.num("max_reads", None, whole=True, minimum=1, if_null=None) or 20
    return ErrorCheck(query=query, pattern=pattern, ok_codes=tuple(ok),
                      texts=dict(texts), drain=drain, max_reads=max_reads)
