"""A real labgrid lab on loopback: coordinator, exporters serving ptys through ser2net, a power switch over HTTP.

(Not named labkit.py: tests/lab/labkit.py is imported by that bare name, and
``pytest tests`` puts both folders on sys.path.)

Every process is started here and ended here through its own Popen handle;
exporters run in their own process group so the ser2net children they start
are ended with them.  Logs stay in the lab's folder and their tails are in
every startup failure.
"""

from __future__ import annotations

import http.server
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import tty
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from harness.labgrid import CoordinatorClient
from harness.launcher import end_process

HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
STARTUP_TIMEOUT = 20.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def tail(path: Path, lines: int = 25) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError as exc:
        return f"({path}: {exc})"
    return "\n".join(text[-lines:])


def wait_until(what: str, check: Callable[[], bool], timeout: float, logs: list[Path],
               proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what}: process exited with {proc.returncode}\n"
                               + "\n".join(f"--- {log.name}\n{tail(log)}" for log in logs))
        try:
            if check():
                return
        except Exception:  # noqa: BLE001 - not ready yet
            pass
        if time.monotonic() >= deadline:
            raise RuntimeError(f"{what}: not ready after {timeout:g} s\n"
                               + "\n".join(f"--- {log.name}\n{tail(log)}" for log in logs))
        time.sleep(0.1)


class Pty:
    """A UART as a pseudo-terminal behind a stable /dev path (labgrid's exporter insists on /dev/...).

    ``vanish`` and ``reappear`` model USB re-enumeration: the path goes away
    with its terminal, then points at a new terminal.
    """

    def __init__(self, path: Path):
        self.path = path
        self.master: int | None = None
        self.slave: int | None = None

    def appear(self) -> None:
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)
        target = os.ttyname(self.slave)
        tmp = self.path.with_name(self.path.name + ".new")
        if tmp.is_symlink():
            tmp.unlink()
        os.symlink(target, tmp)
        os.replace(tmp, self.path)

    def vanish(self) -> None:
        if self.path.is_symlink():
            self.path.unlink()
        for fd in (self.master, self.slave):
            if fd is not None:
                os.close(fd)
        self.master = self.slave = None

    def write(self, data: bytes) -> None:
        assert self.master is not None, "the pty is gone"
        os.write(self.master, data)


class PowerSwitch:
    """labgrid's ``simplerest`` power model: GET /relay/{index}/{value} switches, GET /relay/{index} reads.

    ``act(index, on)`` and ``read(index)`` put something behind the relay
    (the simulated supply's output); without them it only keeps its state.
    """

    def __init__(self, act: Callable[[int, bool], None] | None = None,
                 read: Callable[[int], bool] | None = None) -> None:
        self.state: dict[int, bool] = {}
        self.requests: list[str] = []
        switch = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                switch.requests.append(self.path)
                parts = self.path.strip("/").split("/")
                try:
                    if len(parts) == 3 and parts[0] == "relay" and parts[2] in ("0", "1"):
                        if act is not None:
                            act(int(parts[1]), parts[2] == "1")
                        switch.state[int(parts[1])] = parts[2] == "1"
                        body = b"ok"
                    elif len(parts) == 2 and parts[0] == "relay":
                        on = read(int(parts[1])) if read is not None else switch.state.get(int(parts[1]))
                        body = b"1" if on else b"0"
                    else:
                        self.send_error(404)
                        return
                except OSError as exc:
                    self.send_error(503, str(exc))
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/relay/{{index}}/{{value}}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


@dataclass
class Lab:
    folder: Path
    address: str = ""
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)
    logs: dict[str, Path] = field(default_factory=dict)
    ptys: dict[str, Pty] = field(default_factory=dict)
    power: PowerSwitch | None = None

    # -- processes ---------------------------------------------------------------------------------------------

    def _spawn(self, name: str, cmd: list[str], *, group: bool = False) -> subprocess.Popen:
        log = self.logs[name] = self.folder / f"{name}.log"
        with open(log, "ab") as out:
            proc = subprocess.Popen(cmd, cwd=self.folder, stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=subprocess.STDOUT, start_new_session=group,
                                    env={**os.environ, "PYTHONUNBUFFERED": "1"})
        self.procs[name] = proc
        return proc

    def start_coordinator(self) -> None:
        for _attempt in range(3):  # a free port can be taken between asking and binding
            port = free_port()
            self.address = f"127.0.0.1:{port}"
            proc = self._spawn("coordinator", [str(BIN / "labgrid-coordinator"), "-l", self.address])

            def listening() -> bool:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    return True

            try:
                wait_until("labgrid-coordinator", listening, STARTUP_TIMEOUT, [self.logs["coordinator"]], proc)
                return
            except RuntimeError:
                if proc.poll() is None:
                    raise
                self.procs.pop("coordinator")
        raise RuntimeError("labgrid-coordinator did not start on three free ports\n" + tail(self.logs["coordinator"]))

    def start_exporter(self, name: str, config: str, *, watch_paths: bool = False) -> None:
        """``watch_paths``: serial ports follow their path like udev-watched ones (see lg_udev_exporter.py)."""
        yaml_path = self.folder / f"{name}.yaml"
        yaml_path.write_text(config)
        program = ([sys.executable, str(HERE / "lg_udev_exporter.py")] if watch_paths
                   else [str(BIN / "labgrid-exporter")])
        proc = self._spawn(f"exporter-{name}", program + ["-c", self.address, "-n", name, "--hostname", "127.0.0.1",
                                                          str(yaml_path)], group=True)
        groups = {line.split(":")[0] for line in config.splitlines() if line and not line[0].isspace()}

        def exported() -> bool:
            client = CoordinatorClient(self.address)
            try:
                seen = {path[1] for path in client.resource_paths() if path[0] == name}
            finally:
                client.close()
            return groups <= seen

        wait_until(f"labgrid-exporter {name}", exported, STARTUP_TIMEOUT,
                   [self.logs[f"exporter-{name}"], self.logs["coordinator"]], proc)

    def client(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        """labgrid-client as a lab admin would type it."""
        done = subprocess.run([str(BIN / "labgrid-client"), "-x", self.address, *args], cwd=self.folder,
                              capture_output=True, text=True, timeout=30)
        if check and done.returncode != 0:
            raise RuntimeError(f"labgrid-client {' '.join(args)} failed ({done.returncode}):\n"
                               f"{done.stdout}{done.stderr}\n--- coordinator\n{tail(self.logs['coordinator'])}")
        return done

    def create_place(self, place: str, *patterns: str) -> None:
        self.client("-p", place, "create")
        self.client("-p", place, "add-match", *patterns)

    def add_pty(self, name: str) -> Pty:
        pty = self.ptys[name] = Pty(Path("/dev") / f"hil-lg-{os.getpid()}-{name}")
        pty.appear()
        return pty

    def stop(self) -> None:
        for name, proc in reversed(list(self.procs.items())):
            group = name.startswith("exporter-")
            end_process(proc, 5)
            if group:
                try:  # the ser2net children of this exporter, in the group we made for it
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        self.procs.clear()
        for pty in self.ptys.values():
            pty.vanish()
        if self.power is not None:
            self.power.close()


def serial_config(group: str, pty: Pty, power: PowerSwitch | None = None) -> str:
    """The exporter YAML a lab writes for one rig (a RawSerialPort; on real hardware a USBSerialPort)."""
    text = (f"{group}:\n"
            f"  location: loopback test rig\n"
            f"  console:\n"
            f"    cls: RawSerialPort\n"
            f"    port: {pty.path}\n"
            f"    speed: 115200\n")
    if power is not None:
        text += (f"  power:\n"
                 f"    cls: NetworkPowerPort\n"
                 f"    model: simplerest\n"
                 f"    host: '{power.url}'\n"
                 f"    index: 0\n")
    return text


def read_until(url: str, write: Callable[[], None], want: bytes, timeout: float = 10.0) -> bytes:
    """Open ``url`` with pyserial, write on the device side until ``want`` arrives, return what was read."""
    import serial  # noqa: PLC0415

    deadline = time.monotonic() + timeout
    got = b""
    port = serial.serial_for_url(url, timeout=0.2)
    try:
        while want not in got:
            if time.monotonic() >= deadline:
                raise AssertionError(f"{url}: did not read {want!r} in {timeout:g} s, got {got!r}")
            write()
            got += port.read(256)
    finally:
        port.close()
    return got
