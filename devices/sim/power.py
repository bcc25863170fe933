"""The device's power domain: the firmware process lives exactly while powered.

Why a process and SIGKILL: power loss must destroy RAM with no chance to
flush or run atexit handlers, and only a killed process guarantees that.
The firmware is *any program* given as a command template, so a host build
of real firmware (Zephyr native_sim, an ESP-IDF linux target, a test
binary) can be the device.  Placeholders, filled per boot:

``{python}`` this interpreter, ``{flash}`` flash file, ``{variant}``,
``{reset_cause}`` (power-on|brown-out|software), ``{state_fd}`` (fd of the
current-model side channel, -1 if unused), ``{workdir}``, plus every
``--set KEY=VALUE`` of the bench (e.g. ``{ca}``, ``{page_ms}``, or names of
your own such as ``{app}`` or ``{target}`` for a template of your own).

``{extra}`` is special when it is a whole word of the template: its value
is split like a shell command line into zero or more words, so a device
file can add firmware options without restating the default template
(``--set "extra=--app mqtt --hold 5 --prompt 'dev$ '"``); the default
value is empty and then adds no argument.  Anywhere else (inside a word)
it is plain text like every other placeholder.  The default template ends
with ``{extra}``.

The firmware's stdin/stdout are the UART pty master; stderr goes to
``<workdir>/firmware.log``.  It runs in its own session so a SIGKILL of its
process group also takes any children it started.  A software reset is the
firmware's own business (the emulated one re-execs itself, keeping its
pid), so the bench does not see it as a power event.
"""

from __future__ import annotations

import logging
import os
import shlex
import signal
import string
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

DEFAULT_FIRMWARE = ("{python} -m devices.sim.firmware --flash {flash} --variant {variant} "
                    "--reset-cause {reset_cause} --state-fd {state_fd} --ca {ca} --page-ms {page_ms} {extra}")
DEFAULT_SETTINGS = {"ca": "", "page_ms": "15", "extra": ""}
#: placeholders whose value, when they stand as a whole word, becomes zero or more words
SPLIT_PLACEHOLDERS = frozenset({"extra"})
PACKAGE_ROOT = Path(__file__).resolve().parents[2]  # the directory that holds devices/


class FirmwareStartError(Exception):
    """The firmware command could not be built or executed (message without prefix)."""


def build_command(template: str, values: dict[str, str]) -> list[str]:
    """Split like a shell, then fill placeholders in each word; unknown -> error.

    A word that is exactly ``{extra}`` (see :data:`SPLIT_PLACEHOLDERS`) is
    replaced by its value split like a shell: no word for an empty value.
    """
    try:
        words = shlex.split(template)
    except ValueError as exc:
        raise FirmwareStartError(f"bad firmware command: {exc}") from None
    if not words:
        raise FirmwareStartError("empty firmware command")
    out: list[str] = []
    for word in words:
        name = word[1:-1]
        if word.startswith("{") and word.endswith("}") and name in SPLIT_PLACEHOLDERS and name in values:
            try:
                out.extend(shlex.split(values[name]))
            except ValueError as exc:
                raise FirmwareStartError(f"bad value of {{{name}}}: {exc}") from None
            continue
        for _, name, _, _ in string.Formatter().parse(word):
            if name is not None and name not in values:
                raise FirmwareStartError(f"unknown placeholder {{{name}}} in firmware command "
                                         f"(known: {', '.join(sorted(values))})")
        try:
            out.append(word.format_map(values))
        except (ValueError, IndexError, KeyError) as exc:
            raise FirmwareStartError(f"bad placeholder in {word!r}: {exc}") from None
    return out


@dataclass
class PowerDomain:
    """Starts the firmware at power-up and kills it at power loss."""

    template: str
    values: dict[str, str]
    workdir: Path
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen | None = None
    state_r: int | None = None
    log_file: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log_file = self.workdir / "firmware.log"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, uart_fd: int, reset_cause: str) -> None:
        """Power-up: run the firmware with the UART on stdin/stdout."""
        state_r, state_w = os.pipe()
        values = dict(self.values, python=sys.executable, reset_cause=reset_cause,
                      state_fd=str(state_w), workdir=str(self.workdir))
        try:
            argv = build_command(self.template, values)
            env = dict(os.environ)
            env["PYTHONPATH"] = os.pathsep.join(p for p in (str(PACKAGE_ROOT), env.get("PYTHONPATH", "")) if p)
            env.update(self.env)
            with open(self.log_file, "ab") as err:
                self.proc = subprocess.Popen(argv, stdin=uart_fd, stdout=uart_fd, stderr=err,
                                             pass_fds=(state_w,), start_new_session=True,
                                             cwd=self.workdir, env=env)
        except FirmwareStartError:
            os.close(state_r)
            raise
        except (OSError, ValueError, subprocess.SubprocessError) as exc:
            os.close(state_r)
            raise FirmwareStartError(str(exc)) from None
        finally:
            os.close(state_w)
        os.set_blocking(state_r, False)
        self.state_r = state_r
        log.info("power-up: firmware pid %d (%s), reset cause %s", self.proc.pid, argv[0], reset_cause)

    def read_states(self) -> list[str]:
        """Words the firmware wrote on its state channel since the last call."""
        if self.state_r is None:
            return []
        try:
            data = os.read(self.state_r, 4096)
        except BlockingIOError:
            return []
        except OSError:
            return []
        return [w for w in data.decode("ascii", "replace").split() if w]

    def kill(self) -> int | None:
        """Power loss: SIGKILL the whole process group, reap it, return the status."""
        status = None
        if self.proc is not None:
            if self.proc.poll() is None:
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                except PermissionError:
                    self.proc.kill()
            status = self.proc.wait()
            log.info("power loss: firmware pid %d killed (status %s)", self.proc.pid, status)
            self.proc = None
        if self.state_r is not None:
            os.close(self.state_r)
            self.state_r = None
        return status

    def reap_exited(self) -> int | None:
        """If the firmware ended by itself (crash, bad command), reap it."""
        if self.proc is not None and self.proc.poll() is not None:
            status = self.proc.returncode
            log.error("firmware pid %d exited by itself with status %s (see %s)",
                      self.proc.pid, status, self.log_file)
            self.proc = None
            if self.state_r is not None:
                os.close(self.state_r)
                self.state_r = None
            return status
        return None
