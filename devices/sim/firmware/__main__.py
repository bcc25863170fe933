"""Entry point of the emulated firmware (one process = one power-on's RAM).

Options fall in three groups: the bench's wiring (``--flash``, ``--ca``,
``--reset-cause``, ``--state-fd``, flash timing), the deliberate bug
(``--variant``) and the *personality* (the habits of a real firmware: what
it speaks after the handshake, how its console looks, how it spells TLS
versions, whether it has a shell at all).  Every personality option
defaults to the emulated firmware as it always behaved, so the shipped
device file ``devices/sim.yaml`` keeps matching.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import sys
from pathlib import Path

from .appproto import APPS
from .flash import Flash
from .personality import DEFAULT_TOKENS, Personality, Target, parse_tokens, parse_versions
from .rtc import Rtc
from .shell import Firmware, UartOut
from .style import EOLS, LOG_FORMATS, SHELLS, Style
from .variants import VARIANTS, get


def parse(argv: list[str]) -> tuple[argparse.Namespace, Personality]:
    """The options, and the Personality they describe (a bad value is a usage error, exit 2)."""
    p = argparse.ArgumentParser(prog="python -m devices.sim.firmware", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--flash", required=True, type=Path, help="flash image file (created erased if absent)")
    p.add_argument("--variant", default="correct", choices=sorted(VARIANTS))
    p.add_argument("--ca", default="", help="PEM file of the CA the device trusts ('' = none provisioned)")
    p.add_argument("--reset-cause", default="power-on", choices=["power-on", "brown-out", "software"])
    p.add_argument("--state-fd", type=int, default=-1, help="fd for state words (boot/idle/radio/flash)")
    p.add_argument("--page-ms", type=float, default=15.0, help="flash page program time")
    p.add_argument("--erase-ms", type=float, default=20.0, help="flash slot erase time")
    p.add_argument("--rtc-file", type=Path, default=None,
                   help="battery-backed RTC offset file (default: <flash>.rtc)")
    g = p.add_argument_group("personality (defaults = the emulated firmware as it always was)")
    g.add_argument("--app", default="line", choices=APPS,
                   help="protocol after the handshake (default: line = send 'simfw hello', read the echo)")
    g.add_argument("--hold", type=float, default=0.0, metavar="SECONDS",
                   help="keep the connection open this long after the exchange, in the background (default 0)")
    g.add_argument("--shell", default="sim", choices=SHELLS,
                   help="sim: echo, prompt after each line; plain: no echo, answer follows the prompt")
    g.add_argument("--prompt", default="sim> ", help="prompt text (default 'sim> ')")
    g.add_argument("--color", action="store_true", help="ANSI colours and erase-line codes, as ESP-IDF/Zephyr")
    g.add_argument("--eol", default="crlf", choices=sorted(EOLS), help="output line end (mixed cycles CRLF, LF, CR)")
    g.add_argument("--log-format", default="sim", choices=LOG_FORMATS,
                   help="sim: bare text; espidf: 'I (ms) fw: text'; zephyr: '[hh:mm:ss.mmm,uuu] <inf> fw: text'")
    g.add_argument("--version-tokens", default=None, metavar="SPEC",
                   help=f"words of the connect command's version argument, VERSION=WORD,... "
                        f"(default {DEFAULT_TOKENS!r}; an empty WORD means the word may be omitted)")
    g.add_argument("--unknown-version", default=None, choices=["reject", "auto"],
                   help="a version word not in the tokens: reject (connect failed) or silently auto "
                        "(default: reject, but auto when --version-tokens is given)")
    g.add_argument("--versions", default="tls1.2,tls1.3",
                   help="TLS versions the stack supports (default tls1.2,tls1.3); asked for another, "
                        "it offers these")
    g.add_argument("--autoconnect", default="", metavar="HOST:PORT[:SERVERNAME]",
                   help="no shell: connect by itself after boot (version auto), ignore all input "
                        "('' = off, the default)")
    g.add_argument("--autoconnect-retry", type=float, default=0.0, metavar="SECONDS",
                   help="with --autoconnect: connect again this long after each connection ends (0 = never)")
    g.add_argument("--client-id", default="",
                   help="MQTT client id (default simfw-<hash of the flash path>, stable per device)")
    args = p.parse_args(argv)
    try:
        tokens = parse_tokens(args.version_tokens if args.version_tokens is not None else DEFAULT_TOKENS)
        unknown = args.unknown_version or ("auto" if args.version_tokens is not None else "reject")
        target = Target.parse(args.autoconnect) if args.autoconnect else None
        client_id = args.client_id or \
            "simfw-" + hashlib.sha256(str(args.flash.resolve()).encode()).hexdigest()[:8]
        persona = Personality(app=args.app, hold_s=args.hold, tokens=tokens, unknown_version=unknown,
                              versions=parse_versions(args.versions), autoconnect=target,
                              autoconnect_retry_s=args.autoconnect_retry, client_id=client_id)
    except ValueError as exc:
        p.error(str(exc))
    return args, persona


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args, persona = parse(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s simfw[%(process)d] %(levelname)s %(name)s: %(message)s")
    variant = get(args.variant)
    style = Style(shell=args.shell, prompt=args.prompt, color=args.color, eol=args.eol, log_format=args.log_format)
    console = UartOut(out_fd=1, state_fd=args.state_fd if args.state_fd >= 0 else None, style=style)
    fw = Firmware(
        variant=variant,
        flash=Flash(args.flash, page_ms=args.page_ms, erase_ms=args.erase_ms, check_crc=variant.atomic),
        rtc=Rtc(None if variant.uptime_clock else (args.rtc_file or args.flash.with_name(args.flash.name + ".rtc")),
                uptime=variant.uptime_clock),
        console=console,
        ca_file=Path(args.ca) if args.ca else None,
        reset_cause=args.reset_cause,
        personality=persona,
        reexec=["-m", "devices.sim.firmware"] + argv,
    )
    logging.getLogger(__name__).info("boot: variant=%s reset=%s personality=%s", variant.name,
                                     args.reset_cause, persona)
    # Non-blocking UART: input is polled with select, output to a port that
    # nobody drains is dropped instead of hanging the firmware (see UartOut).
    for fd in (0, 1):
        os.set_blocking(fd, False)
    fw.boot()
    fw.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
