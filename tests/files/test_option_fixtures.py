"""Every option is also a fixture a test can parametrize (as in pytest-embedded).

A child pytest runs a test that parametrizes ``sim_variant`` indirectly: each
value gets its own simulated bench, and the firmware's boot banner (read
through the real console) proves which variant is running.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

CHILD = '''
import pytest

# The expected name is a separate, direct parameter: comparing the banner with
# the fixture's own value could not notice the fixture ignoring the parameter.
@pytest.mark.parametrize("sim_variant, expected", [("ram-only", "ram-only"), ("no-renew", "no-renew")],
                         indirect=["sim_variant"])
def test_banner_names_the_variant(sim_variant, expected, device, console):
    mark = console.mark()
    device.power_off()
    device.power_on()
    console.expect(rf"variant={expected}$", timeout=5, since=mark)
'''


def test_sim_variant_parametrized_indirectly(tmp_path: Path) -> None:
    test = tmp_path / "test_child.py"
    test.write_text(CHILD)
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "fixtures.plugin",
                           "--rootdir", str(tmp_path), "-c", "/dev/null", "--run-dir", str(tmp_path / "runs"),
                           str(test)], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "2 passed" in proc.stdout
