"""socket:// (ser2net, terminal servers): same console, lost links reconnected."""

from __future__ import annotations

import pytest

from consolekit import wait_until


def test_socket_url_expect_send_and_reconnect(tcp_device, console_factory):
    con = console_factory(tcp_device.url)
    tcp_device.wait_client()
    tcp_device.write(b"simfw 1.0\r\nsim> ")
    assert con.expect("simfw", timeout=5).line.text == "simfw 1.0"
    assert con.expect("sim> $", timeout=5).line.partial
    con.send("session")
    assert tcp_device.read(9) == b"session\r\n"
    # The terminal server drops the link (the board's USB went away behind it).
    tcp_device.drop()
    wait_until(lambda: len(con.gaps) == 1, what="gap")
    tcp_device.wait_client(10)          # the console reconnected by itself
    wait_until(lambda: con.present, what="reopened")
    tcp_device.write(b"".join(b"after %d\r\n" % i for i in range(500)))
    con.expect("after 499", timeout=10)
    assert [ln.text for ln in con.lines if ln.text.startswith("after")] == [f"after {i}" for i in range(500)]
    (gap,) = con.gaps
    assert gap.end is not None
    assert "socket disconnected" in gap.reason or "end of stream" in gap.reason


@pytest.mark.filterwarnings("ignore:set(Daemon|Name)\\(\\) is deprecated:DeprecationWarning")
def test_rfc2217_url(pty_device, console_factory):
    from consolekit import Rfc2217Bridge

    bridge = Rfc2217Bridge(str(pty_device.link))
    try:
        con = console_factory(bridge.url, baudrate=921600)
        pty_device.write(b"simfw 1.0\r\n\xff\xfe binary\r\n")
        assert con.expect("simfw", timeout=10).line.text == "simfw 1.0"
        assert con.expect("binary", timeout=10).line.raw == b"\xff\xfe binary\r"
        con.send("help")
        assert pty_device.read(6) == b"help\r\n"
        bridge.drop()
        wait_until(lambda: len(con.gaps) == 1, what="gap")
        wait_until(lambda: con.present, timeout=10, what="reconnected")
        pty_device.write(b"after reconnect\r\n")
        assert con.expect("after reconnect", timeout=10).line.text == "after reconnect"
    finally:
        bridge.close()
