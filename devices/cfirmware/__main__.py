"""``python -m devices.cfirmware``: build the C firmware, or run the simulated bench with it.

    python -m devices.cfirmware build --stack mbedtls --variant correct
        prints the path of the binary (built or reused from the cache)

    python -m devices.cfirmware bench --stack mbedtls --variant correct --app mqtt -- <args for python -m devices.sim>
        builds (or reuses) the binary, then replaces itself (os.execv, same
        pid: the harness holds this process's handle) with
        ``python -m devices.sim <args> --variant NAME --firmware "<binary> ..."``

A build failure ends with the reason on stderr and exit status 1 (the
harness shows the bench log's tail when the bench does not come up).
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys

from .build import STACKS, VARIANTS, BuildError, build

#: the bench fills these placeholders at every power-up (devices/sim/power.py)
FIRMWARE_ARGS = ("--flash {flash} --reset-cause {reset_cause} --state-fd {state_fd} --ca {ca} "
                 "--page-ms {page_ms}")
APPS = ("mqtt", "http")


def firmware_template(binary: str, app: str) -> str:
    return f"{shlex.quote(binary)} {FIRMWARE_ARGS} --app {app}"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    sim_args: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, sim_args = argv[:cut], argv[cut + 1:]
    p = argparse.ArgumentParser(prog="python -m devices.cfirmware", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    for name, text in (("build", "build (or reuse) the firmware and print its path"),
                       ("bench", "run the simulated bench with this firmware (args after --)")):
        s = sub.add_parser(name, help=text)
        s.add_argument("--stack", choices=sorted(STACKS), default="mbedtls")
        s.add_argument("--variant", default="correct", help="one of: " + ", ".join(VARIANTS))
        if name == "build":
            s.add_argument("--force", action="store_true", help="rebuild even when cached")
        else:
            s.add_argument("--app", choices=APPS, default="mqtt")
    a = p.parse_args(argv)
    if a.command == "build" and sim_args:
        p.error("build takes no arguments after --")
    try:
        binary = build(a.stack, a.variant, force=getattr(a, "force", False))
    except BuildError as exc:
        print(f"cfirmware: build failed: {exc}", file=sys.stderr, flush=True)
        return 1
    if a.command == "build":
        print(binary)
        return 0
    cmd = [sys.executable, "-m", "devices.sim", *sim_args, "--variant", a.variant,
           "--firmware", firmware_template(str(binary), a.app)]
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, cmd)
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main())
