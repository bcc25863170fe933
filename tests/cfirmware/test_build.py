"""The C firmware builds for every stack and variant that applies, is cached, and says what is missing.

Nothing here is skipped: without a C compiler or a TLS library's headers a
build test fails with the apt-get line that fixes it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from cfwkit import ROOT, firmware
from devices.cfirmware import build as fwbuild

CELLS = [(s, v) for s in fwbuild.STACKS for v in fwbuild.VARIANTS if fwbuild.applies(s, v)]


@pytest.mark.parametrize("stack,variant", CELLS, ids=[f"{s}-{v}" for s, v in CELLS])
def test_every_variant_builds(stack: str, variant: str) -> None:
    binary = firmware(stack, variant)
    assert binary.is_file() and os.access(binary, os.X_OK)
    assert binary.name == "fw" and binary.parent.parent == fwbuild.cache_root()
    # the same inputs give the same cached binary, without compiling again
    assert fwbuild.build(stack, variant) == binary


def test_banner_names_stack_and_variant(tmp_path: Path) -> None:
    """The image says what it is at boot (the bench log shows it)."""
    from cfwkit import Fw

    with Fw(firmware("mbedtls", "no-crc"), tmp_path / "flash.bin", tmp_path / "none.pem") as fw:
        fw.expect(r"^\*\*\* Booting tlsfw v\S+ \(mbedtls 2\.\d+\.\d+, variant no-crc\) \*\*\*$")
        fw.expect(r"<err> tls: init failed: ")    # the CA file does not exist: said, not a crash
        fw.expect(r"<inf> main: ready$")


def test_ticket_only_is_mbedtls_only() -> None:
    with pytest.raises(fwbuild.BuildError, match="only for mbedtls"):
        fwbuild.build("wolfssl", "ticket-only")


def test_unknown_variant_names_the_known_ones() -> None:
    with pytest.raises(fwbuild.BuildError, match="known: correct, ram-only"):
        fwbuild.build("mbedtls", "torn-write")


def test_missing_compiler_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CC", "no-such-cc-for-this-test")
    with pytest.raises(fwbuild.BuildError, match=r"apt-get install gcc"):
        fwbuild.build("mbedtls", "correct", force=True)


@pytest.mark.parametrize("stack", list(fwbuild.STACKS))
def test_missing_headers_say_what_to_install(stack: str, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = fwbuild.STACKS[stack]
    broken = fwbuild.Stack(spec.name, spec.port, spec.define, spec.libs, "#include <no/such/header.h>\n",
                           spec.package)
    monkeypatch.setitem(fwbuild.STACKS, stack, broken)
    variant = "correct"
    with pytest.raises(fwbuild.BuildError, match=rf"apt-get install {spec.package}"):
        fwbuild.build(stack, variant, force=True)


def test_cache_follows_xdg_and_parallel_builds_agree(tmp_path: Path) -> None:
    """Two processes building the same image at once into an empty cache: one binary, no partial file."""
    env = dict(os.environ, XDG_CACHE_HOME=str(tmp_path / "cache"))
    cmd = [sys.executable, "-m", "devices.cfirmware", "build", "--stack", "mbedtls", "--variant", "correct"]
    procs = [subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    paths = {o[0].strip() for o in outs}
    assert len(paths) == 1, paths
    path = Path(paths.pop())
    assert path.is_relative_to(tmp_path / "cache" / "tls-resume-hil" / "cfirmware")
    assert [p.name for p in path.parent.iterdir()] == ["fw"]   # no temporary file left behind


def test_bench_wrapper_reports_a_build_failure(tmp_path: Path) -> None:
    """The bench command fails fast, with the reason on stderr, when the firmware cannot be built."""
    proc = subprocess.run([sys.executable, "-m", "devices.cfirmware", "bench", "--stack", "mbedtls",
                           "--variant", "torn-write", "--app", "mqtt", "--", "--workdir", str(tmp_path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert "build failed: unknown variant 'torn-write'" in proc.stderr
    assert proc.stdout == ""   # no 'ready' line: the harness reports the bench's start failure
