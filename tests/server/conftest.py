"""Fixtures for the reference-server tests (helpers live in ``tlskit.py``)."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from harness.server import ReferenceServer, ServerConfig


@pytest.fixture
def make_server(tmp_path: Path) -> Iterator:
    """Start servers with knobs; all of them are stopped at teardown."""
    started: list[ReferenceServer] = []

    def make(name: str = "srv", **knobs) -> ReferenceServer:
        knobs.setdefault("handshake_timeout", 3.0)
        knobs.setdefault("app_timeout", 3.0)
        srv = ReferenceServer(ServerConfig(**knobs), workdir=tmp_path / name)
        srv.start()
        started.append(srv)
        return srv

    yield make
    for srv in started:
        srv.stop()


@pytest.fixture
def server(make_server) -> ReferenceServer:
    return make_server()
