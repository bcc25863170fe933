"""Issue 10's must-show: the C reference firmware on Mbed TLS and wolfSSL, judged through its device file alone.

Each run is a child pytest, exactly what a user runs
(``pytest --device devices/mbedtls-client.yaml [--sim-variant NAME]``): the
bench command builds the firmware with ``cc`` (cached) and the simulated
bench powers a real C process whose flash is a file.

* The correct build of each stack runs the whole shipped suite: every cell
  passes, except the cells for a TLS version the device file does not
  declare (TLS 1.3 on Mbed TLS 2.28), which are skipped for that reason and
  no other; both power-cut sweeps pass on every cut point of every declared
  version (the device always boots, never offers a damaged record, and in
  the renewal sweep keeps the older session); the run summary states the
  stored blob size and what a resumption saves.
* Each compile-time variant (a field bug) runs the scenarios aimed at it
  and fails them with the expected code, and where the code is shared by
  several bugs, with the cause naming this one (issue 15: the same
  diagnosis as the emulated firmware's variant).

No compiler or library: the bench cannot start and the child run reports
the build error, which names the packages to install; this test then fails
with that text (never a skip).
"""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from scenario_suite import Outcome, run_suite

from test_variant_matrix import SCENARIOS, code_of

DEVICES = {"mbedtls": "devices/mbedtls-client.yaml", "wolfssl": "devices/wolfssl-client.yaml"}
#: the TLS versions each build declares (firmware.versions): cells for another version are skipped, no other skip
VERSIONS = {"mbedtls": ("tls1.2",), "wolfssl": ("tls1.2", "tls1.3")}
#: scenarios that only ask for TLS 1.3 (no version parameter in their cell names)
TLS13_ONLY = {"long_power_off_without_clock", "off_time_too_short", "power_cut_during_session_write",
              "tls13_tickets_arrive_late", "tls12_session_meets_tls13_only_server"}
assert TLS13_ONLY <= set(SCENARIOS), TLS13_ONLY - set(SCENARIOS)
#: the power-cut sweeps and how many cut points each has per TLS version
SWEEPS = {"power_cut_during_first_session_write": 7, "power_cut_during_session_write": 13}

#: (stack, variant) -> the cells aimed at the bug -> the verdict code (or codes) they must fail with
AIMED: dict[tuple[str, str], dict[str, object]] = {
    ("mbedtls", "ram-only"): {"resume_after_power_loss[tls1.2]": "nothing-offered",
                              "soft_reconnect_and_power_loss[tls1.2]": "nothing-offered"},
    ("wolfssl", "ram-only"): {"resume_after_power_loss[tls1.2]": "nothing-offered",
                              "resume_after_power_loss[tls1.3]": "nothing-offered"},
    ("mbedtls", "no-fallback"): {"server_keys_rotated_during_power_off[tls1.2]": "no-fallback",
                                 "ticket_expired_during_power_off[tls1.2]": "no-fallback"},
    ("wolfssl", "no-fallback"): {"server_keys_rotated_during_power_off[tls1.2]": "no-fallback",
                                 "server_keys_rotated_during_power_off[tls1.3]": "no-fallback",
                                 "tls12_session_meets_tls13_only_server": "no-fallback"},
    # A flipped bit lands in the ticket (refused: decrypt), the secret (binder/finished) or a field the stack
    # still parses (resumed: the damaged record was offered and used).  A flip in a part of the blob nothing
    # reads again (Mbed TLS keeps the peer certificate it never re-verifies) does no harm: that cell may pass,
    # but every variant must fail at least one aimed cell (below).
    ("mbedtls", "no-crc"): {**{f"corrupted_session_record[tls1.2-{k}]": {"refused", "unexpected-resume", "pass"}
                               for k in (1, 2, 3)},
                            # A torn first record the stack still parses is offered (refused: decrypt);
                            # whether a cut point tears it that way depends on where the page boundaries
                            # fall, so these cells may all pass (see SOMETIMES).
                            **{f"power_cut_during_first_session_write[tls1.2-{at}]": {"refused", "pass"}
                               for at in ("0.0", "0.2", "0.4", "0.6", "0.8", "1.0", "1.2")}},
    ("wolfssl", "no-crc"): {f"corrupted_session_record[{v}-{k}]": {"refused", "unexpected-resume", "pass"}
                            for v in ("tls1.2", "tls1.3") for k in (1, 2, 3)},
    # One slot rewritten in place: a cut inside the write loses the older session (CRC still checked).
    ("wolfssl", "single-slot"): {"power_cut_during_session_write[0.0]": "nothing-offered",
                                 "power_cut_during_session_write[0.1]": "nothing-offered"},
    ("mbedtls", "ticket-only"): {"resume_after_power_loss[tls1.2]": "refused"},
    ("wolfssl", "early-store"): {"tls13_tickets_arrive_late": "nothing-offered"},
    ("mbedtls", "uptime-clock"): {"resume_after_power_loss[tls1.2]": "nothing-offered"},
    ("wolfssl", "uptime-clock"): {"long_power_off_without_clock": "nothing-offered",
                                  "resume_after_power_loss[tls1.3]": "nothing-offered"},
}
#: aimed scenarios that catch the bug only at some cut points, depending on timing: their cells are pinned to
#: the allowed codes, but none of them is required to fail
SOMETIMES = {("mbedtls", "no-crc", "power_cut_during_first_session_write")}
#: cells whose verdict must also name the bug (the same words as the emulated variants' in test_variant_matrix)
CAUSES = {
    ("mbedtls", "ram-only", "resume_after_power_loss[tls1.2]"): "kept only in RAM",
    ("mbedtls", "ticket-only", "resume_after_power_loss[tls1.2]"): "the Finished message did not verify",
    ("wolfssl", "early-store", "tls13_tickets_arrive_late"): "session stored before the ticket arrived",
    ("wolfssl", "uptime-clock", "long_power_off_without_clock"): "ticket age from uptime",
}


def _files(cells: dict[str, object]) -> list[str]:
    return sorted({f"scenarios/{cell.split('[')[0]}.yaml" for cell in cells})


def _suite(stack: str, variant: str, tmp: Path, files: list[str]) -> tuple[dict[str, Outcome], str]:
    results, proc = run_suite(tmp / f"{stack}-{variant}", "--device", DEVICES[stack], "--sim-variant", variant,
                              *files, timeout=1500)
    return results, proc.stdout


def _build_failure(results: dict[str, Outcome]) -> str | None:
    """The text of a bench that could not start (e.g. no compiler), so the failure says what to install."""
    for r in results.values():
        if "build failed" in r.message or "apt-get install" in r.message:
            return r.message
    return None


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str], tuple[dict[str, Outcome], str]]:
    """Every child run of this module, three at a time (the machine has two cores, the runs mostly wait)."""
    tmp = tmp_path_factory.mktemp("cfirmware")
    everything = [f"scenarios/{name}.yaml" for name in SCENARIOS] + ["scenarios/test_energy_per_handshake.py"]
    jobs = {(stack, "correct"): everything for stack in DEVICES}
    jobs.update({key: _files(cells) for key, cells in AIMED.items()})
    with ThreadPoolExecutor(max_workers=3) as pool:
        futures = {key: pool.submit(_suite, key[0], key[1], tmp, files) for key, files in jobs.items()}
        return {key: f.result() for key, f in futures.items()}


@pytest.mark.timeout(2400)
@pytest.mark.parametrize("stack", sorted(DEVICES))
def test_correct_build_passes_the_shipped_suite(runs, stack: str) -> None:
    results, stdout = runs[(stack, "correct")]
    broken = _build_failure(results)
    assert broken is None, f"the {stack} firmware could not be built or started:\n{broken}"
    assert {name.split("[")[0] for name in results} >= set(SCENARIOS), sorted(results)
    failed = {n: r.message.strip().splitlines()[0] for n, r in results.items() if r.outcome in ("failed", "error")}
    assert not failed, f"{DEVICES[stack]}: the correct build failed:\n" + "\n".join(f"{n}: {m}" for n, m in
                                                                                    failed.items())
    # The only skips: cells for a TLS version the build does not declare, and for that reason.
    for name, r in results.items():
        base, _, params = name.partition("[")
        wants = "tls1.3" if base in TLS13_ONLY else next((v for v in ("tls1.2", "tls1.3") if v in params), None)
        needs_skip = wants is not None and wants not in VERSIONS[stack]
        assert (r.outcome == "skipped") == needs_skip, (name, r.outcome, r.message[:300])
        if needs_skip:
            assert "firmware.versions" in r.message or "TLSv1.3 only" in r.message, (name, r.message[:300])
    # Both sweeps: every cut point of every declared version run and passed (0 unbootable, no damaged offer).
    for sweep, points in SWEEPS.items():
        cells = {n: r for n, r in results.items() if n.split("[")[0] == sweep}
        versions = VERSIONS[stack] if sweep == "power_cut_during_first_session_write" else \
            [v for v in VERSIONS[stack] if v == "tls1.3"]
        passed_cells = [n for n, r in cells.items() if r.outcome == "passed"]
        assert len(passed_cells) == points * len(versions), (sweep, sorted((n, r.outcome) for n, r in cells.items()))
    passed = sum(r.outcome == "passed" for r in results.values())
    print(f"\n{DEVICES[stack]}: {passed} passed, {len(results) - passed} skipped")
    summary = [ln for ln in stdout.splitlines() if "stored session size" in ln or "(median): full" in ln]
    print("\n".join(summary))
    assert any(re.search(r"stored session size .*median \d+ bytes", ln) for ln in summary), stdout[-3000:]
    assert any(ln.startswith("TLSv1.2 (median)") for ln in summary), stdout[-3000:]
    if stack == "wolfssl":
        assert any(ln.startswith("TLSv1.3 (median)") for ln in summary), stdout[-3000:]


@pytest.mark.timeout(2400)
@pytest.mark.parametrize("stack,variant", sorted(AIMED))
def test_variant_fails_the_scenarios_aimed_at_its_bug(runs, stack: str, variant: str) -> None:
    results, _ = runs[(stack, variant)]
    broken = _build_failure(results)
    assert broken is None, f"the {stack} firmware ({variant}) could not be built or started:\n{broken}"
    wrong = []
    for cell, want in AIMED[(stack, variant)].items():
        got = code_of(results[cell]) if cell in results else "missing"
        if not (got in want if isinstance(want, set) else got == want):
            wrong.append(f"{cell}: expected {want}, got {got}: {results[cell].message[:400] if cell in results else ''}")
    assert not wrong, f"{stack} {variant}:\n" + "\n".join(wrong)
    for scenario in {cell.split("[")[0] for cell in AIMED[(stack, variant)]} - \
            {sc for (st, va, sc) in SOMETIMES if (st, va) == (stack, variant)}:
        cells = [c for c in AIMED[(stack, variant)] if c.split("[")[0] == scenario]
        assert any(code_of(results[c]) != "pass" for c in cells), \
            f"{stack} {variant}: {scenario}, aimed at the bug, never caught it"
    for (s, v, cell), words in CAUSES.items():
        if (s, v) == (stack, variant):
            assert words in results[cell].message, (cell, words, results[cell].message[:1500])
