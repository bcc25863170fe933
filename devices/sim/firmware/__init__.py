"""Emulated firmware: the default program the simulated power domain runs.

``python -m devices.sim.firmware --flash FILE [--variant NAME] [--ca FILE]
[--reset-cause power-on|brown-out|software] [--state-fd N] [--page-ms MS]``
plus personality options (``--app``, ``--hold``, ``--shell``, ``--prompt``,
``--color``, ``--eol``, ``--log-format``, ``--version-tokens``,
``--unknown-version``, ``--versions``, ``--autoconnect``,
``--autoconnect-retry``, ``--client-id``; see ``--help``).

stdin/stdout are the UART (the bench passes the pty master); stderr is a
log file.  See :mod:`devices.sim.firmware.shell` for the console protocol,
:mod:`devices.sim.firmware.flash` for the flash format,
:mod:`devices.sim.firmware.variants` for the deliberate bugs and
:mod:`devices.sim.firmware.personality` for the habits that are not bugs
(:mod:`~devices.sim.firmware.appproto` speaks the protocols after the
handshake, :mod:`~devices.sim.firmware.style` decorates the console).
"""
