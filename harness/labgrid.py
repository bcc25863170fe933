"""A labgrid place as the bench: acquire it, find its console, switch its power, release it even after a crash.

Why the Python client API and not the ``labgrid-client`` CLI (decided on labgrid 26.0.1):

- The console has to be re-resolved after every power cut (a re-enumerated USB
  UART is served by a new ser2net on a new TCP port).  One ``labgrid-client``
  call costs about 0.9 s of interpreter start-up; a query on an open session
  costs milliseconds.
- The CLI prints sentences meant for people ("Place rig1 is already acquired
  by ..."), worded differently per command and per release; the API gives the
  same facts as fields (``Place.acquired``, ``Place.changed``,
  ``ResourceEntry.avail``, ``params['port']``).
- Power goes through labgrid's own ``NetworkPowerDriver``, which is Python API
  anyway.
- Releasing after a crash must release *only the acquisition we made*: the
  coordinator's ``ReleasePlace(fromuser=...)`` is a compare-and-release, and
  the place's ``changed`` time tells our acquisition from a later one by the
  same host/user.

The API surface used is kept small (``ClientSession`` with its ``places``,
``resources``, ``stub`` and ``sync_with_coordinator``, and the generated
request messages), because labgrid does not promise it stable.  The session
runs on a private event loop in its own thread, so it works the same from a
script, from pytest, or from code that already runs an asyncio loop, and the
coordinator's updates keep arriving between calls.

Acquisition is tied to labgrid's identity ``host/user``: the coordinator does
not release a place when its client disconnects, so a SIGKILLed run would hold
the rig until someone notices.  :func:`start_release_guard` starts a small
process that outlives us, waits for our PID to end, and releases the place if
it is still the acquisition we made.  With ``power_off_on_exit`` (the place's
power switch is the device's power) that guard first switches the power off,
through the same labgrid power driver: the guard is what leaves the hardware
safe when the run is SIGKILLed.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import select
import subprocess
import sys
import threading
import time
from concurrent.futures import TimeoutError as FutureTimeout
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Coroutine, TypeVar

from harness.errors import BenchStartError, ConfigError, ConsoleLost, InstrumentError, SupplyUnreachable
from harness.launcher import end_process

_log = logging.getLogger(__name__)

T = TypeVar("T")

#: how long one coordinator round trip may take before we call the coordinator unreachable
RPC_TIMEOUT = 10.0
#: polling period while waiting for a place held by someone else, or for a console to come back
POLL_PERIOD = 0.25
#: how long the release guard lets one power-off request take (labgrid's HTTP power backends set no timeout)
GUARD_POWER_TIMEOUT = 20.0

INSTALL_HINT = "pip install '.[labgrid]'"


def _import_labgrid() -> Any:
    """Import labgrid's client only when a place is used: the extra is optional."""
    try:
        from labgrid.remote import client as lg_client  # noqa: PLC0415
        from labgrid.remote.generated import labgrid_coordinator_pb2  # noqa: F401,PLC0415
    except ImportError as exc:
        raise ConfigError("labgrid", None, None,
                          f"a labgrid place needs the labgrid extra, which is not installed ({exc}): {INSTALL_HINT}") from None
    return lg_client


_loop_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None


def _shared_loop() -> asyncio.AbstractEventLoop:
    """One event loop thread for every labgrid session of this process, never closed.

    grpc.aio keeps process-wide completion-queue state bound to the loops that
    used it; a loop per session that is closed afterwards gets "Event loop is
    closed" errors from gRPC's poller once the next session starts.
    """
    global _loop
    with _loop_lock:
        if _loop is None:
            loop = asyncio.new_event_loop()
            threading.Thread(target=loop.run_forever, name="labgrid-client", daemon=True).start()
            _loop = loop
        return _loop


def _grpc_address(coordinator: str) -> str:
    """labgrid's default port, so ``-x host`` means what it means to labgrid-client."""
    host = coordinator.strip()
    if host.startswith("["):
        return host if "]:" in host else f"{host}:20408"
    return host if ":" in host else f"{host}:20408"


def _since(changed: float | None) -> str:
    if not changed:
        return "an unknown time"
    return datetime.fromtimestamp(changed).strftime("%Y-%m-%d %H:%M:%S")


class CoordinatorClient:
    """One labgrid client session on a private event loop thread.

    Blocking methods, each bounded by :data:`RPC_TIMEOUT`, so a coordinator that
    vanished gives a :class:`BenchStartError` instead of a hang.
    """

    def __init__(self, coordinator: str, *, timeout: float = RPC_TIMEOUT):
        lg_client = _import_labgrid()
        self.coordinator = coordinator
        self.address = _grpc_address(coordinator)
        self.timeout = timeout
        self._loop = _shared_loop()
        self._session: Any = None

        async def open_session() -> Any:
            import grpc  # noqa: PLC0415
            from labgrid.remote.generated import labgrid_coordinator_pb2_grpc  # noqa: PLC0415

            session = lg_client.ClientSession(self.address, self._loop)
            # gRPC shares one TCP connection between all channels of a process to the same address, and the
            # coordinator keys client sessions by the peer's address: a second session in this process (the
            # bench and a diagnostic query, or a test and its check) would hit its `peer not in clients`
            # assertion.  A channel with its own subchannel pool gets its own connection.
            await session.channel.close()
            session.channel = grpc.aio.insecure_channel(self.address, options=[
                ("grpc.use_local_subchannel_pool", 1),
                # notice a dead coordinator within seconds, not at the first call after a long test
                ("grpc.keepalive_time_ms", 5000),
                ("grpc.keepalive_timeout_ms", 10000),
                ("grpc.http2.ping_timeout_ms", 10000),
                ("grpc.http2.max_pings_without_data", 0),
            ])
            session.stub = labgrid_coordinator_pb2_grpc.CoordinatorStub(session.channel)
            await session.start()
            return session

        try:
            self._session = self._run(open_session)
        except BenchStartError:
            self.close()
            raise
        except Exception as exc:  # labgrid's ServerError and gRPC errors: all mean "cannot talk to it"
            self.close()
            raise BenchStartError(f"labgrid coordinator {self.address} cannot be reached: {exc}") from None

    @property
    def identity(self) -> str:
        """The name the coordinator records as holder (``host/user``, from LG_HOSTNAME/LG_USERNAME if set)."""
        return f"{self._session.gethostname()}/{self._session.getuser()}"

    def _run(self, factory: Callable[[], Coroutine[Any, Any, T]]) -> T:
        future = asyncio.run_coroutine_threadsafe(factory(), self._loop)
        try:
            return future.result(self.timeout)
        except FutureTimeout:
            future.cancel()
            raise BenchStartError(f"labgrid coordinator {self.address} did not answer within {self.timeout:g} s") from None

    def sync(self) -> None:
        """Bring places and resources up to date: everything the coordinator sent before now."""
        session = self._session

        async def sync() -> bool:
            if session.stopping.is_set():
                return False
            return await session.sync_with_coordinator()

        if not self._run(sync):
            raise BenchStartError(f"labgrid coordinator {self.address} is no longer reachable")

    def place(self, name: str) -> Any:
        self.sync()
        place = self._session.places.get(name)
        if place is None:
            for candidate in self._session.places.values():
                if name in candidate.aliases:
                    return candidate
            known = ", ".join(sorted(self._session.places)) or "none"
            raise BenchStartError(f"labgrid coordinator {self.address} has no place {name!r} (places: {known})")
        return place

    def resource(self, path: Any) -> Any:
        exporter, group, _cls, name = path
        try:
            return self._session.resources[exporter][group][name]
        except KeyError:
            return None

    def resource_paths(self) -> dict[tuple[str, str, str, str], bool]:
        """Every resource the coordinator knows, with its availability: for diagnostics and readiness checks."""
        self.sync()
        return {(exporter, group_name, resource.cls, resource_name): bool(resource.avail)
                for exporter, groups in self._session.resources.items()
                for group_name, group in groups.items()
                for resource_name, resource in group.items()}

    def matching_resources(self, place: Any) -> list[tuple[tuple[str, str, str, str], Any]]:
        found = []
        for exporter, groups in sorted(self._session.resources.items()):
            for group_name, group in sorted(groups.items()):
                for resource_name, resource in sorted(group.items()):
                    path = (exporter, group_name, resource.cls, resource_name)
                    if place.getmatch(path) is not None:
                        found.append((path, resource))
        return found

    def acquire_place(self, name: str) -> None:
        from labgrid.remote.generated import labgrid_coordinator_pb2 as pb2  # noqa: PLC0415

        session = self._session

        async def acquire() -> None:
            await session.stub.AcquirePlace(pb2.AcquirePlaceRequest(placename=name))
            await session.sync_with_coordinator()

        self._run(acquire)

    def release_place(self, name: str, *, fromuser: str | None = None) -> None:
        from labgrid.remote.generated import labgrid_coordinator_pb2 as pb2  # noqa: PLC0415

        session = self._session
        request = pb2.ReleasePlaceRequest(placename=name)
        if fromuser is not None:
            request.fromuser = fromuser

        async def release() -> None:
            await session.stub.ReleasePlace(request)
            await session.sync_with_coordinator()

        self._run(release)

    def close(self) -> None:
        """Never raises: called on the way out, also when the coordinator is gone."""
        session, self._session = self._session, None
        if session is not None:
            async def stop() -> None:
                try:
                    await session.stop()
                finally:
                    await session.close()

            try:
                asyncio.run_coroutine_threadsafe(stop(), self._loop).result(3.0)
            except Exception as exc:  # noqa: BLE001 - closing a dead channel may fail in many ways
                _log.debug("closing the labgrid session to %s: %s", self.address, exc)


def _rpc_details(exc: BaseException) -> str:
    details = getattr(exc, "details", None)
    return details() if callable(details) else str(exc)


class PlaceSession:
    """A labgrid place held by this process for the length of a run.

    Every address is asked of the coordinator when it is needed, never kept:
    the exporter moves a re-enumerated UART to a new TCP port, and power
    switches and exporters can be swapped between runs.
    """

    def __init__(self, place: str, coordinator: str, *, wait: float = 0.0, log: logging.Logger | None = None,
                 guard: bool = True, guard_log: str | os.PathLike[str] | None = None,
                 power_off_on_exit: bool = False):
        """``power_off_on_exit``: should this process end without :meth:`release` (SIGKILL, a crash), its release
        guard switches the place's power off before releasing it.  A normal :meth:`release` stops the guard
        without touching the power: the caller decides the power at teardown itself.
        """
        if power_off_on_exit and not guard:
            raise ValueError("power_off_on_exit needs the release guard (guard=True): the guard switches off")
        self.place = place
        self.coordinator = coordinator
        self.wait = wait
        self.log = log or _log
        self.guard_enabled = guard
        self.guard_log = guard_log
        self.power_off_on_exit = power_off_on_exit
        self.guard: subprocess.Popen[bytes] | None = None
        self.acquired_as: str | None = None
        self.acquired_since: float | None = None
        self._client: CoordinatorClient | None = None
        self._power: tuple[tuple[Any, ...], Any] | None = None

    # -- connection ---------------------------------------------------------------------------------------------

    def _connected(self) -> CoordinatorClient:
        if self._client is None:
            self._client = CoordinatorClient(self.coordinator)
        return self._client

    def __enter__(self) -> "PlaceSession":
        self.acquire()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()

    # -- acquire / release --------------------------------------------------------------------------------------

    def acquire(self) -> None:
        """Hold the place, waiting up to ``wait`` seconds for its holder to let go."""
        if self.acquired_as is not None:
            return
        try:
            self._acquire()
        except BaseException:
            self._close()  # an open session keeps the coordinator from shutting down promptly
            raise

    def _acquire(self) -> None:
        client = self._connected()
        me = client.identity
        deadline = time.monotonic() + self.wait
        reported = False
        while True:
            place = client.place(self.place)
            if place.acquired is None:
                try:
                    client.acquire_place(place.name)
                except BenchStartError:
                    raise
                except Exception as exc:  # noqa: BLE001 - a gRPC error; say what blocks the place below
                    place = client.place(self.place)
                    if place.acquired is None:
                        raise BenchStartError(self._acquire_failure(client, place, exc)) from None
                    # someone else won the race: wait like for any holder
                else:
                    place = client.place(self.place)
                    if place.acquired == me:
                        break
            holder = f"place {self.place!r} is acquired by {place.acquired} since {_since(place.changed)}"
            if place.acquired == me:
                holder += (" (the same host and user as this run: another run, or one that was killed; "
                           f"`labgrid-client -x {self.coordinator} -p {self.place} release` frees it)")
            if time.monotonic() >= deadline:
                waited = f" (waited {self.wait:g} s)" if self.wait > 0 else ""
                raise BenchStartError(holder + waited)
            if not reported:
                self.log.info("%s; waiting up to %g s", holder, self.wait)
                reported = True
            time.sleep(min(POLL_PERIOD * 2, max(0.0, deadline - time.monotonic())))
        self.acquired_as = place.acquired
        self.acquired_since = place.changed
        self.log.info("acquired labgrid place %r on %s as %s", self.place, client.address, me)
        if self.guard_enabled:
            self.guard = start_release_guard(pid=os.getpid(), place=self.place, coordinator=self.coordinator,
                                             holder=me, since=place.changed, log_path=self.guard_log,
                                             power_off=self.power_off_on_exit)

    def _acquire_failure(self, client: CoordinatorClient, place: Any, exc: BaseException) -> str:
        text = f"labgrid could not acquire place {self.place!r}: {_rpc_details(exc)}"
        held = [f"{'/'.join(path)} is held by place {resource.acquired!r}"
                for path, resource in client.matching_resources(place) if resource.acquired]
        if held:
            text += " (" + "; ".join(held) + ")"
        return text

    def release(self) -> None:
        """Let the place go; never raises, so it can run in any teardown."""
        if self.acquired_as is None:
            self._close()
            return
        released = False
        try:
            client = self._connected()
            # fromuser: if someone kicked us and re-acquired meanwhile, their acquisition stays
            client.release_place(self.place, fromuser=self.acquired_as)
            released = True
            self.log.info("released labgrid place %r", self.place)
        except Exception as exc:  # noqa: BLE001 - teardown: log, never raise
            self.log.warning("could not release labgrid place %r on %s: %s%s", self.place, self.coordinator,
                             _rpc_details(exc),
                             f"; its release guard (pid {self.guard.pid}) retries when this process exits"
                             + (", switching the power off first" if self.power_off_on_exit else "")
                             if self.guard and self.guard.poll() is None else "")
        self.acquired_as = None
        self.acquired_since = None
        if released:
            self._stop_guard()
        self._close()

    def _stop_guard(self) -> None:
        """SIGTERM while it waits for our pid: it ends there, having switched and released nothing."""
        guard, self.guard = self.guard, None
        if guard is None:
            return
        end_process(guard, 3.0)

    def _close(self) -> None:
        client, self._client = self._client, None
        self._power = None
        if client is not None:
            client.close()

    def _acquired_place(self) -> tuple[CoordinatorClient, Any]:
        if self.acquired_as is None:
            raise BenchStartError(f"labgrid place {self.place!r} is not acquired by this run")
        client = self._connected()
        place = client.place(self.place)
        if place.acquired != self.acquired_as:
            raise BenchStartError(f"labgrid place {self.place!r} was taken from this run: now "
                                  + (f"acquired by {place.acquired}" if place.acquired else "released"))
        return client, place

    def _resources(self, client: CoordinatorClient, place: Any, cls: str) -> list[tuple[Any, Any]]:
        return [(path, client.resource(path)) for path in place.acquired_resources if path[2] == cls]

    # -- console ------------------------------------------------------------------------------------------------

    def console_url(self, *, wait: float = 0.0, name: str | None = None) -> str:
        """Where the console is served now, as a pyserial URL; asked afresh on every call.

        ``wait``: how long to wait for a port that is unavailable (a USB UART
        re-enumerating after a power cut); ``name``: which serial port, when the
        place has several.
        """
        deadline = time.monotonic() + wait
        while True:
            try:
                return self._console_url_now(name)
            except ConsoleLost:
                if time.monotonic() >= deadline:
                    raise
            time.sleep(POLL_PERIOD)

    def _console_url_now(self, name: str | None) -> str:
        client, place = self._acquired_place()
        ports = self._resources(client, place, "NetworkSerialPort")
        if name is not None:
            ports = [(path, res) for path, res in ports
                     if name in (path[3], getattr(place.getmatch(path), "rename", None))]
        if not ports:
            matches = ", ".join(repr(m) for m in place.matches) or "no matches"
            raise ConsoleLost(f"labgrid place {self.place!r} has no serial port"
                              f"{f' named {name!r}' if name else ''} among its acquired resources ({matches}): "
                              "is its exporter running, and does a match cover its RawSerialPort/USBSerialPort?")
        if len(ports) > 1:
            raise ConsoleLost(f"labgrid place {self.place!r} has {len(ports)} serial ports "
                              f"({', '.join('/'.join(p) for p, _ in ports)}): name one")
        path, resource = ports[0]
        where = "/".join(path)
        if resource is None:
            raise ConsoleLost(f"serial port {where} of place {self.place!r} is unavailable: its exporter "
                              f"{path[0]!r} is not connected to the coordinator")
        if not resource.avail:
            device = resource.extra.get("path")
            raise ConsoleLost(f"serial port {where} of place {self.place!r} is currently unavailable: the exporter "
                              f"does not see {device or 'the device'} (unplugged, powered off, or re-enumerating)")
        args = resource.args
        host, port = args.get("host"), args.get("port")
        if not host or not port:
            raise ConsoleLost(f"serial port {where} of place {self.place!r} is available but not served yet "
                              "(the exporter has not started ser2net for it)")
        if resource.extra.get("proxy_required"):
            raise ConsoleLost(f"serial port {where} of place {self.place!r} is only reachable through an SSH proxy "
                              f"({resource.extra.get('proxy')}), which this harness does not set up")
        if (args.get("protocol") or "rfc2217") == "raw":
            return f"socket://{host}:{port}"
        # ser2net answers no SET_CONTROL for a port opened "local" (how labgrid's exporter starts it), so
        # without ign_set_control pyserial's open() waits 3 s for a DTR acknowledgement and fails
        return f"rfc2217://{host}:{port}?ign_set_control"

    # -- power ----------------------------------------------------------------------------------------------------

    def _power_driver(self, required: bool) -> Any:
        client, place = self._acquired_place()
        ports = self._resources(client, place, "NetworkPowerPort")
        if not ports:
            if required:
                raise BenchStartError(f"labgrid place {self.place!r} has no NetworkPowerPort among its resources")
            return None
        path, resource = ports[0]
        if resource is None or not resource.avail:
            raise SupplyUnreachable(f"power port {'/'.join(path)} of place {self.place!r} is unavailable")
        args = resource.args
        key = (path, args.get("model"), args.get("host"), args.get("index"))
        if self._power is None or self._power[0] != key:
            from labgrid import Target  # noqa: PLC0415
            from labgrid.driver.powerdriver import NetworkPowerDriver  # noqa: PLC0415
            from labgrid.resource.power import NetworkPowerPort  # noqa: PLC0415

            target = Target(f"{self.place}-power")
            NetworkPowerPort(target, name=None, model=args["model"], host=args["host"], index=args["index"])
            driver = NetworkPowerDriver(target, name=None)
            target.activate(driver)
            self._power = (key, driver)
        return self._power[1]

    def _switch(self, what: str, action: Callable[[Any], T], driver: Any) -> T:
        try:
            return action(driver)
        except Exception as exc:  # noqa: BLE001 - requests/socket errors from labgrid's backend
            name = type(exc).__name__
            response = getattr(exc, "response", None)
            if response is not None:
                raise InstrumentError(f"power switch of place {self.place!r}", what,
                                      f"HTTP {response.status_code} {response.reason}") from None
            raise SupplyUnreachable(f"power switch of place {self.place!r} does not answer ({what}): {name}: {exc}") from None

    def power_on(self) -> None:
        self._switch("on", lambda d: d.on(), self._power_driver(True))
        self.log.info("labgrid place %r: power on", self.place)

    def power_off(self) -> None:
        self._switch("off", lambda d: d.off(), self._power_driver(True))
        self.log.info("labgrid place %r: power off", self.place)

    def power_state(self) -> bool | None:
        """On/off as the switch reports it; None when the place has no labgrid power port (power is elsewhere)."""
        driver = self._power_driver(False)
        if driver is None:
            return None
        return bool(self._switch("get", lambda d: d.get(), driver))


# -- release after a crash ----------------------------------------------------------------------------------------

def start_release_guard(*, pid: int, place: str, coordinator: str, holder: str, since: float | None,
                        log_path: str | os.PathLike[str] | None = None,
                        power_off: bool = False) -> subprocess.Popen[bytes]:
    """A process that releases ``place`` once ``pid`` has ended, if our acquisition still stands.

    ``power_off``: before releasing, switch the place's power off (same condition: only our acquisition).
    In its own session, so a Ctrl-C or a group kill aimed at the run does not take
    the guard with it; its only handle is the returned Popen.
    """
    cmd = [sys.executable, "-m", "harness.labgrid", "guard", "--pid", str(pid), "--place", place,
           "--coordinator", coordinator, "--holder", holder]
    if since is not None:
        cmd += ["--since", repr(float(since))]
    if power_off:
        cmd.append("--power-off")
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    out: Any = subprocess.DEVNULL
    if log_path is not None:
        out = open(log_path, "ab")  # noqa: SIM115 - handed to the child, closed below
    try:
        return subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True, close_fds=True)
    finally:
        if log_path is not None:
            out.close()


def _wait_for_exit(pid: int) -> None:
    """Block until ``pid`` has ended: a pidfd where Linux has one (no PID-reuse race), else polling."""
    try:
        fd = os.pidfd_open(pid)  # type: ignore[attr-defined]
    except ProcessLookupError:
        return
    except (AttributeError, OSError):
        fd = None
    if fd is not None:
        try:
            select.select([fd], [], [])
        finally:
            os.close(fd)
        return
    while True:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        except PermissionError:
            pass
        time.sleep(0.5)


class PowerOffFailed(Exception):
    """The guard could not switch the place's power off this time (switch or its exporter unavailable, HTTP error)."""


def release_if_ours(place: str, coordinator: str, holder: str, since: float | None, *,
                    power_off: bool = False) -> str:
    """Release ``place`` only if ``holder`` still holds the acquisition made at ``since``; says what it did.

    ``power_off``: switch the place's power off first, through its NetworkPowerPort, under the same
    condition.  A place without a NetworkPowerPort is released with an error logged (nothing to switch);
    a switch that fails raises :class:`PowerOffFailed` with the place still held, for the caller to retry.
    """
    client = CoordinatorClient(coordinator)
    try:
        current = client.place(place)
        if current.acquired is None:
            return f"place {place!r} was already released" + (": power not touched" if power_off else "")
        if current.acquired != holder:
            return f"place {place!r} is now acquired by {current.acquired}: left alone"
        if since is not None and abs(float(current.changed) - since) > 1e-3:
            return (f"place {place!r} is acquired by {holder} since {_since(current.changed)}, not the acquisition "
                    f"of {_since(since)}: left alone")
        switched = ""
        if power_off:
            switched = _power_off_held(client, place, holder, since) + "; "
        client.release_place(place, fromuser=holder)
        return switched + f"released place {place!r} (held by {holder} since {_since(since)})"
    finally:
        client.close()


def _power_off_held(client: CoordinatorClient, place: str, holder: str, since: float | None) -> str:
    """Switch off through the place's power driver exactly as the run did (PlaceSession, adopted for ``holder``)."""
    session = PlaceSession(place, client.coordinator, guard=False)
    session._client, session.acquired_as, session.acquired_since = client, holder, since
    try:
        driver = session._power_driver(False)
    except (SupplyUnreachable, InstrumentError) as exc:
        raise PowerOffFailed(str(exc)) from None
    if driver is None:
        _log.error("place %r has no NetworkPowerPort: could NOT switch its power off; releasing it as it is", place)
        return "power NOT switched off (no NetworkPowerPort)"
    assert session._power is not None
    port = "/".join(session._power[0][0])
    outcome: list[BaseException | None] = []
    worker = threading.Thread(target=lambda: outcome.append(_call(session.power_off)), daemon=True)
    worker.start()
    worker.join(GUARD_POWER_TIMEOUT)
    if not outcome:  # the request hangs: leave the daemon thread behind, it ends with this process
        raise PowerOffFailed(f"power switch {port} of place {place!r} did not answer within {GUARD_POWER_TIMEOUT:g} s")
    if outcome[0] is not None:
        raise PowerOffFailed(str(outcome[0]))
    return f"switched power of place {place!r} OFF through {port}"


def _call(action: Callable[[], object]) -> BaseException | None:
    try:
        action()
    except Exception as exc:  # noqa: BLE001 - reported by the caller
        return exc
    return None


def _guard_main(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s labgrid-guard[%(process)d] %(message)s")
    _log.info("watching process %d for place %r on %s%s", args.pid, args.place, args.coordinator,
              " (will switch its power off)" if args.power_off else "")
    _wait_for_exit(args.pid)
    _log.info("process %d ended; checking place %r on %s", args.pid, args.place, args.coordinator)
    deadline = time.monotonic() + args.retry_for
    power_off = args.power_off
    while True:
        try:
            _log.info("%s", release_if_ours(args.place, args.coordinator, args.holder, args.since,
                                            power_off=power_off))
            return 0
        except PowerOffFailed as exc:
            # Kept held while retrying: released, the rig could go to the next user powered, and this guard
            # would no longer have the right to switch it.
            if time.monotonic() >= deadline:
                _log.error("could NOT switch the power of place %r off within %g s (%s): releasing it anyway, "
                           "its power may still be ON", args.place, args.retry_for, exc)
                power_off = False
                continue
            _log.warning("could not switch the power of place %r off: %s; retrying", args.place, exc)
            time.sleep(2.0)
        except (BenchStartError, ConfigError) as exc:
            if time.monotonic() >= deadline:
                _log.error("gave up releasing place %r: %s", args.place, exc)
                return 1
            _log.warning("%s; retrying", exc)
            time.sleep(2.0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.labgrid")
    commands = parser.add_subparsers(dest="command", required=True)
    guard = commands.add_parser("guard", help="release a place when the process that acquired it has ended")
    guard.add_argument("--pid", type=int, required=True)
    guard.add_argument("--place", required=True)
    guard.add_argument("--coordinator", required=True)
    guard.add_argument("--holder", required=True, help="host/user that acquired the place")
    guard.add_argument("--since", type=float, default=None, help="the place's 'changed' time at acquisition")
    guard.add_argument("--retry-for", type=float, default=300.0,
                       help="seconds to keep trying an unreachable coordinator or power switch")
    guard.add_argument("--power-off", action="store_true",
                       help="switch the place's power off (its NetworkPowerPort) before releasing it")
    args = parser.parse_args(argv)
    try:
        return _guard_main(args)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
