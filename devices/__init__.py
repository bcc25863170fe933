"""Device descriptions (data) and the simulated bench (``devices.sim``).

Nothing in ``harness/`` imports this package: a simulated device is a peer
of real hardware, reached through pyvisa and pyserial like any bench.
"""
