"""Fixtures for the C firmware's tests: a reference server in this process."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Iterator

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))   # cfwkit, next to the tests

from harness.server import ReferenceServer  # noqa: E402


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ReferenceServer]:
    """A reference server speaking MQTT after the handshake (what the mbedtls build speaks by default)."""
    with ReferenceServer(workdir=tmp_path / "server", protocol="mqtt") as srv:
        yield srv
