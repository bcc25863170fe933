"""Build the C reference firmware (``devices/cfirmware/src``) for one stack and variant.

``build(stack, variant)`` compiles the sources with ``cc`` into a cache
directory keyed by everything that decides the binary: the source files,
the flags, the compiler (its path and ``--version``) and the TLS library's
headers (its version and configuration macros, so a library update
rebuilds).  The binary lands at
``$XDG_CACHE_HOME/tls-resume-hil/cfirmware/<key>/fw`` (``~/.cache`` when
XDG_CACHE_HOME is unset).  It is compiled to a temporary name in that
directory and renamed into place, so parallel runs never see half a binary
and never race: the last rename wins and both wrote the same file.

stdlib only: the bench wrapper runs this before the harness's own
dependencies matter.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

SRC = Path(__file__).resolve().parent / "src"

#: sources every build compiles; the stack's port is added per stack
CORE_SOURCES = ("main.c", "store.c", "console.c", "app.c", "port_posix.c", "net_posix.c")
CFLAGS = ("-std=gnu11", "-Wall", "-Wextra", "-Werror", "-O2")


@dataclass(frozen=True)
class Stack:
    name: str
    port: str              # the tls_port.h implementation
    define: str
    libs: tuple[str, ...]
    probe: str             # what the preflight preprocesses: the headers must exist
    package: str           # Debian/Ubuntu package with headers and link libraries


STACKS = {
    "mbedtls": Stack("mbedtls", "tls_mbedtls.c", "FW_STACK_MBEDTLS", ("-lmbedtls", "-lmbedx509", "-lmbedcrypto"),
                     "#include <mbedtls/version.h>\n#include <mbedtls/ssl.h>\n", "libmbedtls-dev"),
    "wolfssl": Stack("wolfssl", "tls_wolfssl.c", "FW_STACK_WOLFSSL", ("-lwolfssl",),
                     "#include <wolfssl/options.h>\n#include <wolfssl/version.h>\n#include <wolfssl/ssl.h>\n",
                     "libwolfssl-dev"),
}

#: variant name -> what it is (the -D flag is derived from the name)
VARIANTS = {
    "correct": "A/B slots, CRC, fallback, store after the application exchange, battery-backed RTC",
    "ram-only": "the session is kept in a RAM variable only: lost at power loss",
    "no-fallback": "a refused stored session makes the connect fail instead of a full handshake",
    "no-crc": "A/B slots, but boot does not check the CRC: a torn or flipped record is offered",
    "single-slot": "one slot erased and rewritten in place: a cut during the write loses the session",
    "ticket-only": "Mbed TLS: only the ticket and lifetime are stored, not the master secret",
    "early-store": "stores right after the handshake, before TLS 1.3 tickets arrive",
    "uptime-clock": "no RTC, but ticket ages come from uptime as if it were one",
    "no-rtc": "no RTC, handled correctly: no lifetime check on the device, the server decides",
}
#: variants that only make sense on some stacks
ONLY_ON = {"ticket-only": ("mbedtls",)}


class BuildError(Exception):
    """The firmware cannot be built; the message says what to do."""


def applies(stack: str, variant: str) -> bool:
    return stack in ONLY_ON.get(variant, tuple(STACKS))


def variant_define(variant: str) -> str:
    return "FW_VARIANT_" + variant.upper().replace("-", "_")


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "tls-resume-hil" / "cfirmware"


def _compiler() -> str:
    cc = os.environ.get("CC", "cc")
    path = shutil.which(cc)
    if path is None:
        raise BuildError(f"no C compiler: '{cc}' is not on the PATH; install one with "
                         "`apt-get install gcc` (the C firmware also needs `libmbedtls-dev` or `libwolfssl-dev`)")
    return path


def _run(argv: list[str], stdin: str | None = None) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=300)
    except OSError as exc:
        raise BuildError(f"cannot run {argv[0]}: {exc}") from None
    except subprocess.TimeoutExpired:
        raise BuildError(f"{' '.join(argv[:3])} ... did not finish within 300 s") from None


def _library_fingerprint(cc: str, stack: Stack) -> str:
    """The stack's configuration macros as the compiler sees them; a clear error if the headers are missing."""
    r = _run([cc, "-E", "-dM", "-x", "c", "-"], stdin=stack.probe)
    if r.returncode != 0:
        first = next((ln for ln in r.stderr.splitlines() if "error" in ln), r.stderr.strip()[:200])
        raise BuildError(f"{stack.name} headers not found ({first.strip()}); install them with "
                         f"`apt-get install {stack.package}`")
    return hashlib.sha256(r.stdout.encode()).hexdigest()


def sources(stack: str) -> list[Path]:
    return [SRC / name for name in CORE_SOURCES + (STACKS[stack].port,)]


def build(stack: str, variant: str, force: bool = False) -> Path:
    """Compile (or reuse) the firmware for ``stack`` and ``variant``; return the binary's path."""
    if stack not in STACKS:
        raise BuildError(f"unknown stack {stack!r} (known: {', '.join(STACKS)})")
    if variant not in VARIANTS:
        raise BuildError(f"unknown variant {variant!r} for the C firmware (known: {', '.join(VARIANTS)})")
    if not applies(stack, variant):
        raise BuildError(f"variant {variant!r} exists only for {', '.join(ONLY_ON[variant])}, not {stack}")
    spec = STACKS[stack]
    files = sources(stack)
    missing = [f for f in files if not f.exists()]
    if missing:
        raise BuildError(f"source file missing: {', '.join(str(f) for f in missing)}"
                         + (" (the wolfSSL port is written separately)" if spec.port in {f.name for f in missing}
                            else ""))
    cc = _compiler()
    version = _run([cc, "--version"]).stdout
    flags = list(CFLAGS) + [f"-D{spec.define}", f"-D{variant_define(variant)}"]
    libs = list(spec.libs) + ["-lm"]

    key = hashlib.sha256()
    for part in (cc, version, " ".join(flags), " ".join(libs), _library_fingerprint(cc, spec)):
        key.update(part.encode() + b"\0")
    for f in sorted(set(files) | set(SRC.glob("*.h"))):
        key.update(f.name.encode() + b"\0" + f.read_bytes() + b"\0")
    out_dir = cache_root() / key.hexdigest()[:24]
    binary = out_dir / "fw"
    if binary.exists() and not force:
        return binary
    out_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".fw-", dir=out_dir)
    os.close(fd)
    try:
        r = _run([cc, *flags, "-I", str(SRC), *map(str, files), *libs, "-o", tmp])
        if r.returncode != 0:
            text = r.stderr.strip()
            for lib in spec.libs:
                if f"cannot find {lib}" in text:
                    raise BuildError(f"the {stack} library is not installed ({lib} not found); install it with "
                                     f"`apt-get install {spec.package}`")
            raise BuildError(f"compiling the C firmware ({stack}, {variant}) failed:\n{text[-4000:]}")
        os.chmod(tmp, 0o755)
        os.replace(tmp, binary)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return binary
