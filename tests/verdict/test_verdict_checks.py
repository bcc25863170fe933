"""Each of the verdict's small checks on its own: it concludes where it must, and steps aside otherwise.

test_verdict_rules.py judges whole situations through the public entry
points; these pin each question the verdict asks, so a check that stops
concluding (or starts concluding where the next one should) fails here by
name.  A check that steps aside returns None.
"""

from __future__ import annotations

import pytest
from handmade import OFF, ON, cut, ev, first_after, issued_before, rec

from harness import report, verdict
from harness.device import Boot, PowerCut
from harness.outcomes import Code
from harness.server.records import HandshakeRecord

ABORTED = dict(version=None, offered={"ticket": "aa"}, rejected="expired", error="client aborted")


# -- records enter once -------------------------------------------------------------

def test_dicts_become_records_once_and_records_stay_themselves() -> None:
    record = verdict.as_record(rec(1, 5.0, issued=["aa"], offered={"psk": ["zz"]}))
    assert isinstance(record, HandshakeRecord) and record.offered.psk == ["zz"] and record.issued == ["aa"]
    assert verdict.as_record(record) is record
    assert all(isinstance(r, HandshakeRecord) for r in ev([rec(1, 5.0)]).records)
    with pytest.raises(TypeError):
        verdict.as_record(("not", "a", "record"))  # type: ignore[arg-type]


def test_a_verdict_carries_a_registered_code() -> None:
    assert verdict.Verdict(False, "no-handshake", "x").code is Code.NO_HANDSHAKE  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        verdict.Verdict(False, "no-such-code", "x")  # type: ignore[arg-type]


def test_the_report_counts_dict_records_like_server_records() -> None:
    records = [rec(1, 5.0, issued=["aa"], bytes_in=900, bytes_out=3000, duration_ms=40.0),
               rec(2, 12.0, resumed=True, frm=1, bytes_in=300, bytes_out=200, duration_ms=5.0),
               rec(3, 13.0, offered={"psk": ["zz"]}, rejected="foreign"), rec(4, 14.0, version=None, error="x")]
    as_dicts = report.summarize("n", "passed", 1.0, records, "", "d")
    as_records = report.summarize("n", "passed", 1.0, verdict.as_records(records), "", "d")
    assert as_dicts == as_records
    assert (as_dicts.handshakes, as_dicts.full, as_dicts.resumed, as_dicts.failed_handshakes) == (3, 2, 1, 1)
    assert as_dicts.full_reasons == {"nothing offered": 1, "foreign": 1} and as_dicts.resumed_bytes == [500]


# -- one cut: what the checks read ----------------------------------------------------

def test_no_completed_cut_gives_no_cut_evidence() -> None:
    assert verdict.CutEvidence.of(ev([], cuts=[PowerCut(off_mono=OFF)])) is None
    v = verdict.resumed_across_power_loss(ev([rec(1, 5.0)], cuts=[]))
    assert v.code == Code.NO_POWER_CUT and not v.ok


def test_a_later_cut_bounds_what_counts_as_after() -> None:
    cuts = [PowerCut(off_mono=OFF, on_mono=ON, volts_before_on=0.1), PowerCut(off_mono=20.0, on_mono=21.0)]
    c = verdict.CutEvidence.of(ev([rec(1, 5.0), rec(2, 12.0), rec(3, 22.0)], cuts=cuts), 0)
    assert c is not None and [r.id for r in c.after] == [2] and [r.id for r in c.before] == [1]


def test_the_checks_run_in_the_order_a_firmware_engineer_asks() -> None:
    assert [f.__name__ for f in verdict.CUT_CHECKS] == [
        "kept_running", "rail_stayed_up", "switch_without_power_on_reset", "did_not_boot", "never_connected",
        "failed_after_cut",
        "no_session_before", "lineage", "nothing_offered", "stale_offer"]
    assert [f.__name__ for f in verdict.FIRST_CHECKS] == [
        "aborted_without_fallback", "refused_then_fell_back", "handshake_failed", "wrong_mechanism"]


def _switched(records, cause: str | None) -> verdict.Evidence:
    """A cut by a power switch that measures nothing, and the boot after it with ``cause``."""
    e = ev(records, volts=None, kind="switched")
    e.boots = [Boot(11.5, cause, "reset cause: " + (cause or "(none printed)"))]
    return e


def test_a_switch_without_a_meter_rests_on_the_power_on_reset() -> None:
    resumed = issued_before(rec(2, 12.0, resumed=True, frm=1))
    # A power-on (or brown-out) reset after the switch: the resumption counts, and the verdict says why.
    v = verdict.resumed_across_power_loss(_switched(resumed, "power-on"))
    assert v.ok and v.code == Code.RESUMED, v.explain()
    assert "power loss shown by the device's reset cause, power-on" in v.summary
    # Another reset (a relay that never opened, a board fed through USB): nothing is proven.  Not even a
    # brown-out: it keeps retention RAM, where a session could have survived without flash.
    for cause in ("brown-out", "watchdog", "software", None):
        v = verdict.resumed_across_power_loss(_switched(resumed, cause))
        assert not v.ok and v.code == Code.POWER_NOT_CUT, v.explain()
        assert "the power switch measures nothing" in v.summary
    # No reboot at all and a resumption: kept running on the RAM copy, as with a supply.
    e = ev(resumed, volts=None, kind="switched", boot=False)
    assert verdict.resumed_across_power_loss(e).code == Code.POWER_NOT_CUT
    # A cut by a supply that measures is not judged by its reset cause.
    assert verdict.switch_without_power_on_reset(cut(resumed)) is None
    measured = verdict.resumed_across_power_loss(ev(resumed))
    assert measured.ok and "reset cause" not in measured.summary


def test_kept_running() -> None:
    ram = issued_before(rec(2, 12.0, resumed=True, frm=1))
    v = verdict.kept_running(cut(ram, boot=False))
    assert v is not None and v.code == Code.POWER_NOT_CUT and "from what it still had in RAM" in v.summary
    assert "0.10 V" in v.summary
    assert verdict.kept_running(cut(ram)) is None                                   # it rebooted
    assert verdict.kept_running(cut(issued_before(rec(2, 12.0)), boot=False)) is None  # it did not resume


def test_rail_stayed_up() -> None:
    v = verdict.rail_stayed_up(cut(issued_before(), volts=2.9))
    assert v is not None and v.code == Code.POWER_NOT_CUT and "resets below 2.50 V" in v.summary
    assert "no reset" not in v.summary
    assert "no reset was seen" in verdict.rail_stayed_up(cut(issued_before(), volts=2.9, boot=False)).summary
    assert verdict.rail_stayed_up(cut(issued_before(), volts=0.1)) is None
    assert verdict.rail_stayed_up(cut(issued_before(), volts=None)) is None
    # Without the device's own level, a switched-off rail is judged against discharge_below (0.3 V) ...
    assert verdict.rail_stayed_up(cut(issued_before(), volts=0.4, brownout_threshold=None)) is not None
    # ... and a dip cannot be judged from the rail at all.
    assert verdict.rail_stayed_up(cut(issued_before(), volts=2.9, brownout_threshold=None, kind="brownout")) is None


def test_did_not_boot() -> None:
    v = verdict.did_not_boot(cut(issued_before(), boot=False))
    assert v is not None and v.code == Code.NO_BOOT and "did not boot" in v.summary
    assert verdict.did_not_boot(cut(issued_before())) is None


def test_never_connected() -> None:
    v = verdict.never_connected(cut(issued_before()))
    assert v is not None and v.code == Code.NEVER_CONNECTED and [r.id for r in v.records] == [1]
    assert verdict.never_connected(cut(issued_before(rec(2, 12.0)))) is None


def test_failed_after_cut() -> None:
    v = verdict.failed_after_cut(cut(issued_before(rec(2, 12.0, version=None, error="bad certificate"))))
    assert v is not None and v.code == Code.HANDSHAKE_FAILED and "bad certificate" in v.summary
    assert verdict.failed_after_cut(cut(issued_before(rec(2, 12.0, **ABORTED)))) is None  # judged as a refusal
    assert verdict.failed_after_cut(cut(issued_before(rec(2, 12.0)))) is None


def test_no_session_before() -> None:
    v = verdict.no_session_before(cut([rec(1, 5.0, version=None, error="x"), rec(2, 12.0)]))
    assert v is not None and v.code == Code.NO_SESSION_BEFORE_CUT and "must connect before" in v.summary
    assert verdict.no_session_before(cut(issued_before(rec(2, 12.0)))) is None


def test_lineage() -> None:
    v = verdict.lineage(cut(issued_before(rec(2, 12.0, resumed=True, frm=1))))
    assert v is not None and v.ok and v.code == Code.RESUMED and "5.0 s before the cut" in v.summary
    stale = [rec(1, 2.0, issued=["aa"]), rec(2, 5.0, issued=["bb"]), rec(3, 12.0, resumed=True, frm=1)]
    v = verdict.lineage(cut(stale))
    assert v is not None and not v.ok and v.code == Code.STALE_SESSION and "issued by #2" in v.summary
    assert verdict.lineage(cut(issued_before(rec(2, 12.0)))) is None
    assert verdict.lineage(cut(issued_before(rec(2, 12.0, resumed=True, frm=1, error="reset")))) is None


def test_nothing_offered() -> None:
    full = issued_before(rec(2, 12.0))
    v = verdict.nothing_offered(cut(full))
    assert v is not None and v.code == Code.NOTHING_OFFERED and "never printed" in v.summary and "RAM" in v.cause
    v = verdict.nothing_offered(cut(full, lines=[(5.5, "session stored")]))
    assert v is not None and v.code == Code.NOTHING_OFFERED and "it said the session was stored" in v.summary
    v = verdict.nothing_offered(cut(full, session_stored=None))
    assert v is not None and "stored" not in v.summary and "restored" in v.cause
    assert verdict.nothing_offered(cut(issued_before(rec(2, 12.0, offered={"psk": ["aa"]})))) is None


def test_stale_offer() -> None:
    records = [rec(1, 2.0, issued=["aa"]), rec(2, 5.0, issued=["bb"]),
               rec(3, 12.0, offered={"psk": ["aa"]}, rejected="unknown")]
    v = verdict.stale_offer(cut(records))
    assert v is not None and v.code == Code.STALE_SESSION and "from handshake #1, not the newest from #2" in v.summary
    records[-1] = rec(3, 12.0, offered={"psk": ["aa"]}, rejected="rotated")
    assert verdict.stale_offer(cut(records)) is None                   # refused for another reason
    records[-1] = rec(3, 12.0, offered={"psk": ["bb"]}, rejected="unknown")
    assert verdict.stale_offer(cut(records)) is None                   # the newest was offered


def test_refused_concludes_with_the_reasons_cause() -> None:
    v = verdict.refused(cut(issued_before(rec(2, 12.0, offered={"psk": ["aa"]}, rejected="rotated"))))
    assert v.code == Code.REFUSED and not v.ok and v.cause == verdict.REFUSAL_CAUSES["rotated"]
    v = verdict.refused(cut(issued_before(rec(2, 12.0, offered={"psk": ["aa"]}))))
    assert "no reason recorded" in v.summary and v.cause == "server-side refusal"


def test_power_not_cut_and_no_handshake_expectations() -> None:
    assert verdict.power_not_cut(ev(issued_before(), volts=2.9)).ok
    v = verdict.power_not_cut(ev(issued_before(rec(2, 12.0, resumed=True, frm=1))))
    assert not v.ok and v.code == Code.RESUMED and v.summary.startswith("expected the verdict to say")
    assert verdict.no_handshake(ev(issued_before()), ON).code == Code.NO_HANDSHAKE
    v = verdict.no_handshake(ev(issued_before(rec(2, 12.0))), ON)
    assert not v.ok and v.code == Code.UNEXPECTED_HANDSHAKE


# -- the first handshake after a connect ----------------------------------------------

def test_first_after_judges_the_fallback_only_where_a_fallback_meets_the_expectation() -> None:
    records = issued_before(rec(2, 12.0, **ABORTED), rec(3, 12.2, issued=["cc"]))
    full = first_after(records, "full")
    assert full.first.id == 3 and full.label == "handshake #3 (fallback after #2 was refused)"
    resumed = first_after(records, "resumed")
    assert resumed.first.id == 2 and [r.id for r in resumed.shown] == [1, 2, 3]
    assert verdict.FirstAfter.of(ev(records), 20.0, "full") is None


def test_aborted_without_fallback() -> None:
    records = issued_before(rec(2, 12.0, **ABORTED))
    v = verdict.aborted_without_fallback(first_after(records, "refused"))
    assert v is not None and v.code == Code.NO_FALLBACK and "aborted without" in v.summary
    assert verdict.aborted_without_fallback(first_after(records, "resumed")) is None
    assert verdict.aborted_without_fallback(first_after(records + [rec(3, 12.2)], "refused")) is None


def test_refused_then_fell_back() -> None:
    records = issued_before(rec(2, 12.0, **ABORTED), rec(3, 12.2))
    v = verdict.refused_then_fell_back(first_after(records, "refused", reason="expired"))
    assert v is not None and v.ok and v.code == Code.REFUSED and "(#3)" in v.summary
    v = verdict.refused_then_fell_back(first_after(records, "refused", reason="rotated"))
    assert v is not None and v.code == Code.WRONG_REASON
    assert verdict.refused_then_fell_back(first_after(records, "full")) is None


def test_handshake_failed() -> None:
    v = verdict.handshake_failed(first_after(issued_before(rec(2, 12.0, version=None, error="alert")), "full"))
    assert v is not None and v.code == Code.HANDSHAKE_FAILED and v.summary == "handshake #2 failed: alert"
    assert verdict.handshake_failed(first_after(issued_before(rec(2, 12.0, **ABORTED)), "resumed")) is None


def test_wrong_mechanism() -> None:
    records = issued_before(rec(2, 12.0, resumed=True, frm=1))
    v = verdict.wrong_mechanism(first_after(records, "resumed", mechanism="ticket"))
    assert v is not None and v.code == Code.WRONG_MECHANISM and "used psk, expected ticket" in v.summary
    assert verdict.wrong_mechanism(first_after(records, "resumed", mechanism="psk")) is None
    assert verdict.wrong_mechanism(first_after(records, "resumed")) is None


RESUMED = rec(2, 12.0, resumed=True, frm=1, offered={"psk": ["aa"]})
FULL = rec(2, 12.0)
EXPIRED = rec(2, 12.0, offered={"psk": ["aa"]}, rejected="expired")
FOREIGN = rec(2, 12.0, offered={"psk": ["zz"]}, rejected="foreign")


@pytest.mark.parametrize("want, record, ok, code", [
    ("connected", RESUMED, True, Code.RESUMED),
    ("connected", FULL, True, Code.FULL),
    ("full", FULL, True, Code.FULL),
    ("full", RESUMED, False, Code.UNEXPECTED_RESUME),
    ("resumed", RESUMED, True, Code.RESUMED),
    ("resumed", FULL, False, Code.NOTHING_OFFERED),
    ("resumed", EXPIRED, False, Code.REFUSED),
    ("consistent", RESUMED, True, Code.RESUMED),
    ("consistent", FULL, True, Code.FULL),
    ("consistent", EXPIRED, True, Code.REFUSED),
    ("consistent", FOREIGN, False, Code.REFUSED),
    ("nothing_offered", FULL, True, Code.FULL),
    ("nothing_offered", RESUMED, False, Code.UNEXPECTED_RESUME),
    ("nothing_offered", EXPIRED, False, Code.REFUSED),
    ("refused", EXPIRED, True, Code.REFUSED),
    ("refused", RESUMED, False, Code.UNEXPECTED_RESUME),
    ("refused", FULL, False, Code.NOTHING_OFFERED),
])
def test_each_expectation_judges_the_first_handshake(want: str, record: dict, ok: bool, code: Code) -> None:
    v = verdict.FIRST_AFTER[want](first_after(issued_before(record), want))
    assert (v.ok, v.code) == (ok, code)


def test_refused_with_another_reason_than_asked() -> None:
    v = verdict.expect_refused(first_after(issued_before(EXPIRED), "refused", reason="rotated"))
    assert v.code == Code.WRONG_REASON and v.summary == "handshake #2 refused with reason 'expired', expected 'rotated'"


def test_expectations_table_is_keyed_by_scenario_names_and_judges_like_check_first_after() -> None:
    assert set(verdict.EXPECTATIONS) == {"full", "resumed", "nothing_offered", "refused", "connected", "consistent"}
    e = ev(issued_before(EXPIRED))
    for name, judge in verdict.EXPECTATIONS.items():
        for reason in (None, "expired", "rotated"):
            by_table = judge(e, ON, reason, None)
            by_call = verdict.check_first_after(e, ON, name.replace("_", "-"), reason)
            assert (by_table.ok, by_table.code, by_table.summary) == (by_call.ok, by_call.code, by_call.summary)
    with pytest.raises(ValueError, match="unknown expectation 'sometimes'"):
        verdict.check_first_after(e, ON, "sometimes")
