"""Every step and every outcome code through the real engine and verdict, on a fake rig, in seconds.

The slow tests (tests/scenario_runs) prove the same verdicts on the
simulated bench with real processes; these prove the engine's logic alone,
so a change to a step or a verdict rule is checked at once:
``pytest tests -m "not slow"``.  Each case is a scenario as a user writes
it, a firmware bug (or none), and the outcome code the verdict must give:
the passing cases show a code can pass, the failing ones that it fails on a
firmware that is really broken in that way.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from fakerig import Bugs, make_rig

from harness import devicefile
from harness.engine import Engine, ScenarioFailure, ScenarioSkip
from harness.outcomes import Code
from harness.scenario import load

ROOT = Path(__file__).resolve().parents[2]
SIM = ROOT / "devices" / "sim.yaml"
START = """\
  - power_on:
  - connect: {version: tls1.3}
  - expect_server: full
"""


def run(tmp: Path, steps: str, bugs: Bugs | None = None, *, spec_text: str | None = None, server: str = "",
        params: dict | None = None) -> tuple[str, Engine]:
    """Run one scenario; the outcome is "pass" or the failure's code."""
    path = tmp / "s.yaml"
    path.write_text(f"schema: 1\nname: s\ndescription: d\n{server}steps:\n" + textwrap.dedent(steps))
    spec_path = tmp / "dev.yaml"
    spec_path.write_text(spec_text or SIM.read_text())
    spec = devicefile.load(spec_path)
    rig, _ = make_rig(spec, tmp, bugs)
    engine = Engine(rig, load(path), params or {})
    try:
        engine.run()
    except ScenarioFailure as exc:
        return str(exc.code), engine
    return "pass", engine


RESUME = START + """\
  - power_cycle:
  - connect: {version: tls1.3}
  - expect_server: resumed_across_power_loss
"""

# (id, steps, bugs, expected outcome, code of the last verdict when the run passes)
CASES = [
    ("resumed", RESUME, None, "pass", Code.RESUMED),
    ("ram-only", RESUME, Bugs(ram_only=True), Code.NOTHING_OFFERED, None),
    ("tls12-resumed", RESUME.replace("tls1.3", "tls1.2"), None, "pass", Code.RESUMED),
    ("no-power-cut", START + "  - expect_server: resumed_across_power_loss\n", None, Code.NO_POWER_CUT, None),
    ("power-not-cut", START + "  - power_cycle: {off_time: 0, verify: false}\n  - connect: {version: tls1.3}\n"
     "  - expect_server: resumed_across_power_loss\n", None, Code.POWER_NOT_CUT, None),
    ("expect-power-not-cut", START + "  - power_cycle: {off_time: 0, verify: false}\n"
     "  - connect: {version: tls1.3}\n  - expect_server: power_not_cut\n", None, "pass", Code.POWER_NOT_CUT),
    ("no-boot", START + "  - power_cycle:\n", Bugs(boots=2), Code.NO_BOOT, None),
    ("never-connected", "  - power_on:\n  - connect: {version: tls1.3}\n", Bugs(offline=True),
     Code.NEVER_CONNECTED, None),
    ("connect-failed", "  - power_on:\n  - connect: {version: tls1.3}\n", Bugs(app_fails=True),
     Code.CONNECT_FAILED, None),
    ("handshake-failed", "  - power_on:\n  - connect: {version: tls1.3, expect: any}\n"
     "  - expect_server: full\n", Bugs(bad_cert=True), Code.HANDSHAKE_FAILED, None),
    ("no-session-before-cut", "  - power_on:\n  - power_cycle:\n  - connect: {version: tls1.3}\n"
     "  - expect_server: resumed_across_power_loss\n", None, Code.NO_SESSION_BEFORE_CUT, None),
    ("stale-session", START + "  - connect: {version: tls1.3}\n  - expect_server: resumed\n  - power_cycle:\n"
     "  - connect: {version: tls1.3}\n  - expect_server: resumed_across_power_loss\n", Bugs(no_renew=True),
     Code.STALE_SESSION, None),
    ("refused-expected", START + "  - power_off:\n  - server: {rotate_keys: true}\n  - power_on:\n"
     "  - connect: {version: tls1.3}\n  - expect_server: {outcome: refused, reason: rotated}\n  - expect_stored:\n",
     None, "pass", Code.REFUSED),
    ("wrong-reason", START + "  - power_off:\n  - server: {rotate_keys: true}\n  - power_on:\n"
     "  - connect: {version: tls1.3}\n  - expect_server: {outcome: refused, reason: expired}\n", None,
     Code.WRONG_REASON, None),
    ("refused-unexpected", START + "  - power_off:\n  - server: {rotate_keys: true}\n  - power_on:\n"
     "  - connect: {version: tls1.3}\n  - expect_server: resumed_across_power_loss\n", None, Code.REFUSED, None),
    ("no-fallback", START + "  - power_off:\n  - server: {rotate_keys: true}\n  - power_on:\n"
     "  - connect: {version: tls1.3}\n", Bugs(no_fallback=True), Code.NO_FALLBACK, None),
    ("foreign-offer", START + "  - connect: {version: tls1.3, server: other}\n  - expect_server: nothing_offered\n",
     Bugs(any_server=True), Code.REFUSED, None),
    ("unexpected-resume", START + "  - connect: {version: tls1.3}\n  - expect_server: full\n", None,
     Code.UNEXPECTED_RESUME, None),
    ("wrong-mechanism", START + "  - connect: {version: tls1.3}\n  - expect_server: {outcome: resumed, "
     "mechanism: session-id}\n", None, Code.WRONG_MECHANISM, None),
    ("consistent", START + "  - connect: {version: tls1.3}\n  - expect_server: consistent\n", None, "pass",
     Code.RESUMED),
    ("connected", START + "  - connect: {version: tls1.2}\n  - expect_server: connected\n", None, "pass", None),
    ("no-handshake", "  - power_on:\n  - expect_server: no_handshake\n", None, "pass", Code.NO_HANDSHAKE),
    ("unexpected-handshake", START + "  - expect_server: no_handshake\n", None, Code.UNEXPECTED_HANDSHAKE, None),
    ("wrong-version", START.replace("tls1.3", "tls1.3") , Bugs(versions=("tls1.2",)), Code.WRONG_VERSION, None),
    ("not-stored", START + "  - expect_stored: {timeout: 0.05}\n", Bugs(ram_only=True), Code.NOT_STORED, None),
    ("console-timeout", "  - power_on:\n  - send: help\n  - expect_console: {pattern: '^nothing like this', "
     "timeout: 0.05}\n", None, Code.CONSOLE_TIMEOUT, None),
    ("expect-console", "  - power_on:\n  - send: bogus\n  - expect_console: {pattern: \"unknown command 'bogus'\"}\n",
     None, "pass", None),
    ("wrong-reset-cause", "  - power_on:\n  - expect_reset: brown-out\n", None, Code.WRONG_RESET_CAUSE, None),
    ("brownout", START + "  - brownout: {volts: 1.8, duration: 0.01}\n  - expect_reset: brown-out\n"
     "  - connect: {version: tls1.3}\n  - expect_server: resumed_across_power_loss\n", None, "pass", Code.RESUMED),
    ("trigger-not-seen", START + "  - power_cycle:\n  - cut_power_when: {line: '^never printed'}\n"
     "  - connect: {version: tls1.3}\n  - power_on:\n", None, Code.TRIGGER_NOT_SEEN, None),
    ("cut-after-flash-write", START + "  - power_cycle:\n  - cut_power_when: {after: flash_write, "
     "delay: {of_write: 0.5}}\n  - connect: {version: tls1.3}\n  - power_on:\n  - connect: {version: tls1.3}\n"
     "  - expect_server: consistent\n", None, "pass", Code.RESUMED),
    ("no-write-to-time", START + "  - power_cycle:\n  - cut_power_when: {after: flash_write, "
     "delay: {of_write: 0.5}}\n", Bugs(ram_only=True), Code.TRIGGER_NOT_SEEN, None),
    ("cut-after-connect", START + "  - cut_power_when: {after: connect, delay: 0}\n  - connect: {expect: any}\n"
     "  - power_on:\n  - connect: {version: tls1.3}\n  - expect_server: consistent\n", None, "pass", None),
    ("forbidden-output", "  - power_on:\n", Bugs(panic_at_boot=True), Code.FORBIDDEN_OUTPUT, None),
    ("discharge-before-the-first-step", "  - power_on:\n", Bugs(stuck_rail=True), Code.DISCHARGE, None),
    ("error", "  - power_on:\n  - device: frobnicate\n", None, Code.ERROR, None),
    ("corrupt-session", START + "  - power_off:\n  - corrupt_session: {bytes: 1, seed: 1}\n  - power_on:\n"
     "  - connect: {version: tls1.3}\n  - expect_server: nothing_offered\n  - expect_stored:\n", None, "pass",
     Code.FULL),
    ("repeat-wait-server", START + "  - repeat:\n      times: 3\n      steps:\n        - wait: 0.001\n"
     "        - power_cycle:\n        - connect: {version: tls1.3}\n"
     "        - expect_server: resumed_across_power_loss\n  - server: {versions: [TLSv1.2]}\n"
     "  - connect: {version: auto}\n  - expect_server: {outcome: refused, reason: version}\n", None, "pass",
     Code.REFUSED),
    ("device-set-clock", "  - power_on:\n  - device: {command: set_clock, args: {unix: '{now}'}}\n", None, "pass",
     None),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_outcome(tmp_path: Path, case: tuple) -> None:
    name, steps, bugs, want, last = case
    got, engine = run(tmp_path, steps, bugs)
    assert got == want, (name, got, [v.explain() for v in engine.trace.verdicts][-1:])
    if last is not None:
        assert engine.trace.verdicts[-1].code == last


def test_discharge_code_when_a_step_cuts_power(tmp_path: Path) -> None:
    got, engine = run(tmp_path, START + "  - power_cycle:\n", None)
    assert got == "pass"
    rig = engine.rig
    rig.supply.stuck_rail = True
    steps = load_steps(tmp_path, "  - power_off:\n")
    with pytest.raises(ScenarioFailure) as info:
        Engine(rig, steps, {})._run_steps(steps.steps, 0)
    assert info.value.code == Code.DISCHARGE


def load_steps(tmp: Path, steps: str):
    path = tmp / "t.yaml"
    path.write_text("schema: 1\nname: t\ndescription: d\nsteps:\n" + steps)
    return load(path)


def test_version_pinned_per_connect(tmp_path: Path) -> None:
    """A device that ignores the version word still gets the version each connect names: the server is pinned."""
    got, engine = run(tmp_path, START + "  - connect: {version: tls1.2}\n  - expect_server: connected\n"
                      "  - connect: {version: auto}\n  - expect_server: connected\n", Bugs(ignores_version=True))
    assert got == "pass"
    versions = [r.version for r in engine.rig.server.records()]
    assert versions[-3:] == ["TLSv1.3", "TLSv1.2", "TLSv1.3"], versions


def test_unsupported_version_cell_is_skipped(tmp_path: Path) -> None:
    spec = SIM.read_text().replace('  prompt: "sim> "', '  prompt: "sim> "\n  versions: [tls1.2]')
    with pytest.raises(ScenarioSkip, match=r"needs tls1.3; .*dev.yaml declares firmware.versions: \[tls1.2\]"):
        run(tmp_path, RESUME, spec_text=spec)


def test_version_tokens_reach_the_shell(tmp_path: Path) -> None:
    spec = SIM.read_text().replace('  prompt: "sim> "', '  prompt: "sim> "\n  version_tokens: {tls1.3: "13"}')
    got, engine = run(tmp_path, "  - power_on:\n  - connect: {version: tls1.3}\n", spec_text=spec)
    assert any(line.startswith("connect ") and " 13 " in line for line in engine.rig.console.sent), \
        engine.rig.console.sent


def _without_shell(text: str) -> str:
    """sim.yaml as a device without a shell: no commands, autoconnect."""
    start, end = text.index("  commands:\n"), text.index("\nserver:")
    return text[:start] + "  autoconnect: true\n" + text[end:]


AUTO = _without_shell(SIM.read_text())


def test_device_without_a_shell(tmp_path: Path) -> None:
    assert "autoconnect: true" in AUTO and "  commands:\n" not in AUTO
    got, engine = run(tmp_path, RESUME, spec_text=AUTO)
    assert got == "pass" and engine.trace.verdicts[-1].code == Code.RESUMED
    assert not any(line.startswith("connect") for line in engine.rig.console.sent)


@pytest.mark.parametrize("steps,why", [
    (START + "  - connect: {version: tls1.3}\n", "reconnects without a power cycle"),
    ("  - power_on:\n  - send: help\n", "sends a shell command"),
    ("  - power_on:\n  - connect: {server: other}\n", "another server"),
])
def test_device_without_a_shell_skips_what_needs_one(tmp_path: Path, steps: str, why: str) -> None:
    with pytest.raises(ScenarioSkip, match=why):
        run(tmp_path, steps, spec_text=AUTO)


def test_missing_event_skips(tmp_path: Path) -> None:
    spec = SIM.read_text().replace('  flash_write: "^flash: writing slot"\n', "")
    with pytest.raises(ScenarioSkip, match="flash_write"):
        run(tmp_path, START + "  - cut_power_when: {after: flash_write}\n", spec_text=spec)


def test_every_code_is_produced_here() -> None:
    """Each registry code appears as the expected outcome of a case above (or its own test)."""
    produced = {c[3] for c in CASES} | {c[4] for c in CASES}
    # Bench errors are the bench's, not the engine's: tests/lab injects each one on the simulated bench.
    missing = [code.value for code in Code if code not in produced and code.found_by != "bench"]
    assert not missing, missing


def test_a_bench_error_passes_through_the_engine_unjudged(tmp_path: Path) -> None:
    """A supply that stops answering mid-scenario is never turned into a verdict about the device."""
    from harness.errors import SupplyUnreachable

    path = tmp_path / "s.yaml"
    path.write_text("schema: 1\nname: s\ndescription: d\nsteps:\n" + textwrap.dedent(RESUME))
    spec_path = tmp_path / "dev.yaml"
    spec_path.write_text(SIM.read_text())
    rig, _ = make_rig(devicefile.load(spec_path), tmp_path, None)

    works = rig.supply.off
    steps: list[str] = []

    def unreachable(*args, **kwargs):
        if "power_cycle" not in steps:       # the power-offs that prepare the scenario work
            return works(*args, **kwargs)
        raise SupplyUnreachable("FAKE::SUPPLY: write 'OUTP OFF' failed: connection reset")

    rig.supply.off = unreachable
    with pytest.raises(SupplyUnreachable, match=r"s.yaml:\d+: power_cycle: FAKE::SUPPLY: write") as info:
        Engine(rig, load(path), {}, on_step=lambda step, args: steps.append(step.action)).run()
    assert not isinstance(info.value, ScenarioFailure)


def test_every_step_is_run_here() -> None:
    from harness.scenario import _STEP_KEYS

    text = "".join(c[1] for c in CASES) + AUTO
    missing = [action for action in _STEP_KEYS if f"- {action}:" not in text and f"{action}:\n" not in text]
    assert not missing, missing


def test_a_cell_never_passes_on_another_version(tmp_path: Path) -> None:
    """The server cannot be pinned (the scenario's server only speaks TLS 1.2) and the device ignores
    the version word: the handshake completes in TLS 1.2, and the TLS 1.3 step still fails, with its own code."""
    got, engine = run(tmp_path, START, Bugs(ignores_version=True), server="server: {versions: [TLSv1.2]}\n")
    assert got == Code.WRONG_VERSION, [v.explain() for v in engine.trace.verdicts]
    assert "was TLSv1.2, but this step asks for TLSv1.3" in engine.trace.verdicts[-1].summary


def test_no_way_to_start_from_nothing_is_a_skip(tmp_path: Path) -> None:
    """No erase command and no flash image: a skip that says so, not a failure."""
    spec = _without_shell(SIM.read_text()).replace('flash_file: "{bench.flash}"\n', "")
    path = tmp_path / "s.yaml"
    path.write_text("schema: 1\nname: s\ndescription: d\nsteps:\n" + RESUME)
    spec_path = tmp_path / "dev.yaml"
    spec_path.write_text(spec)
    rig, _ = make_rig(devicefile.load(spec_path), tmp_path)
    rig.flash_file = None
    with pytest.raises(ScenarioSkip, match="cannot start from an erased session"):
        Engine(rig, load(path), {}).run()


def test_an_armed_cut_that_never_came_fails_any_later_power_step(tmp_path: Path) -> None:
    """A power_cycle after a cut that never happened must not stand in for it."""
    got, _ = run(tmp_path, START + "  - cut_power_when: {line: '^never printed'}\n  - connect: {version: tls1.3}\n"
                 "  - power_cycle:\n  - connect: {version: tls1.3}\n  - expect_server: consistent\n")
    assert got == Code.TRIGGER_NOT_SEEN


def test_a_repeated_connect_needs_a_shell(tmp_path: Path) -> None:
    steps = ("  - power_on:\n  - repeat:\n      times: 2\n      steps:\n        - connect: {version: tls1.3}\n"
             "        - expect_server: connected\n")
    with pytest.raises(ScenarioSkip, match="reconnects without a power cycle"):
        run(tmp_path, steps, spec_text=AUTO)


# -- a power switch that measures nothing (labgrid.power: labgrid) -------------------------------------------

SWITCHED = SIM.read_text() + "\nlabgrid:\n  place: rig1\n  coordinator: 'h:1'\n  power: labgrid\n  off_time: 0.01\n"
SWITCHED = SWITCHED.replace(SWITCHED[SWITCHED.index("supply:\n"):SWITCHED.index("\nconsole:")],
                            "supply:\n  safe_state: {output: off}\n")


class _Switch:
    """The fake supply behind a switch: on and off, nothing measured, and the reset cause it leaves."""

    measures = False

    def __init__(self, supply, cause: str, stuck: bool = False):
        self.supply, self.cause, self.stuck = supply, cause, stuck
        self.events = supply.events

    def on(self, settle: bool = True, tolerance: float = 0.1, timeout: float = 2.0) -> None:
        self.supply.output = True
        self.supply._event("on")
        if self.supply.firmware is not None and not self.supply.firmware.running:
            self.supply.firmware.power_up(self.cause)

    def off(self, discharge_below=None, min_off: float = 0.0, timeout: float = 5.0) -> None:
        self.supply.output = False
        self.supply._event("off")
        if not self.stuck and self.supply.firmware is not None:
            self.supply.firmware.die()

    def measure_voltage(self) -> float:
        from harness.powerswitch import NotMeasured
        raise NotMeasured("no meter")

    def safe(self) -> None:
        self.off()


def run_switched(tmp: Path, steps: str, cause: str = "power-on", stuck: bool = False) -> tuple[str, Engine]:
    path = tmp / "s.yaml"
    path.write_text("schema: 1\nname: s\ndescription: d\nsteps:\n" + textwrap.dedent(steps))
    spec_path = tmp / "dev.yaml"
    spec_path.write_text(SWITCHED)
    spec = devicefile.load(spec_path)
    rig, _ = make_rig(spec, tmp)
    rig.supply = rig.device.supply = _Switch(rig.supply, cause, stuck)
    engine = Engine(rig, load(path), {})
    try:
        engine.run()
    except ScenarioFailure as exc:
        return str(exc.code), engine
    return "pass", engine


CONSISTENT = START + "  - power_cycle:\n  - connect: {version: tls1.3}\n  - expect_server: consistent\n"


@pytest.mark.parametrize("steps", [RESUME, CONSISTENT], ids=["resumed", "consistent"])
def test_a_switched_cut_counts_only_with_a_power_on_reset(tmp_path: Path, steps: str) -> None:
    """Whatever the scenario expects, a cut by a switch that measures nothing rests on the next boot's reset."""
    assert run_switched(tmp_path, steps)[0] == "pass"
    for cause in ("brown-out", "watchdog"):
        code, engine = run_switched(tmp_path, steps, cause=cause)
        assert code == Code.POWER_NOT_CUT, (cause, engine.trace.steps[-3:])


def test_a_switched_scenario_that_needs_a_known_cut_moment_is_skipped(tmp_path: Path) -> None:
    steps = START + "  - cut_power_when: {after: connect, delay: 0.1}\n  - connect: {version: tls1.3}\n"
    with pytest.raises(ScenarioSkip, match="cut_power_when needs a supply"):
        run_switched(tmp_path, steps)
