"""Entry point of the emulated firmware (one process = one power-on's RAM)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from .flash import Flash
from .rtc import Rtc
from .shell import Console, Firmware
from .variants import VARIANTS, get


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m devices.sim.firmware", description=__doc__)
    p.add_argument("--flash", required=True, type=Path, help="flash image file (created erased if absent)")
    p.add_argument("--variant", default="correct", choices=sorted(VARIANTS))
    p.add_argument("--ca", default="", help="PEM file of the CA the device trusts ('' = none provisioned)")
    p.add_argument("--reset-cause", default="power-on", choices=["power-on", "brown-out", "software"])
    p.add_argument("--state-fd", type=int, default=-1, help="fd for state words (boot/idle/radio/flash)")
    p.add_argument("--page-ms", type=float, default=15.0, help="flash page program time")
    p.add_argument("--erase-ms", type=float, default=20.0, help="flash slot erase time")
    p.add_argument("--rtc-file", type=Path, default=None,
                   help="battery-backed RTC offset file (default: <flash>.rtc)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s simfw[%(process)d] %(levelname)s %(name)s: %(message)s")
    variant = get(args.variant)
    console = Console(out_fd=1, state_fd=args.state_fd if args.state_fd >= 0 else None)
    fw = Firmware(
        variant=variant,
        flash=Flash(args.flash, page_ms=args.page_ms, erase_ms=args.erase_ms, check_crc=variant.atomic),
        rtc=Rtc(None if variant.uptime_clock else (args.rtc_file or args.flash.with_name(args.flash.name + ".rtc")),
                uptime=variant.uptime_clock),
        console=console,
        ca_file=Path(args.ca) if args.ca else None,
        reset_cause=args.reset_cause,
        reexec=["-m", "devices.sim.firmware"] + argv,
    )
    logging.getLogger(__name__).info("boot: variant=%s reset=%s", variant.name, args.reset_cause)
    # Non-blocking UART: input is polled with select, output to a port that
    # nobody drains is dropped instead of hanging the firmware (see Console).
    for fd in (0, 1):
        os.set_blocking(fd, False)
    fw.boot()
    fw.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
