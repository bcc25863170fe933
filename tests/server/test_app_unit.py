"""The application protocols as pure state machines: framing edges no socket test reaches cheaply."""

from __future__ import annotations

from harness.server import app


def feed_bytewise(proto: app.Protocol, data: bytes) -> app.Reply:
    total = app.Reply()
    for i in range(len(data)):
        r = proto.feed(data[i : i + 1])
        total.out += r.out
        total.entries += r.entries
        total.close = total.close or r.close
    return total


def test_entries_cap():
    e = app.AppEntries(limit=3)
    e.extend(["a", "b"])
    e.extend(["c", "d", "e"])
    assert e.snapshot() == ["a", "b", "c", "... 2 more"]
    e.extend(["f"])
    assert e.snapshot()[-1] == "... 3 more"


def test_clean_strips_control_characters_and_truncates():
    assert app.clean(b"dev/\x1b[31mred\n") == "dev/?[31mred?"
    assert app.clean("x" * 100) == "x" * 61 + "..."


def test_http_head_byte_by_byte_with_bare_lf():
    r = feed_bytewise(app.HttpProtocol(), b"HEAD /a/b?c=d HTTP/1.0\nHost: x\n\n")
    assert r.entries == ["http HEAD /a/b"] and r.close == app.SERVER_CLOSED
    head, _, body = r.out.partition(b"\r\n\r\n")
    assert body == b"" and f"Content-Length: {len(app.HttpProtocol.BODY)}".encode() in head


def test_http_head_too_long_and_bad_header():
    r = app.HttpProtocol().feed(b"GET / HTTP/1.1\r\n" + b"X: " + b"y" * app.MAX_HTTP_HEAD)
    assert r.entries == ["http bad request"] and "over 16 KiB" in r.close and r.out.startswith(b"HTTP/1.1 400")
    r = app.HttpProtocol().feed(b"GET / HTTP/1.1\r\nno colon here\r\n\r\n")
    assert r.entries == ["http bad request"] and "malformed header line" in r.close


def test_line_without_newline_is_echoed_at_the_limit():
    p = app.LineProtocol()
    assert p.feed(b"x" * (app.MAX_LINE - 1)).out == b""
    r = p.feed(b"yz")
    assert r.out == b"x" * (app.MAX_LINE - 1) + b"y" and r.close == app.SERVER_CLOSED
    assert p.feed(b"more\n") == app.Reply()  # after close, nothing


def test_mqtt_qos2_and_large_suback():
    p = app.MqttProtocol()
    connect = b"\x10\x0c\x00\x04MQTT\x04\x02\x00\x3c\x00\x00"
    assert p.feed(connect).out == b"\x20\x02\x00\x00"
    r = p.feed(b"\x34\x07\x00\x01t\x00\x05ab")  # PUBLISH QoS 2, packet id 5
    assert r.out == b"\x50\x02\x00\x05" and r.entries == ["mqtt PUBLISH topic=t qos=2"]
    assert p.feed(b"\x62\x02\x00\x05").out == b"\x70\x02\x00\x05"  # PUBREL -> PUBCOMP
    topics = b"".join(b"\x00\x01" + bytes((65 + i % 26,)) + b"\x00" for i in range(200))
    body = b"\x00\x09" + topics
    sub = bytes((0x82, (len(body) & 0x7F) | 0x80, len(body) >> 7)) + body
    r = p.feed(sub)
    assert r.out == bytes((0x90, (202 & 0x7F) | 0x80, 202 >> 7)) + b"\x00\x09" + bytes(200)
    assert len(r.entries) == 1 and r.entries[0].startswith("mqtt SUBSCRIBE A,B,C")


def test_mqtt_subscribe_flags_and_second_connect():
    connect = b"\x10\x0c\x00\x04MQTT\x04\x02\x00\x3c\x00\x00"
    p = app.MqttProtocol()
    p.feed(connect)
    r = p.feed(b"\x80\x06\x00\x01\x00\x01a\x00")
    assert r.close == "protocol error: malformed SUBSCRIBE: fixed header flags 0b0000, must be 0b0010"
    p = app.MqttProtocol()
    p.feed(connect)
    assert p.feed(connect).close == "protocol error: second CONNECT on one connection"


def test_http_path_tokens_are_fingerprinted() -> None:
    """ThingsBoard-style device tokens live in the path: the record keeps a fingerprint, never the token."""
    from harness.fingerprint import fp
    from harness.server.app import HttpProtocol

    token = b"A1b2C3d4E5f6G7h8I9j0"
    reply = HttpProtocol().feed(b"POST /api/v1/" + token + b"/telemetry?x=1 HTTP/1.1\r\nHost: h\r\n\r\n")
    assert reply.entries == [f"http POST /api/v1/<{fp(token)}>/telemetry"]
    assert token.decode() not in "".join(reply.entries)
