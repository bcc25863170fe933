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

import os
import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import yamlfile
from .errors import ConfigError, HarnessError
from .rail import DEFAULT_SAMPLE_RATE, MAX_SAMPLE_RATE
from .yamlfile import Fields, Map, brief, spec_problem, unknown

SCHEMA_VERSION = 1
#: TLS versions a firmware may support, in the harness's spelling (scenario files use it)
TLS_VERSIONS = ("tls1.2", "tls1.3")
#: version words of the connect step: a version, or ``auto`` (let the stacks negotiate)
VERSION_WORDS = TLS_VERSIONS + ("auto",)
#: application protocols the reference server speaks after the handshake
PROTOCOLS = ("none", "line", "http", "mqtt", "greeting")


@dataclass
class LabgridSpec:
    """A labgrid place as the bench (the ``labgrid`` extra): acquired for the run, its console re-resolved."""

    place: str
    #: ``host:port`` of the labgrid coordinator (default: ``$LG_COORDINATOR``, as labgrid-client reads it)
    coordinator: str
    #: ``supply``: the device file's VISA supply cuts the power; ``labgrid``: the place's power driver
    power: str = "supply"
    #: which of the place's NetworkSerialPorts is the console, when it has several
    serial: str | None = None
    #: with ``power: labgrid``: seconds the switch holds the power off when a scenario asks for a discharged
    #: rail (nothing measures it: long enough for the board's capacitors, by the lab's own judgement)
    off_time: float = 2.0


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
    #: rail samples a second while a scenario runs (``rail.jsonl``), 0 for none; why 10: :mod:`harness.rail`
    sample_rate: float = DEFAULT_SAMPLE_RATE


@dataclass
class ConsoleSpec:
    url: str
    baudrate: int = 115200
    line_ending: str = "\r\n"
    char_delay: float = 0.0
    #: the port is the device's own USB (CDC-ACM, USB-Serial-JTAG): it appears only once the firmware
    #: runs, so a port that does not come back after power-up is the device's failure to boot, not a
    #: bench fault.  False (a USB-UART adapter, on the board or not): a port that stays away is the bench.
    native_usb: bool = False


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
    #: the boot banner; its ``version`` group names the firmware build in JUnit properties and the history
    banner: str | None = None

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
    #: seconds a TLS 1.3 server holds its tickets after the handshake (the device's network round trip)
    ticket_delay: float | None = None


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
    labgrid: LabgridSpec | None = None
    flash_file: str | None = None
    variables: dict[str, str] = field(default_factory=dict)
    source: Map | None = None


# -- placeholders ----------------------------------------------------------------


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
                "brownout_threshold", "sample_rate"}


def _supply(doc: Fields) -> SupplySpec:
    sec = doc.section("supply")
    sec.no_unknown(_SUPPLY_KEYS)
    channel = sec.value("channel", (int,), 1, what="a channel number")
    if channel < 1:
        raise sec.error("channel", "channel numbers start at 1")
    safe_state = _safe_state(sec)
    voltage = sec.num("voltage", 3.3)
    ovp = sec.num("ovp", None)
    if ovp is not None and ovp < voltage:
        raise sec.error("ovp", f"over-voltage protection {ovp} V is below the set-point {voltage} V")
    sample_rate = sec.num("sample_rate", DEFAULT_SAMPLE_RATE)
    if sample_rate > MAX_SAMPLE_RATE:
        raise sec.error("sample_rate", f"{sample_rate:g} Hz is more than a supply answers over SCPI "
                                       f"(at most {MAX_SAMPLE_RATE:g}; 0 turns rail sampling off)")
    return SupplySpec(
        resource=sec.text("resource"),
        dialect=sec.text("dialect"),
        channel=channel,
        visa_library=sec.text("visa_library", "@py"),
        voltage=voltage,
        current_limit=sec.num("current_limit", 0.5),
        ovp=ovp,
        discharge_below=sec.num("discharge_below", 0.3),
        min_off=sec.num("min_off", 0.2),
        discharge_timeout=sec.num("discharge_timeout", 5.0),
        settle_tolerance=sec.num("settle_tolerance", 0.1),
        safe_state=safe_state,
        brownout_threshold=sec.num("brownout_threshold", None),
        sample_rate=sample_rate,
    )


def _safe_state(sec: Fields) -> dict[str, Any]:
    """``{output: on|off, ...}``; YAML reads a bare on/off as true/false, so both spellings count."""
    safe = sec.map.get("safe_state", Map({"output": "off"}))
    if not isinstance(safe, dict):
        raise sec.error("safe_state", "expected a mapping like {output: off}")
    given = safe.get("output")
    output = str(safe.get("output", "off")).lower() if not isinstance(given, bool) else ("on" if given else "off")
    if output not in ("on", "off"):
        raise sec.error("safe_state", f"must be on or off, got {brief(given)}",
                        where=f"{sec.where('safe_state')}.output")
    # keys as text: the supply's check sorts and lists them, and YAML may have read ``1:`` or ``on:``
    state = {"output": output, **{str(k): v for k, v in safe.items() if k != "output"}}
    # One set of rules for what a safe state may say: the supply's, checked
    # here already so a mistake names the file and line before anything runs.
    from .supply import SafeState

    try:
        SafeState.from_mapping(state)
    except (HarnessError, TypeError, ValueError) as exc:
        raise sec.error("safe_state", str(exc).removeprefix("safe state: ")) from None
    return state


def _console(doc: Fields) -> ConsoleSpec:
    sec = doc.section("console")
    sec.no_unknown({"url", "baudrate", "line_ending", "char_delay", "native_usb"})
    baud = sec.value("baudrate", (int,), 115200, what="a baud rate")
    if baud <= 0:
        raise sec.error("baudrate", "must be positive")
    # A labgrid place serves the console itself (its NetworkSerialPort): no URL in the file.
    from_place = "labgrid" in doc.map and "url" not in sec.map
    return ConsoleSpec(
        url=LABGRID_CONSOLE if from_place else sec.text("url"),
        baudrate=baud,
        line_ending=sec.text("line_ending", "\r\n"),
        char_delay=sec.num("char_delay", 0.0),
        native_usb=sec.value("native_usb", (bool,), False, what="true or false"),
    )


_COMMAND_KEYS = {"send", "ok", "fail", "timeout"}
#: Commands the engine knows how to use; a device file may add its own.
KNOWN_COMMANDS = ("connect", "erase_session", "set_clock", "show_session", "reset", "corrupt_session")


def _commands(fw: Fields) -> dict[str, CommandSpec]:
    sec = fw.section("commands", required=False)
    result: dict[str, CommandSpec] = {}
    if sec is None:
        return result
    for name, body in sec.map.items():
        if isinstance(body, str):
            result[name] = CommandSpec(name, body, None, None, 10.0, sec.map.line_of(name))
            continue
        if not isinstance(body, Map):
            raise sec.error(name, "expected a mapping with send/ok/fail/timeout or a line to send")
        result[name] = _command(name, Fields(body, sec.where(name)), sec.map.line_of(name))
    return result


def _command(name: str, body: Fields, line: int | None) -> CommandSpec:
    body.no_unknown(_COMMAND_KEYS)
    send = body.text("send", None)
    if send is None and name != "connect":
        raise body.error_here("missing (the line to send)", where=body.where("send"))
    return CommandSpec(name=name, send=send, ok=body.regex("ok", None), fail=body.regex("fail", None),
                       timeout=body.num("timeout", 10.0), line=line)


def _regex_list(sec: Fields, key: str) -> list[str]:
    items = sec.list_of(key, str, message="expected a list of regular expressions", default=[])
    for index, pattern in enumerate(items):
        sec.compile(key, pattern, where=f"{sec.where(key)}[{index}]")
    return list(items)


_FIRMWARE_KEYS = {"boot_ready", "boot_timeout", "prompt", "reset_cause", "reset_causes", "session_stored",
                  "flash_write", "forbid", "redact", "autoconnect", "commands", "versions", "version_tokens",
                  "events", "banner"}


def _versions(sec: Fields) -> list[str]:
    value = sec.list_of("versions", str, message="expected a list like [tls1.2, tls1.3]",
                        default=list(TLS_VERSIONS), non_empty=True, single=True)
    for v in value:
        if v not in TLS_VERSIONS:
            raise sec.error("versions", unknown(f"TLS version {brief(v)}", v, TLS_VERSIONS, intro="known:"))
    return list(dict.fromkeys(value))


def _version_tokens(sec: Fields) -> dict[str, str]:
    tokens = {v: v for v in VERSION_WORDS}
    given = sec.section("version_tokens", required=False, if_null=None,
                        message='expected a mapping like {tls1.2: "1.2", tls1.3: "1.3", auto: ""}')
    if given is None:
        return tokens
    for word, token in given.map.items():
        given.known(word, VERSION_WORDS, what="version", intro="known:")
        if token is None:
            token = ""
        if not isinstance(token, (str, int, float)) or isinstance(token, bool):
            raise given.error(word, f"expected the word the shell takes (a string), got {brief(token)}")
        tokens[str(word)] = str(token)
    return tokens


def _events(sec: Fields) -> dict[str, str]:
    given = sec.section("events", required=False, if_null=None,
                        message="expected a mapping of name: regular expression")
    if given is None:
        return {}
    for name in given.map:
        if not isinstance(name, str) or not name.isidentifier():
            raise given.error(name, "an event name is an identifier")
        given.regex(name, not_regex="expected a regular expression")
    return dict(given.map)


def _reset_causes(sec: Fields) -> dict[str, str]:
    causes = sec.section("reset_causes", required=False, message="expected a mapping like {brown-out: BROWNOUT}")
    if causes is None:
        return {}
    for name in causes.map:
        causes.regex(name, not_regex="expected a regular expression")
    return {str(k): v for k, v in causes.map.items()}


def _firmware(doc: Fields) -> FirmwareSpec:
    sec = doc.section("firmware")
    sec.no_unknown(_FIRMWARE_KEYS)
    forbid = _regex_list(sec, "forbid")
    redact = _regex_list(sec, "redact")
    autoconnect = sec.value("autoconnect", (bool,), False, what="true or false")
    reset_causes = _reset_causes(sec)
    spec = FirmwareSpec(
        boot_ready=sec.regex("boot_ready"),
        boot_timeout=sec.num("boot_timeout", 10.0),
        prompt=sec.text("prompt", None),
        reset_cause=sec.regex("reset_cause", None),
        session_stored=sec.regex("session_stored", None),
        flash_write=sec.regex("flash_write", None),
        forbid=forbid,
        autoconnect=autoconnect,
        commands=_commands(sec),
        reset_causes=reset_causes,
        redact=redact,
        versions=_versions(sec),
        version_tokens=_version_tokens(sec),
        events=_events(sec),
        banner=sec.regex("banner", None),
    )
    if spec.banner is not None:
        sec.compile("banner", spec.banner, groups=("version",))
    if spec.reset_cause is not None:   # the group last: a file with two mistakes keeps its one answer
        sec.compile("reset_cause", spec.reset_cause, groups=("cause",))
    _check_connect(sec, spec)
    return spec


def _check_connect(sec: Fields, spec: FirmwareSpec) -> None:
    """A device connects either by a command that says when it succeeded, or by itself: not both."""
    where = "firmware.commands.connect"
    if not spec.autoconnect and "connect" not in spec.commands:
        raise sec.error_here("missing: a device without a connect command must set autoconnect: true",
                             where=where)
    if spec.autoconnect and spec.session_stored is None:
        raise sec.error("autoconnect", "a device without a shell needs firmware.session_stored: the line that "
                        "tells the harness it is done with a connection, before a power cut may follow")
    connect = spec.commands.get("connect")
    if spec.autoconnect and connect is not None:
        raise ConfigError(sec.file, connect.line, where,
                          "a device with autoconnect: true connects by itself; remove the connect command "
                          "or set autoconnect: false")
    if connect is not None and connect.ok is None:
        raise ConfigError(sec.file, connect.line, f"{where}.ok",
                          "missing: the pattern that says the connection succeeded")


_SERVER_KEYS = {"bind", "reach_host", "port", "names", "ips", "key_type", "cert", "key", "ca", "protocol",
                "greeting", "app_timeout", "ticket_delay"}


def _server(doc: Fields) -> ServerSpec:
    sec = doc.section("server", required=False)
    if sec is None:
        return ServerSpec()
    sec.no_unknown(_SERVER_KEYS)
    protocol = sec.text("protocol", "line")
    if protocol not in PROTOCOLS:
        raise sec.error("protocol", unknown(f"application protocol {brief(protocol)}", protocol, PROTOCOLS,
                                            intro="known:"))
    app_timeout = sec.num("app_timeout", None)
    if app_timeout is not None and app_timeout <= 0:
        raise sec.error("app_timeout", "must be more than 0 s")
    ticket_delay = sec.num("ticket_delay", None)
    if ticket_delay is not None and ticket_delay > 30:
        raise sec.error("ticket_delay",
                        f"expected seconds from 0 to 30 (seconds, not milliseconds), got {ticket_delay:g}")
    names = sec.list_of("names", str, message="expected a non-empty list of host names",
                        default=["server.test"], non_empty=True)
    ips = sec.list_of("ips", str, message="expected a list of addresses", default=["127.0.0.1"])
    key_type = sec.text("key_type", "ec")
    if key_type not in ("ec", "rsa"):
        raise sec.error("key_type", f"must be ec or rsa, got {brief(key_type)}")
    own = [k for k in ("cert", "key", "ca") if k in sec.map]
    if own and len(own) != 3:
        missing = sorted({"cert", "key", "ca"} - set(own))
        raise sec.error(own[0], "your own certificate needs cert, key and ca together",
                        where=sec.where(missing[0]))
    port = sec.value("port", (int,), 0, what="a TCP port")
    if not 0 <= port <= 65535:
        raise sec.error("port", f"not a TCP port: {port}")
    base = Path(doc.file).parent

    def own_path(key: str) -> str | None:
        value = sec.text(key, None)
        return None if value is None else str((base / value) if not Path(value).is_absolute() else value)

    return ServerSpec(bind=sec.text("bind", "127.0.0.1"), reach_host=sec.text("reach_host", "127.0.0.1"),
                      port=port, names=list(names), ips=list(ips), key_type=key_type, cert=own_path("cert"),
                      key=own_path("key"), ca=own_path("ca"), protocol=protocol,
                      greeting=sec.text("greeting", None), app_timeout=app_timeout, ticket_delay=ticket_delay)


def _bench(doc: Fields) -> BenchSpec | None:
    sec = doc.section("bench", required=False)
    if sec is None:
        return None
    sec.no_unknown({"start", "ready", "resources", "timeout"})
    start = sec.list_of("start", str, message="expected the command as a list of strings", non_empty=True)
    resources = sec.section("resources")
    for name in resources.map:
        resources.regex(name, groups=("value",),
                        not_regex="expected a regular expression with a (?P<value>...) group")
    return BenchSpec(start=list(start), ready=sec.regex("ready"),
                     resources=dict(resources.map), timeout=sec.num("timeout", 30.0))


#: ``console.url`` of a device file whose console is its labgrid place's (asked of the coordinator, every reopen)
LABGRID_CONSOLE = "labgrid:"


def _labgrid(doc: Fields) -> LabgridSpec | None:
    sec = doc.section("labgrid", required=False, message="expected a mapping: place, coordinator, power")
    if sec is None:
        return None
    sec.no_unknown({"place", "coordinator", "power", "serial", "off_time"})
    coordinator = sec.text("coordinator", None) or os.environ.get("LG_COORDINATOR")
    if not coordinator:
        raise sec.error("coordinator", "missing: the labgrid coordinator's host:port (or set $LG_COORDINATOR)")
    power = sec.text("power", "supply")
    if power not in ("supply", "labgrid"):
        raise sec.error("power", f"expected supply (the device file's VISA supply) or labgrid (the place's "
                                 f"power driver), got {brief(power)}")
    off_time = sec.num("off_time", 2.0)
    if not off_time > 0:
        raise sec.error("off_time", "must be more than 0 s")
    return LabgridSpec(place=sec.text("place"), coordinator=coordinator, power=power,
                       serial=sec.text("serial", None), off_time=off_time)


def _switched_supply(doc: Fields, lg: LabgridSpec) -> SupplySpec:
    """``labgrid.power: labgrid``: the place's power switch stands for the supply; nothing to measure or set.

    A ``supply`` section may still give the safe state; anything a switch
    cannot do (a voltage, a current limit, a discharge threshold) is a
    mistake to point at, not to ignore.
    """
    sec = doc.section("supply", required=False)
    safe_state = {"output": "off"}
    if sec is not None:
        sec.no_unknown({"safe_state"}, intro="with labgrid.power: labgrid the place's power switch cuts the "
                                             "power and sets or measures nothing; the supply section may only say")
        safe_state = _safe_state(sec)
    return SupplySpec(resource=f"labgrid place {lg.place} power", dialect="", voltage=None,  # type: ignore[arg-type]
                      current_limit=None, ovp=None, discharge_below=None,  # type: ignore[arg-type]
                      min_off=lg.off_time, discharge_timeout=0.0, safe_state=safe_state, sample_rate=0.0)


_TOP_KEYS = {"schema", "name", "description", "bench", "supply", "console", "firmware", "server",
             "flash_file", "variables", "labgrid"}


def parse(doc: Any, file: str) -> DeviceSpec:
    top = Fields.document(doc, file, "a device file is a mapping (schema, name, supply, console, firmware, ...)")
    top.no_unknown(_TOP_KEYS)
    schema = top.value("schema", (int,), what="the schema version number")
    if schema != SCHEMA_VERSION:
        raise top.error("schema", f"unsupported schema version {schema}; this harness reads {SCHEMA_VERSION}")
    variables = top.section("variables", required=False, message="expected a mapping of name: value")
    labgrid = _labgrid(top)
    spec = DeviceSpec(
        path=file,
        name=top.text("name"),
        description=str(doc.get("description", "")).strip(),
        bench=_bench(top),
        labgrid=labgrid,
        supply=_switched_supply(top, labgrid) if labgrid is not None and labgrid.power == "labgrid" else _supply(top),
        console=_console(top),
        firmware=_firmware(top),
        server=_server(top),
        flash_file=top.text("flash_file", None),
        variables={str(k): str(v) for k, v in variables.map.items()} if variables else {},
        source=doc,
    )
    _check_placeholders(spec, doc)
    if labgrid is not None and labgrid.power == "labgrid" and spec.firmware.reset_cause is None:
        # Without a meter the reset cause is the only witness that the power really went.
        raise top.error("labgrid", "power: labgrid switches power without measuring it, so the device's reset "
                                   "cause is the only evidence of a power loss: firmware.reset_cause is required",
                        where=f"{top.where('labgrid')}.power")
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
        try:
            names = placeholders(template)
        except ValueError as exc:   # "{a" : an unclosed brace
            raise ConfigError(spec.path, sec.line_of(key) if sec is not None else None, where,
                              f"bad placeholder in {brief(template)}: {exc} (write {{{{ for a literal brace)") from None
        for _, name, format_spec, _ in string.Formatter().parse(template):
            # what fill() would trip over mid-run: a nameless {} or a spec such as {host:>999999999}
            problem = "{} needs a name" if name == "" \
                else spec_problem(format_spec or "", nested=False) if name else None
            if problem:
                raise ConfigError(spec.path, sec.line_of(key) if sec is not None else None, where,
                                  f"placeholder in {brief(template)}: {problem}")
        for name in names:
            root = name.split(".")[0].split("[")[0]
            if root == "bench" and name[6:] in bench_names:
                continue
            if name in known or name in extra or "*" in extra:
                continue
            line = sec.line_of(key) if sec is not None else None
            raise ConfigError(spec.path, line, where, f"unknown placeholder {{{brief(name)[1:-1]}}}; known: "
                              + ", ".join(sorted(known | extra | {f"bench.{b}" for b in bench_names})))

    supply = doc.get("supply")
    if not (spec.labgrid is not None and spec.labgrid.power == "labgrid"):
        check(spec.supply.resource, "supply.resource", supply, "resource")
    if spec.console.url != LABGRID_CONSOLE:
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
