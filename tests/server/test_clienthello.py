"""The handshake-message parsers: real messages in, ParseError (never IndexError) on junk."""

from __future__ import annotations

import os
import ssl

import pytest

from harness.server.clienthello import (
    TLS12,
    TLS13,
    ParseError,
    parse_client_hello,
    parse_new_session_ticket,
    parse_server_hello,
)


def _hello(**kw) -> bytes:
    ctx = ssl.create_default_context()
    inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(inc, out, server_hostname=kw.get("sni", "server.test"))
    with pytest.raises(ssl.SSLWantReadError):
        obj.do_handshake()
    record = out.read()
    assert record[0] == 0x16
    return record[5:]  # the handshake message, as the message callback gets it


def test_real_client_hello():
    ch = parse_client_hello(_hello(sni="device.example"))
    assert ch.sni == "device.example"
    assert TLS13 in ch.versions and TLS12 in ch.versions and ch.offers_tls13
    assert len(ch.session_id) == 32  # TLS 1.3 middlebox-compat random: no offer
    assert ch.ticket == b"" and ch.psk == []


@pytest.mark.parametrize("cut", [0, 3, 4, 10, 38, 40, 80, -5, -1])
def test_truncated_client_hello(cut):
    msg = _hello()
    data = msg[:cut]
    # keep the header's length honest so parsing goes past the header
    if len(data) >= 4:
        data = data[:1] + (len(data) - 4).to_bytes(3, "big") + data[4:]
    with pytest.raises(ParseError):
        parse_client_hello(data)


def test_random_junk_never_raises_anything_but_parse_error():
    for _ in range(300):
        junk = bytes([1]) + os.urandom(3) + os.urandom(200)
        try:
            parse_client_hello(junk)
        except ParseError:
            pass
        for fn in (parse_server_hello,):
            try:
                fn(bytes([2]) + junk[1:])
            except ParseError:
                pass
        try:
            parse_new_session_ticket(bytes([4]) + junk[1:], tls13=True)
        except ParseError:
            pass


def test_new_session_ticket_tls13():
    ticket = os.urandom(40)
    body = (300).to_bytes(4, "big") + (12345).to_bytes(4, "big") + b"\x01\x00" + len(ticket).to_bytes(2, "big") + ticket + b"\x00\x00"
    msg = b"\x04" + len(body).to_bytes(3, "big") + body
    nst = parse_new_session_ticket(msg, tls13=True)
    assert (nst.lifetime, nst.age_add, nst.ticket) == (300, 12345, ticket)


def test_wrong_message_type():
    with pytest.raises(ParseError):
        parse_server_hello(_hello())
