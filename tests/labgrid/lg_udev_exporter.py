"""labgrid-exporter, with a RawSerialPort that is unavailable while its path is missing (what udev gives a USBSerialPort).

labgrid 26's RawSerialPort is always available: its exporter never looks at
the path, so a vanished tty keeps its ser2net and its TCP port.  Real USB
UARTs are exported as USBSerialPort, whose availability follows udev: when the
device disappears the exporter stops ser2net, and when it comes back it starts
a new ser2net on a new free TCP port.  There is no udev for a pseudo-terminal,
so this wrapper adds exactly that one rule (available == the path exists) and
then runs labgrid's own exporter unchanged: same coordinator protocol, same
ser2net start/stop, same port allocation.
"""

from __future__ import annotations

import os

from labgrid.remote import exporter


class PathWatchingSerialPortExport(exporter.SerialPortExport):
    def poll(self):  # noqa: ANN201 - labgrid's signature
        self.local.avail = os.path.exists(self.local.port)
        return super().poll()


exporter.exports["RawSerialPort"] = PathWatchingSerialPortExport

if __name__ == "__main__":
    exporter.main()
