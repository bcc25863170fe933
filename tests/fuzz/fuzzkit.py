"""What the fuzz tests share: the worker that runs the loaders, the judge, the tally, the profiles.

The contract under test (issue 13): a user's file is either accepted, or
refused with a :class:`~harness.errors.ConfigError` reading
``file:line: key: message`` (line and key where there are ones); never
another exception, never a hang, never an accepted NaN.

Why a worker process rather than a thread or ``signal.alarm`` in pytest's own
process: a thread cannot be stopped, so a hung loader would keep burning one
of the two cores and keep its memory; an alarm cannot interrupt one long C
call (``sum(range(10**12))``, a format width of 10**9) and an alias bomb
would take the memory of the pytest process with it.  A child process with a soft
alarm (to report *where* a loop hung), a hard kill (for what the alarm cannot
stop) and an address-space limit bounds all three, at about a tenth of a
millisecond of pipe traffic per example.  See ``fuzzworker.py``.
"""

from __future__ import annotations

import os
import pickle
import re
import select
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, Phase, settings
from hypothesis.database import DirectoryBasedExampleDatabase

import fuzzworker

ROOT = Path(__file__).resolve().parents[2]
KINDS = ("scenario", "device", "dialect")

#: seconds one file may take to load (and expand) before it counts as a hang;
#: the largest generated files (300 KB lines, 5,000-item lists) take about one on a busy machine
SOFT_BOUND = float(os.environ.get("TLS_HIL_FUZZ_TIMEOUT", "5"))
#: after the soft bound, how long the worker has to answer before it is killed
HARD_MARGIN = 5.0
#: a message longer than this is not "a clear error": a value quoted whole, an alias bomb printed
MAX_MESSAGE = 1000

# -- profiles ----------------------------------------------------------------------------

_COMMON: dict[str, Any] = dict(
    deadline=None,   # the worker's bounds judge time; a deadline on a shared 2-core machine is only noise
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example,
                           HealthCheck.filter_too_much],
    print_blob=True,
)
#: CI: the same examples every run (seed derived from each test), no database read or written
settings.register_profile("ci", derandomize=True, database=None, **_COMMON)
#: on demand: new examples every run, failures kept in runs/fuzz-examples (ignored by git) and replayed first
settings.register_profile("long", derandomize=False,
                          database=DirectoryBasedExampleDatabase(str(ROOT / "runs" / "fuzz-examples")),
                          **_COMMON)

PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "ci")
if PROFILE not in ("ci", "long"):
    PROFILE = "ci"

#: examples per kind of file, over all the fuzz tests of that kind
PER_KIND = int(os.environ.get("TLS_HIL_FUZZ_EXAMPLES") or (20000 if PROFILE == "long" else 1000))


def fuzz_settings(share: float) -> settings:
    """The profile's settings with ``share`` of a kind's examples for one test.

    The shrink phase stays on: a failure is reported as the smallest file
    found, ready to become a test in ``test_regressions.py``.
    """
    return settings(settings.get_profile(PROFILE), max_examples=max(1, round(PER_KIND * share)),
                    phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink])


# -- the tally the summary line prints ---------------------------------------------------------


@dataclass
class Tally:
    """Examples really executed per kind, and how many broke the contract, for the run's summary."""

    cases: Counter = field(default_factory=Counter)
    tracebacks: int = 0
    hangs: int = 0
    other: int = 0

    def line(self) -> str:
        counts = ", ".join(f"{kind} {self.cases[kind]}" + (" cases" if i == 0 else "")
                           for i, kind in enumerate(KINDS))
        extra = f", {self.other} other contract failures" if self.other else ""
        return f"fuzzed files: {counts}: {self.tracebacks} tracebacks, {self.hangs} hangs{extra}"


# -- the worker ------------------------------------------------------------------------------


class Worker:
    """A child process that loads one file at a time, restarted after it hangs or dies."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen | None = None

    def _start(self) -> subprocess.Popen:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        return subprocess.Popen([sys.executable, str(Path(fuzzworker.__file__).resolve())], cwd=ROOT,
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                env=env)

    def run(self, kind: str, data: bytes, soft: float = SOFT_BOUND) -> dict[str, Any]:
        if self.proc is None or self.proc.poll() is not None:
            self.proc = self._start()
        proc = self.proc
        assert proc.stdin is not None and proc.stdout is not None
        try:
            fuzzworker.frame_write(proc.stdin, {"kind": kind, "data": data, "soft": soft})
        except BrokenPipeError:
            self.close()
            return {"outcome": "traceback", "type": "worker died", "traceback": "broken pipe", "path": "?"}
        deadline = time.monotonic() + soft + HARD_MARGIN
        ready, _, _ = select.select([proc.stdout], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            self.close()
            return {"outcome": "hang", "path": "?",
                    "traceback": f"killed: no answer within {soft + HARD_MARGIN:.0f} s (stuck in C code?)"}
        try:
            return fuzzworker.frame_read(proc.stdout)
        except (EOFError, OSError, ValueError, pickle.UnpicklingError) as exc:
            code = proc.poll()
            self.close()
            return {"outcome": "traceback", "type": "worker died", "path": "?",
                    "traceback": f"worker exited ({code}): {exc}"}

    def close(self) -> None:
        """End the worker this object started (by its own handle, never by name)."""
        if self.proc is None:
            return
        proc, self.proc = self.proc, None
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        for stream in (proc.stdin, proc.stdout):
            if stream is not None:
                try:
                    stream.close()
                except OSError:
                    pass


# -- the judge --------------------------------------------------------------------------------

#: what YAML counts as a line break (so a file's last line number is YAML's, not an editor's)
_BREAKS = re.compile("\r\n|[\r\n\x85\u2028\u2029]")


def yaml_lines(data: bytes) -> int:
    """How many lines YAML sees in ``data`` (1 for an empty file)."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return data.count(b"\n") + 1
    return len(_BREAKS.findall(text)) + 1


def judge(kind: str, data: bytes, result: dict[str, Any], tally: Tally) -> None:
    """Count the example and fail it unless the contract holds; the message says what broke."""
    tally.cases[kind] += 1
    outcome = result["outcome"]
    if outcome == "accepted":
        return
    if outcome == "traceback":
        tally.tracebacks += 1
        raise AssertionError(f"{kind} loader raised {result['type']} instead of ConfigError:\n"
                             f"{result['traceback']}")
    if outcome == "hang":
        tally.hangs += 1
        raise AssertionError(f"{kind} loader hung:\n{result['traceback']}")
    if outcome == "bad_accept":
        tally.other += 1
        raise AssertionError(f"{kind} loader {result['why']}")
    assert outcome == "config_error", result
    problems = config_error_problems(data, result)
    if problems:
        tally.other += 1
        raise AssertionError(f"{kind}: unclear ConfigError {result['text'][:500]!r}: {'; '.join(problems)}")


def config_error_problems(data: bytes, result: dict[str, Any]) -> list[str]:
    """What is wrong with a ConfigError's form: the file, the line, the key, the length."""
    path, text, line, key = result["path"], result["text"], result["line"], result["key"]
    problems = []
    if result["file"] != path:
        problems.append(f"names file {result['file']!r}, not {path!r}")
    prefix = f"{path}:{line}: " if line is not None else f"{path}: "
    if not text.startswith(prefix):
        problems.append(f"does not start with {prefix!r}")
    if line is not None and not (isinstance(line, int) and 1 <= line <= yaml_lines(data)):
        problems.append(f"line {line!r} is not a line of the file (1..{yaml_lines(data)})")
    if result["key_type"] not in ("str", "NoneType"):
        problems.append(f"key is a {result['key_type']} ({key}), not text")
    if key is not None and f"{key}: " not in text:
        problems.append(f"key {key!r} is not named in the message")
    if not result["message"].strip():
        problems.append("empty message")
    if len(text) > MAX_MESSAGE + len(path) + len(key or ""):
        problems.append(f"message is {len(text)} characters long")
    written = data.decode("utf-8", "replace")
    leaked = [words for words in PYTHON_WORDS if words in result["message"] and words not in written]
    if leaked:
        problems.append(f"message speaks Python, not the file ({leaked[0]!r})")
    return problems


#: what a message only says when a Python error was passed on as it came: not the user's words
PYTHON_WORDS = ("not supported between instances", "object has no attribute", "unhashable type",
                "expected str instance", "NoneType", "Traceback", "invalid literal for int()",
                "could not convert string to float", "object is not subscriptable", "object is not iterable",
                "takes no arguments", "positional argument")
