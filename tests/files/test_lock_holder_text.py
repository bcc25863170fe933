"""What a rig's lock tells other users about its holder: who, since when, which command, never a --set value."""

from __future__ import annotations

from pathlib import Path

from fixtures.plugin import _shown_command
from harness.riglock import RigLock, read_holder


def test_set_values_never_reach_the_holder_text(tmp_path: Path) -> None:
    command = _shown_command(["-n", "2", "--set", "wifi_psk=hunter2", "--set=token=abc", "--device", "x.yaml"])
    assert command == "pytest -n 2 --set wifi_psk=… --set=token=… --device x.yaml"
    with RigLock("rig1", ["device:x#1"], tmp_path, command=command) as lock:
        text = lock.path_of("device:x#1").read_text()
        holder = read_holder(lock.path_of("device:x#1"))
    assert "hunter2" not in text and "abc" not in text
    assert holder is not None and holder.command == command and holder.rig == "rig1"
