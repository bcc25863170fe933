"""Fixtures for the console tests (the stand-in devices live in consolekit.py)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Iterator

import pytest

from consolekit import PtyDevice, TcpDevice
from harness.console import Console


@pytest.fixture
def pty_device(tmp_path: Path) -> Iterator[PtyDevice]:
    dev = PtyDevice(tmp_path / "uart")
    yield dev
    dev.close()


@pytest.fixture
def tcp_device() -> Iterator[TcpDevice]:
    dev = TcpDevice()
    yield dev
    dev.close()


@pytest.fixture
def console_factory(tmp_path: Path) -> Iterator[Callable[..., Console]]:
    """Consoles closed at teardown whatever the test did; capture in tmp_path by default."""
    made: list[Console] = []

    def make(url: str | os.PathLike[str], **kw: object) -> Console:
        kw.setdefault("capture_path", tmp_path / f"capture{len(made)}.txt")
        con = Console(str(url), **kw)  # type: ignore[arg-type]
        made.append(con)
        return con

    yield make
    for con in made:
        con.close()
