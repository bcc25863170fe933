"""One real labgrid lab for this folder: a coordinator, two exporters, three places.

- exporter ``plain`` (labgrid-exporter as shipped): rig ``plain`` with a pty
  console and a simplerest power switch; places ``rig1`` (the lock tests) and
  ``rig1-power`` are not both used at once, so they share it.
- exporter ``udev`` (labgrid's exporter with udev-like path watching, see
  lg_udev_exporter.py): rig ``udev`` with a pty console that re-enumerates.

Skips only when labgrid or ser2net is missing.
"""

from __future__ import annotations

import shutil
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from lgkit import Lab, PowerSwitch, serial_config  # noqa: E402


def _missing() -> str | None:
    """Why this folder cannot run here, if it cannot (said as a skip, never as a failure or a traceback)."""
    try:
        import labgrid.remote.client  # noqa: F401, PLC0415
    except ImportError:
        return "labgrid is not installed: pip install '.[labgrid]'"
    if shutil.which("ser2net") is None and not Path("/usr/sbin/ser2net").exists():
        return "ser2net is not installed (Debian: apt-get install ser2net)"
    return None


MISSING = _missing()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # A skip marker rather than a skip at import: pytest cannot skip a conftest given on the command line.
    if MISSING:
        for item in items:
            if HERE in item.path.parents:
                item.add_marker(pytest.mark.skip(reason=MISSING))


@pytest.fixture(scope="session")
def lab(tmp_path_factory: pytest.TempPathFactory):
    if MISSING:
        pytest.skip(MISSING)
    lab = Lab(tmp_path_factory.mktemp("labgrid-lab"))
    try:
        lab.start_coordinator()
        lab.power = PowerSwitch()
        plain = lab.add_pty("plain")
        udev = lab.add_pty("udev")
        lab.start_exporter("plain", serial_config("plain", plain, lab.power))
        lab.start_exporter("udev", serial_config("udev", udev), watch_paths=True)
        with ThreadPoolExecutor(2) as pool:  # labgrid-client takes ~0.9 s a call
            for done in [pool.submit(lab.create_place, "rig1", "plain/plain/*"),
                         pool.submit(lab.create_place, "rig-udev", "udev/udev/*")]:
                done.result()
        yield lab
    finally:
        lab.stop()
