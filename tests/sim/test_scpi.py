"""The supply's SCPI surface through pyvisa '@py' and raw sockets.

Covers: error queue codes for bad commands and out-of-range values, queue
overflow, garbage bytes, a client leaving mid-command, several clients at
once, channel lists, protection trips.  See test_bench.py for the map of
issue 2's "Must show" bullets.
"""

from __future__ import annotations

import socket
import time

import pytest

from simkit import open_psu, power_on, wait_for


@pytest.fixture
def psu(make_bench):
    bench = make_bench()
    rm, psu = open_psu(bench)
    psu.bench = bench
    yield psu
    psu.close()
    rm.close()


def errors(psu) -> list[str]:
    out = []
    while True:
        e = psu.query("SYST:ERR?")
        if e.startswith("+0"):
            return out
        out.append(e)


def test_identity_and_basic_commands(psu):
    assert psu.query("*IDN?") == "Keysight Technologies,E36312A,SIM0001,1.0-sim"
    assert psu.query("*OPC?") == "1"
    psu.write("SYST:REM")
    psu.write("*RST")
    assert psu.query("OUTP?") == "0"
    assert float(psu.query("VOLT?")) == 3.3
    psu.write("VOLTage 5.0,(@2)")
    assert float(psu.query("SOURce:VOLTage:LEVel:IMMediate:AMPLitude? (@2)")) == 5.0
    assert float(psu.query("volt? (@1)")) == 3.3
    psu.write("INST:NSEL 2")
    assert psu.query("INSTrument:NSELect?") == "2"
    assert float(psu.query("VOLT?")) == 5.0
    psu.write("INST:NSEL 1")
    psu.write("CURR 0.5")
    assert float(psu.query("CURRent?")) == 0.5
    assert psu.query("VOLT? (@1:3)").count(",") == 2
    psu.write("SYST:LOC")
    assert errors(psu) == []


def test_error_queue_codes(psu):
    psu.write("FOO:BAR 1")            # unknown header
    psu.write("VOLT 99")              # out of range for channel 1 (0..6 V)
    psu.write("VOLT abc")             # wrong argument type
    psu.write("OUTP MAYBE")           # illegal value
    psu.write("VOLT")                 # missing parameter
    psu.write("*IDN? extra")          # parameter not allowed
    psu.write("VOLT 1,(@7)")          # no channel 7
    psu.write("CURR -1")
    got = errors(psu)
    codes = [int(e.split(",")[0]) for e in got]
    assert codes == [-113, -222, -104, -224, -109, -108, -222, -222], got
    assert got[0].startswith('-113,"Undefined header')
    assert got[1].startswith('-222,"Data out of range')
    assert float(psu.query("VOLT?")) == 3.3, "a rejected command changes nothing"


def test_error_queue_overflow_and_cls(psu):
    for _ in range(25):
        psu.write("NOPE")
    got = errors(psu)
    assert len(got) == 20 and got[-1] == '-350,"Queue overflow"'
    psu.write("NOPE")
    psu.write("*CLS")
    assert psu.query("SYST:ERR?") == '+0,"No error"'


def _raw(psu) -> socket.socket:
    host, port = psu.bench.supply_resource.split("::")[1:3]
    return socket.create_connection((host, int(port)), timeout=3)


def _ask(sock: socket.socket, line: bytes) -> bytes:
    sock.sendall(line)
    data = b""
    while not data.endswith(b"\n"):
        data += sock.recv(1024)
    return data


def test_garbage_bytes_on_socket(psu):
    with _raw(psu) as s:
        s.sendall(b"\xff\xfe\x00\x80garbage\n")
        s.sendall(b"\x1b[A\n")
        s.sendall(b"!!! ???\n")
        s.sendall(b"A" * 5000 + b"\n")
        assert _ask(s, b"*IDN?\n").startswith(b"Keysight")
    codes = [int(e.split(",")[0]) for e in errors(psu)]
    assert codes == [-101, -101, -102, -223], codes
    assert psu.query("*IDN?").startswith("Keysight")


def test_client_disconnect_mid_command(psu):
    s = _raw(psu)
    s.sendall(b"VOLT 1.2")  # no newline: the command never completed
    s.close()
    s = _raw(psu)
    s.sendall(b"MEAS:VOLT?")
    s.shutdown(socket.SHUT_RDWR)
    s.close()
    time.sleep(0.05)
    assert float(psu.query("VOLT?")) == 3.3
    assert errors(psu) == []


def test_several_clients_at_once(psu):
    rm2, psu2 = open_psu(psu.bench)
    try:
        psu.write("OUTP ON")
        assert psu.query("*OPC?") == "1"  # each connection is its own ordered stream
        assert psu2.query("OUTP?") == "1"
        psu2.write("OUTP OFF")  # e.g. a watchdog making the bench safe
        assert psu2.query("*OPC?") == "1"
        assert psu.query("OUTP?") == "0"
    finally:
        psu2.close()
        rm2.close()


def test_over_voltage_protection(psu):
    psu.write("VOLT:PROT 3.6")
    assert float(psu.query("VOLT:PROT?")) == 3.6
    psu.write("OUTP ON")
    psu.write("VOLT 4.0")
    assert psu.query("VOLT:PROT:TRIP?") == "1"
    assert psu.query("OUTP?") == "0"
    psu.write("OUTP ON")  # refused while tripped
    assert psu.query("SYST:ERR?").startswith("-221")
    psu.write("VOLT 3.3")
    psu.write("VOLT:PROT:CLE")
    assert psu.query("VOLTage:PROTection:TRIPped?") == "0"
    psu.write("OUTP ON")
    assert psu.query("OUTP?") == "1"


def test_over_current_protection_trips_on_radio(make_bench, server):
    from simkit import Console

    bench = make_bench()
    rm, psu = open_psu(bench)
    con = Console(bench.uart_path)
    try:
        psu.write("CURR 0.1")
        psu.write("CURR:PROT:STAT ON")
        power_on(psu, con)  # boot 50 mA, idle 20 mA: fine
        assert psu.query("CURR:PROT:TRIP?") == "0"
        con.send(f"connect 127.0.0.1 {server.port} tls1.3 server.test")  # radio 180 mA
        wait_for(lambda: psu.query("CURR:PROT:TRIP?") == "1")
        assert psu.query("OUTP?") == "0"
        wait_for(lambda: float(psu.query("MEAS:VOLT?")) < 0.5)
        psu.write("CURR:PROT:CLE")
        assert psu.query("CURR:PROT:TRIP?") == "0"
    finally:
        con.close()
        psu.close()
        rm.close()


def test_measure_follows_output(psu):
    assert float(psu.query("MEAS:VOLT?")) == 0.0
    psu.write("OUTP ON")
    assert float(psu.query("MEASure:VOLTage?")) == pytest.approx(3.3)
    psu.write("OUTP OFF")
    wait_for(lambda: float(psu.query("MEAS:VOLT?")) < 0.3)
