"""The causes that name a field bug (harness/fieldbugs.py), on hand-made evidence.

Each cause is shown where its evidence is, and shown *not* claimed where
the evidence does not prove it: a wrong cause is the second worst bug this
product can have.  Times: the cut is off at 10 s, on at 11 s, boot at 11.5 s.
"""

from __future__ import annotations

from handmade import ON, ev, rec

from harness import verdict
from harness.device import Boot
from harness.outcomes import Code

FLASH = "^flash: writing"
STORED = "^session stored$"


def evidence(records, lines=(), boots=None, flash_write=FLASH, session_stored=STORED, others=None):
    e = ev(records, lines=lines, session_stored=session_stored)
    e.flash_write = flash_write
    if boots is not None:
        e.boots = boots
    if others:
        e.others = {name: verdict.as_records(rs) for name, rs in others.items()}
    return e


def tls13_full(id: int, mono: float, sent: list[float], issued=("aa", "ab"), duration_ms: float = 50.0):
    return rec(id, mono, issued=list(issued), tickets_sent_mono=sent, duration_ms=duration_ms)


# -- stored before the ticket arrived ------------------------------------------------


def test_store_line_before_the_ticket_is_sent_names_early_store():
    records = [tls13_full(1, 5.0, sent=[5.3, 5.3]), rec(2, 12.0)]
    lines = [(5.01, "flash: writing slot A"), (5.1, "session stored")]
    judged = verdict.resumed_across_power_loss(evidence(records, lines))
    assert judged.code == Code.NOTHING_OFFERED
    assert judged.cause.startswith("session stored before the ticket arrived")
    assert "290 ms before the server sent the first ticket of handshake #1" in judged.cause


def test_store_line_after_the_ticket_is_not_called_early():
    # A line is stamped late, never early: after the ticket it proves nothing about the order.
    records = [tls13_full(1, 5.0, sent=[5.0, 5.0]), rec(2, 12.0)]
    lines = [(5.01, "flash: writing slot A"), (5.1, "session stored")]
    judged = verdict.resumed_across_power_loss(evidence(records, lines))
    assert judged.code == Code.NOTHING_OFFERED
    assert "stored before the ticket arrived" not in judged.cause


def test_a_second_store_after_the_ticket_is_not_early():
    records = [tls13_full(1, 5.0, sent=[5.3, 5.3]), rec(2, 12.0)]
    lines = [(5.01, "flash: writing slot A"), (5.1, "session stored"), (5.4, "flash: writing slot B"),
             (5.5, "session stored")]
    judged = verdict.resumed_across_power_loss(evidence(records, lines))
    assert "stored before the ticket arrived" not in judged.cause


def test_tls12_is_never_early_store():
    records = [rec(1, 5.0, version="TLSv1.2", issued=["aa"], tickets_sent_mono=[5.3]), rec(2, 12.0, version="TLSv1.2")]
    lines = [(5.01, "flash: writing slot A"), (5.1, "session stored")]
    judged = verdict.resumed_across_power_loss(evidence(records, lines))
    assert "ticket arrived" not in judged.cause


def test_old_records_without_ticket_times_do_not_crash_and_claim_nothing():
    records = [rec(1, 5.0, issued=["aa"]), rec(2, 12.0)]
    lines = [(5.01, "flash: writing slot A"), (5.1, "session stored")]
    judged = verdict.resumed_across_power_loss(evidence(records, lines))
    assert judged.code == Code.NOTHING_OFFERED and "ticket arrived" not in judged.cause


# -- tickets never taken in ------------------------------------------------------------


def test_soft_reconnect_offering_nothing_without_any_store_names_tickets_not_taken_in():
    records = [tls13_full(1, 5.0, sent=[5.01, 5.01]), rec(2, 6.0, issued=["ba"], tickets_sent_mono=[6.01])]
    seen = verdict.FirstAfter.of(evidence(records), 5.5, "resumed")
    judged = verdict.expect_resumed(seen)
    assert judged.code == Code.NOTHING_OFFERED
    assert judged.cause.startswith("tickets never taken in, or the session never kept")


def test_soft_reconnect_after_a_reboot_says_nothing_about_tickets():
    records = [tls13_full(1, 5.0, sent=[5.01, 5.01]), rec(2, 6.0)]
    e = evidence(records, boots=[Boot(5.5, "power-on", "reset cause: power-on")])
    judged = verdict.expect_resumed(verdict.FirstAfter.of(e, 5.6, "resumed"))
    assert judged.code == Code.NOTHING_OFFERED and "ticket" not in judged.cause


def test_store_after_the_ticket_then_nothing_offered_gives_both_readings_not_a_verdict():
    records = [tls13_full(1, 5.0, sent=[5.01, 5.01]), rec(2, 6.0)]
    lines = [(5.05, "flash: writing slot A"), (5.1, "session stored")]
    judged = verdict.expect_resumed(verdict.FirstAfter.of(evidence(records, lines), 5.5, "resumed"))
    assert "after the server sent" in judged.cause and "or it does not offer what it stored" in judged.cause
    assert not judged.cause.startswith("tickets never taken in")


def test_after_a_cut_an_earlier_soft_reconnect_proves_tickets_were_not_taken_in():
    records = [tls13_full(1, 5.0, sent=[5.01, 5.01]), tls13_full(2, 6.0, sent=[6.01, 6.01], issued=("ba",)),
               rec(3, 12.0)]
    judged = verdict.resumed_across_power_loss(evidence(records))
    assert judged.code == Code.NOTHING_OFFERED
    assert judged.cause.startswith("tickets never taken in")


def test_after_a_cut_without_a_soft_reconnect_ram_only_stays_the_first_reading():
    records = [tls13_full(1, 5.0, sent=[5.01, 5.01]), rec(2, 12.0)]
    judged = verdict.resumed_across_power_loss(evidence(records))
    assert judged.cause.startswith("session not stored in non-volatile memory (kept only in RAM?)")
    assert "never takes TLS 1.3 tickets in" in judged.cause


# -- ticket age from uptime ---------------------------------------------------------------


def test_uptime_reading_shows_both_ages_and_keeps_the_other_readings():
    # Booted at 4.9, ticket at 5.0 (0.1 s of uptime); after the cut booted at 11.5, connected at 11.55.
    records = [tls13_full(1, 5.0, sent=[5.0, 5.0]), rec(2, 11.6, duration_ms=50.0)]
    lines = [(5.05, "flash: writing slot A"), (5.1, "session stored")]
    boots = [Boot(4.9, "power-on", "boot"), Boot(11.5, "power-on", "boot")]
    judged = verdict.resumed_across_power_loss(evidence(records, lines, boots=boots))
    assert judged.cause.startswith("session stored but not offered after boot")
    assert "A ticket age from uptime does exactly this" in judged.cause
    assert "-50 ms old (from the future) while the server measured 6550 ms" in judged.cause


def test_no_uptime_reading_when_the_device_connected_later_after_boot_than_it_got_the_ticket():
    records = [tls13_full(1, 5.0, sent=[5.0, 5.0]), rec(2, 13.0, duration_ms=50.0)]
    lines = [(5.05, "flash: writing slot A"), (5.1, "session stored")]
    boots = [Boot(4.9, "power-on", "boot"), Boot(11.5, "power-on", "boot")]
    judged = verdict.resumed_across_power_loss(evidence(records, lines, boots=boots))
    assert "uptime" not in judged.cause


def test_a_claimed_age_far_from_the_measured_one_is_noted_on_a_pass():
    records = [tls13_full(1, 5.0, sent=[5.0, 5.0]),
               rec(2, 12.0, resumed=True, frm=1, offered={"ticket": None, "psk": ["ab"], "session_id": None},
                   claimed_age_ms=100, ticket_age_ms=7000)]
    judged = verdict.resumed_across_power_loss(evidence(records))
    assert judged.ok and "claimed a ticket age of 100 ms where the server measured 7000 ms" in judged.summary


# -- ticket without its secret, wrong server ---------------------------------------------


def test_binder_refusal_of_an_issued_ticket_names_the_missing_secret_and_the_issuer():
    offered = {"ticket": None, "psk": ["ab"], "session_id": None}
    records = [tls13_full(1, 5.0, sent=[5.0, 5.0]),
               rec(2, 12.0, version=None, offered=offered, rejected="binder", error="binder does not verify"),
               rec(3, 12.1)]
    judged = verdict.resumed_across_power_loss(evidence(records))
    assert judged.code == Code.REFUSED
    assert "issued in handshake #1" in judged.cause and "PSK binder did not verify" in judged.cause


def test_an_unknown_ticket_is_not_called_a_missing_secret():
    offered = {"ticket": None, "psk": ["zz"], "session_id": None}
    records = [tls13_full(1, 5.0, sent=[5.0, 5.0]), rec(2, 12.0, offered=offered, rejected="decrypt")]
    judged = verdict.resumed_across_power_loss(evidence(records))
    assert judged.code == Code.REFUSED and "secret" not in judged.cause and "damaged" in judged.cause


def test_offer_to_another_server_names_both_names():
    primary = [rec(1, 5.0, issued=["aa"], sni="server.test")]
    other = [rec(1, 12.0, sni="other.test", offered={"ticket": None, "psk": ["aa"], "session_id": None},
                 rejected="foreign")]
    e = evidence(other, others={"primary": primary})
    judged = verdict.expect_nothing_offered(verdict.FirstAfter.of(e, ON, "nothing_offered"))
    assert judged.code == Code.REFUSED
    assert "offered to other.test the session issued for server.test by the reference server 'primary'" \
        in judged.cause


def test_an_offer_to_the_same_server_is_not_called_the_wrong_server():
    records = [rec(1, 5.0, issued=["aa"], sni="server.test"),
               rec(2, 12.0, sni="server.test", offered={"ticket": None, "psk": ["aa"], "session_id": None},
                   resumed=True, frm=1)]
    judged = verdict.expect_nothing_offered(verdict.FirstAfter.of(evidence(records), ON, "nothing_offered"))
    assert judged.code == Code.UNEXPECTED_RESUME and "wrong server" not in judged.cause


# -- the renewal sweep's expectation ------------------------------------------------------


def sweep(stored_newer: bool) -> verdict.Evidence:
    """S1 stored at 5 s; a resumption at 9 s renews it (S2, #2); the cut at 10 s lands in S2's write."""
    offered = {"ticket": None, "psk": ["aa"], "session_id": None}
    records = [rec(1, 5.0, issued=["aa"]), rec(2, 9.0, resumed=True, frm=1, offered=offered, issued=["bb"]),
               rec(3, 12.0, resumed=True, frm=1, offered=offered)]
    lines = [(5.05, "flash: writing slot A"), (5.2, "session stored"), (9.05, "flash: writing slot B")]
    if stored_newer:
        lines.append((9.5, "session stored"))
    return evidence(records, lines)


def test_resumed_last_stored_accepts_the_older_session_when_the_newer_write_was_cut():
    judged = verdict.resumed_last_stored(sweep(stored_newer=False))
    assert judged.ok and "the last one the device had finished storing" in judged.summary
    assert verdict.resumed_across_power_loss(sweep(stored_newer=False)).code == Code.STALE_SESSION


def test_resumed_last_stored_refuses_the_older_session_once_the_newer_was_stored():
    judged = verdict.resumed_last_stored(sweep(stored_newer=True))
    assert not judged.ok and judged.code == Code.STALE_SESSION
