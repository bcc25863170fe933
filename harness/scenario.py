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

from . import yamlfile
from .devicefile import PROTOCOLS
from .errors import ConfigError
from .yamlfile import Map, Seq

SCHEMA_VERSION = 1
VERSIONS = ("tls1.2", "tls1.3", "auto")
SERVER_VERSIONS = ("TLSv1.2", "TLSv1.3")
EXPECTATIONS = ("resumed_across_power_loss", "full", "resumed", "nothing_offered", "refused", "connected",
                "no_handshake", "power_not_cut", "consistent")
MECHANISMS = ("full", "ticket", "session-id", "psk")
REASONS = ("unknown", "expired", "rotated", "tickets-off", "version", "foreign")
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
               "versions": ((list, str), False), "protocol": ((str,), False), "greeting": ((str,), False)},
    "expect_server": {"outcome": ((str,), True), "reason": ((str,), False), "cut": ((int,), False),
                      "mechanism": ((str,), False), "server": ((str,), False)},
    "corrupt_session": {"bytes": ((int,), False), "seed": ((int,), False)},
    "repeat": {"times": ((int,), True), "steps": ((list,), True)},
}
_SHORTHAND = {"wait": "seconds", "device": "command", "send": "line", "expect_console": "pattern",
              "expect_reset": "cause", "expect_server": "outcome", "cut_power_when": "line"}
_EMPTY_OK = {"power_on", "power_off", "power_cycle", "connect", "corrupt_session", "expect_stored"}


def _closest(word: str, choices: Any) -> str:
    import difflib

    match = difflib.get_close_matches(word, sorted(choices), n=1)
    return f" (did you mean '{match[0]}'?)" if match else ""


def _parse_step(item: Any, seq: Seq, index: int, path: str) -> Step:
    line = seq.line_of(index)
    file = seq.file
    where = f"{path}[{index}]"
    if not isinstance(item, Map) or len(item) == 0:
        raise ConfigError(file, line, where, "a step is a mapping with one action, e.g. '- power_cycle: {}'")
    actions = [k for k in item if k in _STEP_KEYS]
    unknown = [k for k in item if k not in _STEP_KEYS]
    if unknown:
        key = str(unknown[0])
        raise ConfigError(file, item.line_of(unknown[0]), f"{where}.{key}",
                          f"unknown step action{_closest(key, _STEP_KEYS)}; known: {', '.join(_STEP_KEYS)}")
    if len(actions) != 1:
        raise ConfigError(file, line, where, f"a step has exactly one action, found: {', '.join(actions)}")
    action = actions[0]
    value = item[action]
    key_line = item.line_of(action)
    schema = _STEP_KEYS[action]
    if value is None:
        if action not in _EMPTY_OK:
            raise ConfigError(file, key_line, f"{where}.{action}", "needs a value")
        args: dict[str, Any] = {}
    elif isinstance(value, Map) and not (action in _SHORTHAND and set(value) == {"random"}):
        args = dict(value)
        for key in value:
            if key not in schema:
                hint = (" (YAML reads an unquoted on/off/yes/no as true/false)" if isinstance(key, bool)
                        else _closest(str(key), schema))
                raise ConfigError(file, value.line_of(key), f"{where}.{action}.{key}",
                                  f"unknown key{hint}; allowed: {', '.join(schema)}")
    elif action in _SHORTHAND and (not isinstance(value, (list, dict)) or isinstance(value, Map)):
        args = {_SHORTHAND[action]: value}
    else:
        raise ConfigError(file, key_line, f"{where}.{action}", "expected a mapping of options"
                          + (f" or a single {_SHORTHAND[action]}" if action in _SHORTHAND else ""))
    for key, (kinds, required) in schema.items():
        kline = value.line_of(key) if isinstance(value, Map) else key_line
        if key not in args:
            if required:
                raise ConfigError(file, kline, f"{where}.{action}.{key}", "missing")
            continue
        v = args[key]
        if isinstance(v, str) and str not in kinds and re.fullmatch(r"\{\w+\}", v):
            continue    # a parameter, checked below and filled in at run time
        _check_type(v, kinds, file, kline, f"{where}.{action}.{key}")
        if isinstance(v, (int, float)) and not isinstance(v, bool) and v < 0 and key != "cut":
            raise ConfigError(file, kline, f"{where}.{action}.{key}", f"must not be negative, got {v}")
    _check_values(action, args, file, value if isinstance(value, Map) else None, key_line, f"{where}.{action}")
    sub: list[Step] = []
    if action == "repeat":
        steps = args["steps"]
        if not steps:
            raise ConfigError(file, key_line, f"{where}.repeat.steps", "is empty")
        sub = [_parse_step(s, steps, i, f"{where}.repeat.steps") for i, s in enumerate(steps)]
        args = {"times": args["times"]}
    return Step(action, args, file, line, sub)


def _check_type(value: Any, kinds: tuple[type, ...], file: str, line: int | None, where: str) -> None:
    """One value against the types its key allows (a YAML true is not a number)."""
    if (isinstance(value, bool) and bool not in kinds) or not isinstance(value, kinds):
        names = " or ".join(dict.fromkeys(
            "number" if k in (int, float) else "{random: [low, high]}" if k is dict else k.__name__
            for k in kinds))
        raise ConfigError(file, line, where, f"expected {names}, got {value!r}")


def _check_values(action: str, args: dict[str, Any], file: str, value: Map | None, line: int | None,
                  where: str) -> None:
    def err(key: str, msg: str) -> ConfigError:
        return ConfigError(file, value.line_of(key) if value is not None else line, f"{where}.{key}", msg)

    for key in ("off_time", "delay", "duration", "seconds"):
        v = args.get(key)
        if isinstance(v, str) and (key != "off_time" or v != "discharged") and "{" not in v:
            raise err(key, f"expected seconds{' or discharged' if key == 'off_time' else ''}, got {v!r}")
        if isinstance(v, dict) and key == "delay" and set(v) == {"of_write"}:
            frac = v["of_write"]
            if not (isinstance(frac, str) and re.fullmatch(r"\{\w+\}", frac)) and \
                    (isinstance(frac, bool) or not isinstance(frac, (int, float)) or frac < 0):
                raise err(key, f"expected {{of_write: FRACTION}} with a fraction >= 0 of the device's measured "
                               f"session write time, got {dict(v)!r}")
            continue
        if isinstance(v, dict):
            rnd = v.get("random")
            if (set(v) != {"random"} or not isinstance(rnd, list) or len(rnd) != 2
                    or not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in rnd)
                    or not 0 <= rnd[0] <= rnd[1]):
                raise err(key, f"expected seconds or {{random: [low, high]}} with 0 <= low <= high, got {dict(v)!r}")
    if action == "cut_power_when" and ("line" in args) == ("after" in args):
        raise ConfigError(file, line, where, "say when to cut: after: <a firmware event of the device file "
                          "(flash_write, session_stored, firmware.events.NAME) or connect>, or line: <regex>; "
                          "one of them")
    if action == "cut_power_when" and "after" in args:
        pass  # a name, resolved against the device file when the scenario runs
    elif action in ("cut_power_when", "expect_console"):
        pattern = args.get("line") or args.get("pattern")
        try:
            re.compile(pattern)
        except re.error as exc:
            raise err("line" if action == "cut_power_when" else "pattern",
                      f"not a valid regular expression: {exc}") from None
    if action == "connect":
        version = args.get("version")
        if version is not None and "{" not in version and version not in VERSIONS:
            raise err("version", f"expected one of {', '.join(VERSIONS)}, got {version!r}")
        expect = args.get("expect")
        if expect is not None and expect not in ("ok", "fail", "any"):
            raise err("expect", f"expected ok, fail or any, got {expect!r}")
    if action == "expect_server":
        outcome = args["outcome"]
        if outcome not in EXPECTATIONS:
            raise err("outcome", f"unknown expectation{_closest(outcome, EXPECTATIONS)}; known: "
                      + ", ".join(EXPECTATIONS))
        reason = args.get("reason")
        if reason is not None and reason not in REASONS:
            raise err("reason", f"unknown refusal reason; known: {', '.join(REASONS)}")
        if reason is not None and outcome != "refused":
            raise err("reason", "a reason goes with outcome: refused")
        mechanism = args.get("mechanism")
        if mechanism is not None and mechanism not in MECHANISMS:
            raise err("mechanism", f"expected one of {', '.join(MECHANISMS)}, got {mechanism!r}")
    if action == "server":
        versions = args.get("versions")
        if versions is not None:
            items = [versions] if isinstance(versions, str) else versions
            for v in items:
                if v not in SERVER_VERSIONS:
                    raise err("versions", f"expected TLSv1.2 and/or TLSv1.3, got {v!r}")
        protocol = args.get("protocol")
        if protocol is not None and protocol not in PROTOCOLS:
            raise err("protocol", f"unknown application protocol{_closest(protocol, PROTOCOLS)}; known: "
                      + ", ".join(PROTOCOLS))
        if not args:
            raise ConfigError(file, line, where, "say what to change: rotate_keys, tickets, lifetime, "
                              "tls13_tickets, session_cache, versions, protocol or greeting")
    duration = args.get("duration")
    if action == "brownout" and isinstance(duration, (int, float)) and duration > 60:
        raise err("duration", "a brown-out longer than a minute is a power cut: use power_off")
    if action == "repeat" and (not isinstance(args["times"], int) or args["times"] < 1):
        raise err("times", f"must be a whole number of at least 1, got {args['times']!r}")
    if action == "corrupt_session" and isinstance(args.get("bytes"), int) and args["bytes"] < 1:
        raise err("bytes", "must be at least 1")


_TOP = {"schema", "name", "description", "markers", "timeout", "server", "parameters", "repeat",
        "keep_session", "requires", "steps"}
_SERVER_KEYS = {"versions", "tickets", "lifetime", "tls13_tickets", "session_cache", "protocol", "greeting"}


def parse(doc: Any, file: str) -> Scenario:
    if not isinstance(doc, Map):
        raise ConfigError(file, getattr(doc, "line", 1), None,
                          "a scenario file is a mapping with schema, name, description and steps")
    for key in doc:
        if key not in _TOP:
            raise doc.error(str(key), f"unknown key{_closest(str(key), _TOP)}; allowed: {', '.join(sorted(_TOP))}")
    if "schema" not in doc:
        raise ConfigError(file, doc.line, "schema", "missing: write 'schema: 1' first")
    if doc["schema"] != SCHEMA_VERSION or isinstance(doc["schema"], bool):
        raise doc.error("schema", f"unsupported schema version {doc['schema']!r}; this harness reads {SCHEMA_VERSION}")
    name = doc.get("name")
    if not isinstance(name, str) or not NAME_RX.match(name):
        raise ConfigError(file, doc.line_of("name"), "name",
                          "missing or not a plain name (letters, digits, _ . -)" if name is None or isinstance(name, str)
                          else f"expected a name, got {name!r}")
    description = doc.get("description")
    if not isinstance(description, str) or not description.strip():
        raise ConfigError(file, doc.line_of("description"), "description",
                          "missing: say in a sentence what this scenario proves and which bug it catches")
    markers = doc.get("markers", [])
    if not isinstance(markers, list) or not all(isinstance(m, str) and m.isidentifier() for m in markers):
        raise doc.error("markers", "expected a list of marker names (identifiers)")
    timeout = doc.get("timeout")
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0):
        raise doc.error("timeout", f"expected seconds > 0, got {timeout!r}")
    repeat = doc.get("repeat", 1)
    if isinstance(repeat, bool) or not isinstance(repeat, int) or repeat < 1:
        raise doc.error("repeat", f"expected a whole number >= 1, got {repeat!r}")
    keep = doc.get("keep_session", False)
    if not isinstance(keep, bool):
        raise doc.error("keep_session", f"expected true or false, got {keep!r}")
    server = doc.get("server", Map())
    if not isinstance(server, dict):
        raise doc.error("server", "expected a mapping of server settings")
    for key in server:
        if key not in _SERVER_KEYS:
            raise ConfigError(file, server.line_of(key), f"server.{key}",
                              f"unknown server setting{_closest(str(key), _SERVER_KEYS)}; allowed: "
                              + ", ".join(sorted(_SERVER_KEYS)))
    if server:
        for key, (kinds, _) in _STEP_KEYS["server"].items():
            if key in server:
                _check_type(server[key], kinds, file, server.line_of(key), f"server.{key}")
        _check_values("server", dict(server), file, server, doc.line_of("server"), "server")
    params = doc.get("parameters", Map())
    if not isinstance(params, dict):
        raise doc.error("parameters", "expected a mapping of name: [values]")
    for key, values in params.items():
        if not isinstance(values, list) or not values:
            raise ConfigError(file, params.line_of(key), f"parameters.{key}", "expected a non-empty list of values")
        if not str(key).isidentifier():
            raise ConfigError(file, params.line_of(key), f"parameters.{key}", "a parameter name is an identifier")
    requires = doc.get("requires", [])
    if not isinstance(requires, list) or not all(isinstance(r, str) for r in requires):
        raise doc.error("requires", "expected a list of device command or firmware event names")
    steps = doc.get("steps")
    if not isinstance(steps, Seq) or not steps:
        raise ConfigError(file, doc.line_of("steps"), "steps", "missing or empty: a scenario needs steps")
    parsed = [_parse_step(item, steps, i, "steps") for i, item in enumerate(steps)]
    _check_placeholders(parsed, set(params), file)
    return Scenario(file=file, name=name, description=" ".join(description.split()), steps=parsed,
                    markers=list(markers), timeout=float(timeout) if timeout else None, server=dict(server),
                    parameters={k: list(v) for k, v in params.items()}, repeat=repeat, keep_session=keep,
                    requires=list(requires), line=doc.line)


#: Placeholders the engine fills while running (see Engine._dynamic).
RUNTIME_VALUES = {"now", "cut_time", "seed"}


def _check_placeholders(steps: list[Step], names: set[str], file: str) -> None:
    names = names | RUNTIME_VALUES

    def check(value: Any, where: str, line: int | None) -> None:
        if isinstance(value, str):
            for found in re.findall(r"\{([^{}]*)\}", value):
                if found not in names:
                    raise ConfigError(file, line, where, f"unknown parameter {{{found}}}; declared: "
                                      + (", ".join(sorted(names)) or "none"))
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
