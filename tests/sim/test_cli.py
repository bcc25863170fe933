"""``python -m devices.sim`` as a person starts it: addresses, then clean exit."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import pyvisa

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_cli_prints_addresses_and_leaves_nothing_behind(tmp_path, sig):
    proc = subprocess.Popen([sys.executable, "-m", "devices.sim", "--workdir", str(tmp_path), "--tau", "0.02"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        lines = {}
        for line in proc.stdout:
            key, _, value = line.strip().partition(" ")
            if key == "ready":
                break
            lines[key] = value
        assert lines["supply"].startswith("TCPIP::127.0.0.1::") and lines["supply"].endswith("::SOCKET")
        assert lines["uart"] == str(tmp_path / "uart") and os.path.islink(lines["uart"])
        assert lines["flash"] == str(tmp_path / "flash.bin")
        rm = pyvisa.ResourceManager("@py")
        psu = rm.open_resource(lines["supply"], read_termination="\n", write_termination="\n")
        psu.write("OUTP ON")  # a firmware child is running now
        import time
        time.sleep(0.5)
        children = _children(proc.pid)
        assert children
        psu.close()
        rm.close()
        proc.send_signal(sig)
        assert proc.wait(timeout=10) == 0
        assert not os.path.lexists(lines["uart"]), "stale pty link left behind"
        for pid in children:
            assert not os.path.exists(f"/proc/{pid}"), "firmware child left behind"
        assert "bench down" in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _children(pid: int) -> set[int]:
    out: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            out.update(int(p) for p in (task / "children").read_text().split())
        except OSError:
            pass
    return out


def test_cli_bad_option_is_a_clear_error(tmp_path):
    r = subprocess.run([sys.executable, "-m", "devices.sim", "--workdir", str(tmp_path), "--uart-mode", "usb"],
                       cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and "invalid choice: 'usb'" in r.stderr and "Traceback" not in r.stderr
