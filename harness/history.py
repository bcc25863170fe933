"""Nightly trends: one line of figures per run, appended to a JSON-lines history.

Why: a single night says whether the firmware resumes; only a series of
nights says whether last week's change made resumption rarer, a full
handshake bigger or a resumption cheaper.  Each run appends one
:class:`HistoryEntry` (its verdict counts, resumption rate and what a
resumption saved) to a history file the lab keeps beside its runs; the
report draws the last nights from it (:func:`trend_figure`).

The history is append-only JSON lines, so a run killed while writing tears
at most the last line; :func:`load` skips a line it cannot read with a
warning naming the file and line, and never lets one bad night hide the
others.

The figures of one run are read here from its run directories
(``result.json`` and ``energy.json``), and :mod:`harness.htmlreport` uses the
same readers, so the report's summary and the history never disagree.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

log = logging.getLogger(__name__)

#: result.json ``code`` of a passed scenario written before results carried codes
PASS = "pass"
#: bench-error sub-codes (harness.errors.BenchError.sub_code): a result.json without ``kind`` is sorted by these
BENCH_CODES = frozenset({"bench-start", "supply-unreachable", "supply-error", "console-lost", "server-error"})
_FAIL_CODE = re.compile(r"\bFAIL \[([a-z0-9-]+)\]")


# -- one run's results -------------------------------------------------------------

def read_results(run_root: Path, run_id: str | None = None) -> list[dict[str, Any]]:
    """Every scenario result under ``run_root`` (its ``result.json``), with ``dir`` set to where it was found.

    ``dir`` is the folder read, not the ``run_dir`` written inside: a run
    copied off the CI machine keeps working.  A result.json that does not
    parse is skipped with a warning: a broken scenario must not cost the
    report of the others.
    """
    out = [data for data in _json_files(run_root, "result.json")
           # an attempt lost to a bench error and retried: the scenario's own result counts
           if not any(part.startswith("attempt-") for part in Path(data["dir"]).relative_to(run_root).parts)]
    if run_id is not None:
        return [data for data in out if data.get("run_id") == run_id]
    return _latest_run(out)


def _json_files(run_root: Path, name: str) -> list[dict[str, Any]]:
    """Every JSON object in a file called ``name`` under ``run_root``, with ``dir`` set; bad ones skipped."""
    out = []
    for path in sorted(Path(run_root).rglob(name)):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            log.warning("%s: unreadable, left out: %s", path, exc)
            continue
        if isinstance(data, dict):
            data["dir"] = str(path.parent)
            out.append(data)
    return out


def _latest_run(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Only the results of the newest run in a reused run directory (``--run-dir runs/nightly``).

    A scenario not selected tonight keeps last night's folder; counting it
    would show last night's pass as tonight's.  Results written before run
    ids existed have none and are kept only when no result has one.
    """
    ids = {r.get("run_id") for r in results if r.get("run_id")}
    if not ids:
        return results
    newest = max(ids)       # run ids start with the run's UTC start time, so they sort by time
    return [r for r in results if r.get("run_id") == newest]


def read_energy(run_root: Path) -> list[dict[str, Any]]:
    """Every ``energy.json`` under ``run_root`` (scenarios/test_energy_per_handshake.py writes one per version)."""
    return _json_files(run_root, "energy.json")


def verdict_code(result: dict[str, Any]) -> str:
    """The result's code: its ``code`` field, else the ``FAIL [code]`` of its verdict, else pass/error."""
    code = result.get("code")
    if code:
        return str(code)
    found = _FAIL_CODE.search(result.get("verdict") or "")
    if found:
        return found.group(1)
    outcome = result.get("outcome", "")
    return PASS if outcome == "passed" else (outcome or "error")


def result_kind(result: dict[str, Any]) -> str:
    """"verdict" (the device was judged) or "bench-error" (the bench failed; says nothing of the firmware)."""
    kind = result.get("kind")
    if kind:
        return str(kind)
    if result.get("outcome") == "error" or verdict_code(result) in BENCH_CODES:
        return "bench-error"
    return "verdict"


def _median(values: Iterable[float]) -> float | None:
    values = list(values)
    return statistics.median(values) if values else None


def _saved(full: Iterable[float], resumed: Iterable[float]) -> float | None:
    f, r = _median(full), _median(resumed)
    return None if f is None or r is None else f - r


@dataclass
class RunFigures:
    """What a run amounts to: the numbers the report's summary and the history share."""

    scenarios: int = 0
    passed: int = 0
    failed: int = 0
    skipped: int = 0
    bench_errors: int = 0
    #: verdict results by code; bench errors are counted apart in ``bench_codes``
    counts: dict[str, int] = field(default_factory=dict)
    bench_codes: dict[str, int] = field(default_factory=dict)
    full: int = 0
    resumed: int = 0
    failed_handshakes: int = 0
    resumption_rate: float | None = None
    full_reasons: dict[str, int] = field(default_factory=dict)
    median_full_bytes: float | None = None
    median_resumed_bytes: float | None = None
    median_full_ms: float | None = None
    median_resumed_ms: float | None = None
    median_saved_bytes: float | None = None
    median_saved_ms: float | None = None
    #: from the energy scenario (only cells where a resumption of the full handshake was measured)
    median_saved_mC: float | None = None
    median_saved_supply_s: float | None = None
    #: per negotiated TLS version: medians of bytes and server ms, full and resumed
    by_version: dict[str, dict[str, float | None]] = field(default_factory=dict)


def run_figures(results: list[dict[str, Any]], energy: list[dict[str, Any]] = ()) -> RunFigures:
    """Add up a run's results (and energy cells) into the figures of its summary."""
    fig = RunFigures(scenarios=len(results))
    for r in results:
        outcome = r.get("outcome", "")
        fig.passed += outcome == "passed"
        fig.skipped += outcome == "skipped"
        code = verdict_code(r)
        if result_kind(r) == "bench-error":
            fig.bench_errors += 1
            fig.bench_codes[code] = fig.bench_codes.get(code, 0) + 1
            continue
        fig.failed += outcome == "failed"
        fig.counts[code] = fig.counts.get(code, 0) + 1
        fig.full += int(r.get("full", 0) or 0)
        fig.resumed += int(r.get("resumed", 0) or 0)
        fig.failed_handshakes += int(r.get("failed_handshakes", 0) or 0)
        for why, n in (r.get("full_reasons") or {}).items():
            fig.full_reasons[why] = fig.full_reasons.get(why, 0) + int(n)
    if fig.full + fig.resumed:
        fig.resumption_rate = fig.resumed / (fig.full + fig.resumed)
    verdicts = [r for r in results if result_kind(r) != "bench-error"]
    lists = {key: [v for r in verdicts for v in r.get(key) or []]
             for key in ("full_bytes", "resumed_bytes", "full_ms", "resumed_ms")}
    fig.median_full_bytes, fig.median_resumed_bytes = _median(lists["full_bytes"]), _median(lists["resumed_bytes"])
    fig.median_full_ms, fig.median_resumed_ms = _median(lists["full_ms"]), _median(lists["resumed_ms"])
    fig.median_saved_bytes = _saved(lists["full_bytes"], lists["resumed_bytes"])
    fig.median_saved_ms = _saved(lists["full_ms"], lists["resumed_ms"])
    fig.by_version = _by_version(verdicts)
    good = [e for e in energy if e.get("ok")]
    fig.median_saved_mC = _median(e["saved"]["charge_mC"] for e in good if "saved" in e)
    fig.median_saved_supply_s = _median(e["saved"]["seconds"] for e in good if "saved" in e)
    return fig


def _by_version(results: list[dict[str, Any]]) -> dict[str, dict[str, float | None]]:
    merged: dict[str, dict[str, list[float]]] = {}
    for r in results:
        for version, lists in (r.get("by_version") or {}).items():
            for key, values in lists.items():
                merged.setdefault(version, {}).setdefault(key, []).extend(values)
    out = {}
    for version in sorted(merged):
        m = merged[version]
        out[version] = {f"median_{key}": _median(m.get(key, []))
                        for key in ("full_bytes", "resumed_bytes", "full_ms", "resumed_ms")}
    return out


# -- the history --------------------------------------------------------------------

@dataclass
class HistoryEntry:
    """One run, one line of the history file."""

    date: str
    rig: str | None = None
    device_file: str | None = None
    device_hash: str | None = None
    firmware_version: str | None = None
    harness_version: str | None = None
    seed: int | None = None
    run_root: str | None = None
    scenarios: int = 0
    passed: int = 0
    failed: int = 0
    bench_errors: int = 0
    #: verdict results by code; bench errors by sub-code apart
    counts: dict[str, int] = field(default_factory=dict)
    bench_codes: dict[str, int] = field(default_factory=dict)
    resumption_rate: float | None = None
    median_saved_bytes: float | None = None
    median_saved_ms: float | None = None
    median_saved_mC: float | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "HistoryEntry":
        """Tolerant of fields added or dropped by other harness versions: the history outlives the code."""
        known = {f.name for f in dataclasses.fields(cls)}
        if "date" not in data:
            raise ValueError("no date")
        return cls(**{k: v for k, v in data.items() if k in known})


_META_KEYS = ("date", "rig", "device_file", "device_hash", "firmware_version", "harness_version", "seed")


def entry_from_run(run_root: Path, meta: dict[str, Any]) -> HistoryEntry:
    """The history line of the run under ``run_root``; ``meta`` says which bench and build it was (keys of
    :data:`_META_KEYS`; ``date`` defaults to the run folder's name)."""
    figures = run_figures(read_results(run_root), read_energy(run_root))
    known = {k: meta.get(k) for k in _META_KEYS}
    known["date"] = known["date"] or Path(run_root).name
    return HistoryEntry(
        **known, run_root=str(run_root), scenarios=figures.scenarios, passed=figures.passed, failed=figures.failed,
        bench_errors=figures.bench_errors, counts=dict(sorted(figures.counts.items())),
        bench_codes=dict(sorted(figures.bench_codes.items())), resumption_rate=figures.resumption_rate,
        median_saved_bytes=figures.median_saved_bytes, median_saved_ms=figures.median_saved_ms,
        median_saved_mC=figures.median_saved_mC)


def append(path: Path, entry: HistoryEntry) -> None:
    """Add one line; a torn last line left by a killed run is ended first, so it cannot swallow this one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps(dataclasses.asdict(entry), sort_keys=True) + "\n"
    with open(path, "a+b") as out:
        out.seek(0, 2)
        if out.tell():
            out.seek(-1, 2)
            if out.read(1) != b"\n":
                out.write(b"\n")
        out.write(line.encode("utf-8"))


def load(path: Path) -> list[HistoryEntry]:
    """Every readable entry, in file order; a line that does not parse is skipped with a warning (file:line)."""
    path = Path(path)
    if not path.exists():
        return []
    entries = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                data = json.loads(line)
                if not isinstance(data, dict):
                    raise ValueError("not an object")
                entries.append(HistoryEntry.from_dict(data))
            except (ValueError, TypeError) as exc:
                log.warning("%s:%d: history line skipped (%s)", path, number, exc)
    return entries


# -- trends -------------------------------------------------------------------------

@dataclass
class TrendData:
    """The series a trend plot draws, oldest run first (one value per run; None where a run had no figure)."""

    labels: list[str]
    resumption_pct: list[float | None]
    #: code -> count per run (0 where a run had none); bench errors under "bench-error"
    counts: dict[str, list[int]]
    saved_bytes: list[float | None]
    saved_ms: list[float | None]
    saved_mC: list[float | None]


def trend_data(entries: list[HistoryEntry], last: int = 30) -> TrendData:
    """The last ``last`` runs in file order (the order they ran; dates from different rigs need not sort)."""
    chosen = entries[-last:] if last else list(entries)
    labels = [_label(e, i) for i, e in enumerate(chosen)]
    codes = sorted({c for e in chosen for c in e.counts})
    counts = {c: [int(e.counts.get(c, 0)) for e in chosen] for c in codes}
    if any(e.bench_errors for e in chosen):
        counts["bench-error"] = [int(e.bench_errors) for e in chosen]
    return TrendData(
        labels=labels,
        resumption_pct=[None if e.resumption_rate is None else round(100 * e.resumption_rate, 2) for e in chosen],
        counts=counts, saved_bytes=[e.median_saved_bytes for e in chosen],
        saved_ms=[e.median_saved_ms for e in chosen], saved_mC=[e.median_saved_mC for e in chosen])


def _label(entry: HistoryEntry, index: int) -> str:
    """Unique x labels: two runs of the same date must not fall on one point."""
    text = entry.date
    if entry.rig:
        text += f" {entry.rig}"
    return f"{text} #{index + 1}"


def trend_figure(entries: list[HistoryEntry], last: int = 30) -> Any:
    """A plotly figure of the last runs: resumption rate, counts by code, and what a resumption saved."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    data = trend_data(entries, last)
    fig = make_subplots(rows=3, cols=1, shared_xaxes=True, vertical_spacing=0.06,
                        specs=[[{}], [{}], [{"secondary_y": True}]],
                        subplot_titles=("resumption rate (% of completed handshakes)", "scenarios by code",
                                        "median saved by a resumption"))
    x = data.labels
    fig.add_trace(go.Scatter(x=x, y=data.resumption_pct, mode="lines+markers", name="resumed %"), row=1, col=1)
    for code, values in data.counts.items():
        fig.add_trace(go.Bar(x=x, y=values, name=code, legendgroup="codes"), row=2, col=1)
    fig.add_trace(go.Scatter(x=x, y=data.saved_bytes, mode="lines+markers", name="bytes saved"), row=3, col=1)
    fig.add_trace(go.Scatter(x=x, y=data.saved_ms, mode="lines+markers", name="server ms saved"), row=3, col=1)
    fig.add_trace(go.Scatter(x=x, y=data.saved_mC, mode="lines+markers", name="mC saved (energy scenario)",
                             line={"dash": "dot"}), row=3, col=1, secondary_y=True)
    fig.update_layout(barmode="stack", height=720, template="simple_white", margin={"t": 40, "b": 40},
                      title_text=f"last {len(x)} runs")
    fig.update_yaxes(title_text="%", range=[0, 100], row=1, col=1)
    fig.update_yaxes(title_text="scenarios", row=2, col=1)
    fig.update_yaxes(title_text="bytes / ms", row=3, col=1)
    fig.update_yaxes(title_text="mC", row=3, col=1, secondary_y=True)
    return fig
