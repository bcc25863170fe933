"""Hand-made run directories for the report's tests: small, known, and built from the real record types.

Why by hand: the report reads files, so a test that writes the files it
wants (a failure, a resumption with its issuer, a run without rail.jsonl,
a bench error) checks every rule in a second, where a bench run would take
minutes and could not choose its own failures.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from harness.server.records import HandshakeRecord, Offered

T0 = 1000.0      # scenario start on the harness clock
#: a marker that must never reach a report: stands for a session secret or a key on disk next to the run
SECRET = "SECRET-MASTER-KEY-5f3a9c"


def record(id: int, mono: float, *, resumed: bool = False, resumed_from: int | None = None,
           issued: list[str] | None = None, ticket: str | None = None, rejected: str | None = None,
           version: str = "TLSv1.2", nbytes: int = 1900) -> dict[str, Any]:
    rec = HandshakeRecord(id=id, mono=mono, time="2026-11-30T01:00:00.000+00:00", peer="127.0.0.1:5000",
                          version=version, cipher="TLS_AES_128_GCM_SHA256", resumed=resumed,
                          mechanism="ticket" if resumed else "full", offered=Offered(ticket=ticket),
                          issued=list(issued or []), resumed_from=resumed_from, rejected=rejected,
                          bytes_in=nbytes // 3, bytes_out=nbytes - nbytes // 3, duration_ms=40.0 if not resumed
                          else 25.0)
    return rec.to_dict()


def _jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def _console(path: Path, lines: list[tuple[float, str]]) -> None:
    path.write_text("".join(f"2026-11-30T01:00:00.000+00:00 {mono:.6f} {text}\n" for mono, text in lines),
                    encoding="utf-8")


def scenario(root: Path, name: str, nodeid: str, *, outcome: str, verdict: str, records: list[dict[str, Any]],
             events: bool = True, rail: bool = True, extra: dict[str, Any] | None = None,
             console: list[tuple[float, str]] | None = None) -> Path:
    """One scenario run directory, as write_run_dir leaves it (events.jsonl and rail.jsonl optional)."""
    d = root / name
    d.mkdir(parents=True)
    full = [r for r in records if not r["resumed"]]
    resumed = [r for r in records if r["resumed"]]
    size = lambda r: r["bytes_in"] + r["bytes_out"]  # noqa: E731
    result = {"nodeid": nodeid, "outcome": outcome, "duration_s": 2.0, "handshakes": len(records),
              "full": len(full), "resumed": len(resumed), "full_bytes": [size(r) for r in full],
              "resumed_bytes": [size(r) for r in resumed], "full_ms": [r["duration_ms"] for r in full],
              "resumed_ms": [r["duration_ms"] for r in resumed], "verdict": verdict.splitlines()[0],
              "run_dir": str(d), "full_reasons": {"nothing offered": len(full)} if full else {},
              "failed_handshakes": 0,
              "by_version": {"TLSv1.2": {"full_bytes": [size(r) for r in full],
                                         "resumed_bytes": [size(r) for r in resumed],
                                         "full_ms": [r["duration_ms"] for r in full],
                                         "resumed_ms": [r["duration_ms"] for r in resumed]}},
              **(extra or {})}
    (d / "result.json").write_text(json.dumps(result, indent=2), encoding="utf-8")
    _jsonl(d / "handshakes.jsonl", records)
    _console(d / "console.log", console or [(T0 + 0.30, "reset cause: power-on"), (T0 + 0.31, "ready"),
                                             (T0 + 0.50, "flash: writing slot A seq 1 (6 pages)"),
                                             (T0 + 0.60, "session stored")])
    _jsonl(d / "supply.jsonl", [
        {"kind": "on", "mono": T0 + 0.001, "volts": 3.3, "amps": None},
        {"kind": "measure", "mono": T0 + 0.002, "volts": 3.3, "amps": 0.02},
        {"kind": "off", "mono": T0 + 0.8, "volts": None, "amps": None},
        {"kind": "measure", "mono": T0 + 0.9, "volts": 1.1, "amps": 0.0},
        {"kind": "discharged", "mono": T0 + 1.0, "volts": 0.28, "amps": None, "detail": "0.2 s after off"},
        {"kind": "on", "mono": T0 + 1.1, "volts": 3.3, "amps": None}])
    (d / "timeline.txt").write_text(f"# {nodeid}: {outcome}\n# start x\n01:00:00.000     0.000  step    power_on\n"
                                    f"\n{verdict}\n", encoding="utf-8")
    if events:
        _jsonl(d / "events.jsonl", [
            {"type": "scenario", "nodeid": nodeid, "start": T0, "end": T0 + 2.0},
            {"type": "limits", "voltage": 3.3, "brownout_threshold": 2.5, "discharge_below": 0.3},
            {"type": "step", "mono": T0, "text": "power_on"},
            {"type": "boot", "mono": T0 + 0.31, "cause": "power-on", "line": "reset cause: power-on"},
            {"type": "session_write", "mono": T0 + 0.5, "text": "flash: writing slot A seq 1 (6 pages)",
             "bytes": None, "kind": "flash_write"},
            {"type": "cut", "off_mono": T0 + 0.8, "on_mono": T0 + 1.1, "volts_before_on": 0.2, "kind": "off",
             "verified": True}])
    if rail:
        _jsonl(d / "rail.jsonl", [{"mono": T0 + i / 100, "volts": 3.3 if i < 80 or i > 110 else 0.2,
                                   "amps": 0.02 if i < 80 or i > 110 else 0.0} for i in range(200)])
    return d


def make_run(root: Path) -> Path:
    """A run of four scenarios and the energy cells:

    * ``resume[tls1.2]`` passed: #1 full issued t1, #2 resumed from #1 (arrow 1 -> 2); rail.jsonl present;
    * ``corrupted[tls1.2-1]`` failed [refused]: #3 issued t3, #4 offered t3 and was refused (grey arrow 3 -> 4);
      no rail.jsonl, no events.jsonl (a run older than both);
    * ``cut[0.1]`` failed [nothing-offered], with a console line that tries to end the page's script;
    * ``resume[tls1.3]`` a bench error (the lead's result.json fields: code, kind, attempts).
    """
    root.mkdir(parents=True, exist_ok=True)
    scenario(root, "resume_after_power_loss_tls1.2", "scenarios/resume_after_power_loss.yaml::"
             "resume_after_power_loss[tls1.2]", outcome="passed", verdict="PASS [resumed]: handshake #2 resumed #1",
             records=[record(1, T0 + 0.45, issued=["t1aaaaaaaaaa"]),
                      record(2, T0 + 1.5, resumed=True, resumed_from=1, ticket="t1aaaaaaaaaa", nbytes=700)])
    scenario(root, "corrupted_session_record_tls1.2-1", "scenarios/corrupted_session_record.yaml::"
             "corrupted_session_record[tls1.2-1]", outcome="failed",
             verdict="corrupted_session_record.yaml:25: FAIL [refused]: handshake #4 offered t3 refused: expired\n"
                     "most likely cause: the firmware offered a stored session where it must not",
             records=[record(3, T0 + 0.45, issued=["t3bbbbbbbbbb"]),
                      record(4, T0 + 1.5, ticket="t3bbbbbbbbbb", rejected="expired")],
             events=False, rail=False)
    scenario(root, "power_cut_during_session_write_0.1", "scenarios/power_cut_during_session_write.yaml::"
             "power_cut_during_session_write[0.1]", outcome="failed",
             verdict="x.yaml:9: FAIL [nothing-offered]: the device offered no session",
             records=[record(5, T0 + 0.45, issued=["t5cccccccccc"]), record(6, T0 + 1.5)],
             console=[(T0 + 0.3, "</script><script>window.injected = 1;</script> <b>bold</b>"),
                      (T0 + 0.4, "ready")])
    scenario(root, "resume_after_power_loss_tls1.3", "scenarios/resume_after_power_loss.yaml::"
             "resume_after_power_loss[tls1.3]", outcome="error",
             verdict="BENCH ERROR [supply-unreachable]: supply: connection refused", records=[],
             events=False, rail=False,
             extra={"code": "supply-unreachable", "kind": "bench-error",
                    "attempts": [{"attempt": 1, "code": "supply-unreachable", "detail": "connection refused"}]})
    for version, full_mc, resumed_mc in (("tls1.2", 30.0, 12.0), ("tls1.3", 28.0, 10.0)):
        d = root / f"test_energy_per_handshake_{version}"
        d.mkdir()
        (d / "energy.json").write_text(json.dumps({
            "version": version, "negotiated": version, "idle_A": 0.02, "ok": True,
            "full": {"charge_mC": full_mc, "peak_A": 0.2, "seconds": 0.5, "samples": 400, "interval_ms": 1.2,
                     "handshake": 10},
            "resumed": {"charge_mC": resumed_mc, "peak_A": 0.2, "seconds": 0.2, "samples": 160,
                        "interval_ms": 1.2, "handshake": 11, "resumed_from": 10},
            "saved": {"charge_mC": full_mc - resumed_mc, "seconds": 0.3}}), encoding="utf-8")
    # What must never reach the page: files beside the run that hold secrets (a flash image, a key).
    (root / "flash.bin").write_text(SECRET, encoding="utf-8")
    (root / "server.key").write_text(SECRET, encoding="utf-8")
    return root


#: section order the report must show: failures, then the bench error, then the passes
EXPECTED_ORDER = [
    "scenarios/corrupted_session_record.yaml::corrupted_session_record[tls1.2-1]",
    "scenarios/power_cut_during_session_write.yaml::power_cut_during_session_write[0.1]",
    "scenarios/resume_after_power_loss.yaml::resume_after_power_loss[tls1.3]",
    "scenarios/resume_after_power_loss.yaml::resume_after_power_loss[tls1.2]",
]
