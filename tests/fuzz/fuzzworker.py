"""The process that runs each fuzzed file through its loader, so a hang can be killed.

The fuzz tests (``test_fuzz_files.py``) send one file at a time to this
process and judge the answer.  Running the loaders here, not in the pytest
process, is what makes the time and memory bounds hard:

- a soft bound: ``setitimer`` raises inside the loader after ``soft``
  seconds, so a pure-Python loop (an alias bomb walked by a validator, a
  ``product`` of huge parameter lists) is reported with the traceback of
  where it was stuck;
- a hard bound: the parent kills this process if no answer comes
  ``HARD_MARGIN`` seconds later, which also covers a single long C call
  (a huge ``format`` width, a giant ``int`` to ``str``) that never returns to
  the interpreter and so never sees the soft bound's signal;
- a memory bound: ``RLIMIT_AS`` turns a memory bomb into a
  ``MemoryError`` (reported as a traceback) instead of swapping a machine
  other people share.

Protocol: length-prefixed pickles on stdin/stdout.  A request is
``{"kind", "data", "soft"}``; the answer is a dict whose ``outcome`` is
``accepted``, ``config_error``, ``traceback``, ``bad_accept`` or ``hang``.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import pickle
import re
import resource
import signal
import string
import struct
import sys
import tempfile
import traceback
from pathlib import Path
from typing import Any, BinaryIO

ROOT = Path(__file__).resolve().parents[2]
#: where ``harness`` is imported from: this checkout, or (to prove the fuzz tests can fail)
#: a copy of it with a bug planted, without touching the tree other people are testing
HARNESS_ROOT = Path(os.environ.get("TLS_HIL_FUZZ_HARNESS") or ROOT)

#: the worker's whole address space; the harness itself needs well under 200 MB
MEMORY_LIMIT = 1536 * 2**20
#: where each kind of file lives, so a loader sees the path a user's file would have
FOLDERS = {"scenario": "scenarios", "device": "devices", "dialect": "dialects"}


class Hang(Exception):
    """Raised by the soft time bound inside whatever the loader was doing."""


def _on_alarm(signum: int, frame: Any) -> None:
    raise Hang("soft time bound reached")


def frame_write(stream: BinaryIO, obj: Any) -> None:
    blob = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(struct.pack(">Q", len(blob)) + blob)
    stream.flush()


def frame_read(stream: BinaryIO) -> Any:
    head = stream.read(8)
    if len(head) < 8:
        raise EOFError
    (size,) = struct.unpack(">Q", head)
    return pickle.loads(stream.read(size))


# -- what a run calls right after loading ------------------------------------------------


#: the step keys the engine hands to ``re.compile`` once the parameters are filled in
_PATTERNS = {("expect_console", "pattern"), ("cut_power_when", "line")}


def _after_scenario(loaded: scenario.Scenario) -> None:
    """What collection and the engine do next: expand into tests, fill each step's parameters,
    and rely on each filled value having its step key's type (the engine calls ``float()``,
    ``int()``, ``re.compile`` on them)."""
    expanded = loaded.expand()
    for _, params in expanded[:20]:
        for step in scenario.walk(loaded.steps):
            args = scenario.substitute(step.args, {**params, "now": 0, "cut_time": 0, "seed": 1})
            for key, value in args.items():
                kinds = scenario._STEP_KEYS[step.action][key][0]
                if (isinstance(value, bool) and bool not in kinds) or not isinstance(value, kinds):
                    raise TypeError(f"{step.action}.{key} is {value!r} once filled with {params}: "
                                    f"the engine expects {kinds}")
                if (step.action, key) in _PATTERNS:
                    re.compile(value)


def _template_values(template: str) -> dict[str, Any]:
    """A value for every placeholder, of the type its format spec asks for (``{port:d}`` an int)."""
    values: dict[str, Any] = {}
    for _, name, spec, _ in string.Formatter().parse(template):
        if name:
            kind = (spec or "s")[-1:]
            values[name] = 1 if kind in "bcdoxXn" else 1.5 if kind in "eEfFgG%" else "x"
    return values


def _after_device(spec: devicefile.DeviceSpec) -> None:
    """What the bench and the device do next: fill every template the file holds."""
    templates = [("supply.resource", spec.supply.resource), ("console.url", spec.console.url)]
    templates += [(f"firmware.commands.{c.name}.send", c.send) for c in spec.firmware.commands.values() if c.send]
    templates += [("bench.start", a) for a in (spec.bench.start if spec.bench else [])]
    if spec.flash_file:
        templates.append(("flash_file", spec.flash_file))
    for where, template in templates:
        devicefile.fill(template, _template_values(template), where)


def _after_dialect(loaded: dialect.Dialect) -> None:
    """What the supply driver does next: render every command, read its reply rules."""
    channel = loaded.channels[0]
    for command in loaded.commands:
        loaded.render(command, channel=channel, volts=3.3, amps=0.5)
        loaded.reply(command)
    for check in loaded.errors:
        check.pattern.match('+0,"No error"')
    loaded.socket_resource("TCPIP::bench-psu::SOCKET")


def _loaders() -> dict[str, tuple[Any, Any]]:
    return {"scenario": (scenario.load, _after_scenario), "device": (devicefile.load, _after_device),
            "dialect": (dialect.load, _after_dialect)}


def non_finite(value: Any, path: str = "", depth: int = 0) -> str | None:
    """The path of the first NaN or infinity in an accepted object: no file means either."""
    if depth > 200:
        return None
    if isinstance(value, float):
        return None if math.isfinite(value) else path or "?"
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        items = [(f.name, getattr(value, f.name)) for f in dataclasses.fields(value) if f.name != "source"]
    elif isinstance(value, dict):
        items = [(str(k), v) for k, v in value.items()]
    elif isinstance(value, (list, tuple)):
        items = [(f"[{i}]", v) for i, v in enumerate(value)]
    else:
        return None
    for name, item in items:
        found = non_finite(item, f"{path}.{name}" if path else name, depth + 1)
        if found:
            return found
    return None


def run_one(kind: str, data: bytes, soft: float, workdir: Path) -> dict[str, Any]:
    """Load ``data`` as a file of ``kind`` and say what happened, within ``soft`` seconds."""
    folder = workdir / FOLDERS[kind]
    folder.mkdir(exist_ok=True)
    path = folder / "fuzzed.yaml"
    path.write_bytes(data)
    load, after = _loaders()[kind]
    signal.setitimer(signal.ITIMER_REAL, soft)
    try:
        loaded = load(path)
        after(loaded)
        bad = non_finite(loaded)
    except ConfigError as exc:
        signal.setitimer(signal.ITIMER_REAL, 0)
        text = _safe_str(exc)
        return {"outcome": "config_error", "path": str(path), "file": exc.file, "line": exc.line,
                "key": exc.key if isinstance(exc.key, (str, type(None))) else repr(exc.key),
                "key_type": type(exc.key).__name__, "message": exc.message, "text": text}
    except Hang:
        signal.setitimer(signal.ITIMER_REAL, 0)
        return {"outcome": "hang", "path": str(path), "traceback": _short_traceback()}
    except Exception as exc:  # noqa: BLE001 - any other exception is exactly what we look for
        signal.setitimer(signal.ITIMER_REAL, 0)
        return {"outcome": "traceback", "path": str(path), "type": type(exc).__name__,
                "traceback": _short_traceback()}
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
    if bad:
        return {"outcome": "bad_accept", "path": str(path), "why": f"accepted a NaN or infinity at {bad}"}
    return {"outcome": "accepted", "path": str(path)}


def _safe_str(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception as inner:  # noqa: BLE001 - str() of a message holding a 5000-digit int
        return f"<str() failed: {type(inner).__name__}: {inner}>"


def _short_traceback() -> str:
    """The traceback with long lines cut: a 1 MB value in a frame must not become a 1 MB report."""
    text = traceback.format_exc(limit=-25)
    return "\n".join(line if len(line) <= 300 else line[:300] + "..." for line in text.splitlines()[-60:])


def main() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))
    signal.signal(signal.SIGALRM, _on_alarm)
    logging.disable(logging.CRITICAL)
    requests, answers = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr   # anything a loader prints must not corrupt the answer stream
    with tempfile.TemporaryDirectory(prefix="tls-hil-fuzz-") as tmp:
        while True:
            try:
                request = frame_read(requests)
            except EOFError:
                return
            try:
                answer = run_one(request["kind"], request["data"], request["soft"], Path(tmp))
            except Hang:   # the bound fired while an answer was being made: still a hang
                answer = {"outcome": "hang", "path": "?", "traceback": "soft bound reached while answering"}
            frame_write(answers, answer)


if __name__ == "__main__":
    # Imported here, not at the top: the pytest process imports this module for its framing
    # only, and must keep its own sys.path and its own harness.
    sys.path[:0] = [str(HARNESS_ROOT), str(ROOT)]
    from harness import devicefile, dialect, scenario
    from harness.errors import ConfigError

    os.chdir(ROOT)
    main()
