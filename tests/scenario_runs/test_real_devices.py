"""Devices the harness was not written for, driven through a device file alone (issue 9).

Each personality of the simulated firmware has the habits of a real one: an
application protocol after the handshake (none and holding the connection,
line, HTTP, MQTT, a server greeting), an ESP-IDF-style console (prompt then
answer without echo, colour codes, mixed line endings), a shell that spells
TLS versions "1.2"/"1.3", a TLS 1.2-only stack, and no shell at all.  Every
one runs the real scenario files in a child pytest, exactly as a user would
(``pytest --device devices/sim-....yaml``), and is judged by its verdict
code: the correct firmware resumes, the RAM-only variant fails with
``nothing-offered`` on the same personality, so a pass is never an
artefact of the device's habits.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from scenario_suite import ROOT, Outcome, run_suite

SCEN = "scenarios/"
RESUME = SCEN + "resume_after_power_loss.yaml"
SOFT = SCEN + "soft_reconnect_and_power_loss.yaml"
#: personality device file -> what it proves
PERSONALITIES = {
    "sim.yaml": "line protocol (the default)",
    "sim-app-none.yaml": "protocol none, the device holds the connection 30 s",
    "sim-app-http.yaml": "HTTP/1.1",
    "sim-app-mqtt.yaml": "MQTT 3.1.1",
    "sim-app-greeting.yaml": "the server speaks first",
    "sim-shell-espidf.yaml": "no echo, prompt then answer, colour codes, mixed line endings",
    "sim-version-tokens.yaml": "version words 1.2 / 1.3",
}


def verdict_code(run_root: Path, test: str) -> str:
    """The code of the last verdict a passed scenario left in its run directory."""
    folder = run_root / re.sub(r"[^\w.-]+", "_", test).strip("_")
    text = (folder / "timeline.txt").read_text()
    codes = re.findall(r"PASS \[([a-z-]+)\]", text)
    assert codes, text[-2000:]
    return codes[-1]


def code_of(result: Outcome) -> str:
    found = re.search(r"FAIL \[([a-z-]+)\]", result.message)
    return found.group(1) if found else result.outcome


def _both(device: str, tmp: Path) -> tuple[dict[str, Outcome], Path, dict[str, Outcome], str]:
    good, proc = run_suite(tmp / "correct", "--device", f"devices/{device}", RESUME, SOFT)
    bad, _ = run_suite(tmp / "ram-only", "--device", f"devices/{device}", "--sim-variant", "ram-only", RESUME)
    return good, tmp / "correct" / "runs", bad, proc.stdout


def test_every_personality_resumes_and_ram_only_is_caught(tmp_path: Path) -> None:
    with ThreadPoolExecutor(max_workers=3) as pool:
        futures = {d: pool.submit(_both, d, tmp_path / Path(d).stem) for d in PERSONALITIES}
        runs = {d: f.result() for d, f in futures.items()}
    problems = []
    for device, (good, runs_dir, bad, out) in runs.items():
        want = {f"{name}[{v}]" for name in ("resume_after_power_loss", "soft_reconnect_and_power_loss")
                for v in ("tls1.2", "tls1.3")}
        if set(good) != want:
            problems.append(f"{device}: ran {sorted(good)}\n{out[-2000:]}")
            continue
        for test, result in good.items():
            if result.outcome != "passed":
                problems.append(f"{device} ({PERSONALITIES[device]}) / {test}: {result.message[:600]}")
            elif verdict_code(runs_dir, test) != "resumed":
                problems.append(f"{device} / {test}: last verdict {verdict_code(runs_dir, test)}")
        for test, result in bad.items():
            if code_of(result) != "nothing-offered":
                problems.append(f"{device} ram-only / {test}: expected nothing-offered, got {code_of(result)}: "
                                f"{result.message[:400]}")
        if len(bad) != 2:
            problems.append(f"{device} ram-only: ran {sorted(bad)}")
    assert not problems, "\n".join(problems)


def test_the_held_connection_and_the_application_were_seen(tmp_path: Path) -> None:
    """Protocol none holding 30 s and MQTT: the server saw the application, and no error on any handshake."""
    for device, needle in (("sim-app-none.yaml", None), ("sim-app-mqtt.yaml", "mqtt CONNECT client_id=")):
        results, proc = run_suite(tmp_path / device, "--device", f"devices/{device}", RESUME, "-k", "tls1.3")
        assert [r.outcome for r in results.values()] == ["passed"], proc.stdout[-3000:]
        records = [json.loads(line) for line in
                   (tmp_path / device / "runs" / "handshakes.jsonl").read_text().splitlines()]
        completed = [r for r in records if r["version"]]
        assert len(completed) >= 2 and all(r["error"] is None for r in records), records
        if needle:
            assert any(needle in entry for r in completed for entry in r["app"]), records
        else:
            # The device held each connection (30 s) until power was cut under
            # it: the connection ended only after the supply switched off, and
            # the handshake counted long before that.
            assert all(r["protocol"] == "none" for r in completed)
            edges = [json.loads(line) for line in
                     (tmp_path / device / "runs" / "supply.jsonl").read_text().splitlines()]
            downs = [e["mono"] for e in edges if e["kind"] in ("off", "safe")]
            for r in completed:
                assert r["app_end"] == "client closed the TCP connection", r
                assert any(r["mono"] < t <= r["closed_mono"] for t in downs), (r, downs)


def test_device_without_a_shell(tmp_path: Path) -> None:
    results, proc = run_suite(tmp_path / "ok", "--device", "devices/sim-autoconnect.yaml", RESUME, SOFT,
                              SCEN + "ticket_expired_during_power_off.yaml")
    for v in ("tls1.2", "tls1.3"):
        r = results[f"resume_after_power_loss[{v}]"]
        assert r.outcome == "passed", r.message + proc.stdout[-3000:]
        assert verdict_code(tmp_path / "ok" / "runs", f"resume_after_power_loss[{v}]") == "resumed"
        skipped = results[f"soft_reconnect_and_power_loss[{v}]"]
        assert skipped.outcome == "skipped", skipped
        assert "reconnects without a power cycle" in skipped.message and "sim-autoconnect.yaml" in skipped.message
        clock = results[f"ticket_expired_during_power_off[{v}]"]
        assert clock.outcome == "skipped" and "sends a shell command" in clock.message, clock
    bad, proc = run_suite(tmp_path / "bad", "--device", "devices/sim-autoconnect.yaml", "--sim-variant", "ram-only",
                          RESUME)
    assert {code_of(r) for r in bad.values()} == {"nothing-offered"}, proc.stdout[-3000:]


def test_version_truth(tmp_path: Path) -> None:
    """A TLS 1.2-only stack: skipped where declared, never passed where the device file lies."""
    honest, proc = run_suite(tmp_path / "honest", "--device", "devices/sim-tls12-only.yaml", RESUME)
    assert honest["resume_after_power_loss[tls1.2]"].outcome == "passed", proc.stdout[-3000:]
    skipped = honest["resume_after_power_loss[tls1.3]"]
    assert skipped.outcome == "skipped", skipped
    assert "needs tls1.3" in skipped.message and "sim-tls12-only.yaml declares firmware.versions: [tls1.2]" \
        in skipped.message, skipped.message

    # The same firmware, but the device file claims TLS 1.3: the [tls1.3]
    # cells must fail with their own code, never pass on a TLS 1.2 handshake.
    lying = tmp_path / "lying.yaml"
    lying.write_text((ROOT / "devices" / "sim-tls12-only.yaml").read_text()
                     .replace("  versions: [tls1.2]", "  versions: [tls1.2, tls1.3]"))
    results, proc = run_suite(tmp_path / "lying", "--device", str(lying), RESUME, SOFT)
    for name in ("resume_after_power_loss[tls1.3]", "soft_reconnect_and_power_loss[tls1.3]"):
        assert code_of(results[name]) == "wrong-version", results[name].message + proc.stdout[-2000:]
        assert "offered only TLSv1.2" in results[name].message, results[name].message
    assert results["resume_after_power_loss[tls1.2]"].outcome == "passed"


def test_version_words_reach_a_shell_that_spells_them_differently(tmp_path: Path) -> None:
    """Without version_tokens, the shell would get "tls1.3", not know it and negotiate on its own:
    the server is pinned to the cell's version, so the cell can only pass on that version."""
    plain = tmp_path / "no-tokens.yaml"
    text = (ROOT / "devices" / "sim-version-tokens.yaml").read_text()
    assert '  version_tokens: {tls1.2: "1.2", tls1.3: "1.3", auto: ""}\n' in text
    plain.write_text(text.replace('  version_tokens: {tls1.2: "1.2", tls1.3: "1.3", auto: ""}\n', ""))
    results, proc = run_suite(tmp_path / "run", "--device", str(plain), RESUME)
    by_test = {name: r.outcome for name, r in results.items()}
    assert by_test == {"resume_after_power_loss[tls1.2]": "passed", "resume_after_power_loss[tls1.3]": "passed"}, \
        proc.stdout[-3000:]
    # Each cell's handshakes are in its own version: the server was pinned.
    for cell, version in (("resume_after_power_loss_tls1.2", "TLSv1.2"), ("resume_after_power_loss_tls1.3", "TLSv1.3")):
        cell_records = [json.loads(line) for line in
                        (tmp_path / "run" / "runs" / cell / "handshakes.jsonl").read_text().splitlines()]
        assert cell_records and {r["version"] for r in cell_records} == {version}, cell_records


def test_slow_flash_write_sweep(tmp_path: Path) -> None:
    """The power-cut sweep follows this device's own write time: four times slower than the default."""
    slow = tmp_path / "slow.yaml"
    slow.write_text((ROOT / "devices" / "sim.yaml").read_text()
                    .replace('"--set", "ca={server_ca}"]', '"--set", "ca={server_ca}", "--set", "page_ms=60"]'))
    assert "page_ms=60" in slow.read_text()
    results, proc = run_suite(tmp_path, "--device", str(slow), SCEN + "power_cut_during_session_write.yaml")
    assert len(results) == 13 and all(r.outcome == "passed" for r in results.values()), proc.stdout[-3000:]
    timelines = "".join(p.read_text() for p in (tmp_path / "runs").rglob("timeline.txt"))
    writes = [float(ms) for ms in re.findall(r"measured session write: ([\d.]+) ms", timelines)]
    assert len(writes) == 13 and min(writes) > 300, writes   # 6+ pages x 60 ms, not the default ~110 ms


def test_lab_repository_outside_this_one(tmp_path: Path) -> None:
    """A lab keeps its device and scenario files in its own repository, with no conftest of its own."""
    lab = tmp_path / "lab"
    (lab / "scenarios").mkdir(parents=True)
    shutil.copy(ROOT / "devices" / "sim.yaml", lab / "bench3.yaml")
    shutil.copy(ROOT / RESUME, lab / "scenarios" / "resume_after_power_loss.yaml")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    # `--device PATH` with a space, absolute paths, run from an unrelated folder:
    # the installed plugin (pytest11 entry point) does the rest.
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--device", str(lab / "bench3.yaml"),
           str(lab / "scenarios") + "/", "--run-dir", str(tmp_path / "runs"), "-k", "tls1.3"]
    proc = subprocess.run(cmd, cwd=elsewhere, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "1 passed" in proc.stdout and "TLS resumption bench summary" in proc.stdout
    assert not (elsewhere / "conftest.py").exists() and not (lab / "conftest.py").exists()
    # The shipped catalog by name, from the same unrelated folder.
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--device", str(lab / "bench3.yaml"),
           "--catalog", "-k", "first_boot_full_handshake and tls1.2", "--run-dir", str(tmp_path / "runs2")]
    proc = subprocess.run(cmd, cwd=elsewhere, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0 and "1 passed" in proc.stdout, proc.stdout[-3000:] + proc.stderr[-2000:]


@pytest.mark.parametrize("spelling", ["space", "equals"])
def test_device_option_spellings(tmp_path: Path, spelling: str) -> None:
    """`--device PATH` and `--device=PATH` both reach the plugin, whatever the path.

    The file is broken on purpose (channel 0): the plugin reading *this* file
    is proven by its error naming the file, line and key, from another folder.
    """
    outside = tmp_path / "somewhere" / "my bench.yaml"
    outside.parent.mkdir()
    outside.write_text((ROOT / "devices" / "sim.yaml").read_text().replace("  channel: 1\n", "  channel: 0\n"))
    args = ["--device", str(outside)] if spelling == "space" else [f"--device={outside}"]
    proc = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", *args,
                           str(ROOT / SCEN / "first_boot_full_handshake.yaml")], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 4, out
    assert f"device file error: {outside}:" in out and "supply.channel: channel numbers start at 1" in out, out
    assert "unrecognized arguments" not in out
