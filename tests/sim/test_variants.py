"""Each firmware variant shows its bug, where the correct firmware does not."""

from __future__ import annotations

import re
import time

import pytest

from simkit import TAU, Console, open_psu, power_off, power_on


@pytest.fixture
def variant_rig(make_bench):
    opened = []

    def make(variant: str, **kw):
        bench = make_bench(variant=variant, **kw)
        rm, psu = open_psu(bench)
        con = Console(bench.uart_path)
        opened.append((rm, psu, con))
        text = power_on(psu, con)
        assert f"variant={variant}" in text
        return bench, psu, con

    yield make
    for rm, psu, con in opened:
        con.close()
        psu.close()
        rm.close()


def connect(con, server, version="tls1.3", name="server.test") -> str:
    return con.command(f"connect 127.0.0.1 {server.port} {version} {name}", r"connect (ok|failed).*")


def test_ram_only_loses_session_at_power_loss(variant_rig, server):
    bench, psu, con = variant_rig("ram-only")
    out = connect(con, server)
    assert "session stored in RAM" in out and "flash: writing" not in out
    assert "resumed=yes" in connect(con, server)
    power_off(psu)
    assert "flash: no stored session" in power_on(psu, con)
    assert "offering nothing (no stored session)" in connect(con, server)


def test_no_renew_keeps_first_ticket(variant_rig, server):
    bench, psu, con = variant_rig("no-renew")
    connect(con, server)
    held = r"ticket (\w+) age \d+s (slot \w seq \d+)"
    first = re.search(held, con.command("session", r"sim> $")).groups()
    out = connect(con, server)
    assert "resumed=yes" in out and "flash: writing" not in out
    assert re.search(held, con.command("session", r"sim> $")).groups() == first


def test_correct_renews_ticket(variant_rig, server):
    bench, psu, con = variant_rig("correct")
    connect(con, server)
    first = re.search(r"ticket (\w+)", con.command("session", r"sim> $")).group(1)
    out = connect(con, server)
    assert "flash: writing slot B seq 2" in out
    assert re.search(r"ticket (\w+)", con.command("session", r"sim> $")).group(1) != first


def test_no_fallback_gives_up(variant_rig, server):
    bench, psu, con = variant_rig("no-fallback")
    connect(con, server, "tls1.2")
    server.rotate()
    out = connect(con, server, "tls1.2")
    assert "connect failed: server refused session" in out and "falling back" not in out


def test_uptime_clock_does_not_offer_after_power_loss(variant_rig, server):
    bench, psu, con = variant_rig("uptime-clock")
    con.command("clock set 1000", r"clock: .*")  # e.g. SNTP time kept only in RAM
    connect(con, server)
    assert "resumed=yes" in connect(con, server), "fine while the device stays up"
    power_off(psu)
    power_on(psu, con)
    out = connect(con, server)
    assert "tls: offering nothing (ticket age negative: clock went backwards)" in out, out


def test_correct_rtc_survives_power_loss(variant_rig, server):
    bench, psu, con = variant_rig("correct")
    connect(con, server)
    power_off(psu)
    power_on(psu, con)
    out = connect(con, server)
    assert re.search(r"offering psk \w+ \(TLSv1\.3, age \d+s\)", out) and "resumed=yes" in out


def test_any_server_offers_to_other_name(variant_rig, server):
    bench, psu, con = variant_rig("any-server")
    connect(con, server, name="server.test")
    out = connect(con, server, name="other.test")
    assert "tls: offering psk" in out, out


def test_torn_write_writes_in_place_and_still_boots(variant_rig, server):
    bench, psu, con = variant_rig("torn-write", settings={"page_ms": "30"})
    out = connect(con, server)
    assert "flash: writing slot A seq 1" in out
    start = con.mark()
    con.send(f"connect 127.0.0.1 {server.port} tls1.3 server.test")
    con.expect(r"flash: writing slot A seq 2", 10, start)
    time.sleep(0.06)
    psu.write("OUTP OFF")
    time.sleep(10 * TAU)
    text = power_on(psu, con)  # whatever it read, it boots
    assert "slot B" not in text and "ready" in text


def test_early_store_saves_a_tls13_session_without_its_ticket(variant_rig, server):
    bench, psu, con = variant_rig("early-store")
    out = connect(con, server)
    # The store happens before the application exchange, so before the summary line.
    assert out.index("flash: writing slot A seq 1") < out.index("app: sent"), out
    assert "session stored" in out
    out = connect(con, server)
    assert "tls: offering nothing (stored session holds no ticket)" in out and "resumed=no" in out, out


def test_early_store_is_harmless_in_tls12(variant_rig, server):
    bench, psu, con = variant_rig("early-store")
    connect(con, server, "tls1.2")
    assert "resumed=yes" in connect(con, server, "tls1.2")


def test_ignores_tickets_never_stores_a_tls13_session(variant_rig, server):
    bench, psu, con = variant_rig("ignores-tickets")
    out = connect(con, server)
    assert "session not stored (server issued no ticket)" in out and "flash: writing" not in out, out
    assert "offering nothing (no stored session)" in connect(con, server)
    connect(con, server, "tls1.2")
    assert "resumed=yes" in connect(con, server, "tls1.2"), "TLS 1.2 tickets are part of the handshake"


@pytest.mark.parametrize("version", ["tls1.2", "tls1.3"])
def test_ticket_only_offers_a_ticket_the_server_cannot_use(variant_rig, server, version):
    bench, psu, con = variant_rig("ticket-only")
    connect(con, server, version)
    out = connect(con, server, version)
    assert "tls: offering" in out and "falling back to full handshake" in out, out
    assert "resumed=no" in out
