"""The expectations a scenario file may state (``expect_server: NAME``), each with the function that judges it.

One table, read by the scenario parser (which names it accepts) and by the
engine (which function judges it): adding an expectation is one entry here
and its judge in :mod:`harness.verdict`, plus its test.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from . import verdict


@dataclass(frozen=True)
class Ask:
    """What an ``expect_server`` step asks, with the moments it is judged from."""

    since: float | None         # when the last connect began (None: no connect yet)
    start: float                # when the scenario began
    cut: int = -1               # which power cut (resumed_across_power_loss, power_not_cut)
    reason: str | None = None   # refused: the reason the server must give
    mechanism: str | None = None


class NeedsConnect(Exception):
    """The expectation judges the first handshake after a connect, and there was none."""


Judge = Callable[[verdict.Evidence, Ask], verdict.Verdict]


def _first_after(name: str) -> Judge:
    def judge(ev: verdict.Evidence, ask: Ask) -> verdict.Verdict:
        if ask.since is None:
            raise NeedsConnect(name)
        return verdict.EXPECTATIONS[name](ev, ask.since, reason=ask.reason, mechanism=ask.mechanism)

    return judge


EXPECTATIONS: dict[str, Judge] = {
    "resumed_across_power_loss": lambda ev, ask: verdict.resumed_across_power_loss(ev, cut_index=ask.cut),
    # The same, except that a cut inside a session write may leave the last session fully stored.
    "resumed_last_stored": lambda ev, ask: verdict.resumed_last_stored(ev, cut_index=ask.cut),
    # Passes only when the verdict refuses to call the cut a power loss.
    "power_not_cut": lambda ev, ask: verdict.power_not_cut(ev, cut_index=ask.cut),
    "no_handshake": lambda ev, ask: verdict.no_handshake(ev, ask.since or ask.start),
    **{name: _first_after(name) for name in verdict.EXPECTATIONS},
}

#: expectations about the scenario as a whole rather than the handshakes of
#: the last connect: the version a connect asked for does not apply to them
WHOLE_SCENARIO = frozenset({"no_handshake"})
