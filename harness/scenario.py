"""Scenario files: what a test engineer writes, as data.

A scenario file (``scenarios/*.yaml``) is a versioned document: a name, a
description a firmware developer understands, markers, a timeout, the
reference server's settings, parameters to expand into several tests, a
repeat count, and a list of steps.  This module parses and validates it; the
:mod:`harness.engine` runs it.  Mistakes are reported with file, line and key
before any hardware is touched.

Schema version 1, steps (each a mapping with exactly one action key; see the
README's scenario reference for an example of each):

    power_on, power_off, power_cycle, cut_power_when, brownout, wait,
    connect, device, send, expect_console, expect_stored, expect_reset,
    server, expect_server, corrupt_session, repeat
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import expectations, yamlfile
from .devicefile import PROTOCOLS, VERSION_WORDS
from .server import records
from .errors import ConfigError
from .yamlfile import Fields, Map, Seq, brief, unknown

SCHEMA_VERSION = 1
VERSIONS = VERSION_WORDS
SERVER_VERSIONS = ("TLSv1.2", "TLSv1.3")
#: the names ``expect_server`` accepts: the engine's table of judges
EXPECTATIONS = tuple(expectations.EXPECTATIONS)
MECHANISMS = records.MECHANISMS
REASONS = tuple(r for r in records.REJECTIONS if r is not None)
NAME_RX = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")


@dataclass
class Step:
    action: str
    args: dict[str, Any]
    file: str
    line: int | None
    steps: list["Step"] = field(default_factory=list)   # for repeat

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"


@dataclass
class Scenario:
    file: str
    name: str
    description: str
    steps: list[Step]
    markers: list[str] = field(default_factory=list)
    timeout: float | None = None
    server: dict[str, Any] = field(default_factory=dict)
    parameters: dict[str, list[Any]] = field(default_factory=dict)
    repeat: int = 1
    keep_session: bool = False
    requires: list[str] = field(default_factory=list)
    line: int | None = 1

    def weight(self) -> int:
        """How many steps a run takes, repeats multiplied out: a stand-in for its length, known before it runs.

        A scheduler spreading scenarios over several rigs starts the heavy
        ones first, so a 20-cycle scenario does not start last and keep one
        rig busy while the others idle.
        """
        def count(steps: list[Step]) -> int:
            return sum(int(s.args.get("times", 1)) * count(s.steps) if s.action == "repeat" else 1 for s in steps)

        return count(self.steps)

    def expand(self) -> list[tuple[str, dict[str, Any]]]:
        """(test id suffix, parameter values) for every combination and repeat."""
        names = list(self.parameters)
        combos = list(itertools.product(*(self.parameters[n] for n in names))) if names else [()]
        out = []
        for combo in combos:
            values = dict(zip(names, combo))
            label = "-".join(str(v) for v in combo)
            for index in range(self.repeat):
                suffix = label
                if self.repeat > 1:
                    suffix = f"{label}-{index + 1}" if label else f"run{index + 1}"
                out.append((suffix, values))
        return out


# -- step schemas --------------------------------------------------------------
# Each action: allowed keys -> (types, required).  A scalar step value is
# accepted where noted by ``_SHORTHAND`` (e.g. ``wait: 1.5``).

_NUM = (int, float)
_RND = (int, float, dict)        # seconds, or {random: [low, high]} drawn from the run's seeded generator
_OFF_TIME = (int, float, str, dict)   # seconds, "discharged", or {random: [low, high]}
_STEP_KEYS: dict[str, dict[str, tuple[tuple[type, ...], bool]]] = {
    "power_on": {"wait_boot": ((bool,), False), "timeout": (_NUM, False)},
    "power_off": {"off_time": (_OFF_TIME, False), "verify": ((bool,), False)},
    "power_cycle": {"off_time": (_OFF_TIME, False), "verify": ((bool,), False)},
    "cut_power_when": {"line": ((str,), False), "after": ((str,), False), "delay": (_RND, False)},
    "brownout": {"volts": (_NUM, True), "duration": (_RND, True), "wait_boot": ((bool,), False)},
    "wait": {"seconds": (_RND, True)},
    "connect": {"version": ((str,), False), "sni": ((str,), False), "server": ((str,), False),
                "expect": ((str,), False), "timeout": (_NUM, False)},
    "device": {"command": ((str,), True), "args": ((dict,), False), "timeout": (_NUM, False)},
    "send": {"line": ((str,), True)},
    "expect_console": {"pattern": ((str,), True), "timeout": (_NUM, False)},
    "expect_stored": {"timeout": (_NUM, False)},
    "expect_reset": {"cause": ((str,), True)},
    "server": {"rotate_keys": ((bool,), False), "tickets": ((bool,), False), "lifetime": (_NUM, False),
               "tls13_tickets": ((int,), False), "session_cache": ((bool,), False),
               "versions": ((list, str), False), "protocol": ((str,), False), "greeting": ((str,), False),
               "ticket_delay": (_NUM, False)},
    "expect_server": {"outcome": ((str,), True), "reason": ((str,), False), "cut": ((int,), False),
                      "mechanism": ((str,), False), "server": ((str,), False)},
    "corrupt_session": {"bytes": ((int,), False), "seed": ((int,), False)},
    "repeat": {"times": ((int,), True), "steps": ((list,), True)},
}
_SHORTHAND = {"wait": "seconds", "device": "command", "send": "line", "expect_console": "pattern",
              "expect_reset": "cause", "expect_server": "outcome", "cut_power_when": "line"}
_EMPTY_OK = {"power_on", "power_off", "power_cycle", "connect", "corrupt_session", "expect_stored"}
#: the likely reason a step key is true or false: YAML 1.1 reads ``on:`` as a boolean
_BOOL_KEY = " (YAML reads an unquoted on/off/yes/no as true/false)"
_PARAMETER = re.compile(r"\{\w+\}")


def _parse_step(item: Any, seq: Seq, index: int, path: str) -> Step:
    line = seq.line_of(index)
    where = f"{path}[{index}]"
    action = _action(item, seq.file, line, where)
    fields = _arguments(item, action, f"{where}.{action}")
    _check_arguments(fields, _STEP_KEYS[action])
    _check_values(action, fields)
    args = dict(fields.map)
    sub: list[Step] = []
    if action == "repeat":
        steps = args["steps"]
        if not isinstance(steps, Seq):
            raise fields.error("steps", "expected a list of steps (a parameter cannot stand for steps)")
        if not steps:
            raise fields.missing("steps", "is empty")
        sub = [_parse_step(s, steps, i, f"{where}.repeat.steps") for i, s in enumerate(steps)]
        args = {"times": args["times"]}
    return Step(action, args, seq.file, line, sub)


def _action(item: Any, file: str, line: int | None, where: str) -> str:
    """The one action key of a step."""
    if not isinstance(item, Map) or len(item) == 0:
        raise ConfigError(file, line, where, "a step is a mapping with one action, e.g. '- power_cycle: {}'")
    Fields(item, where).no_unknown(_STEP_KEYS, what="step action", intro="known:")
    if len(item) != 1:
        raise ConfigError(file, line, where, f"a step has exactly one action, found: {', '.join(item)}")
    return next(iter(item))


def _arguments(item: Map, action: str, where: str) -> Fields:
    """The step's options as a mapping; a shorthand (``wait: 1.5``) stands for its one key."""
    value = item[action]
    key_line = item.line_of(action)
    if value is None:
        if action not in _EMPTY_OK:
            raise ConfigError(item.file, key_line, where, "needs a value")
        return Fields(Map.at(item.file, key_line, owner_line=key_line), where)
    if isinstance(value, Map) and not (action in _SHORTHAND and set(value) == {"random"}):
        fields = Fields(value, where)
        for key in value:
            fields.known(key, _STEP_KEYS[action], hint=_BOOL_KEY if isinstance(key, bool) else None)
        return fields
    if action in _SHORTHAND and (not isinstance(value, (list, dict)) or isinstance(value, Map)):
        # a {random: [low, high]} shorthand keeps its own line for complaints about it
        line = value.line if isinstance(value, Map) else key_line
        return Fields(Map.at(item.file, line, {_SHORTHAND[action]: value}, owner_line=key_line), where)
    raise ConfigError(item.file, key_line, where, "expected a mapping of options"
                      + (f" or a single {_SHORTHAND[action]}" if action in _SHORTHAND else ""))


def _type_words(kinds: tuple[type, ...]) -> str:
    """How a step key's types read in a complaint: ``number or {random: [low, high]}``."""
    return " or ".join(dict.fromkeys(
        "number" if k in (int, float) else "{random: [low, high]}" if k is dict else k.__name__ for k in kinds))


def _check_arguments(fields: Fields, schema: dict[str, tuple[tuple[type, ...], bool]]) -> None:
    """Required keys and types; a ``{parameter}`` stands for any type until the run fills it in."""
    for key, (kinds, required) in schema.items():
        if key not in fields.map:
            if required:
                raise fields.error(key, "missing")
            continue
        value = fields.map[key]
        if isinstance(value, str) and str not in kinds and _PARAMETER.fullmatch(value):
            continue
        fields.value(key, kinds, what=_type_words(kinds))
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value < 0 and key != "cut":
            raise fields.error(key, f"must not be negative, got {value}")


# -- what each action allows beyond its types ------------------------------------

def _check_values(action: str, fields: Fields) -> None:
    """What each action allows beyond its types, once the types are right."""
    _check_times(fields)
    check = _VALUE_CHECKS.get(action)
    if check is not None:
        check(fields)


def _check_times(fields: Fields) -> None:
    for key in ("off_time", "delay", "duration", "seconds"):
        v = fields.map.get(key)
        if isinstance(v, str) and (key != "off_time" or v != "discharged") and "{" not in v:
            raise fields.error(key, f"expected seconds{' or discharged' if key == 'off_time' else ''}, got {brief(v)}")
        if isinstance(v, dict) and key == "delay" and set(v) == {"of_write"}:
            frac = v["of_write"]
            if not (isinstance(frac, str) and _PARAMETER.fullmatch(frac)) and \
                    (isinstance(frac, bool) or not isinstance(frac, (int, float)) or frac < 0):
                raise fields.error(key, f"expected {{of_write: FRACTION}} with a fraction >= 0 of the device's "
                                        f"measured session write time, got {brief(dict(v))}")
            continue
        if isinstance(v, dict):
            rnd = v.get("random")
            if (set(v) != {"random"} or not isinstance(rnd, list) or len(rnd) != 2
                    or not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in rnd)
                    or not 0 <= rnd[0] <= rnd[1]):
                raise fields.error(key, "expected seconds or {random: [low, high]} with 0 <= low <= high, "
                                        f"got {brief(dict(v))}")


def _check_cut(fields: Fields) -> None:
    if ("line" in fields.map) == ("after" in fields.map):
        raise fields.error_above("say when to cut: after: <a firmware event of the device file "
                                 "(flash_write, session_stored, firmware.events.NAME) or connect>, "
                                 "or line: <regex>; one of them")
    if "after" not in fields.map:   # an after: name is resolved against the device file at run time
        _check_console_pattern(fields, "line")


def _check_console_pattern(fields: Fields, key: str) -> None:
    """The line to cut at or the line to expect: a regular expression that finds something."""
    text = fields.map.get(key)
    if not text:
        raise fields.error(key, "an empty pattern matches every line: say which line")
    fields.compile(key, text)


def _check_expect_console(fields: Fields) -> None:
    _check_console_pattern(fields, "pattern")


def _check_connect(fields: Fields) -> None:
    version = fields.map.get("version")
    if version is not None and "{" not in version and version not in VERSIONS:
        raise fields.error("version", f"expected one of {', '.join(VERSIONS)}, got {brief(version)}")
    expect = fields.map.get("expect")
    if expect is not None and expect not in ("ok", "fail", "any"):
        raise fields.error("expect", f"expected ok, fail or any, got {brief(expect)}")


def _check_expect_server(fields: Fields) -> None:
    outcome = fields.map["outcome"]
    if outcome not in EXPECTATIONS:
        raise fields.error("outcome", unknown("expectation", outcome, EXPECTATIONS, intro="known:"))
    reason = fields.map.get("reason")
    if reason is not None and reason not in REASONS:
        raise fields.error("reason", unknown("refusal reason", reason, REASONS, intro="known:", hint=""))
    if reason is not None and outcome != "refused":
        raise fields.error("reason", "a reason goes with outcome: refused")
    mechanism = fields.map.get("mechanism")
    if mechanism is not None and mechanism not in MECHANISMS:
        raise fields.error("mechanism", f"expected one of {', '.join(MECHANISMS)}, got {brief(mechanism)}")


def _check_server(fields: Fields) -> None:
    versions = fields.map.get("versions")
    if versions is not None:
        for v in [versions] if isinstance(versions, str) else versions:
            if v not in SERVER_VERSIONS:
                raise fields.error("versions", f"expected TLSv1.2 and/or TLSv1.3, got {brief(v)}")
    protocol = fields.map.get("protocol")
    if protocol is not None and protocol not in PROTOCOLS:
        raise fields.error("protocol", unknown("application protocol", protocol, PROTOCOLS, intro="known:"))
    if not fields.map:
        raise fields.error_above("say what to change: rotate_keys, tickets, lifetime, "
                                 "tls13_tickets, session_cache, versions, protocol, greeting or ticket_delay")
    delay = fields.map.get("ticket_delay")
    if isinstance(delay, (int, float)) and not 0 <= delay <= 30:
        raise fields.error("ticket_delay", f"expected seconds from 0 to 30, got {brief(delay)}")


def _check_brownout(fields: Fields) -> None:
    duration = fields.map.get("duration")
    if isinstance(duration, (int, float)) and duration > 60:
        raise fields.error("duration", "a brown-out longer than a minute is a power cut: use power_off")


def _check_repeat(fields: Fields) -> None:
    times = fields.map["times"]
    if not isinstance(times, int) or times < 1:
        raise fields.error("times", f"must be a whole number of at least 1, got {brief(times)}")


def _check_corrupt_session(fields: Fields) -> None:
    if isinstance(fields.map.get("bytes"), int) and fields.map["bytes"] < 1:
        raise fields.error("bytes", "must be at least 1")


_VALUE_CHECKS = {
    "cut_power_when": _check_cut,
    "expect_console": _check_expect_console,
    "connect": _check_connect,
    "expect_server": _check_expect_server,
    "server": _check_server,
    "brownout": _check_brownout,
    "repeat": _check_repeat,
    "corrupt_session": _check_corrupt_session,
}


_TOP = {"schema", "name", "description", "markers", "timeout", "server", "parameters", "repeat",
        "keep_session", "requires", "steps"}
_SERVER_KEYS = {"versions", "tickets", "lifetime", "tls13_tickets", "session_cache", "protocol", "greeting",
                "ticket_delay"}


def parse(doc: Any, file: str) -> Scenario:
    top = Fields.document(doc, file, "a scenario file is a mapping with schema, name, description and steps")
    for key in doc:
        if key not in _TOP:   # looked up as text, so a key YAML reads as true/1 points at the first key (kept)
            raise doc.error(str(key), unknown("key", key, _TOP))
    name, description = _header(top)
    markers = top.list_of("markers", lambda m: isinstance(m, str) and m.isidentifier(), default=[],
                          message="expected a list of marker names (identifiers)")
    timeout = doc.get("timeout")
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0):
        raise top.error("timeout", f"expected seconds > 0, got {brief(timeout)}")
    repeat = doc.get("repeat", 1)
    if isinstance(repeat, bool) or not isinstance(repeat, int) or repeat < 1:
        raise top.error("repeat", f"expected a whole number >= 1, got {brief(repeat)}")
    keep = top.value("keep_session", (bool,), False, what="true or false")
    server = _server_settings(top)
    params = _parameters(top)
    _check_expansion(top, params, repeat)
    requires = top.list_of("requires", str, default=[],
                           message="expected a list of device command or firmware event names")
    steps = doc.get("steps")
    if not isinstance(steps, Seq) or not steps:
        raise top.error("steps", "missing or empty: a scenario needs steps")
    parsed = [_parse_step(item, steps, i, "steps") for i, item in enumerate(steps)]
    _check_placeholders(parsed, set(params), file)
    _check_parameter_values(parsed, params, file, "steps")
    return Scenario(file=file, name=name, description=" ".join(description.split()), steps=parsed,
                    markers=list(markers), timeout=float(timeout) if timeout else None, server=server,
                    parameters=params, repeat=repeat, keep_session=keep, requires=list(requires), line=doc.line)


#: How many tests one scenario file may expand into (parameter combinations times
#: ``repeat``).  Collection builds them all at once: ``repeat: 1000000000000`` or
#: ten parameters of ten values must be refused, not collected for an hour.
MAX_TESTS = 10_000


def _check_expansion(top: Fields, params: dict[str, list[Any]], repeat: int) -> None:
    """Refuse a file that would expand into more than :data:`MAX_TESTS` tests."""
    count = repeat
    for values in params.values():
        count *= len(values)
        if count > MAX_TESTS:
            break
    if count > MAX_TESTS:
        key = "repeat" if repeat > MAX_TESTS or not params else "parameters"
        sizes = " x ".join(str(len(v)) for v in list(params.values())[:8]) + (" x ..." if len(params) > 8 else "")
        shape = (f"{sizes} parameter values" if params else "") + (" x " if params and repeat > 1 else "") \
            + (f"repeat {repeat}" if repeat > 1 else "")
        raise top.error(key, f"expands to more than {MAX_TESTS} tests ({shape}); split the file or use "
                             "a repeat step")


def _header(top: Fields) -> tuple[str, str]:
    """Schema version, name and description: what every scenario file starts with."""
    if "schema" not in top.map:
        raise top.missing("schema", "missing: write 'schema: 1' first")
    schema = top.map["schema"]
    if schema != SCHEMA_VERSION or isinstance(schema, bool):
        raise top.error("schema", f"unsupported schema version {brief(schema)}; this harness reads {SCHEMA_VERSION}")
    name = top.map.get("name")
    if not isinstance(name, str) or not NAME_RX.match(name):
        raise top.error("name", "missing or not a plain name (letters, digits, _ . -)"
                        if name is None or isinstance(name, str) else f"expected a name, got {brief(name)}")
    description = top.map.get("description")
    if not isinstance(description, str) or not description.strip():
        raise top.error("description",
                        "missing: say in a sentence what this scenario proves and which bug it catches")
    return name, description


def _server_settings(top: Fields) -> dict[str, Any]:
    """The reference server's settings for the whole scenario: the ``server`` step's keys, checked alike."""
    server = top.section("server", required=False, message="expected a mapping of server settings")
    if server is None:
        return {}
    server.no_unknown(_SERVER_KEYS, what="server setting")
    if server.map:
        for key, (kinds, _) in _STEP_KEYS["server"].items():
            if key in server.map:
                server.value(key, kinds, what=_type_words(kinds))
        _check_values("server", server)
    return dict(server.map)


def _parameters(top: Fields) -> dict[str, list[Any]]:
    params = top.section("parameters", required=False, message="expected a mapping of name: [values]")
    if params is None:
        return {}
    for key in params.map:
        values = params.list_of(key, message="expected a non-empty list of values", non_empty=True)
        if not isinstance(key, str) or not key.isidentifier():
            raise params.error(key, "a parameter name is an identifier"
                               + (" (YAML reads an unquoted yes/no/on/off as true/false: quote it)"
                                  if isinstance(key, bool) else ""))
        for value in values:
            if _names_in(value):   # filled in once: a {name} in a value would reach the run as text
                raise params.error(key, f"a parameter value cannot hold a {{placeholder}}, got {brief(value)}")
    return {k: list(v) for k, v in params.map.items()}


#: Placeholders the engine fills while running (see Engine._dynamic).
RUNTIME_VALUES = {"now", "cut_time", "seed"}


def _check_placeholders(steps: list[Step], names: set[str], file: str) -> None:
    names = names | RUNTIME_VALUES

    def check(value: Any, where: str, line: int | None) -> None:
        if isinstance(value, str):
            for found in re.findall(r"\{([^{}]*)\}", value):
                if found not in names:
                    raise ConfigError(file, line, where, f"unknown parameter {{{found}}}; declared: "
                                      + (", ".join(sorted(map(str, names))) or "none"))
        elif isinstance(value, dict):
            for key, item in value.items():
                check(item, f"{where}.{key}", getattr(value, "line_of", lambda k: line)(key))
        elif isinstance(value, list):
            for index, item in enumerate(value):
                check(item, f"{where}[{index}]", line)

    for step in steps:
        for key, value in step.args.items():
            check(value, f"{step.action}.{key}", step.line)
        _check_placeholders(step.steps, names - RUNTIME_VALUES, file)


def _check_parameter_values(steps: list[Step], params: dict[str, list[Any]], file: str, path: str) -> None:
    """Check each step again with each value of each parameter it uses, as the run will fill it in.

    While the steps are read a ``{parameter}`` stands for any type; by now its
    values are known, so ``wait: "{t}"`` with ``t: [abc]`` or
    ``expect_console: "^{p}$"`` with ``p: ["("]`` is refused here, naming the
    value, instead of failing in ``float()`` or ``re.compile`` mid-run.
    """
    for index, step in enumerate(steps):
        where = f"{path}[{index}].{step.action}"
        if step.action == "repeat":
            _check_parameter_values(step.steps, params, file, f"{where}.steps")
        used = {name for value in step.args.values() for name in _names_in(value)} & set(params)
        for name in sorted(used):
            for value in params[name]:
                args = substitute(step.args, {name: value})
                if step.action == "repeat":
                    args["steps"] = []
                fields = Fields(Map.at(file, step.line, args), where)
                try:
                    _check_arguments(fields, _STEP_KEYS[step.action])
                    _check_values(step.action, fields)
                except ConfigError as exc:
                    raise ConfigError(file, step.line, exc.key,
                                      f"with parameter {name} = {brief(value)}: {exc.message}") from None


def _names_in(value: Any) -> set[str]:
    """The ``{name}`` placeholders anywhere in a step argument."""
    if isinstance(value, str):
        return set(re.findall(r"\{(\w+)\}", value))
    if isinstance(value, dict):
        return set().union(*(_names_in(v) for v in value.values())) if value else set()
    if isinstance(value, list):
        return set().union(*(_names_in(v) for v in value)) if value else set()
    return set()


def load(path: str | Path) -> Scenario:
    return parse(yamlfile.load(path), str(path))


def walk(steps: list[Step]) -> list[Step]:
    """Every step in order, the steps inside ``repeat`` included."""
    out: list[Step] = []
    for step in steps:
        out.append(step)
        out.extend(walk(step.steps))
    return out


def substitute(value: Any, params: dict[str, Any]) -> Any:
    """Fill ``{name}`` parameters into step arguments; numbers stay numbers."""
    if isinstance(value, str):
        whole = re.fullmatch(r"\{(\w+)\}", value)
        if whole and whole.group(1) in params:
            return params[whole.group(1)]
        return re.sub(r"\{(\w+)\}", lambda m: str(params.get(m.group(1), m.group(0))), value)
    if isinstance(value, dict):
        return {k: substitute(v, params) for k, v in value.items()}
    if isinstance(value, list):
        return [substitute(v, params) for v in value]
    return value
