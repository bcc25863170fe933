"""Emulated firmware: the default program the simulated power domain runs.

``python -m devices.sim.firmware --flash FILE [--variant NAME] [--ca FILE]
[--reset-cause power-on|brown-out|software] [--state-fd N] [--page-ms MS]``

stdin/stdout are the UART (the bench passes the pty master); stderr is a
log file.  See :mod:`devices.sim.firmware.shell` for the console protocol,
:mod:`devices.sim.firmware.flash` for the flash format and
:mod:`devices.sim.firmware.variants` for the deliberate bugs.
"""
