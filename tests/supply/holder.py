"""A test process that holds the supply ON until something happens to it.

Run by the safe-state tests: ``python holder.py RESOURCE MODE LOG [VISA_LIBRARY]``.  Prints
``on`` once the output is on (with the watchdog armed), then:

- ``hold``: sleeps until a signal ends it (SIGINT unwinds the ``with``;
  SIGTERM and SIGKILL kill it outright, leaving the job to the watchdog);
- ``raise``: raises inside the ``with`` block;
- ``leak``: raises with the supply opened outside any ``with``, so nothing
  in this process applies the safe state: only the watchdog can.
"""

from __future__ import annotations

import signal
import sys
import time
from pathlib import Path

from harness.supply import Supply


def main() -> None:
    # Behave like a test run at a terminal, where Ctrl-C raises
    # KeyboardInterrupt: a shell that started this test run in the background
    # (as CI runners do) leaves SIGINT ignored, and children inherit that.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    resource, mode, log_path = sys.argv[1], sys.argv[2], Path(sys.argv[3])
    library = sys.argv[4] if len(sys.argv) > 4 else "@py"
    if mode == "leak":
        supply = Supply(resource, "keysight-e36300", log_path=log_path,
                        visa_library=library).open()
        supply.configure(voltage=3.3, current_limit=0.5)
        supply.on(settle=False)
        print("on", flush=True)
        time.sleep(0.2)
        raise RuntimeError("test process crashed while holding the supply")
    with Supply(resource, "keysight-e36300", log_path=log_path, visa_library=library) as supply:
        supply.configure(voltage=3.3, current_limit=0.5)
        supply.on(settle=False)
        print("on", flush=True)
        if mode == "raise":
            time.sleep(0.2)
            raise RuntimeError("scenario failed while the supply was on")
        time.sleep(60)


if __name__ == "__main__":
    main()
