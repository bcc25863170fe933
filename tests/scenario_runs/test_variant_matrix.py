"""Issue 6's must-show: every scenario against every firmware variant, the whole matrix asserted.

Each variant runs the default suite (every scenario file except the soak) in
a child pytest on its own simulated bench, three at a time.  The verdict
code of every cell is read from the JUnit XML (``FAIL [code]: ...``) and the
whole matrix is compared with :data:`EXPECTED`:

* the correct firmware passes every scenario;
* each variant fails the scenarios that target its bug, with the expected
  diagnosis;
* every other cell is pinned too (pass, or the failure the bug must cause),
  so a verdict that changes anywhere is noticed;
* where a code is shared by several bugs, the *cause* must name this one
  (:data:`CAUSES`, asserted on the verdict's text, not just its code).

The variants of issue 15 (early-store, ignores-tickets, ticket-only) run the
scenarios aimed at them and their neighbours (:data:`FOCUS`), not the whole
catalogue: their bugs are TLS 1.3 storage mistakes that no other scenario
tells apart, and the whole catalogue for ten variants would double CI time.

The table is written to ``matrix.md`` in the test's temporary folder and
printed; the README's matrix is this output.
"""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from scenario_suite import Outcome, run_suite, without_rig

VARIANTS = ["correct", "ram-only", "no-renew", "torn-write", "no-fallback", "uptime-clock", "any-server",
            "early-store", "ignores-tickets", "ticket-only"]
SCENARIOS = sorted(p.stem for p in (Path(__file__).resolve().parents[2] / "scenarios").glob("*.yaml")
                   if p.stem != "soak_random_power_cuts")
#: scenarios only the correct firmware runs: proofs of the correct build that no variant is aimed at (a torn
#: *first* record fails every variant's own parsing, so the first-write sweep passes them all and costs 3 minutes)
ONLY_CORRECT = {"power_cut_during_first_session_write"}
#: variants that run only these scenarios (the others run every one but ONLY_CORRECT)
FOCUS = {
    "early-store": ["tls13_tickets_arrive_late", "resume_after_power_loss", "soft_reconnect_and_power_loss"],
    "ignores-tickets": ["tls13_tickets_arrive_late", "resume_after_power_loss", "soft_reconnect_and_power_loss"],
    "ticket-only": ["resume_after_power_loss", "soft_reconnect_and_power_loss"],
}

P = "pass"
# What each variant's bug must do to each scenario, by verdict code.  A cell
# with a set accepts any of those (the point a random bit flip or a torn write
# lands on decides between equally valid diagnoses).  Cells not listed: pass.
EXPECTED: dict[str, dict[str, object]] = {
    "ram-only": {
        "first_boot_full_handshake": "not-stored",
        "power_cut_during_session_write": "trigger-not-seen",
        "resume_after_power_loss": "nothing-offered",
        "soft_reconnect_and_power_loss": "nothing-offered",
        "repeated_power_cycles": "nothing-offered",
        "ticket_expired_during_power_off": "nothing-offered",
        "server_keys_rotated_during_power_off": "nothing-offered",
        "corrupted_session_record": "not-stored",
        "brownout_during_idle": "nothing-offered",
        "server_identity_changed": "nothing-offered",
        "long_power_off_without_clock": "nothing-offered",
        "tls12_session_meets_tls13_only_server": "nothing-offered",
        "tls13_tickets_arrive_late": "nothing-offered",
    },
    "no-renew": {
        "repeated_power_cycles[tls1.3]": "stale-session",
        "soft_reconnect_and_power_loss[tls1.3]": "stale-session",
        "tls13_tickets_arrive_late": "stale-session",
        # It never writes the renewed session, so the cut has no write to land in.
        "power_cut_during_session_write": "trigger-not-seen",
    },
    "torn-write": {
        # Fixed bit positions (seeds 1-3): each lands in the ticket or another
        # field the firmware trusts; any of these is the bug caught.
        "corrupted_session_record": {"refused", "unexpected-resume", "no-boot", "forbidden-output",
                                     "connect-failed", "handshake-failed"},
        "power_cut_during_session_write": {P, "refused", "no-boot", "forbidden-output"},
    },
    "no-fallback": {
        "ticket_expired_during_power_off": "no-fallback",
        "server_keys_rotated_during_power_off": "no-fallback",
        "tls12_session_meets_tls13_only_server": "no-fallback",
    },
    "uptime-clock": {
        "resume_after_power_loss[tls1.3]": "nothing-offered",
        "long_power_off_without_clock": "nothing-offered",
        "soft_reconnect_and_power_loss[tls1.3]": "nothing-offered",
        "repeated_power_cycles[tls1.3]": "nothing-offered",
        "brownout_during_idle[tls1.3]": "nothing-offered",
        "server_identity_changed[tls1.3]": "nothing-offered",
        "corrupted_session_record[tls1.3]": "nothing-offered",
        "ticket_expired_during_power_off[tls1.3]": {"nothing-offered", "wrong-reason"},
        "server_keys_rotated_during_power_off[tls1.3]": "nothing-offered",
        "tls12_session_meets_tls13_only_server": "nothing-offered",
        # The device can never resume a TLS 1.3 session after a power loss, so not after a cut in a write either.
        "power_cut_during_session_write": "nothing-offered",
        "tls13_tickets_arrive_late": "nothing-offered",
    },
    "any-server": {"server_identity_changed": "refused"},
    "early-store": {
        "tls13_tickets_arrive_late": "nothing-offered",
        "resume_after_power_loss[tls1.3]": "nothing-offered",
        "soft_reconnect_and_power_loss[tls1.3]": "nothing-offered",
    },
    "ignores-tickets": {
        "tls13_tickets_arrive_late": "nothing-offered",
        "resume_after_power_loss[tls1.3]": "nothing-offered",
        "soft_reconnect_and_power_loss[tls1.3]": "nothing-offered",
    },
    "ticket-only": {"resume_after_power_loss": "refused", "soft_reconnect_and_power_loss": "refused"},
}
#: cells whose verdict must name the bug, not only carry its code: (variant, cell) -> words of the cause
CAUSES = {
    ("early-store", "tls13_tickets_arrive_late"): "session stored before the ticket arrived",
    ("ignores-tickets", "tls13_tickets_arrive_late"): "tickets never taken in",
    ("ignores-tickets", "soft_reconnect_and_power_loss[tls1.3]"): "tickets never taken in",
    ("ticket-only", "resume_after_power_loss[tls1.2]"): "the Finished message did not verify",
    ("ticket-only", "resume_after_power_loss[tls1.3]"): "the PSK binder did not verify",
    ("uptime-clock", "long_power_off_without_clock"): "ticket age from uptime",
    ("any-server", "server_identity_changed[tls1.2]"): "session restored for the wrong server",
    ("any-server", "server_identity_changed[tls1.3]"): "session restored for the wrong server",
    ("ram-only", "resume_after_power_loss[tls1.2]"): "kept only in RAM",
    ("torn-write", "power_cut_during_session_write[0.0]"): "damaged",
}
# The bug each variant exists for must be caught by these cells at least.
MUST_CATCH = {
    "ram-only": ["resume_after_power_loss", "soft_reconnect_and_power_loss"],
    "no-renew": ["repeated_power_cycles[tls1.3]"],
    "torn-write": ["corrupted_session_record", "power_cut_during_session_write"],
    "no-fallback": ["ticket_expired_during_power_off", "server_keys_rotated_during_power_off",
                    "tls12_session_meets_tls13_only_server"],
    "uptime-clock": ["resume_after_power_loss[tls1.3]", "long_power_off_without_clock"],
    "any-server": ["server_identity_changed"],
    "early-store": ["tls13_tickets_arrive_late"],
    "ignores-tickets": ["tls13_tickets_arrive_late", "soft_reconnect_and_power_loss[tls1.3]"],
    "ticket-only": ["resume_after_power_loss"],
}


def code_of(result: Outcome) -> str:
    if result.outcome == "passed":
        return P
    if result.outcome == "skipped":
        return "skipped"
    found = re.search(r"FAIL \[([a-z-]+)\]", result.message)
    if found:
        return found.group(1)
    return "error"


def _natural(test: str) -> tuple:
    """power_cut...[0.1] after [0.09], not before it."""
    base, _, param = test.partition("[")
    param = param.rstrip("]")
    try:
        return (base, 0, float(param), "")
    except ValueError:
        return (base, 1, 0.0, param)


def expected_for(variant: str, test: str) -> object:
    """The cell's expectation: by exact id, by leading parameters ("x[tls1.3]" covers "x[tls1.3-2]"), or by scenario."""
    table = EXPECTED.get(variant, {})
    base, _, params = test.partition("[")
    if test in table:
        return table[test]
    for key, want in table.items():
        kbase, _, kparams = key.partition("[")
        if kparams and kbase == base and (params.rstrip("]") + "-").startswith(kparams.rstrip("]") + "-"):
            return want
    return table.get(base, P)


def _run(variant: str, tmp: Path) -> dict[str, Outcome]:
    names = FOCUS.get(variant, SCENARIOS)
    files = [f"scenarios/{name}.yaml" for name in names if variant == "correct" or name not in ONLY_CORRECT]
    results, _ = run_suite(tmp / variant, "--sim-variant", variant, *files, timeout=1500)
    return results


@pytest.mark.timeout(2400)   # the child runs have their own 1500 s limit each
def test_variant_matrix(tmp_path: Path, torn_write_suite: tuple[Path, dict]) -> None:
    # torn-write's row comes from the default-suite run the report test shares (tests/conftest.py): its
    # cells are the matrix's scenarios; the first-write sweep and the Python scenario are not judged here.
    _, shared = torn_write_suite
    with ThreadPoolExecutor(max_workers=3) as pool:
        futures = {v: pool.submit(_run, v, tmp_path) for v in VARIANTS if v != "torn-write"}
        matrix = {v: f.result() for v, f in futures.items()}
    shared = {without_rig(name): outcome for name, outcome in shared.items()}     # it ran on several rigs
    matrix["torn-write"] = {name: outcome for name, outcome in shared.items()
                            if name.split("[")[0] in SCENARIOS and name.split("[")[0] not in ONLY_CORRECT}
    tests = sorted({t for results in matrix.values() for t in results}, key=_natural)
    assert {t.split("[")[0] for t in tests} == set(SCENARIOS), tests
    assert {t.split("[")[0] for t in matrix["correct"]} == set(SCENARIOS), "the correct firmware runs every scenario"

    rows = ["| scenario | " + " | ".join(VARIANTS) + " |", "|---|" + "---|" * len(VARIANTS)]
    wrong = []
    for test in tests:
        cells = []
        for variant in VARIANTS:
            result = matrix[variant].get(test)
            base = test.split("[")[0]
            if result is None and (variant in FOCUS and base not in FOCUS[variant] or
                                   variant != "correct" and base in ONLY_CORRECT):
                cells.append("-")
                continue
            got = code_of(result) if result else "missing"
            want = expected_for(variant, test)
            ok = got in want if isinstance(want, set) else got == want
            if not ok:
                first = result.message.strip().splitlines()[0][:300] if result and result.message.strip() else ""
                wrong.append(f"{variant} / {test}: expected {want}, got {got}: {first}")
            cells.append(got if got == P else f"**{got}**")
        rows.append(f"| {test} | " + " | ".join(cells) + " |")
    table = "\n".join(rows)
    (tmp_path / "matrix.md").write_text(table + "\n")
    print("\n" + table)

    for variant, needed in MUST_CATCH.items():
        for cell in needed:
            hits = [t for t in tests if t == cell or t.split("[")[0] == cell]
            assert hits and any(code_of(matrix[variant][t]) != P for t in hits), (variant, cell)
    for (variant, cell), words in CAUSES.items():
        result = matrix[variant].get(cell)
        assert result is not None and words in result.message, (variant, cell, words, result)
    assert all(code_of(r) == P for r in matrix["correct"].values()), "the correct firmware failed a scenario"
    assert not wrong, "matrix differs from the expected one:\n" + "\n".join(wrong) + "\n" + table
