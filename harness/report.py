"""The run directory: the test record as the product of a run.

Each scenario run gets a folder with what a firmware developer needs the next
morning: the console capture, the server's handshake records (JSON lines),
the supply log, a short human-readable timeline that puts all of them on one
clock, and ``result.json``.  A run-level summary adds up handshakes and what
resumption saved (bytes on the wire, time) against full handshakes.
"""

from __future__ import annotations

import dataclasses
import json
import re
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from .clock import iso, wall_from_mono
from .server.records import HandshakeRecord
from .verdict import RecordLike, as_records, describe, failed, hhmmss, offered_anything


def safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.=-]+", "_", text).strip("_")[:120] or "test"


def _as_dict(record: Any) -> dict[str, Any]:
    if dataclasses.is_dataclass(record):
        return dataclasses.asdict(record)
    if isinstance(record, dict):
        return dict(record)
    return dict(vars(record))


@dataclass
class ScenarioResult:
    nodeid: str
    outcome: str
    duration_s: float
    handshakes: int = 0
    full: int = 0
    resumed: int = 0
    full_bytes: list[int] = field(default_factory=list)
    resumed_bytes: list[int] = field(default_factory=list)
    full_ms: list[float] = field(default_factory=list)
    resumed_ms: list[float] = field(default_factory=list)
    verdict: str = ""
    run_dir: str = ""
    #: why each full handshake was full: "nothing offered" or the server's refusal reason
    full_reasons: dict[str, int] = field(default_factory=dict)
    failed_handshakes: int = 0
    #: per negotiated version: {"full_bytes": [...], "resumed_bytes": [...], "full_ms": [...], "resumed_ms": [...]}
    by_version: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    #: sizes of the session records the device said it stored (its flash_write/session_stored line's ``bytes``)
    stored_bytes: list[int] = field(default_factory=list)
    #: the outcome code (harness.outcomes): the verdict's code(s) on a pass or a failure, the sub-code of a
    #: bench error; "verdict" or "bench-error" in ``kind``
    code: str = ""
    kind: str = "verdict"
    #: earlier attempts of this scenario that ended in a bench error (``--bench-retries``): number, code, text
    attempts: list[dict[str, Any]] = field(default_factory=list)
    #: the pytest run that wrote it (UTC start time and pid): a reused run directory holds older results too
    run_id: str = ""
    #: the rig it ran on (its device file's name; ``name#N`` for copies of one simulated bench)
    rig: str = ""
    #: power cuts the scenario made (each one a power loss the device had to survive)
    cuts: int = 0


def file_hash(path: Path) -> str:
    """A short SHA-256 of a file: which device file (or build) a run used, without copying it."""
    import hashlib

    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    except OSError:
        return "unreadable"


def console_excerpt(lines: list[Any], cuts: list[Any], before: float = 2.0, after: float = 8.0,
                    limit: int = 40) -> list[str]:
    """The console lines around the last power cut (or the last lines, without one), stamped.

    What a CI page shows under a failed case: the cut, the reboot and the
    connect after it are where a resumption bug shows.
    """
    if cuts:
        at = cuts[-1].off_mono
        chosen = [ln for ln in lines if at - before <= ln.mono <= at + after]
    else:
        chosen = list(lines)
    return [f"{hhmmss(ln.mono)}  {ln.text}" for ln in chosen[-limit:]]


def load_results(run_root: Path, run_id: str | None = None) -> list[ScenarioResult]:
    """The results under ``run_root`` as written by :func:`save_result`: those of ``run_id``, or of the newest
    run (keys it does not know, from a newer or older harness, are left out)."""
    from .history import read_results

    names = {f.name for f in dataclasses.fields(ScenarioResult)}
    out = []
    for data in read_results(run_root, run_id):
        try:
            out.append(ScenarioResult(**{k: v for k, v in data.items() if k in names}))
        except TypeError:
            continue            # not a result (a required key missing): read_results warned about worse
    return out


def rig_line(results: list[ScenarioResult]) -> str:
    """One rig's results in one line, for the per-rig part of the summary."""
    passed = sum(r.outcome == "passed" for r in results)
    failed = sum(r.outcome == "failed" for r in results)
    errors = sum(r.kind == "bench-error" for r in results)
    full, resumed = sum(r.full for r in results), sum(r.resumed for r in results)
    rate = f", {100 * resumed / (full + resumed):.1f}% resumed" if full + resumed else ""
    return (f"{len(results)} scenarios, {passed} passed, {failed} failed, {errors} bench errors; "
            f"{sum(r.cuts for r in results)} power cuts; {full + resumed} handshakes{rate}")


def save_result(result: ScenarioResult) -> None:
    """(Re)write ``result.json`` in the result's run directory."""
    path = Path(result.run_dir) / "result.json"
    path.write_text(json.dumps(dataclasses.asdict(result), indent=2) + "\n", encoding="utf-8")


#: one line of the timeline: (mono, source, text); every file adds its own, then they are sorted on the one clock
Event = tuple[float, str, str]


def write_run_dir(run_dir: Path, *, nodeid: str, start: float, end: float, records: Iterable[RecordLike],
                  lines: Iterable[Any], supply_events: Iterable[Any], steps: Iterable[tuple[float, str]],
                  cuts: Iterable[Any], boots: Iterable[Any], verdict_text: str, outcome: str,
                  seed: int | None = None, stored_bytes: Iterable[int] = (),
                  session_writes: Iterable[Any] = (), supply_spec: Any = None) -> ScenarioResult:
    """Write one scenario's run directory and return its result.

    ``session_writes`` (:meth:`harness.device.Device.session_writes`) and
    ``supply_spec`` (the device file's ``supply`` section: thresholds and
    nominal voltage) go, with the steps, boots and cuts, into
    ``events.jsonl``: the structured form of what ``timeline.txt`` says in
    prose, which ``report.html`` draws on the scenario's time axis.
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    records = as_records(records)
    steps, cuts, boots = list(steps), list(cuts), list(boots)
    _write_events(run_dir / "events.jsonl", nodeid=nodeid, start=start, end=end, steps=steps, cuts=cuts,
                  boots=boots, session_writes=session_writes, supply_spec=supply_spec)
    events: list[Event] = []
    events += _write_console(run_dir / "console.log", lines)
    events += _write_handshakes(run_dir / "handshakes.jsonl", records)
    events += _write_supply(run_dir / "supply.jsonl", supply_events)
    events += [(mono, "step", text) for mono, text in steps]
    events += _power_events(cuts, boots)
    events.sort(key=lambda e: e[0])
    _write_timeline(run_dir / "timeline.txt", nodeid, outcome, start, end, seed, events, verdict_text)
    result = summarize(nodeid, outcome, end - start, records, verdict_text, str(run_dir))
    result.stored_bytes = list(stored_bytes)
    result.cuts = len(cuts)
    (run_dir / "result.json").write_text(json.dumps(dataclasses.asdict(result), indent=2) + "\n", encoding="utf-8")
    return result


#: what events.jsonl keeps of the device file's supply section: the lines the report draws across the rail plot
_SUPPLY_LIMITS = ("voltage", "brownout_threshold", "discharge_below")


def _write_events(path: Path, *, nodeid: str, start: float, end: float, steps: list[tuple[float, str]],
                  cuts: list[Any], boots: list[Any], session_writes: Iterable[Any], supply_spec: Any) -> None:
    """One JSON object a line, each with a ``type``: scenario, limits, step, boot, cut, session_write.

    Why a file of its own: timeline.txt is for people and its wording may
    change; a report (or a lab's own tooling) needs the same facts as data,
    on the same monotonic clock as console.log, handshakes.jsonl and
    supply.jsonl.
    """
    rows: list[dict[str, Any]] = [{"type": "scenario", "nodeid": nodeid, "start": start, "end": end}]
    if supply_spec is not None:
        rows.append({"type": "limits", **{k: _field(supply_spec, k) for k in _SUPPLY_LIMITS}})
    rows += [{"type": "step", "mono": mono, "text": text} for mono, text in steps]
    rows += [{"type": "boot", "mono": _field(b, "mono"), "cause": _field(b, "cause"), "line": _field(b, "line")}
             for b in boots]
    rows += [{"type": "cut", "off_mono": _field(c, "off_mono"), "on_mono": _field(c, "on_mono"),
              "volts_before_on": _field(c, "volts_before_on"), "kind": _field(c, "kind"),
              "verified": _field(c, "verified")} for c in cuts]
    rows += [{"type": "session_write", "mono": _field(w, "mono"), "text": _field(w, "text"),
              "bytes": _field(w, "bytes"), "kind": _field(w, "kind")} for w in session_writes]
    with open(path, "w", encoding="utf-8") as out:
        for row in rows:
            out.write(json.dumps(row, sort_keys=True, default=str) + "\n")


def _field(obj: Any, name: str) -> Any:
    """An attribute or a key: the evidence arrives as dataclasses from the device, as dicts from tests."""
    return obj.get(name) if isinstance(obj, dict) else getattr(obj, name, None)


def _write_console(path: Path, lines: Iterable[Any]) -> list[Event]:
    events: list[Event] = []
    with open(path, "w", encoding="utf-8") as out:
        for ln in lines:
            out.write(f"{iso(ln.wall)} {ln.mono:.6f} {ln.text}\n")
            events.append((ln.mono, "console", ln.text))
    return events


def _write_handshakes(path: Path, records: list[HandshakeRecord]) -> list[Event]:
    events: list[Event] = []
    with open(path, "w", encoding="utf-8") as out:
        for rec in records:
            out.write(json.dumps(_as_dict(rec), sort_keys=True) + "\n")
            events.append((rec.mono, "server", describe(rec)))
    return events


def _write_supply(path: Path, supply_events: Iterable[Any]) -> list[Event]:
    events: list[Event] = []
    with open(path, "w", encoding="utf-8") as out:
        for ev in supply_events:
            data = _as_dict(ev)
            out.write(json.dumps(data, sort_keys=True, default=str) + "\n")
            kind = data.get("kind", "")
            if kind in ("on", "off", "discharged", "voltage", "safe", "trip"):
                volts = data.get("volts")
                detail = data.get("detail") or ""
                text = f"supply {kind}" + (f" {volts:.3f} V" if isinstance(volts, (int, float)) else "")
                events.append((data.get("mono", 0.0), "supply", f"{text} {detail}".rstrip()))
    return events


def _power_events(cuts: Iterable[Any], boots: Iterable[Any]) -> list[Event]:
    events: list[Event] = []
    for cut in cuts:
        if getattr(cut, "on_mono", None) is not None:
            volts = getattr(cut, "volts_before_on", None)
            events.append((cut.on_mono, "power", f"power back after {cut.on_mono - cut.off_mono:.3f} s off"
                           + (f", rail was {volts:.2f} V" if volts is not None else "")))
    for boot in boots:
        events.append((boot.mono, "device", f"booted, reset cause {boot.cause}"))
    return events


def _write_timeline(path: Path, nodeid: str, outcome: str, start: float, end: float, seed: int | None,
                    events: list[Event], verdict_text: str) -> None:
    with open(path, "w", encoding="utf-8") as out:
        out.write(f"# {nodeid}: {outcome}\n")
        out.write(f"# start {iso(wall_from_mono(start))}, {end - start:.2f} s"
                  + (f", random seed {seed}" if seed is not None else "") + "\n")
        for mono, source, text in events:
            out.write(f"{hhmmss(mono)} {mono - start:9.3f}  {source:<7} {text}\n")
        if verdict_text:
            out.write("\n" + verdict_text + "\n")


def summarize(nodeid: str, outcome: str, duration: float, records: Iterable[RecordLike], verdict_text: str,
              run_dir: str) -> ScenarioResult:
    res = ScenarioResult(nodeid=nodeid, outcome=outcome, duration_s=round(duration, 3),
                         verdict=verdict_text.splitlines()[0] if verdict_text else "", run_dir=run_dir)
    for rec in as_records(records):
        if failed(rec):
            res.failed_handshakes += 1
            continue
        res.handshakes += 1
        size = int(rec.bytes_in or 0) + int(rec.bytes_out or 0)
        ms = float(rec.duration_ms or 0.0)
        kind = "resumed" if rec.resumed else "full"
        per = res.by_version.setdefault(rec.version or "?", {})
        per.setdefault(f"{kind}_bytes", []).append(size)
        per.setdefault(f"{kind}_ms", []).append(ms)
        if rec.resumed:
            res.resumed += 1
            res.resumed_bytes.append(size)
            res.resumed_ms.append(ms)
        else:
            res.full += 1
            res.full_bytes.append(size)
            res.full_ms.append(ms)
            why = rec.rejected or ("offered, refused" if offered_anything(rec) else "nothing offered")
            res.full_reasons[why] = res.full_reasons.get(why, 0) + 1
    return res


def _per_version(results: list[ScenarioResult]) -> list[str]:
    """What a resumption saves, per TLS version: the figure a firmware engineer budgets radio time with."""
    merged: dict[str, dict[str, list[float]]] = {}
    for r in results:
        for version, lists in r.by_version.items():
            for key, values in lists.items():
                merged.setdefault(version, {}).setdefault(key, []).extend(values)
    out = []
    for version in sorted(merged):
        m = merged[version]
        if not (m.get("full_bytes") and m.get("resumed_bytes")):
            continue
        fb, rb = statistics.median(m["full_bytes"]), statistics.median(m["resumed_bytes"])
        fm, rm = statistics.median(m["full_ms"]), statistics.median(m["resumed_ms"])
        out.append(f"{version} (median): full {fb:.0f} bytes / {fm:.1f} ms, resumed {rb:.0f} bytes / {rm:.1f} ms "
                   f"at the server: resumption saves {fb - rb:.0f} bytes ({100 * (fb - rb) / fb:.0f}%) and "
                   f"{fm - rm:.1f} ms")
    return out


def run_summary(results: list[ScenarioResult]) -> list[str]:
    """The one-screen summary printed at the end of a run."""
    if not results:
        return []
    passed = sum(r.outcome == "passed" for r in results)
    failed = sum(r.outcome == "failed" for r in results)
    errors = [r for r in results if r.kind == "bench-error"]
    skipped = sum(r.outcome == "skipped" for r in results)
    full = sum(r.full for r in results)
    resumed = sum(r.resumed for r in results)
    out = [f"scenarios: {len(results)} run, {passed} passed, {failed} failed (device verdicts), "
           f"{len(errors)} bench errors, {skipped} skipped"]
    by_code: dict[str, int] = {}
    for r in results:
        if r.outcome == "failed":
            by_code[r.code or "?"] = by_code.get(r.code or "?", 0) + 1
    if by_code:
        out.append("failed verdicts by code: " + ", ".join(f"{c} {n}" for c, n in sorted(by_code.items())))
    if errors:
        bench_codes: dict[str, int] = {}
        for r in errors:
            bench_codes[r.code] = bench_codes.get(r.code, 0) + 1
        out.append("bench errors (not the device's fault) by sub-code: "
                   + ", ".join(f"{c} {n}" for c, n in sorted(bench_codes.items())))
    retried = [r for r in results if r.attempts]
    if retried:
        saved = sum(r.kind != "bench-error" for r in retried)
        out.append(f"retried after a bench error: {len(retried)} scenarios, {saved} of them reached a verdict "
                   f"on a later attempt ({sum(len(r.attempts) for r in retried)} attempts lost to the bench)")
    out.append(f"power cuts: {sum(r.cuts for r in results)}")
    out.append(f"handshakes at the reference server: {full + resumed} ({full} full, {resumed} resumed"
               + (f", {100 * resumed / (full + resumed):.1f}% resumed" if full + resumed else "")
               + f"; {sum(r.failed_handshakes for r in results)} did not complete)")
    reasons: dict[str, int] = {}
    for r in results:
        for why, n in r.full_reasons.items():
            reasons[why] = reasons.get(why, 0) + n
    if reasons:
        out.append("full handshakes by reason: " + ", ".join(f"{why} {n}" for why, n in
                                                           sorted(reasons.items(), key=lambda kv: -kv[1])))
    fb = [b for r in results for b in r.full_bytes]
    rb = [b for r in results for b in r.resumed_bytes]
    fm = [m for r in results for m in r.full_ms]
    rm = [m for r in results for m in r.resumed_ms]
    if fb and rb:
        fbm, rbm = statistics.median(fb), statistics.median(rb)
        out.append(f"bytes per handshake (median): full {fbm:.0f}, resumed {rbm:.0f}: resumption saves "
                   f"{fbm - rbm:.0f} bytes ({100 * (fbm - rbm) / fbm:.0f}%)")
    if fm and rm:
        fmm, rmm = statistics.median(fm), statistics.median(rm)
        out.append(f"server-side handshake time (median): full {fmm:.1f} ms, resumed {rmm:.1f} ms: "
                   f"resumption saves {fmm - rmm:.1f} ms")
    out.extend(_per_version(results))
    stored = [b for r in results for b in r.stored_bytes]
    if stored:
        out.append(f"stored session size (as the device's own line reports it, {len(stored)} writes begun, cut "
                   f"ones included): median {statistics.median(stored):.0f} bytes (min {min(stored)}, "
                   f"max {max(stored)})")
    for r in results:
        if r.outcome == "failed" or r.kind == "bench-error":
            out.append(f"{'FAILED' if r.outcome == 'failed' else 'BENCH ERROR'} {r.nodeid}: {r.verdict}")
            out.append(f"       run directory: {r.run_dir}")
    return out


if __name__ == "__main__":
    # python -m harness.report RUN_ROOT | --history DIR: report.html and the trend page (harness/htmlreport.py).
    from harness.htmlreport import main

    raise SystemExit(main())
