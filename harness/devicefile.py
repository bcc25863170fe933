"""Device files: everything about one bench and its firmware, as data.

A device file (``devices/*.yaml``) says how to reach the supply and the UART,
what the firmware shell looks like and how to drive it, and how the device
reaches the reference server.  Adding a bench or a firmware shell is writing
a file, never an ``if`` in the engine.  Every mistake is reported with file,
line and key (see :mod:`harness.yamlfile`).

Strings may hold ``{placeholders}`` filled at run time: ``{bench.NAME}`` from
the lines a bench launcher prints, ``{run_dir}``, ``{python}``, ``{server_ca}``
and any value given on the command line (``--set NAME=VALUE``); command
templates also see their own arguments (``{host}``, ``{port}``, ...).
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from . import yamlfile
from .errors import ConfigError
from .yamlfile import Map

SCHEMA_VERSION = 1
#: TLS versions a firmware may support, in the harness's spelling (scenario files use it)
TLS_VERSIONS = ("tls1.2", "tls1.3")
#: version words of the connect step: a version, or ``auto`` (let the stacks negotiate)
VERSION_WORDS = TLS_VERSIONS + ("auto",)
#: application protocols the reference server speaks after the handshake
PROTOCOLS = ("none", "line", "http", "mqtt", "greeting")


@dataclass
class BenchSpec:
    """A command that brings a bench up (the simulated bench, a ser2net, a relay box)."""

    start: list[str]
    ready: str
    resources: dict[str, str]
    timeout: float = 30.0


@dataclass
class SupplySpec:
    resource: str
    dialect: str
    channel: int = 1
    visa_library: str = "@py"
    voltage: float = 3.3
    current_limit: float = 0.5
    ovp: float | None = None
    discharge_below: float = 0.3
    min_off: float = 0.2
    discharge_timeout: float = 5.0
    settle_tolerance: float = 0.1
    safe_state: dict[str, Any] = field(default_factory=lambda: {"output": "off"})
    brownout_threshold: float | None = None


@dataclass
class ConsoleSpec:
    url: str
    baudrate: int = 115200
    line_ending: str = "\r\n"
    char_delay: float = 0.0


@dataclass
class CommandSpec:
    """One firmware shell command: what to send and how to tell success from failure."""

    name: str
    send: str | None
    ok: str | None
    fail: str | None = None
    timeout: float = 10.0
    line: int | None = None


@dataclass
class FirmwareSpec:
    boot_ready: str
    boot_timeout: float = 10.0
    prompt: str | None = None
    reset_cause: str | None = None
    session_stored: str | None = None
    flash_write: str | None = None
    forbid: list[str] = field(default_factory=list)
    autoconnect: bool = False
    commands: dict[str, CommandSpec] = field(default_factory=dict)
    #: harness reset-cause names (power-on, brown-out, software, watchdog) ->
    #: a pattern for what this firmware prints in the reset_cause group
    reset_causes: dict[str, str] = field(default_factory=dict)
    #: patterns for secrets the firmware may print (debug dumps of keys or
    #: tickets): replaced by a fingerprint before anything stores the line
    redact: list[str] = field(default_factory=list)
    #: TLS versions the firmware's stack supports: cells asking for another
    #: version are skipped (not passed, not failed)
    versions: list[str] = field(default_factory=lambda: list(TLS_VERSIONS))
    #: how the connect command spells each version (``tls1.2: "1.2"``)
    version_tokens: dict[str, str] = field(default_factory=lambda: {v: v for v in VERSION_WORDS})
    #: named console patterns scenarios may trigger on (``cut_power_when: {on: NAME}``)
    #: or require (``requires: [NAME]``); flash_write and session_stored are names too
    events: dict[str, str] = field(default_factory=dict)

    def event(self, name: str) -> str | None:
        """The console pattern a scenario means by ``name``, or None if this firmware has none."""
        if name in self.events:
            return self.events[name]
        if name in ("flash_write", "session_stored", "boot_ready", "reset_cause"):
            return getattr(self, name)
        return None


@dataclass
class ServerSpec:
    """How the reference server is set up for this bench and how the device reaches it."""

    bind: str = "127.0.0.1"
    reach_host: str = "127.0.0.1"
    port: int = 0
    names: list[str] = field(default_factory=lambda: ["server.test"])
    ips: list[str] = field(default_factory=lambda: ["127.0.0.1"])
    key_type: str = "ec"
    cert: str | None = None
    key: str | None = None
    ca: str | None = None
    #: what the device speaks after the handshake (see harness.server.app)
    protocol: str = "line"
    greeting: str | None = None
    #: seconds the server lets an idle connection live after the handshake
    app_timeout: float | None = None


@dataclass
class DeviceSpec:
    path: str
    name: str
    description: str
    supply: SupplySpec
    console: ConsoleSpec
    firmware: FirmwareSpec
    server: ServerSpec
    bench: BenchSpec | None = None
    flash_file: str | None = None
    variables: dict[str, str] = field(default_factory=dict)
    source: Map | None = None


# -- validation helpers -----------------------------------------------------

_Checker = Callable[[Any], Any]


def _typed(map_: Map, key: str, kinds: tuple[type, ...], what: str, default: Any = ...,
           path: str = "") -> Any:
    full = f"{path}.{key}" if path else key
    if key not in map_:
        if default is ...:
            raise ConfigError(map_.file, map_.owner_line or map_.line, full, f"missing (expected {what})")
        return default
    value = map_[key]
    if isinstance(value, bool) and bool not in kinds:
        raise ConfigError(map_.file, map_.line_of(key), full, f"expected {what}, got {value!r}")
    if not isinstance(value, kinds):
        raise ConfigError(map_.file, map_.line_of(key), full, f"expected {what}, got {value!r}")
    return value


def _num(map_: Map, key: str, default: Any = ..., path: str = "", minimum: float | None = 0.0) -> Any:
    value = _typed(map_, key, (int, float), "a number", default, path)
    if value is not None and value is not default and minimum is not None and value < minimum:
        full = f"{path}.{key}" if path else key
        raise ConfigError(map_.file, map_.line_of(key), full, f"must be >= {minimum}, got {value}")
    return float(value) if isinstance(value, (int, float)) else value


def _str(map_: Map, key: str, default: Any = ..., path: str = "") -> Any:
    return _typed(map_, key, (str,), "a string", default, path)


def _regex(map_: Map, key: str, default: Any = ..., path: str = "") -> Any:
    value = _str(map_, key, default, path)
    if isinstance(value, str):
        try:
            re.compile(value)
        except re.error as exc:
            full = f"{path}.{key}" if path else key
            raise ConfigError(map_.file, map_.line_of(key), full,
                              f"not a valid regular expression: {exc}") from None
    return value


def _section(map_: Map, key: str, required: bool = True, path: str = "") -> Map | None:
    full = f"{path}.{key}" if path else key
    if key not in map_:
        if required:
            raise ConfigError(map_.file, map_.line, full, "missing section")
        return None
    value = map_[key]
    if not isinstance(value, Map):
        raise ConfigError(map_.file, map_.line_of(key), full, "expected a mapping")
    return value


def _no_unknown(map_: Map, allowed: set[str], path: str = "") -> None:
    for key in map_:
        if key not in allowed:
            full = f"{path}.{key}" if path else str(key)
            hint = _closest(str(key), allowed)
            raise ConfigError(map_.file, map_.line_of(key), full,
                              f"unknown key{hint}; allowed: {', '.join(sorted(allowed))}")


def _closest(word: str, choices: set[str]) -> str:
    import difflib

    match = difflib.get_close_matches(word, sorted(choices), n=1)
    return f" (did you mean '{match[0]}'?)" if match else ""


def placeholders(template: str) -> list[str]:
    """Names used as ``{name}`` in a template (``{{`` escapes are not names)."""
    names = []
    for _, name, _, _ in string.Formatter().parse(template):
        if name:
            names.append(name)
    return names


# -- sections -----------------------------------------------------------------

_SUPPLY_KEYS = {"resource", "dialect", "channel", "visa_library", "voltage", "current_limit", "ovp",
                "discharge_below", "min_off", "discharge_timeout", "settle_tolerance", "safe_state",
                "brownout_threshold"}


def _supply(doc: Map) -> SupplySpec:
    sec = _section(doc, "supply")
    assert sec is not None
    _no_unknown(sec, _SUPPLY_KEYS, "supply")
    channel = _typed(sec, "channel", (int,), "a channel number", 1, "supply")
    if channel < 1:
        raise sec.error("channel", "channel numbers start at 1", path="supply.channel")
    safe = sec.get("safe_state", Map({"output": "off"}))
    if not isinstance(safe, dict):
        raise ConfigError(sec.file, sec.line_of("safe_state"), "supply.safe_state",
                          "expected a mapping like {output: off}")
    output = str(safe.get("output", "off")).lower() if not isinstance(safe.get("output"), bool) \
        else ("on" if safe.get("output") else "off")
    if output not in ("on", "off"):
        raise ConfigError(sec.file, sec.line_of("safe_state"), "supply.safe_state.output",
                          f"must be on or off, got {safe.get('output')!r}")
    voltage = _num(sec, "voltage", 3.3, "supply")
    ovp = _num(sec, "ovp", None, "supply")
    if ovp is not None and ovp < voltage:
        raise sec.error("ovp", f"over-voltage protection {ovp} V is below the set-point {voltage} V",
                        path="supply.ovp")
    return SupplySpec(
        resource=_str(sec, "resource", path="supply"),
        dialect=_str(sec, "dialect", path="supply"),
        channel=channel,
        visa_library=_str(sec, "visa_library", "@py", "supply"),
        voltage=voltage,
        current_limit=_num(sec, "current_limit", 0.5, "supply"),
        ovp=ovp,
        discharge_below=_num(sec, "discharge_below", 0.3, "supply"),
        min_off=_num(sec, "min_off", 0.2, "supply"),
        discharge_timeout=_num(sec, "discharge_timeout", 5.0, "supply"),
        settle_tolerance=_num(sec, "settle_tolerance", 0.1, "supply"),
        safe_state={"output": output, **{k: v for k, v in safe.items() if k != "output"}},
        brownout_threshold=_num(sec, "brownout_threshold", None, "supply"),
    )


def _console(doc: Map) -> ConsoleSpec:
    sec = _section(doc, "console")
    assert sec is not None
    _no_unknown(sec, {"url", "baudrate", "line_ending", "char_delay"}, "console")
    baud = _typed(sec, "baudrate", (int,), "a baud rate", 115200, "console")
    if baud <= 0:
        raise sec.error("baudrate", "must be positive", path="console.baudrate")
    return ConsoleSpec(
        url=_str(sec, "url", path="console"),
        baudrate=baud,
        line_ending=_str(sec, "line_ending", "\r\n", "console"),
        char_delay=_num(sec, "char_delay", 0.0, "console"),
    )


_COMMAND_KEYS = {"send", "ok", "fail", "timeout"}
#: Commands the engine knows how to use; a device file may add its own.
KNOWN_COMMANDS = ("connect", "erase_session", "set_clock", "show_session", "reset", "corrupt_session")


def _commands(fw: Map) -> dict[str, CommandSpec]:
    sec = _section(fw, "commands", required=False, path="firmware")
    result: dict[str, CommandSpec] = {}
    if sec is None:
        return result
    for name, body in sec.items():
        path = f"firmware.commands.{name}"
        if isinstance(body, str):
            result[name] = CommandSpec(name, body, None, None, 10.0, sec.line_of(name))
            continue
        if not isinstance(body, Map):
            raise ConfigError(sec.file, sec.line_of(name), path,
                              "expected a mapping with send/ok/fail/timeout or a line to send")
        _no_unknown(body, _COMMAND_KEYS, path)
        send = _str(body, "send", None, path)
        if send is None and name != "connect":
            raise ConfigError(body.file, body.line, f"{path}.send", "missing (the line to send)")
        result[name] = CommandSpec(
            name=name,
            send=send,
            ok=_regex(body, "ok", None, path),
            fail=_regex(body, "fail", None, path),
            timeout=_num(body, "timeout", 10.0, path),
            line=sec.line_of(name),
        )
    return result


def _regex_list(sec: Map, key: str) -> list[str]:
    items = sec.get(key, [])
    if not isinstance(items, list) or not all(isinstance(p, str) for p in items):
        raise ConfigError(sec.file, sec.line_of(key), f"firmware.{key}", "expected a list of regular expressions")
    for index, pattern in enumerate(items):
        try:
            re.compile(pattern)
        except re.error as exc:
            raise ConfigError(sec.file, sec.line_of(key), f"firmware.{key}[{index}]",
                              f"not a valid regular expression: {exc}") from None
    return list(items)


_FIRMWARE_KEYS = {"boot_ready", "boot_timeout", "prompt", "reset_cause", "reset_causes", "session_stored",
                  "flash_write", "forbid", "redact", "autoconnect", "commands", "versions", "version_tokens",
                  "events"}


def _versions(sec: Map) -> list[str]:
    value = sec.get("versions", list(TLS_VERSIONS))
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise sec.error("versions", "expected a list like [tls1.2, tls1.3]", path="firmware.versions")
    for v in value:
        if v not in TLS_VERSIONS:
            raise sec.error("versions", f"unknown TLS version {v!r}{_closest(v, set(TLS_VERSIONS))}; "
                            f"known: {', '.join(TLS_VERSIONS)}", path="firmware.versions")
    return list(dict.fromkeys(value))


def _version_tokens(sec: Map) -> dict[str, str]:
    tokens = {v: v for v in VERSION_WORDS}
    given = sec.get("version_tokens")
    if given is None:
        return tokens
    if not isinstance(given, Map):
        raise sec.error("version_tokens", 'expected a mapping like {tls1.2: "1.2", tls1.3: "1.3", auto: ""}',
                        path="firmware.version_tokens")
    for word, token in given.items():
        where = f"firmware.version_tokens.{word}"
        if word not in VERSION_WORDS:
            raise ConfigError(given.file, given.line_of(word), where,
                              f"unknown version{_closest(str(word), set(VERSION_WORDS))}; known: "
                              + ", ".join(VERSION_WORDS))
        if token is None:
            token = ""
        if not isinstance(token, (str, int, float)) or isinstance(token, bool):
            raise ConfigError(given.file, given.line_of(word), where,
                              f"expected the word the shell takes (a string), got {token!r}")
        tokens[str(word)] = str(token)
    return tokens


def _events(sec: Map) -> dict[str, str]:
    given = sec.get("events")
    if given is None:
        return {}
    if not isinstance(given, Map):
        raise sec.error("events", "expected a mapping of name: regular expression", path="firmware.events")
    for name, pattern in given.items():
        where = f"firmware.events.{name}"
        if not isinstance(name, str) or not name.isidentifier():
            raise ConfigError(given.file, given.line_of(name), where, "an event name is an identifier")
        if not isinstance(pattern, str):
            raise ConfigError(given.file, given.line_of(name), where, "expected a regular expression")
        try:
            re.compile(pattern)
        except re.error as exc:
            raise ConfigError(given.file, given.line_of(name), where,
                              f"not a valid regular expression: {exc}") from None
    return dict(given)


def _firmware(doc: Map) -> FirmwareSpec:
    sec = _section(doc, "firmware")
    assert sec is not None
    _no_unknown(sec, _FIRMWARE_KEYS, "firmware")
    forbid = _regex_list(sec, "forbid")
    redact = _regex_list(sec, "redact")
    autoconnect = _typed(sec, "autoconnect", (bool,), "true or false", False, "firmware")
    causes = sec.get("reset_causes", {})
    if not isinstance(causes, dict):
        raise sec.error("reset_causes", "expected a mapping like {brown-out: BROWNOUT}", path="firmware.reset_causes")
    for name, pattern in causes.items():
        if not isinstance(pattern, str):
            raise ConfigError(sec.file, causes.line_of(name), f"firmware.reset_causes.{name}",
                              "expected a regular expression")
        try:
            re.compile(pattern)
        except re.error as exc:
            raise ConfigError(sec.file, causes.line_of(name), f"firmware.reset_causes.{name}",
                              f"not a valid regular expression: {exc}") from None
    spec = FirmwareSpec(
        boot_ready=_regex(sec, "boot_ready", path="firmware"),
        boot_timeout=_num(sec, "boot_timeout", 10.0, "firmware"),
        prompt=_str(sec, "prompt", None, "firmware"),
        reset_cause=_regex(sec, "reset_cause", None, "firmware"),
        session_stored=_regex(sec, "session_stored", None, "firmware"),
        flash_write=_regex(sec, "flash_write", None, "firmware"),
        forbid=forbid,
        autoconnect=autoconnect,
        commands=_commands(sec),
        reset_causes={str(k): v for k, v in causes.items()},
        redact=redact,
        versions=_versions(sec),
        version_tokens=_version_tokens(sec),
        events=_events(sec),
    )
    if spec.reset_cause is not None and "cause" not in re.compile(spec.reset_cause).groupindex:
        raise sec.error("reset_cause", "needs a named group (?P<cause>...)",
                        path="firmware.reset_cause")
    if not autoconnect and "connect" not in spec.commands:
        raise ConfigError(sec.file, sec.line, "firmware.commands.connect",
                          "missing: a device without a connect command must set autoconnect: true")
    if autoconnect and "connect" in spec.commands:
        raise ConfigError(sec.file, spec.commands["connect"].line, "firmware.commands.connect",
                          "a device with autoconnect: true connects by itself; remove the connect command "
                          "or set autoconnect: false")
    connect = spec.commands.get("connect")
    if connect is not None and connect.ok is None:
        raise ConfigError(sec.file, connect.line, "firmware.commands.connect.ok",
                          "missing: the pattern that says the connection succeeded")
    return spec


def _server(doc: Map) -> ServerSpec:
    sec = _section(doc, "server", required=False)
    if sec is None:
        return ServerSpec()
    _no_unknown(sec, {"bind", "reach_host", "port", "names", "ips", "key_type", "cert", "key", "ca",
                      "protocol", "greeting", "app_timeout"}, "server")
    protocol = _str(sec, "protocol", "line", "server")
    if protocol not in PROTOCOLS:
        raise sec.error("protocol", f"unknown application protocol {protocol!r}"
                        f"{_closest(protocol, set(PROTOCOLS))}; known: {', '.join(PROTOCOLS)}",
                        path="server.protocol")
    app_timeout = _num(sec, "app_timeout", None, "server")
    if app_timeout is not None and app_timeout <= 0:
        raise sec.error("app_timeout", "must be more than 0 s", path="server.app_timeout")
    names = sec.get("names", ["server.test"])
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise ConfigError(sec.file, sec.line_of("names"), "server.names",
                          "expected a non-empty list of host names")
    ips = sec.get("ips", ["127.0.0.1"])
    if not isinstance(ips, list) or not all(isinstance(n, str) for n in ips):
        raise ConfigError(sec.file, sec.line_of("ips"), "server.ips", "expected a list of addresses")
    key_type = _str(sec, "key_type", "ec", "server")
    if key_type not in ("ec", "rsa"):
        raise sec.error("key_type", f"must be ec or rsa, got {key_type!r}", path="server.key_type")
    own = [k for k in ("cert", "key", "ca") if k in sec]
    if own and len(own) != 3:
        missing = sorted({"cert", "key", "ca"} - set(own))
        raise ConfigError(sec.file, sec.line_of(own[0]), f"server.{missing[0]}",
                          "your own certificate needs cert, key and ca together")
    port = _typed(sec, "port", (int,), "a TCP port", 0, "server")
    if not 0 <= port <= 65535:
        raise sec.error("port", f"not a TCP port: {port}", path="server.port")
    base = Path(doc.file).parent

    def own_path(key: str) -> str | None:
        value = _str(sec, key, None, "server")
        return None if value is None else str((base / value) if not Path(value).is_absolute() else value)

    return ServerSpec(
        bind=_str(sec, "bind", "127.0.0.1", "server"),
        reach_host=_str(sec, "reach_host", "127.0.0.1", "server"),
        port=port,
        names=list(names),
        ips=list(ips),
        key_type=key_type,
        cert=own_path("cert"),
        key=own_path("key"),
        ca=own_path("ca"),
        protocol=protocol,
        greeting=_str(sec, "greeting", None, "server"),
        app_timeout=app_timeout,
    )


def _bench(doc: Map) -> BenchSpec | None:
    sec = _section(doc, "bench", required=False)
    if sec is None:
        return None
    _no_unknown(sec, {"start", "ready", "resources", "timeout"}, "bench")
    start = sec.get("start")
    if not isinstance(start, list) or not start or not all(isinstance(a, str) for a in start):
        raise ConfigError(sec.file, sec.line_of("start"), "bench.start",
                          "expected the command as a list of strings")
    resources = _section(sec, "resources", path="bench")
    assert resources is not None
    for name in resources:
        value = resources[name]
        if not isinstance(value, str):
            raise ConfigError(resources.file, resources.line_of(name), f"bench.resources.{name}",
                              "expected a regular expression with a (?P<value>...) group")
        try:
            compiled = re.compile(value)
        except re.error as exc:
            raise ConfigError(resources.file, resources.line_of(name), f"bench.resources.{name}",
                              f"not a valid regular expression: {exc}") from None
        if "value" not in compiled.groupindex:
            raise ConfigError(resources.file, resources.line_of(name), f"bench.resources.{name}",
                              "needs a named group (?P<value>...)")
    return BenchSpec(start=list(start), ready=_regex(sec, "ready", path="bench"),
                     resources=dict(resources), timeout=_num(sec, "timeout", 30.0, "bench"))


_TOP_KEYS = {"schema", "name", "description", "bench", "supply", "console", "firmware", "server",
             "flash_file", "variables"}


def parse(doc: Any, file: str) -> DeviceSpec:
    if not isinstance(doc, Map):
        raise ConfigError(file, getattr(doc, "line", 1), None,
                          "a device file is a mapping (schema, name, supply, console, firmware, ...)")
    _no_unknown(doc, _TOP_KEYS)
    schema = _typed(doc, "schema", (int,), "the schema version number")
    if schema != SCHEMA_VERSION:
        raise doc.error("schema", f"unsupported schema version {schema}; this harness reads {SCHEMA_VERSION}")
    variables = doc.get("variables", {})
    if not isinstance(variables, dict):
        raise doc.error("variables", "expected a mapping of name: value")
    spec = DeviceSpec(
        path=file,
        name=_str(doc, "name"),
        description=str(doc.get("description", "")).strip(),
        bench=_bench(doc),
        supply=_supply(doc),
        console=_console(doc),
        firmware=_firmware(doc),
        server=_server(doc),
        flash_file=_str(doc, "flash_file", None),
        variables={str(k): str(v) for k, v in variables.items()},
        source=doc,
    )
    _check_placeholders(spec, doc)
    return spec


def load(path: str | Path) -> DeviceSpec:
    return parse(yamlfile.load(path), str(path))


#: Names every device-file template may use besides bench resources and variables.
RUNTIME_NAMES = {"run_dir", "bench_dir", "python", "server_ca", "server_host", "server_port", "server_name",
                 "sim_variant", "sim_uart_mode"}
COMMAND_ARGS = {"connect": {"host", "port", "version", "sni"}, "set_clock": {"unix", "iso"}}


def _check_placeholders(spec: DeviceSpec, doc: Map) -> None:
    """Catch a misspelt ``{placeholder}`` when the file is read, not mid-run."""
    known = set(RUNTIME_NAMES) | set(spec.variables)
    bench_names = set(spec.bench.resources) if spec.bench else set()

    def check(template: str, where: str, sec: Map | None, key: str, extra: set[str] = frozenset()) -> None:
        for name in placeholders(template):
            root = name.split(".")[0].split("[")[0]
            if root == "bench" and name[6:] in bench_names:
                continue
            if name in known or name in extra or "*" in extra:
                continue
            line = sec.line_of(key) if sec is not None else None
            raise ConfigError(spec.path, line, where, f"unknown placeholder {{{name}}}; known: "
                              + ", ".join(sorted(known | extra | {f"bench.{b}" for b in bench_names})))

    supply = doc.get("supply")
    check(spec.supply.resource, "supply.resource", supply, "resource")
    check(spec.console.url, "console.url", doc.get("console"), "url")
    if spec.bench:
        bench = doc.get("bench")
        for arg in spec.bench.start:
            check(arg, "bench.start", bench, "start")
    commands = doc.get("firmware", {}).get("commands") if isinstance(doc.get("firmware"), dict) else None
    for name, command in spec.firmware.commands.items():
        if command.send:
            body = commands.get(name) if commands is not None else None
            where_map, where_key = (body, "send") if isinstance(body, Map) else (commands, name)
            check(command.send, f"firmware.commands.{name}.send", where_map, where_key,
                  COMMAND_ARGS.get(name, set()) | _free_args(name))
    if spec.flash_file:
        check(spec.flash_file, "flash_file", doc, "flash_file")


def _free_args(name: str) -> set[str]:
    """Custom commands take whatever arguments the scenario passes; checked at use."""
    return set() if name in KNOWN_COMMANDS else {"*"}


def fill(template: str, values: dict[str, Any], where: str = "template") -> str:
    """Fill a template; a missing value is an error naming the placeholder."""
    flat: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, dict):
            for sub, item in value.items():
                flat[f"{key}.{sub}"] = item
        else:
            flat[key] = value
    out = []
    for literal, name, spec, conv in string.Formatter().parse(template):
        out.append(literal)
        if name is None:
            continue
        if name not in flat:
            from .errors import HarnessError

            raise HarnessError(f"{where}: no value for placeholder {{{name}}}")
        value = flat[name]
        value = "" if value is None else value
        out.append(format(value, spec or ""))
    return "".join(out)
