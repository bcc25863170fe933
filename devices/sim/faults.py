"""Bench faults on demand: what a lab bench does on a bad night, injected at a chosen moment.

Why: the harness must never blame the firmware for a bench fault, and the
only way to prove that is to make the bench fail on purpose, through the
same code path a real fault takes (a SCPI socket that drops, a supply that
trips and says so in its error queue, a UART that vanishes, a bench process
that dies), and check what the harness reports.  ``python -m devices.sim
--fault SPEC`` arms one fault per option:

``KIND@EVENT[#N][:down=SECONDS]``

* KIND: ``scpi-drop`` (every SCPI connection is closed and new ones are
  closed at once, for ``down`` seconds, default for good), ``trip`` (the
  output trips its over-voltage protection: output off, latched until
  ``OUTP:PROT:CLE``, an error in the queue), ``uart-gone`` (the UART's node
  and link disappear, and come back at the first power-up after ``down``
  seconds, default never: a USB hub that drops out), ``exit`` (the bench process dies at once,
  exit status 3, as a crashed daemon would).
* EVENT: ``on`` (an ``OUTP ON`` command; the trip happens as the output
  comes on), ``boot`` (the device starts booting), ``flash`` (the firmware
  enters its flash state: a session write), ``radio``.
* ``#N``: the N-th such event since the bench started (default 1).

Each fault fires once.  The events are the bench's own (SCPI commands and
the firmware's state words), so a fault lands at the same step of a
scenario every run.
"""

from __future__ import annotations

import logging
import math
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

log = logging.getLogger(__name__)

KINDS = ("scpi-drop", "trip", "uart-gone", "exit")
EVENTS = ("on", "boot", "flash", "radio")
_SPEC = re.compile(r"^(?P<kind>[a-z-]+)@(?P<event>[a-z]+)(?:#(?P<nth>\d+))?(?::down=(?P<down>[0-9.]+|forever))?$")


class FaultSpecError(ValueError):
    """A --fault option that does not parse; the message says what is accepted."""


@dataclass
class Fault:
    kind: str
    event: str
    nth: int = 1
    #: scpi-drop: seconds the port refuses connections (inf: for good)
    down: float = math.inf
    fired: bool = False
    spec: str = ""

    @classmethod
    def parse(cls, spec: str) -> "Fault":
        m = _SPEC.match(spec.strip())
        if not m or m.group("kind") not in KINDS or m.group("event") not in EVENTS:
            raise FaultSpecError(f"--fault {spec!r}: expected KIND@EVENT[#N][:down=SECONDS] with KIND one of "
                                 f"{', '.join(KINDS)} and EVENT one of {', '.join(EVENTS)}")
        down = m.group("down")
        return cls(kind=m.group("kind"), event=m.group("event"), nth=int(m.group("nth") or 1),
                   down=math.inf if down in (None, "forever") else float(down), spec=spec.strip())


class FaultPlan:
    """Counts the bench's events and fires the armed faults; ``actions`` maps a kind to what it does.

    ``fired_path`` remembers which faults have fired in the bench's working
    directory: a harness that restarts a dead bench restarts it with the
    same options, and a fault that killed the first bench must not kill
    every later one (the fault "has cleared").
    """

    def __init__(self, faults: list[Fault], actions: dict[str, Callable[[Fault], None]],
                 fired_path: Path | None = None):
        self.faults = faults
        self.actions = actions
        self.counts: dict[str, int] = {}
        self.fired_path = fired_path
        self._lock = threading.Lock()       # the monitor thread and SCPI client threads both report events
        done = set(fired_path.read_text().split()) if fired_path is not None and fired_path.exists() else set()
        for fault in faults:
            fault.fired = fault.spec in done

    def event(self, name: str) -> None:
        if not self.faults:
            return
        with self._lock:
            self.counts[name] = self.counts.get(name, 0) + 1
            due = [f for f in self.faults if not f.fired and f.event == name and f.nth == self.counts[name]]
            for fault in due:
                fault.fired = True
        for fault in due:
            log.warning("fault injected: %s at %s #%d", fault.kind, name, fault.nth)
            if self.fired_path is not None:
                with open(self.fired_path, "a", encoding="utf-8") as out:
                    out.write(fault.spec + "\n")
            self.actions[fault.kind](fault)
