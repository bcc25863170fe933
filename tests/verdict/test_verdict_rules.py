"""The verdict's rules on hand-made evidence: every outcome, each able to fail.

These complement tests/scenario_runs/, which shows the same verdicts on
really broken firmware (the variants of the simulated firmware); here every branch is pinned down with
records as the reference server writes them.
"""

from __future__ import annotations

import handmade
from handmade import rec

from harness import verdict
from harness.outcomes import Code


def ev(records, *, volts=0.1, boot=True, lines=()) -> verdict.Evidence:
    return handmade.ev(records, volts=volts, boot=boot, lines=lines)


def test_pass_names_the_issuing_handshake() -> None:
    v = verdict.resumed_across_power_loss(ev([rec(1, 5.0, issued=["aa"]),
                                              rec(2, 12.0, resumed=True, frm=1, offered={"psk": ["aa"]})]))
    assert v.ok and v.code == Code.RESUMED
    assert "session issued by handshake #1" in v.summary and "5.0 s before the cut" in v.summary


def test_stale_resumption_is_not_a_pass() -> None:
    records = [rec(1, 2.0, issued=["aa"]), rec(2, 5.0, resumed=True, frm=1, issued=["bb"]),
               rec(3, 12.0, resumed=True, frm=1, offered={"psk": ["aa"]})]
    v = verdict.resumed_across_power_loss(ev(records))
    assert not v.ok and v.code == Code.STALE_SESSION
    assert "renewed tickets were not stored" in v.cause


def test_tls12_resumption_without_renewal_follows_lineage() -> None:
    records = [rec(1, 2.0, version="TLSv1.2", issued=["aa"]),
               rec(2, 5.0, version="TLSv1.2", resumed=True, frm=1),
               rec(3, 12.0, version="TLSv1.2", resumed=True, frm=1, offered={"ticket": "aa"})]
    assert verdict.resumed_across_power_loss(ev(records)).ok


def test_nothing_offered_and_never_stored() -> None:
    records = [rec(1, 5.0, issued=["aa"]), rec(2, 12.0, issued=["cc"])]
    v = verdict.resumed_across_power_loss(ev(records, lines=[(5.1, "connect ok resumed=no")]))
    assert v.code == Code.NOTHING_OFFERED
    assert "never printed that the session was stored" in v.summary
    assert "RAM" in v.cause


def test_nothing_offered_although_stored_points_at_restore_or_clock() -> None:
    records = [rec(1, 5.0, issued=["aa"]), rec(2, 12.0, issued=["cc"])]
    v = verdict.resumed_across_power_loss(ev(records, lines=[(5.2, "session stored")]))
    assert v.code == Code.NOTHING_OFFERED
    assert "clock" in v.cause and "restored" in v.cause


def test_refused_with_reason() -> None:
    records = [rec(1, 5.0, issued=["aa"]), rec(2, 12.0, offered={"psk": ["aa"]}, rejected="expired", issued=["dd"])]
    v = verdict.resumed_across_power_loss(ev(records))
    assert v.code == Code.REFUSED and "expired" in v.summary


def test_power_not_cut_when_rail_stayed_high() -> None:
    records = [rec(1, 5.0, issued=["aa"]), rec(2, 12.0, resumed=True, frm=1)]
    v = verdict.resumed_across_power_loss(ev(records, volts=2.9, boot=False))
    assert v.code == Code.POWER_NOT_CUT and "2.90 V" in v.summary and "no reset" in v.summary


def test_no_boot_and_never_connected() -> None:
    assert verdict.resumed_across_power_loss(ev([rec(1, 5.0, issued=["aa"])], boot=False)).code == Code.NO_BOOT
    assert verdict.resumed_across_power_loss(ev([rec(1, 5.0, issued=["aa"])])).code == Code.NEVER_CONNECTED


def test_failed_handshake_after_cut() -> None:
    records = [rec(1, 5.0, issued=["aa"]), rec(2, 12.0, version=None, error="peer closed during handshake")]
    assert verdict.resumed_across_power_loss(ev(records)).code == Code.HANDSHAKE_FAILED


def test_first_after_expectations() -> None:
    records = [rec(1, 5.0, issued=["aa"]), rec(2, 12.0, offered={"psk": ["zz"]}, rejected="foreign")]
    e = ev(records)
    assert verdict.check_first_after(e, 11.0, "full").ok
    assert not verdict.check_first_after(e, 11.0, "resumed").ok
    assert verdict.check_first_after(e, 11.0, "refused", "foreign").ok
    assert verdict.check_first_after(e, 11.0, "refused", "expired").code == Code.WRONG_REASON
    assert verdict.check_first_after(e, 11.0, "nothing-offered").code == Code.REFUSED
    assert verdict.check_first_after(e, 1.0, "nothing-offered").ok
    assert verdict.check_first_after(e, 20.0, "full").code == Code.NEVER_CONNECTED


def test_explanation_shows_fingerprints_and_lines() -> None:
    records = [rec(1, 5.0, issued=["3f2a9c1b0d4e"]), rec(2, 12.0)]
    text = verdict.resumed_across_power_loss(ev(records, lines=[(9.9, "flash: writing slot B")])).explain()
    assert "3f2a9c1b0d4e" in text and "flash: writing slot B" in text and text.startswith("FAIL [nothing-offered]: ")


def test_failed_connect_names_missing_fallback() -> None:
    records = [rec(1, 5.0, issued=["aa"]), rec(2, 12.0, offered={"psk": ["aa"]}, rejected="rotated", issued=["bb"])]
    v = verdict.failed_connect(ev(records), 11.0, "connect failed: server refused session")
    assert v.code == Code.NO_FALLBACK and "gave up" in v.summary and "rotated" in v.summary


def test_failed_connect_with_a_damaged_offer_is_not_blamed_on_fallback() -> None:
    records = [rec(2, 12.0, offered={"psk": ["zz"]}, rejected="foreign")]
    v = verdict.failed_connect(ev(records), 11.0, "connect failed")
    assert v.code == Code.REFUSED and "never issued" in v.summary


def test_failed_connect_that_never_reached_the_server() -> None:
    assert verdict.failed_connect(ev([rec(1, 5.0)]), 11.0, "connect failed: timeout").code == Code.NEVER_CONNECTED


def test_aborted_refusal_followed_by_fallback_counts_as_one_connection() -> None:
    """A TLS stack that aborts on a refused ticket, then a fallback connection."""
    aborted = rec(2, 12.0, version=None, offered={"ticket": "aa"}, rejected="expired",
                  error="client aborted: unexpected message")
    records = [rec(1, 5.0, issued=["aa"], version="TLSv1.2"), aborted, rec(3, 12.2, version="TLSv1.2", issued=["cc"])]
    e = ev(records)
    assert verdict.check_first_after(e, 11.0, "refused", "expired").ok
    assert verdict.check_first_after(e, 11.0, "refused", "rotated").code == Code.WRONG_REASON
    assert verdict.check_first_after(e, 11.0, "full").ok
    assert verdict.resumed_across_power_loss(e).code == Code.REFUSED


def test_consistent_accepts_any_issued_session_but_not_a_damaged_offer() -> None:
    base = [rec(1, 2.0, issued=["aa"]), rec(2, 5.0, resumed=True, frm=1, issued=["bb"])]
    old = base + [rec(3, 12.0, resumed=True, frm=1, offered={"psk": ["aa"]})]
    assert verdict.check_first_after(ev(old), 11.0, "consistent").ok
    clean = base + [rec(3, 12.0)]
    assert verdict.check_first_after(ev(clean), 11.0, "consistent").ok
    damaged = base + [rec(3, 12.0, offered={"psk": ["d4"]}, rejected="unknown")]
    v = verdict.check_first_after(ev(damaged), 11.0, "consistent")
    assert not v.ok and "damaged" in v.cause


def test_mechanism_is_checked_when_asked() -> None:
    records = [rec(1, 5.0, issued=["aa"]), rec(2, 12.0, resumed=True, frm=1, version="TLSv1.2")]
    assert verdict.check_first_after(ev(records), 11.0, "resumed", mechanism="ticket").ok
    assert verdict.check_first_after(ev(records), 11.0, "resumed", mechanism="psk").code == Code.WRONG_MECHANISM


def test_no_reset_and_a_resumption_means_power_was_not_cut_even_without_a_reading() -> None:
    records = [rec(1, 5.0, issued=["aa"]), rec(2, 12.0, resumed=True, frm=1)]
    v = verdict.resumed_across_power_loss(ev(records, volts=None, boot=False))
    assert v.code == Code.POWER_NOT_CUT and "RAM" in v.summary


def test_a_connection_cut_by_the_power_loss_is_not_the_first_after_it() -> None:
    """Begun before the cut, recorded (server timeout) after power came back."""
    cut_off = rec(2, 11.4, version=None, error="handshake timeout")
    cut_off["duration_ms"] = 2000.0          # accepted at 9.4 s, before the cut at 10 s
    records = [rec(1, 5.0, issued=["aa"]), cut_off, rec(3, 12.0, resumed=True, frm=1)]
    assert verdict.resumed_across_power_loss(ev(records)).ok


def test_a_resumed_handshake_is_not_a_fallback_and_an_abort_without_one_is_no_fallback() -> None:
    aborted = rec(2, 12.0, version=None, offered={"ticket": "aa"}, rejected="rotated", error="client aborted")
    records = [rec(1, 5.0, version="TLSv1.2", issued=["aa"]), aborted]
    assert verdict.check_first_after(ev(records), 11.0, "refused", "rotated").code == Code.NO_FALLBACK
    resumed_next = records + [rec(3, 12.3, version="TLSv1.2", resumed=True, frm=1)]
    assert verdict.check_first_after(ev(resumed_next), 11.0, "refused", "rotated").code == Code.NO_FALLBACK


def test_an_errored_resumption_does_not_pass() -> None:
    records = [rec(1, 5.0, issued=["aa"]), rec(2, 12.0, resumed=True, frm=1, error="reset after handshake")]
    assert not verdict.resumed_across_power_loss(ev(records)).ok


# -- version truth: a cell that names a version never passes on another one ------

def test_version_truth_flags_a_completed_handshake_in_another_version() -> None:
    records = [rec(1, 5.0, version="TLSv1.2", issued=["aa"])]
    v = verdict.version_truth(records, "tls1.3")
    assert v is not None and not v.ok and v.code == Code.WRONG_VERSION
    assert "#1 was TLSv1.2" in v.summary and "TLSv1.3" in v.summary


def test_version_truth_names_what_the_device_offered_when_the_handshake_failed() -> None:
    failed = {**rec(1, 5.0, version=None, error="TLS handshake failed: unsupported protocol"),
              "client_versions": ["TLSv1.2"]}
    v = verdict.version_truth([failed], "tls1.3")
    assert v is not None and v.code == Code.WRONG_VERSION
    assert "offered only TLSv1.2" in v.summary and "unsupported protocol" in v.summary


def test_version_truth_accepts_the_asked_version_and_auto() -> None:
    records = [rec(1, 5.0, version="TLSv1.3"), {**rec(2, 6.0, version=None, error="x"),
                                                 "client_versions": ["TLSv1.2", "TLSv1.3"]}]
    assert verdict.version_truth(records, "tls1.3") is None
    assert verdict.version_truth([rec(1, 5.0, version="TLSv1.2")], "auto") is None
    assert verdict.version_truth([rec(1, 5.0, version="TLSv1.2")], None) is None
