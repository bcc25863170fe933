"""Fixtures for the supply driver's own tests.

Two kinds of instrument: pyvisa-sim descriptions (``instruments/*.yaml``),
one per dialect, each written from that model's programming manual; and the
simulated bench (``devices.sim``), a real SCPI server with rail physics, for
the Keysight dialect end to end and for the safe-state tests, which need an
instrument that outlives the process holding it.
"""

from __future__ import annotations

from typing import Iterator

import pytest


@pytest.fixture(autouse=True, scope="session")
def _pyvisa_sim_empty_terminator() -> Iterator[None]:
    """Let pyvisa-sim model instruments with no query terminator (Korad).

    pyvisa-sim 0.7 slices ``buffer[:-0]`` when the query terminator is empty
    and so sees every message as empty.  Such instruments frame a message by
    the pause after it, which for the simulator means: one write, one message.
    This corrects the simulator; it does not stand in for any harness part.
    """
    from pyvisa_sim import devices

    original = devices.Device.write

    def write(self: devices.Device, data: bytes) -> None:
        if self._query_eom:
            return original(self, data)
        message = bytes(self._input_buffer) + data
        self._input_buffer = bytearray()
        response = self._match(message)
        if response is None:
            response = self.error_response("command_error")
        if response is not None and response is not devices.NoResponse:
            self._output_buffers.append(bytearray(response) + self._response_eom)

    devices.Device.write = write
    yield
    devices.Device.write = original


@pytest.fixture
def simbench(tmp_path_factory: pytest.TempPathFactory):
    """A simulated bench (supply on a loopback socket), or skip if not built yet."""
    try:
        from devices.sim import SimBench  # type: ignore[attr-defined]
    except ImportError as exc:
        pytest.skip(f"simulated bench not available: {exc}")
    with SimBench(workdir=tmp_path_factory.mktemp("bench")) as bench:
        yield bench


