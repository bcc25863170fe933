"""The simulated bench process: supply server, power domain, UART, one monitor.

``python -m devices.sim`` runs :func:`main`.  It prints the addresses the
harness needs (``supply ...``, ``uart ...``, ``flash ...``, ``ready``) and
runs until SIGINT/SIGTERM, then kills and reaps the firmware, removes the
UART link and exits 0, leaving nothing behind.

One monitor thread ties the parts together every ``tick`` (5 ms): it reads
the rail (including the lowest value since the last tick, so a short dip
between two ticks is not missed), kills the firmware when the rail falls
below the brown-out threshold, boots it when the rail is back, and feeds
the firmware's reported state into the supply's current model.  The reset
cause follows the lowest rail seen while the device was dead: below the
power-on-reset threshold -> ``power-on``, else ``brown-out``.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import signal
import socket
import socketserver
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from .faults import Fault, FaultPlan, FaultSpecError
from .power import DEFAULT_FIRMWARE, DEFAULT_SETTINGS, FirmwareStartError, PowerDomain
from .scpi import MAX_LINE
from .supply import SimulatedSupply
from .firmware.variants import VARIANTS
from .uart import GARBAGE, Uart

log = logging.getLogger(__name__)

# Current model (amps at 3.3 V), figures of a Wi-Fi MCU module: boot with
# clocks and flash cache starting, idle with the radio off, radio during
# association/TLS/application data, flash program/erase.
CURRENTS = {"off": 0.0, "boot": 0.050, "idle": 0.020, "radio": 0.180, "flash": 0.035}


@dataclass
class BenchConfig:
    """Everything ``python -m devices.sim`` accepts; SimBench passes the same."""

    workdir: Path | None = None
    host: str = "127.0.0.1"
    port: int = 0
    firmware: str = DEFAULT_FIRMWARE
    variant: str = "correct"
    uart_mode: str = "stable"
    settings: dict[str, str] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    tau: float = 0.1
    brownout: float = 2.5
    por: float = 1.0
    tick: float = 0.005
    garbage: bytes = GARBAGE
    #: bench faults to inject (devices/sim/faults.py), for the harness's own tests
    faults: list[Fault] = field(default_factory=list)


class _ScpiServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], supply: SimulatedSupply):
        self.supply = supply
        self.clients: set[socket.socket] = set()
        self.clients_lock = threading.Lock()
        #: until when (time.monotonic) new connections are closed at once: a dropped LAN link
        self.refuse_until = 0.0
        super().__init__(address, _ScpiHandler)

    def drop(self, down: float) -> None:
        """Close every client connection now and refuse new ones for ``down`` seconds."""
        self.refuse_until = time.monotonic() + down
        with self.clients_lock:
            clients = list(self.clients)
        for sock in clients:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        log.warning("scpi: link dropped (%d clients), back in %s s", len(clients), down)


class _ScpiHandler(socketserver.BaseRequestHandler):
    """One client connection: newline-terminated commands, replies per query.

    A partial line left when the client disconnects is dropped (the command
    never completed); an over-long line is an error, not a memory leak.
    """

    def handle(self) -> None:
        supply: SimulatedSupply = self.server.supply  # type: ignore[attr-defined]
        sock: socket.socket = self.request
        peer = self.client_address
        server: _ScpiServer = self.server  # type: ignore[assignment]
        if time.monotonic() < server.refuse_until:
            log.info("scpi: client %s:%s refused (link down)", *peer[:2])
            return
        with server.clients_lock:
            server.clients.add(sock)
        try:
            self._serve(supply, sock, peer)
        finally:
            with server.clients_lock:
                server.clients.discard(sock)

    def _serve(self, supply: SimulatedSupply, sock: socket.socket, peer: tuple) -> None:
        log.info("scpi: client %s:%s connected", *peer[:2])
        buf = b""
        skipping = False
        try:
            while True:
                data = sock.recv(4096)
                if not data:
                    break
                buf += data
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    if skipping:
                        skipping = False
                        continue
                    line = line.rstrip(b"\r")
                    if not line.strip():
                        continue
                    reply = supply.execute(line)
                    if reply is not None:
                        sock.sendall(reply.encode("ascii", "replace") + b"\n")
                if len(buf) > MAX_LINE:
                    supply.push_error(-223, "Too much data; line too long")
                    buf, skipping = b"", True
        except OSError as exc:
            log.info("scpi: client %s:%s: %s", peer[0], peer[1], exc)
        if buf and not skipping:
            log.info("scpi: client %s:%s left mid-command (%d bytes dropped)", peer[0], peer[1], len(buf))
        log.info("scpi: client %s:%s disconnected", *peer[:2])


@dataclass
class Bench:
    """A running bench; :meth:`start`, then :meth:`stop` (always)."""

    config: BenchConfig
    workdir: Path = field(init=False)
    supply: SimulatedSupply = field(init=False)
    uart: Uart = field(init=False)
    power: PowerDomain = field(init=False)
    #: off | running | halted (powered, firmware not running) | enumerating (cdc-wait: waiting for a host)
    device: str = "off"
    state: str = "off"         # what the firmware last reported
    death_min: float = 0.0     # lowest rail since the device died
    boots: int = 0
    _cause: str = "power-on"   # the reset cause of the boot waiting for a host (cdc-wait)
    _own_workdir: bool = False
    _server: _ScpiServer | None = None
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)

    @property
    def flash_path(self) -> Path:
        return self.workdir / "flash.bin"

    @property
    def uart_link(self) -> Path:
        return self.workdir / "uart"

    @property
    def supply_resource(self) -> str:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"TCPIP::{host}::{port}::SOCKET"

    def start(self) -> None:
        cfg = self.config
        if cfg.workdir is None:
            self.workdir = Path(tempfile.mkdtemp(prefix="simbench-"))
            self._own_workdir = True
        else:
            self.workdir = Path(cfg.workdir).resolve()
            self.workdir.mkdir(parents=True, exist_ok=True)
        self.supply = SimulatedSupply(tau=cfg.tau)
        self.faults = FaultPlan(cfg.faults, {"scpi-drop": self._drop_scpi, "trip": self._trip,
                                             "uart-gone": self._uart_gone, "exit": self._exit},
                                fired_path=self.workdir / "faults.fired")
        self.supply.on_output_on = lambda ch: self.faults.event("on")
        self.uart = Uart(self.uart_link, vanish=cfg.uart_mode in ("vanish", "cdc-wait"),
                         wait_host=cfg.uart_mode == "cdc-wait", garbage=cfg.garbage)
        values = dict(DEFAULT_SETTINGS, **cfg.settings)
        values.update(flash=str(self.flash_path), variant=cfg.variant)
        self.power = PowerDomain(cfg.firmware, values, self.workdir, env=dict(cfg.env))
        if not self.uart.vanish:
            self.uart.open()
        self._server = _ScpiServer((cfg.host, cfg.port), self.supply)
        server = self._server
        for target, name in ((lambda: server.serve_forever(poll_interval=0.05), "scpi"), (self._monitor, "monitor")):
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            self._threads.append(t)
        log.info("bench up: %s, uart %s (%s), workdir %s", self.supply_resource, self.uart_link,
                 cfg.uart_mode, self.workdir)

    def stop(self) -> None:
        """Leave nothing behind: firmware reaped, link removed, socket closed."""
        self._stop.set()
        for t in self._threads:
            if t.name == "monitor":
                t.join(timeout=2.0)
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        self.power.kill()
        self.uart.close()
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)
        log.info("bench down")

    # ---------------------------------------------------------------- monitor
    def _monitor(self) -> None:
        while not self._stop.wait(self.config.tick):
            try:
                self.step()
            except Exception:  # noqa: BLE001 - the bench must outlive its own bugs
                log.exception("monitor step failed")

    def step(self) -> None:
        cfg = self.config
        rail, low, output = self.supply.sample(1)
        for word in self.power.read_states():
            if word in CURRENTS:
                if word != self.state:
                    self.faults.event(word)
                self.state = word
        if self.device == "running":
            status = self.power.reap_exited()
            if status is not None:
                # A crashed device is the device's problem, not the supply's: it says so on its
                # UART (as a fault handler would) and goes quiet; the supply knows nothing of it.
                self.device, self.state = "halted", "off"
                self.uart.say(f"*** sim: firmware exited with status {status} (see {self.power.log_file.name}) "
                              "***")
        if self.device in ("running", "halted", "enumerating") and low < cfg.brownout:
            if self.device != "enumerating":
                self.power.kill()
            self.uart.power_down()
            self.device, self.state, self.death_min = "off", "off", low
            log.info("rail %.3f V < brown-out %.2f V: device lost power", low, cfg.brownout)
        elif self.device == "enumerating":
            if self.uart.host_open():
                self._start_firmware(self._cause)
        elif self.device == "off":
            self.death_min = min(self.death_min, low)
            if output and rail >= cfg.brownout:
                self._boot()
        if self.device != "running":
            self.uart.discard_input()
        self.supply.set_load(CURRENTS.get(self.state, 0.0) if self.device == "running" else 0.0)

    # ----------------------------------------------------------------- faults
    def _drop_scpi(self, fault: Fault) -> None:
        assert self._server is not None
        self._server.drop(fault.down)

    def _trip(self, fault: Fault) -> None:
        """Called under the supply's lock as the output comes on."""
        self.supply.trip(1, "over-voltage protection tripped at power-on")

    def _uart_gone(self, fault: Fault) -> None:
        self.uart.gone_until = time.monotonic() + fault.down
        self.uart.close()

    def _exit(self, fault: Fault) -> None:
        log.error("fault: the bench process dies now")
        logging.shutdown()
        os._exit(3)

    def _boot(self) -> None:
        cause = "power-on" if self.death_min < self.config.por else "brown-out"
        self.boots += 1
        self.faults.event("boot")
        if self.uart.wait_host:
            # The USB port is up (the node appears); the firmware waits for a host to open it.
            self.uart.power_up()
            self.device, self.state, self._cause = "enumerating", "off", cause
            log.info("device powered (reset cause %s); waiting for a host to open its USB port", cause)
            return
        self._start_firmware(cause)

    def _start_firmware(self, cause: str) -> None:
        fd = self.uart.power_up()
        try:
            self.power.start(fd, cause)
        except FirmwareStartError as exc:
            text = str(exc).replace('"', "'")
            log.error("firmware failed to start: %s", text)
            self.supply.push_error(-310, f"System error; firmware failed to start: {text}")
            self.device, self.state = "halted", "off"
            return
        self.device, self.state = "running", "boot"
        log.info("device booting (reset cause %s, min rail while off %.3f V)", cause, self.death_min)


def _pairs(items: list[str], what: str, parser: argparse.ArgumentParser) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            parser.error(f"{what} expects KEY=VALUE, got {item!r}")
        out[key] = value
    return out


def parse_args(argv: list[str]) -> BenchConfig:
    p = argparse.ArgumentParser(prog="python -m devices.sim",
                                description="Simulated bench: SCPI supply, UART pty, device with flash.")
    p.add_argument("--workdir", type=Path, default=None,
                   help="where flash.bin, the uart link and logs live (default: a temp dir removed at exit)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="SCPI port (0 = any free port)")
    p.add_argument("--firmware", default=DEFAULT_FIRMWARE,
                   help="firmware command template (default: %(default)s); placeholders {python} {flash} "
                        "{variant} {reset_cause} {state_fd} {workdir} and every --set KEY (defaults: "
                        + ", ".join(f"{k}={v!r}" for k, v in DEFAULT_SETTINGS.items()) + "). A whole word "
                        "{extra} is split like a shell into zero or more words: --set \"extra=--app mqtt "
                        "--hold 5\" adds personality options to the default firmware (see python -m "
                        "devices.sim.firmware --help)")
    p.add_argument("--variant", default="correct")
    p.add_argument("--uart-mode", choices=["stable", "vanish", "cdc-wait"], default="stable",
                   help="stable: a USB-UART adapter; vanish: native USB, the port exists only while powered; "
                        "cdc-wait: native USB and the firmware prints nothing until a host opens the port")
    p.add_argument("--set", dest="settings", action="append", default=[], metavar="KEY=VALUE",
                   help="placeholder value for the firmware command (e.g. ca=/path/ca.pem, "
                        "extra='--app mqtt', or any KEY a --firmware template names)")
    p.add_argument("--env", action="append", default=[], metavar="KEY=VALUE", help="firmware environment")
    p.add_argument("--tau", type=float, default=0.1, help="rail decay time constant, s")
    p.add_argument("--brownout", type=float, default=2.5, help="device dies below this rail voltage")
    p.add_argument("--por", type=float, default=1.0, help="below this the next boot is power-on, else brown-out")
    p.add_argument("--tick", type=float, default=0.005, help="monitor period, s")
    p.add_argument("--garbage", default=GARBAGE.hex(), help="hex bytes the UART emits at power-up")
    p.add_argument("--fault", dest="faults", action="append", default=[], metavar="KIND@EVENT[#N][:down=S]",
                   help="inject a bench fault (devices/sim/faults.py): scpi-drop, trip, uart-gone or exit, at the "
                        "N-th on, boot, flash or radio event")
    p.add_argument("--log-level", default="INFO")
    a = p.parse_args(argv)
    try:
        garbage = bytes.fromhex(a.garbage)
    except ValueError:
        p.error(f"--garbage must be hex, got {a.garbage!r}")
    if a.firmware == DEFAULT_FIRMWARE and a.variant not in VARIANTS:
        p.error(f"unknown variant {a.variant!r} (known: {', '.join(VARIANTS)})")
    try:
        faults = [Fault.parse(spec) for spec in a.faults]
    except FaultSpecError as exc:
        p.error(str(exc))
    if a.tau <= 0 or not 0 <= a.por < a.brownout:
        p.error("need --tau > 0 and 0 <= --por < --brownout")
    logging.basicConfig(level=getattr(logging, a.log_level.upper(), logging.INFO), stream=sys.stderr,
                        format="%(asctime)s simbench %(levelname)s %(name)s: %(message)s")
    return BenchConfig(workdir=a.workdir, host=a.host, port=a.port, firmware=a.firmware, variant=a.variant,
                       uart_mode=a.uart_mode, settings=_pairs(a.settings, "--set", p),
                       env=_pairs(a.env, "--env", p), tau=a.tau, brownout=a.brownout, por=a.por,
                       tick=a.tick, garbage=garbage, faults=faults)


def main(argv: list[str] | None = None) -> int:
    config = parse_args(sys.argv[1:] if argv is None else argv)
    done = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        log.info("signal %d: shutting down", signum)
        done.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    bench = Bench(config)
    try:
        bench.start()
    except OSError as exc:
        log.error("cannot start bench: %s", exc)
        return 2
    try:
        print(f"supply {bench.supply_resource}", flush=True)
        print(f"uart {bench.uart_link}", flush=True)
        print(f"flash {bench.flash_path}", flush=True)
        print(f"workdir {bench.workdir}", flush=True)
        print("ready", flush=True)
        done.wait()  # interrupted by the signal handler
    finally:
        bench.stop()
    return 0
