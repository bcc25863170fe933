"""Firmware personalities: the habits of real devices the harness must cope with.

Each test powers the simulated device through the SCPI supply, drives it
over the pty as a person would, and judges from a stdlib TLS server that
speaks the same application protocol (ground truth: what the *server* saw).
Personality options reach the firmware through the bench's ``{extra}``
placeholder (``--set extra=...``), or through a template of one's own.

- each app protocol, TLS 1.2 and 1.3: stored, resumed after a power cycle . test_app_protocol_survives_power_loss
- an app failure fails the connect with its reason ........................ test_app_failure_fails_connect
- --hold: result line first, connection held in the background ........... test_hold_keeps_connection_in_background
- --hold: closed at the next connect and at power loss .................... test_hold_closed_by_next_connect_and_power_loss
- plain shell + colour + LF + ESP-IDF log: prompt then answer on one line . test_plain_color_espidf_prompt_then_answer
- Zephyr log format, mixed line ends ...................................... test_zephyr_log_mixed_eol
- version tokens map; an unknown word silently means auto ................. test_version_tokens_and_unknown_word
- version word omitted (empty token); default still rejects ............. test_version_word_omitted_and_default_rejects
- --versions tls1.2 negotiates TLS 1.2 when asked for 1.3 ................. test_stack_without_tls13
- autoconnect: connects with no input, ignores input ...................... test_autoconnect_template_with_set_values
- autoconnect retry ....................................................... test_autoconnect_retry
- slow flash (--page-ms 60) brackets the write ............................ test_slow_flash_brackets_write
- a bad personality option is reported by the supply ...................... test_bad_option_reported_by_supply
"""

from __future__ import annotations

import re
import time

import pytest

from simkit import TAU, Console, EchoServer, open_psu, power_off, wait_for

CONNECT_END = r"connect (ok|failed).*"
ESC = "\x1b"


@pytest.fixture
def persona(make_bench, pki):
    """Factory: (bench, psu, console, server) for firmware options and a server protocol.

    ``{port}`` in ``extra`` or in a setting's value becomes the server's port.
    """
    opened: list = []

    def make(extra: str = "", protocol: str = "line", server_kw: dict | None = None, **bench_kw):
        server = EchoServer(pki.server_pem, protocol=protocol, **(server_kw or {}))
        port = str(server.port)
        settings = {k: v.replace("{port}", port) for k, v in bench_kw.pop("settings", {}).items()}
        settings.setdefault("extra", extra.replace("{port}", port))
        bench = make_bench(settings=settings, **bench_kw)
        rm, psu = open_psu(bench)
        con = Console(bench.uart_path)
        opened.append((server, rm, psu, con))
        return bench, psu, con, server

    yield make
    for server, rm, psu, con in opened:
        con.close()
        psu.close()
        rm.close()
        server.close()


def boot(psu, con: Console, until: str = r"sim> ", cause: str = "power-on") -> str:
    """Switch the output on and wait for the boot to end (prompt or ready line)."""
    start = con.mark()
    psu.write("OUTP ON")
    m = con.expect(until, 10, start)
    text = con.text[start:m.end()]
    assert f"reset cause: {cause}" in text, text
    return text


def records(server: EchoServer, n: int) -> list:
    """The server's first ``n`` records: a record is written when the
    connection ends, which may be a moment after the device said ``connect ok``."""
    wait_for(lambda: len(server.records) >= n, timeout=5)
    return server.records[:n]


def connect(con: Console, server: EchoServer, version: str = "tls1.3", name: str = "server.test") -> str:
    return con.command(f"connect 127.0.0.1 {server.port} {version} {name}".rstrip(), CONNECT_END)


# ------------------------------------------------------------ application protocols
APP_SEEN = {
    "line": ["simfw hello\n"],
    "none": ["closed by client"],
    "http": ["GET /status HTTP/1.1", "Host: server.test", "User-Agent: simfw", "Connection: close"],
    "mqtt": [r"CONNECT MQTT level=4 flags=0x02 keepalive=60 id=simfw-[0-9a-f]{8}", "PUBLISH simfw/state online",
             "PINGREQ", "DISCONNECT"],
    "greeting": ["simfw hello\n"],
}
APP_LINE = {
    "line": r"app: sent 12 bytes, received 12 bytes",
    "none": r"app: none: sent 0 bytes, received 0 bytes",
    "http": r"app: http: GET /status -> 200, sent \d+ bytes, received \d+ bytes",
    "mqtt": r"app: mqtt: connack 0, published simfw/state, pingresp, sent \d+ bytes, received 6 bytes",
    "greeting": r"app: greeting: banner 'simsrv ready', echo 12 bytes, sent 12 bytes, received 26 bytes",
}


@pytest.mark.parametrize("version", ["tls1.2", "tls1.3"])
@pytest.mark.parametrize("app", list(APP_SEEN))
def test_app_protocol_survives_power_loss(persona, app, version):
    bench, psu, con, server = persona(f"--app {app}", protocol=app)
    boot(psu, con)
    first = connect(con, server, version)
    assert re.search(rf"^{APP_LINE[app]}\r$", first, re.M), first
    assert re.search(r"session stored\r\nconnect ok resumed=no", first), first
    power_off(psu, off_time=10 * TAU)
    text = boot(psu, con)
    assert "using slot A" in text, text
    second = connect(con, server, version)
    assert "connect ok resumed=yes" in second, second
    # The server is the judge: same version both times, the second resumed,
    # and it saw the protocol spoken in full each time.
    v = f"TLSv1.{version[-1]}"
    assert [(r.version, r.resumed, r.sni) for r in records(server, 2)] == [
        (v, False, "server.test"), (v, True, "server.test")], server.records
    for rec in server.records:
        assert len(rec.app) == len(APP_SEEN[app]), rec.app
        for seen, want in zip(rec.app, APP_SEEN[app]):
            assert re.fullmatch(want, seen), (seen, want)


@pytest.mark.parametrize("app, server_kw, reason", [
    ("http", {"http_status": "404 Not Found"}, "http: status 404 Not Found"),
    ("mqtt", {"connack_rc": 5}, "mqtt: CONNACK return code 5"),
    # A server that never greets, and hangs up after 1 s of silence.
    ("greeting", {"banner": b"", "idle_timeout": 1.0}, "greeting: server closed before its banner line"),
])
def test_app_failure_fails_connect(persona, app, server_kw, reason):
    bench, psu, con, server = persona(f"--app {app}", protocol=app, server_kw=server_kw)
    boot(psu, con)
    out = connect(con, server)
    assert out.endswith(f"\r\nconnect failed: {reason}\r"), out
    assert "session stored" not in out and "connect ok" not in out
    assert "session: none" in con.command("session", r"session: .*")
    assert records(server, 1)[0].version == "TLSv1.3", "the handshake itself succeeded"


# ------------------------------------------------------------------------- hold
def test_hold_keeps_connection_in_background(persona):
    bench, psu, con, server = persona("--app mqtt --hold 3", protocol="mqtt")
    boot(psu, con)
    t0 = time.monotonic()
    out = connect(con, server)
    took = time.monotonic() - t0
    assert took < 2.0, f"connect blocked for the hold ({took:.1f}s)"
    assert re.search(r"session stored\r\napp: mqtt: holding connection for 3s\r\nconnect ok resumed=no", out), out
    assert server.open_since is not None, "server-side connection must still be open"
    t1 = time.monotonic()
    out = con.command("session", r"session: .*\r\nsim> ")
    assert time.monotonic() - t1 < 1.0, "the shell must answer while the connection is held"
    assert "slot A seq 1" in out
    assert server.open_since is not None and not server.records
    rec = wait_for(lambda: server.records and server.records[0], timeout=6)
    assert 2.5 <= rec.duration <= 4.5, rec.duration
    assert rec.app[-1] == "DISCONNECT", "a held MQTT link says goodbye when the hold ends"
    # The end of the hold is printed while the shell idles, then the prompt again.
    con.expect(r"\r\napp: mqtt: connection closed \(hold ended\) after 3\.\ds\r\nsim> ", 3)


def test_hold_closed_by_next_connect_and_power_loss(persona):
    bench, psu, con, server = persona("--app none --hold 30", protocol="none")
    boot(psu, con)
    connect(con, server)
    out = connect(con, server)
    assert re.search(r"app: none: connection closed \(next connect\) after \d+\.\ds\r\ntls: offering psk", out), out
    assert "connect ok resumed=yes" in out
    rec = wait_for(lambda: server.records and server.records[0])
    assert rec.duration < 5 and rec.app == ["closed by client"]
    assert server.open_since is not None, "the second connection is held"
    cut = time.monotonic()
    psu.write("OUTP OFF")
    rec = wait_for(lambda: len(server.records) > 1 and server.records[1], timeout=3)
    assert rec.closed - cut < 1.0, "power loss ends the held connection at once"
    assert rec.resumed


# ------------------------------------------------------------------ shell styles
def test_plain_color_espidf_prompt_then_answer(persona):
    prompt = f"{ESC}[1;32mdev$ {ESC}[m"
    bench, psu, con, server = persona("--shell plain --prompt 'dev$ ' --color --eol lf --log-format espidf")
    text = boot(psu, con, until=re.escape(prompt))
    assert re.search(rf"{ESC}\[0;32mI \(\d+\) fw: ready{ESC}\[0m\n", text), repr(text)
    assert re.search(rf"{ESC}\[0;32mI \(\d+\) fw: reset cause: power-on{ESC}\[0m\n", text), repr(text)
    start = con.mark()
    con.send("erase")
    con.expect(rf"session erased{ESC}\[0m\n(\r{ESC}\[K)?" + re.escape(prompt), 5, start)
    raw = con.text[start:]
    # No echo: the answer follows the prompt on the same line.
    assert re.fullmatch(rf"{ESC}\[0;32mI \(\d+\) fw: session erased{ESC}\[0m\n(\r{ESC}\[K)?"
                        + re.escape(prompt), raw), repr(raw)
    out = con.command("bogus", re.escape(prompt))
    assert re.search(rf"{ESC}\[0;33mW \(\d+\) fw: error: unknown command 'bogus' \(try help\){ESC}\[0m\n", out)
    out = connect(con, server)
    assert re.search(rf"I \(\d+\) fw: session stored{ESC}\[0m\n{ESC}\[0;32mI \(\d+\) fw: connect ok resumed=no",
                     out), repr(out)
    raw = con.text[start:]
    assert "\r\n" not in raw and "erase\n" not in raw and "bogus\n" not in raw, repr(raw)
    assert f"\r{ESC}[K{prompt}" in con.text, "an erase-line before some prompt"
    stamps = [int(m) for m in re.findall(r"I \((\d+)\) fw:", con.text)]
    assert stamps == sorted(stamps) and stamps[-1] > stamps[0], stamps


def test_zephyr_log_mixed_eol(persona):
    bench, psu, con, server = persona("--log-format zephyr --eol mixed")
    text = boot(psu, con)
    stamp = r"\[\d\d:\d\d:\d\d\.\d{3},\d{3}\] <inf> fw: "
    lines = re.findall(rf"{stamp}(.*?)(\r\n|\n|\r)(?=\[|sim> )", text)
    assert [t for t, _ in lines] == ["simfw 1.0 variant=correct", "reset cause: power-on",
                                     "flash: no stored session", "ready"], repr(text)
    # The garbage line took the first CRLF; then LF, CR, CRLF, LF in turn.
    assert [e for _, e in lines] == ["\n", "\r", "\r\n", "\n"], repr(text)
    out = con.command("clock set 1000", r"clock: .*?(\r\n|\n|\r)sim> ")
    assert re.match(rf"clock set 1000(\r\n|\n|\r){stamp}clock: 1970-01-01T00:16:40\+00:00", out), repr(out)


# ----------------------------------------------------------------- version words
def test_version_tokens_and_unknown_word(persona):
    bench, psu, con, server = persona("--version-tokens tls1.2=1.2,tls1.3=1.3,auto=any")
    boot(psu, con)
    assert "connect <host> <port> [1.2|1.3|any] [<server-name>]" in con.command("help", r"sim> $")
    # The harness's spelling on a shell that takes "1.2": silently auto, and
    # the stacks agree on TLS 1.3 -- the false pass this habit once caused.
    out = connect(con, server, "tls1.2")
    assert "connect ok" in out and "unknown" not in out, out
    assert "handshake done TLSv1.3" in out
    out = connect(con, server, "1.2")
    assert "handshake done TLSv1.2" in out and "connect ok" in out, out
    out = connect(con, server, "any")
    assert "connect ok" in out, out
    assert [r.version for r in records(server, 3)] == ["TLSv1.3", "TLSv1.2", "TLSv1.3"]


def test_version_word_omitted_and_default_rejects(persona):
    bench, psu, con, server = persona("--version-tokens 'tls1.2=1.2,tls1.3=1.3,auto='")
    boot(psu, con)
    out = con.command(f"connect 127.0.0.1 {server.port} server.test", CONNECT_END)
    assert "connect ok resumed=no" in out, out
    out = connect(con, server, "1.2")
    assert "connect ok" in out, out
    assert [(r.version, r.sni) for r in records(server, 2)] == [
        ("TLSv1.3", "server.test"), ("TLSv1.2", "server.test")]
    # The default firmware keeps refusing a word it does not know.
    bench2, psu2, con2, server2 = persona()
    boot(psu2, con2)
    out = connect(con2, server2, "1.2")
    assert "connect failed: unknown TLS version '1.2' (tls1.2, tls1.3, auto)" in out, out
    assert not server2.records


def test_stack_without_tls13(persona):
    bench, psu, con, server = persona("--versions tls1.2")
    boot(psu, con)
    out = connect(con, server, "tls1.3")
    assert "handshake done TLSv1.2" in out and "connect ok resumed=no" in out, out
    out = connect(con, server, "tls1.3")
    assert "offering ticket" in out and "connect ok resumed=yes" in out, out
    assert [(r.version, r.resumed) for r in records(server, 2)] == [("TLSv1.2", False), ("TLSv1.2", True)]


# ----------------------------------------------------------------- no shell at all
AUTOCONNECT_FIRMWARE = ("{python} -m devices.sim.firmware --flash {flash} --variant {variant} "
                        "--reset-cause {reset_cause} --state-fd {state_fd} --ca {ca} --page-ms {page_ms} "
                        "--app {app} --autoconnect {target}")


def test_autoconnect_template_with_set_values(persona):
    bench, psu, con, server = persona(protocol="mqtt", firmware=AUTOCONNECT_FIRMWARE, settings={
        "app": "mqtt", "target": "127.0.0.1:{port}:server.test"})
    text = boot(psu, con, until=CONNECT_END)
    assert "sim> " not in text, "no shell, no prompt"
    assert re.search(r"ready\r\ntls: offering nothing \(no stored session\)\r\n[\s\S]*app: mqtt: connack 0"
                     r"[\s\S]*session stored\r\nconnect ok resumed=no", text), text
    start = con.mark()
    con.send("erase")
    con.send("help")
    time.sleep(0.5)
    con.read()
    assert con.text[start:] == "", f"input must be ignored: {con.text[start:]!r}"
    power_off(psu, off_time=10 * TAU)
    text = boot(psu, con, until=CONNECT_END)
    assert "connect ok resumed=yes" in text, "the erase was ignored, the session resumed: " + text
    assert [(r.version, r.resumed, r.sni) for r in records(server, 2)] == [
        ("TLSv1.3", False, "server.test"), ("TLSv1.3", True, "server.test")]
    assert server.records[0].app[-1] == "DISCONNECT"


def test_autoconnect_retry(persona):
    bench, psu, con, server = persona("--autoconnect 127.0.0.1:{port}:server.test --autoconnect-retry 0.3")
    boot(psu, con, until=CONNECT_END)
    wait_for(lambda: len(server.records) >= 3, timeout=5)
    assert [r.resumed for r in server.records[:3]] == [False, True, True]


# ----------------------------------------------------------------------- flash
def test_slow_flash_brackets_write(persona):
    bench, psu, con, server = persona("--log-format espidf", settings={"page_ms": "60"})
    boot(psu, con)
    out = connect(con, server)
    m = re.search(r"I \((\d+)\) fw: flash: writing slot A seq 1 \((\d+) pages\)\r\n"
                  r"I \((\d+)\) fw: flash: write done slot A seq 1\r\n"
                  r"I \((\d+)\) fw: session stored\r\n"
                  r"I \((\d+)\) fw: connect ok resumed=no", out)
    assert m, out
    begin, pages, done, stored, ok = map(int, m.groups())
    assert done - begin >= pages * 60 + 20 - 5, (begin, done, pages)  # erase 20 ms + 60 ms a page
    assert begin <= done <= stored <= ok


def test_bad_option_reported_on_the_uart(persona):
    bench, psu, con, server = persona("--app smtp")
    psu.write("OUTP ON")
    con.expect(r"\*\*\* sim: firmware exited with status 2 \(see firmware.log\)", timeout=10)
    assert "invalid choice: 'smtp'" in bench.firmware_log.read_text()
