"""report.html: one self-contained page per run, read from its run directories.

Why a page and not only the run directories: the morning after a nightly
run, a firmware developer opens one file from the CI artifact store and
sees what failed and why, with the rail, the power edges, the boots, the
session writes and every handshake on one time axis, and the console and
the server's records beside it.  The page carries plotly.js once, inline: it
opens from an artifact store or a file share with no server and no network.

Everything shown comes from files already in the run directory (records
there hold fingerprints only, console lines are already redacted), so the
page shows nothing the artifact did not already hold.

The page is built from the files, not from live objects, so it can be
rebuilt for any old run (``python -m harness.report RUN_ROOT``); files a
run lacks (``rail.jsonl``, ``events.jsonl`` in runs older than them) only
leave their part of a plot out.
"""

from __future__ import annotations

import argparse
import html
import json
import logging
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from . import clock
from . import history as runhistory
from .outcomes import Code

log = logging.getLogger(__name__)

#: rail samples drawn per scenario at most: beyond, min/max per bucket keeps every dip visible
MAX_RAIL_POINTS = 4000
#: seconds of rail drawn before a scenario's start and after its end
RAIL_MARGIN = 0.2
#: how many runs the trend plot shows
TREND_RUNS = 30
#: lanes of the event row, bottom to top
LANES = ("step", "power", "boot", "session write", "full", "resumed", "failed")
_LANE = {name: i for i, name in enumerate(LANES)}
_ORDER = {"failed": 0, "bench-error": 1, "error": 1, "skipped": 3, "passed": 4}


# -- reading one scenario back ----------------------------------------------------

@dataclass
class ConsoleLine:
    mono: float
    wall: str
    text: str


@dataclass
class ScenarioRun:
    """One scenario's run directory, read back: what its section shows."""

    dir: Path
    result: dict[str, Any]
    start: float
    end: float
    records: list[dict[str, Any]] = field(default_factory=list)
    lines: list[ConsoleLine] = field(default_factory=list)
    supply: list[dict[str, Any]] = field(default_factory=list)
    rail: list[dict[str, Any]] = field(default_factory=list)
    steps: list[dict[str, Any]] = field(default_factory=list)
    boots: list[dict[str, Any]] = field(default_factory=list)
    cuts: list[dict[str, Any]] = field(default_factory=list)
    writes: list[dict[str, Any]] = field(default_factory=list)
    limits: dict[str, Any] = field(default_factory=dict)
    verdict_text: str = ""

    @property
    def code(self) -> str:
        return runhistory.verdict_code(self.result)

    @property
    def kind(self) -> str:
        return runhistory.result_kind(self.result)

    @property
    def outcome(self) -> str:
        return str(self.result.get("outcome", "?"))

    @property
    def nodeid(self) -> str:
        return str(self.result.get("nodeid") or self.dir.name)

    @property
    def anchor(self) -> str:
        # With several rigs each rig has a folder of this name: the rig the test id names tells them apart.
        rig = str(self.result.get("rig") or "")
        tail = f"-{rig}" if rig and self.nodeid.endswith((f"-{rig}]", f"[{rig}]")) else ""
        return "sc-" + re.sub(r"[^A-Za-z0-9_-]+", "_", self.dir.name + tail)

    def order(self) -> tuple[int, str]:
        """Failures first, then bench errors, then the rest; by name within each."""
        key = "bench-error" if self.kind == "bench-error" else self.outcome
        return _ORDER.get(key, 2), self.nodeid


def _jsonl(path: Path) -> list[dict[str, Any]]:
    """A JSON-lines file, skipping lines that do not parse (a killed run tears its last line)."""
    if not path.exists():
        return []
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:
            log.warning("%s:%d: not JSON, left out", path, number)
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


def _console(path: Path) -> list[ConsoleLine]:
    """console.log: ``<iso wall> <mono> <text>`` per line (harness.report._write_console)."""
    if not path.exists():
        return []
    out = []
    for raw in path.read_text(encoding="utf-8", errors="replace").splitlines():
        parts = raw.split(" ", 2)
        try:
            mono = float(parts[1])
        except (IndexError, ValueError):
            continue
        out.append(ConsoleLine(mono=mono, wall=parts[0], text=parts[2] if len(parts) > 2 else ""))
    return out


def _verdict_text(path: Path, fallback: str) -> str:
    """The whole verdict (cause, records, console around the cut): timeline.txt after its events."""
    if not path.exists():
        return fallback
    text = path.read_text(encoding="utf-8", errors="replace")
    _, sep, tail = text.partition("\n\n")
    return tail.strip() if sep and tail.strip() else fallback


def load_scenario(result: dict[str, Any]) -> ScenarioRun:
    """Read a scenario's run directory (``result["dir"]``, as :func:`harness.history.read_results` sets it)."""
    d = Path(result["dir"])
    events = _jsonl(d / "events.jsonl")
    by_type: dict[str, list[dict[str, Any]]] = {}
    for row in events:
        by_type.setdefault(str(row.get("type")), []).append(row)
    records = sorted(_jsonl(d / "handshakes.jsonl"), key=lambda r: r.get("mono", 0.0))
    lines = _console(d / "console.log")
    supply = _jsonl(d / "supply.jsonl")
    head = (by_type.get("scenario") or [{}])[0]
    start, end = head.get("start"), head.get("end")
    if start is None:   # a run older than events.jsonl: the first thing it recorded
        monos = [ln.mono for ln in lines] + [float(r["mono"]) for r in records + supply if "mono" in r]
        start = min(monos) if monos else 0.0
    if end is None:
        end = start + float(result.get("duration_s") or 0.0)
    # The sampler runs all along: keep what falls in the scenario, with a little context either side.
    rail = [r for r in _jsonl(d / "rail.jsonl")
            if start - RAIL_MARGIN <= float(r.get("mono", start)) <= end + RAIL_MARGIN]
    return ScenarioRun(
        dir=d, result=result, start=float(start), end=float(end), records=records, lines=lines, supply=supply,
        rail=rail, steps=by_type.get("step", []), boots=by_type.get("boot", []), cuts=by_type.get("cut", []),
        writes=by_type.get("session_write", []), limits=(by_type.get("limits") or [{}])[0],
        verdict_text=_verdict_text(d / "timeline.txt", str(result.get("verdict") or "")))


# -- the plot ---------------------------------------------------------------------

def _decimate(xs: list[float], ys: list[float | None], limit: int) -> tuple[list[float], list[float | None]]:
    """At most ~``limit`` points, keeping each bucket's min and max: a 2 ms brown-out must survive."""
    if len(xs) <= limit:
        return xs, ys
    size = max(1, (2 * len(xs)) // limit)
    ox: list[float] = []
    oy: list[float | None] = []
    for i in range(0, len(xs), size):
        chunk = [(x, y) for x, y in zip(xs[i:i + size], ys[i:i + size]) if y is not None]
        if not chunk:
            continue
        lo = min(chunk, key=lambda p: p[1])
        hi = max(chunk, key=lambda p: p[1])
        for x, y in sorted({lo, hi}):
            ox.append(x)
            oy.append(y)
    return ox, oy


def _record_text(rec: dict[str, Any]) -> str:
    from .server.records import HandshakeRecord

    try:
        text = HandshakeRecord.from_dict(rec).summary()
    except (TypeError, ValueError):
        text = f"#{rec.get('id')}"
    return f"{text}<br>{int(rec.get('bytes_in') or 0) + int(rec.get('bytes_out') or 0)} bytes on the wire"


def _lane_of(rec: dict[str, Any]) -> str:
    if rec.get("error") and not rec.get("version"):
        return "failed"
    return "resumed" if rec.get("resumed") else "full"


def _issuers(records: list[dict[str, Any]]) -> dict[str, int]:
    """Fingerprint of every ticket/session id issued in this scenario -> the handshake that issued it."""
    out: dict[str, int] = {}
    for rec in records:
        for fp in rec.get("issued") or []:
            out.setdefault(fp, int(rec["id"]))
    return out


def _offered(rec: dict[str, Any]) -> list[str]:
    o = rec.get("offered") or {}
    return [fp for fp in [*(o.get("psk") or []), o.get("ticket"), o.get("session_id")] if fp]


@dataclass
class Arrow:
    """From the handshake that issued a session to the one that resumed it (or offered it and was refused)."""

    src: int
    dst: int
    resumed: bool
    note: str


def lineage_arrows(records: list[dict[str, Any]]) -> list[Arrow]:
    """Arrows between handshakes of one scenario, from the records' lineage fields.

    A resumption points back through ``resumed_from`` (the server's own
    lineage); a refused offer points back to the handshake that issued what
    was offered (matched by fingerprint), so "offered the ticket of #3,
    refused: expired" is drawn too.  Issuers outside the scenario get no
    arrow (the hover text names them).
    """
    ids = {int(r["id"]) for r in records if "id" in r}
    issuers = _issuers(records)
    arrows = []
    for rec in records:
        dst = int(rec.get("id", -1))
        src = rec.get("resumed_from")
        if rec.get("resumed") and src is not None and int(src) in ids:
            arrows.append(Arrow(int(src), dst, True, f"#{dst} resumed the session of #{src}"))
        elif not rec.get("resumed"):
            for fp in _offered(rec):
                src = issuers.get(fp)
                if src is not None and src != dst:
                    arrows.append(Arrow(src, dst, False, f"#{dst} offered what #{src} issued; refused: "
                                                         f"{rec.get('rejected') or rec.get('error') or '?'}"))
                    break
    return arrows


def scenario_figure(sc: ScenarioRun) -> Any:
    """The scenario on one time axis (s from its start): rail above, events and handshakes below."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.04, row_heights=[0.55, 0.45],
                        specs=[[{"secondary_y": True}], [{}]])
    t = sc.start
    _rail_traces(fig, go, sc, t)
    _threshold_traces(fig, go, sc)
    _power_shapes(fig, sc, t)
    _event_traces(fig, go, sc, t)
    _handshake_traces(fig, go, sc, t)
    fig.update_layout(height=560, template="simple_white", margin={"t": 20, "b": 40, "l": 60, "r": 60},
                      legend={"orientation": "h", "y": -0.12}, hovermode="closest")
    fig.update_yaxes(title_text="V", row=1, col=1, secondary_y=False, rangemode="tozero")
    fig.update_yaxes(title_text="A", row=1, col=1, secondary_y=True, rangemode="tozero")
    fig.update_yaxes(tickvals=list(range(len(LANES))), ticktext=list(LANES), range=[-0.6, len(LANES) - 0.1],
                     row=2, col=1, showgrid=True)
    fig.update_xaxes(title_text="s from scenario start", row=2, col=1)
    return fig


def _rail_traces(fig: Any, go: Any, sc: ScenarioRun, t: float) -> None:
    """rail.jsonl when the run has it; else the supply's own readings (fewer points, same clock)."""
    if sc.rail:
        xs = [float(r["mono"]) - t for r in sc.rail]
        source = "rail"
        volts = [r.get("volts") for r in sc.rail]
        amps = [r.get("amps") for r in sc.rail]
        mode = "lines"
    else:
        readings = [e for e in sc.supply if e.get("kind") in ("measure", "discharged", "settled")]
        xs = [float(e["mono"]) - t for e in readings]
        source = "supply readings"
        volts = [e.get("volts") for e in readings]
        amps = [e.get("amps") for e in readings]
        mode = "markers"
    for name, ys, secondary in (("V", volts, False), ("A", amps, True)):
        pts = [(x, y) for x, y in zip(xs, ys) if isinstance(y, (int, float))]
        if not pts:
            continue
        px, py = _decimate([p[0] for p in pts], [p[1] for p in pts], MAX_RAIL_POINTS)
        fig.add_trace(go.Scatter(x=px, y=py, mode=mode, name=f"{source} {name}", marker={"size": 4},
                                   line={"width": 1}), row=1, col=1, secondary_y=secondary)


def _threshold_traces(fig: Any, go: Any, sc: ScenarioRun) -> None:
    span = [0.0, max(sc.end - sc.start, 0.001)]
    for key, label, dash in (("brownout_threshold", "brown-out threshold", "dash"),
                             ("discharge_below", "discharged below", "dot")):
        value = sc.limits.get(key)
        if isinstance(value, (int, float)):
            fig.add_trace(go.Scatter(x=span, y=[value, value], mode="lines", name=f"{label} {value:g} V",
                                     line={"dash": dash, "width": 1, "color": "#b22"}, hoverinfo="name"),
                          row=1, col=1)


def _cuts(sc: ScenarioRun) -> list[tuple[float, float | None, str]]:
    """(off, on, text) per cut: events.jsonl's, else paired off/on edges of supply.jsonl."""
    if sc.cuts:
        out = []
        for c in sc.cuts:
            volts = c.get("volts_before_on")
            text = f"{c.get('kind') or 'off'}" + (f", rail {volts:.2f} V when power came back"
                                                   if isinstance(volts, (int, float)) else "")
            out.append((float(c["off_mono"]), c.get("on_mono"), text))
        return out
    out, off = [], None
    for e in sc.supply:
        if e.get("kind") == "off":
            off = float(e["mono"])
        elif e.get("kind") == "on" and off is not None:
            out.append((off, float(e["mono"]), "off"))
            off = None
    if off is not None:
        out.append((off, None, "off"))
    return out


def _refs(fig: Any, row: int) -> tuple[str, str]:
    """The x and y axis references (``x2``, ``y3``) of a subplot, as a layout shape or annotation names them."""
    sub = fig.get_subplot(row, 1)
    return sub.xaxis.plotly_name.replace("axis", ""), sub.yaxis.plotly_name.replace("axis", "")


def _power_shapes(fig: Any, sc: ScenarioRun, t: float) -> None:
    """A grey band over both subplots while the power was off.

    Set as one list: plotly's ``add_vrect``/``add_shape`` copy and revalidate
    every shape already there on each call, so a 200-cut soak took minutes.
    """
    refs = [_refs(fig, row) for row in (1, 2)]
    shapes = [{"type": "rect", "x0": off - t, "x1": (float(on) if on is not None else sc.end) - t,
               "xref": xref, "yref": f"{yref} domain", "y0": 0, "y1": 1, "fillcolor": "#888", "opacity": 0.18,
               "line": {"width": 0}} for off, on, _ in _cuts(sc) for xref, yref in refs]
    if shapes:
        fig.update_layout(shapes=[*fig.layout.shapes, *shapes])


def _event_traces(fig: Any, go: Any, sc: ScenarioRun, t: float) -> None:
    edges = [e for e in sc.supply if e.get("kind") in ("on", "off", "voltage", "discharged", "trip", "safe")]
    groups = [
        ("step", [(float(s["mono"]) - t, s.get("text", "")) for s in sc.steps], "square", "#555"),
        ("power", [(float(e["mono"]) - t, f"supply {e.get('kind')}" + (f" {e['volts']:.3f} V" if isinstance(
            e.get("volts"), (int, float)) else "") + (f" {e.get('detail')}" if e.get("detail") else ""))
            for e in edges], "line-ns-open", "#000"),
        ("boot", [(float(b["mono"]) - t, f"boot, reset cause {b.get('cause')}<br>{b.get('line', '')}")
                  for b in sc.boots], "star", "#2a7"),
        ("session write", [(float(w["mono"]) - t, f"{w.get('text', '')}" + (f" ({w['bytes']} bytes)"
                            if w.get("bytes") else "")) for w in sc.writes], "diamond", "#a62"),
    ]
    for lane, points, symbol, color in groups:
        if not points:
            continue
        fig.add_trace(go.Scatter(x=[p[0] for p in points], y=[_LANE[lane]] * len(points), mode="markers",
                                 name=lane, hovertext=[html.escape(str(p[1])) for p in points], hoverinfo="x+text",
                                 marker={"symbol": symbol, "size": 9, "color": color}), row=2, col=1)


def _handshake_traces(fig: Any, go: Any, sc: ScenarioRun, t: float) -> None:
    pos: dict[int, tuple[float, int]] = {}
    styles = {"full": ("circle", "#1f77b4"), "resumed": ("circle", "#2ca02c"), "failed": ("x", "#d62728")}
    for lane in ("full", "resumed", "failed"):
        recs = [r for r in sc.records if _lane_of(r) == lane]
        if not recs:
            continue
        xs = [float(r["mono"]) - t for r in recs]
        for r, x in zip(recs, xs):
            pos[int(r["id"])] = (x, _LANE[lane])
        symbol, color = styles[lane]
        fig.add_trace(go.Scatter(x=xs, y=[_LANE[lane]] * len(recs), mode="markers+text", name=f"handshake {lane}",
                                 text=[f"#{r['id']}" for r in recs], textposition="top center",
                                 hovertext=[html.escape(_record_text(r)).replace("&lt;br&gt;", "<br>")
                                            for r in recs],
                                 hoverinfo="x+text", marker={"symbol": symbol, "size": 12, "color": color}),
                      row=2, col=1)
    xref, yref = _refs(fig, 2)
    arrows = []
    for arrow in lineage_arrows(sc.records):
        if arrow.src not in pos or arrow.dst not in pos:
            continue
        (x0, y0), (x1, y1) = pos[arrow.src], pos[arrow.dst]
        arrows.append({"x": x1, "y": y1, "ax": x0, "ay": y0, "xref": xref, "yref": yref, "axref": xref,
                       "ayref": yref, "text": "", "showarrow": True, "arrowhead": 2, "arrowsize": 1.2,
                       "arrowwidth": 1.5, "standoff": 7, "startstandoff": 7, "hovertext": arrow.note,
                       "arrowcolor": "#2ca02c" if arrow.resumed else "#999"})
    if arrows:      # one list, not add_annotation per arrow (see _power_shapes)
        fig.update_layout(annotations=[*fig.layout.annotations, *arrows])


# -- html ---------------------------------------------------------------------------

def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _num(value: float | None, fmt: str = ".0f", unit: str = "") -> str:
    return "n/a" if value is None else f"{value:{fmt}}{unit}"


def _code_meaning(code: str) -> str:
    try:
        return Code(code).meaning
    except ValueError:
        return ""


def _badge(sc: ScenarioRun) -> str:
    if sc.kind == "bench-error":
        return f'<span class="badge bench">BENCH ERROR [{_e(sc.code)}]</span>'
    cls = {"passed": "pass", "failed": "fail"}.get(sc.outcome, "other")
    word = {"passed": "PASS", "failed": "FAIL"}.get(sc.outcome, sc.outcome.upper())
    return f'<span class="badge {cls}">{word} [{_e(sc.code)}]</span>'


def _meta_html(meta: dict[str, Any], run_root: Path) -> str:
    rows = [("run", str(run_root))] + [(k, v) for k, v in meta.items() if v not in (None, "")]
    return "<table class='meta'>" + "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in rows) + \
        "</table>"


def summary_html(fig: runhistory.RunFigures, runs: list[ScenarioRun], energy: list[dict[str, Any]]) -> str:
    """The run at a glance: codes, resumption, why full, what a resumption saved, energy."""
    parts = [f"<p class='counts'>{fig.scenarios} scenarios: <b>{fig.passed} passed</b>, "
             f"<b class='failtext'>{fig.failed} failed</b> (verdicts), {fig.skipped} skipped; "
             f"<b>{fig.bench_errors} bench errors</b> counted apart (they say nothing about the firmware)</p>"]
    parts.append(_codes_html(runs))
    total = fig.full + fig.resumed
    rate = _num(None if fig.resumption_rate is None else 100 * fig.resumption_rate, ".1f", "%")
    parts.append(f"<h3>Handshakes at the reference server</h3><p>{total} completed: {fig.full} full, "
                 f"{fig.resumed} resumed (<b>{rate} resumed</b>); {fig.failed_handshakes} did not complete.</p>")
    if fig.full_reasons:
        parts.append("<table class='grid'><tr><th>why the full handshake was full</th><th>n</th></tr>" + "".join(
            f"<tr><td>{_e(why)}</td><td class='n'>{n}</td></tr>"
            for why, n in sorted(fig.full_reasons.items(), key=lambda kv: -kv[1])) + "</table>")
    parts.append(_saved_html(fig))
    parts.append(energy_html(energy))
    return "\n".join(parts)


def _codes_html(runs: list[ScenarioRun]) -> str:
    """Scenarios by code: failing codes first with their scenarios linked, bench errors apart, passes folded."""
    groups: dict[tuple[str, str], list[ScenarioRun]] = {}
    for sc in runs:
        group = "bench error" if sc.kind == "bench-error" else ("pass" if sc.outcome == "passed" else sc.outcome)
        groups.setdefault((group, sc.code), []).append(sc)
    rank = {"failed": 0, "bench error": 1, "skipped": 2, "pass": 3}
    rows = []
    for (group, code), members in sorted(groups.items(), key=lambda kv: (rank.get(kv[0][0], 2), -len(kv[1]),
                                                                         kv[0][1])):
        links = ", ".join(f"<a href='#{s.anchor}'>{_e(s.nodeid.split('::')[-1])}</a>" for s in members)
        if group == "pass":
            links = f"<details><summary>{len(members)} scenarios</summary>{links}</details>"
        rows.append(f"<tr class='code-{_e(group.replace(' ', '-'))}'><td>{_e(group)}</td><td><code>{_e(code)}</code>"
                    f"</td><td class='n'>{len(members)}</td><td>{_e(_code_meaning(code))}</td>"
                    f"<td class='links'>{links}</td></tr>")
    return ("<h3>By code</h3><table class='grid codes'><tr><th>outcome</th><th>code</th><th>n</th><th>meaning</th>"
            "<th>scenarios</th></tr>" + "".join(rows) + "</table>")


def _saved_html(fig: runhistory.RunFigures) -> str:
    rows = [("all versions", fig.median_full_bytes, fig.median_resumed_bytes, fig.median_full_ms,
             fig.median_resumed_ms)]
    rows += [(v, m["median_full_bytes"], m["median_resumed_bytes"], m["median_full_ms"], m["median_resumed_ms"])
             for v, m in fig.by_version.items()]
    body = []
    for name, fb, rb, fm, rm in rows:
        saved_b = None if fb is None or rb is None else fb - rb
        saved_m = None if fm is None or rm is None else fm - rm
        pct = f" ({100 * saved_b / fb:.0f}%)" if saved_b is not None and fb else ""
        body.append(f"<tr><td>{_e(name)}</td><td class='n'>{_num(fb)}</td><td class='n'>{_num(rb)}</td>"
                    f"<td class='n'><b>{_num(saved_b)}</b>{pct}</td><td class='n'>{_num(fm, '.1f')}</td>"
                    f"<td class='n'>{_num(rm, '.1f')}</td><td class='n'><b>{_num(saved_m, '.1f')}</b></td></tr>")
    return ("<h3>What a resumption saved (medians, at the server)</h3><table class='grid'><tr><th>version</th>"
            "<th>full bytes</th><th>resumed bytes</th><th>bytes saved</th><th>full ms</th><th>resumed ms</th>"
            "<th>ms saved</th></tr>" + "".join(body) + "</table>")


def energy_html(energy: list[dict[str, Any]]) -> str:
    """Charge and time per handshake at the supply, from the energy scenario's fast current sampling."""
    head = "<h3>Energy per handshake (at the supply)</h3>"
    if not energy:
        return head + "<p class='note'>no energy.json in this run (scenarios/test_energy_per_handshake.py " \
                      "did not run).</p>"
    rows = []
    for e in sorted(energy, key=lambda e: str(e.get("version"))):
        full, res, saved = e.get("full") or {}, e.get("resumed") or {}, e.get("saved") or {}
        fc, rc = full.get("charge_mC"), res.get("charge_mC")
        pct = f" ({100 * saved['charge_mC'] / fc:.0f}%)" if fc and saved.get("charge_mC") is not None else ""
        flag = "" if e.get("ok") else " <span class='failtext'>(not a resumption of the full handshake: " \
                                      "figures not comparable)</span>"
        rows.append(
            f"<tr class='cell' data-version='{_e(e.get('version'))}'><td>{_e(e.get('version'))}{flag}</td>"
            f"<td class='n'>{_num(fc, '.2f')}</td>"
            f"<td class='n'>{_num(full.get('seconds'), '.3f')}</td><td class='n'>{_num(rc, '.2f')}</td>"
            f"<td class='n'>{_num(res.get('seconds'), '.3f')}</td>"
            f"<td class='n'><b>{_num(saved.get('charge_mC'), '.2f')}</b>{pct}</td>"
            f"<td class='n'><b>{_num(saved.get('seconds'), '.3f')}</b></td>"
            f"<td class='n'>{_num(1000 * e['idle_A'] if isinstance(e.get('idle_A'), (int, float)) else None, '.1f')}"
            f"</td><td class='n'>{_num(full.get('interval_ms'), '.2f')}</td></tr>")
    return (head + "<table class='grid energy'><tr><th>version</th><th>full mC</th><th>full s</th><th>resumed mC</th>"
            "<th>resumed s</th><th>mC saved</th><th>s saved</th><th>idle mA</th><th>sample interval ms</th></tr>"
            + "".join(rows) + "</table><p class='note'>Measured by scenarios/test_energy_per_handshake.py: the "
            "supply's current sampled back to back while the device connects, integrated over the connect "
            "(the precise figure). The rail traces in the plots below are for reading the time axis, not for "
            "this figure.</p>")


def _console_html(sc: ScenarioRun) -> str:
    rows = "".join(f"<tr><td class='t'>{ln.mono - sc.start:.3f}</td><td>{_e(ln.text)}</td></tr>"
                   for ln in sc.lines)
    return f"<div class='box'><h4>console ({len(sc.lines)} lines)</h4><table class='log'>{rows}</table></div>"


def _records_html(sc: ScenarioRun) -> str:
    rows = []
    for r in sc.records:
        how = "resumed" if r.get("resumed") else ("failed" if r.get("error") and not r.get("version") else "full")
        lineage = f"{r.get('mechanism') or ''} from #{r['resumed_from']}" if r.get("resumed") else ""
        offered = ",".join(_offered(r)) or "nothing"
        rows.append(
            f"<tr class='{how}'><td class='t'>{float(r.get('mono', 0)) - sc.start:.3f}</td><td>#{_e(r.get('id'))}"
            f"</td><td>{_e(r.get('version') or '-')}</td><td>{how} {_e(lineage)}</td>"
            f"<td>{_e(offered)}</td><td>{_e(r.get('rejected') or r.get('error') or '')}</td>"
            f"<td>{_e(','.join(r.get('issued') or []))}</td>"
            f"<td class='n'>{int(r.get('bytes_in') or 0) + int(r.get('bytes_out') or 0)}</td>"
            f"<td class='n'>{float(r.get('duration_ms') or 0):.1f}</td></tr>")
    return (f"<div class='box'><h4>handshakes ({len(sc.records)}, server records; fingerprints only)</h4>"
            "<table class='log'><tr><th>s</th><th>id</th><th>version</th><th>how</th><th>offered</th>"
            "<th>refused / error</th><th>issued</th><th>bytes</th><th>ms</th></tr>" + "".join(rows) + "</table></div>")


def _attempts_html(sc: ScenarioRun) -> str:
    attempts = sc.result.get("attempts") or []
    if not attempts:
        return ""
    items = "".join(f"<li>{_e(', '.join(f'{k}: {v}' for k, v in a.items()))}</li>" for a in attempts
                    if isinstance(a, dict))
    return f"<p>attempts ({len(attempts)}):</p><ul class='attempts'>{items}</ul>"


def scenario_html(sc: ScenarioRun, plot: str, rel_dir: str) -> str:
    """One scenario's section: verdict, plot, console and records side by side."""
    rail = "rail.jsonl" if sc.rail else "supply readings only (no rail.jsonl)"
    return (f"<section class='scenario {_e(sc.outcome)}' id='{sc.anchor}' data-nodeid='{_e(sc.nodeid)}' "
            f"data-outcome='{_e(sc.outcome)}' data-code='{_e(sc.code)}' data-kind='{_e(sc.kind)}'>"
            f"<h2>{_badge(sc)} {_e(sc.nodeid)}</h2>"
            f"<p class='where'>{float(sc.result.get('duration_s') or 0):.2f} s; run directory "
            f"<a href='{_e(rel_dir)}/'>{_e(rel_dir)}</a>; rail from {rail}</p>"
            f"{_attempts_html(sc)}<pre class='verdict'>{_e(sc.verdict_text)}</pre>"
            f"<div class='plot'>{plot}</div>"
            f"<div class='side'>{_console_html(sc)}{_records_html(sc)}</div></section>")


_CSS = """
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222;max-width:1600px}
h1{font-size:1.5em} h2{font-size:1.15em;margin-top:0} h3{font-size:1.05em;margin-bottom:.3em}
h4{margin:.2em 0;font-size:.95em}
table.grid,table.meta{border-collapse:collapse;font-size:.9em} table.grid td,table.grid th,table.meta td,
table.meta th{border:1px solid #ccc;padding:2px 6px;text-align:left;vertical-align:top}
td.n{text-align:right;font-variant-numeric:tabular-nums} td.links{max-width:60em}
.badge{padding:1px 6px;border-radius:3px;color:#fff;font-size:.85em} .badge.pass{background:#2a7}
.badge.fail{background:#c22} .badge.bench{background:#c80} .badge.other{background:#777}
.failtext{color:#c22} .note{color:#555;font-size:.85em}
section.scenario{border-top:3px solid #ddd;padding-top:.6em;margin-top:1.6em}
section.scenario.failed{border-top-color:#c22}
pre.verdict{background:#f6f6f6;padding:.5em;white-space:pre-wrap;font-size:.85em;max-height:22em;overflow:auto}
.side{display:grid;grid-template-columns:1fr 1fr;gap:1em}
.box{max-height:28em;overflow:auto;border:1px solid #ddd;padding:.3em}
table.log{font-family:ui-monospace,monospace;font-size:.78em;border-collapse:collapse}
table.log td,table.log th{padding:0 .5em;text-align:left;white-space:pre-wrap;vertical-align:top}
td.t{color:#777;text-align:right;white-space:nowrap} tr.resumed td{color:#186} tr.failed td{color:#c22}
nav li{font-size:.9em}
"""


def _page(title: str, body: str) -> str:
    return (f"<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'><title>{_e(title)}</title>"
            f"<style>{_CSS}</style></head><body>\n{body}\n</body></html>\n")


#: renders a plot when it comes near the viewport: 55 plots drawn at once kept a page busy for 15 s and more
#: on a loaded 2-core machine; ``renderAllPlots()`` draws every one (a test, a print)
_LOADER = """
(function () {
  var template = JSON.parse(document.getElementById("plot-template").textContent);
  var divs = Array.prototype.slice.call(document.querySelectorAll("div.lazy-plot"));
  function render(div) {
    if (div.getAttribute("data-drawn")) return;
    div.setAttribute("data-drawn", "1");
    var spec = JSON.parse(document.getElementById(div.getAttribute("data-spec")).textContent);
    spec.layout.template = template;
    Plotly.newPlot(div, spec.data, spec.layout, {displaylogo: false, responsive: true});
  }
  window.renderAllPlots = function () { divs.forEach(render); return divs.length; };
  if ("IntersectionObserver" in window && location.hash !== "#all") {
    var seen = new IntersectionObserver(function (entries) {
      entries.forEach(function (e) { if (e.isIntersecting) { seen.unobserve(e.target); render(e.target); } });
    }, {rootMargin: "600px"});
    divs.forEach(function (d) { seen.observe(d); });
  } else {
    window.renderAllPlots();
  }
})();
"""


class _Plots:
    """Figures as data in the page, drawn by plotly.js, which the page carries once, inline.

    Each figure's JSON sits in a ``<script type="application/json">`` next
    to its div, without its template (one shared copy: ~8 kB a figure
    otherwise); :meth:`scripts` adds plotly.js and the loader once, at the
    end of the page, so the text of the report shows before any plot.
    """

    def __init__(self) -> None:
        self.count = 0
        self.template: Any = None

    def html(self, fig: Any, div_id: str) -> str:
        spec = json.loads(fig.to_json())
        template = spec.get("layout", {}).pop("template", None)
        if self.template is None:
            self.template = template
        self.count += 1
        height = int(spec.get("layout", {}).get("height") or 450)
        return (f"<div class='lazy-plot' id='{_e(div_id)}' data-spec='{_e(div_id)}-spec' "
                f"style='height:{height}px'></div>"
                f"<script type='application/json' id='{_e(div_id)}-spec'>{_script_json(spec)}</script>")

    def scripts(self) -> str:
        """plotly.js (inline, once) and the loader; nothing when the page has no plot."""
        if not self.count:
            return ""
        from plotly.offline import get_plotlyjs

        return (f"<script type='application/json' id='plot-template'>{_script_json(self.template or {})}</script>"
                f"<script>{get_plotlyjs()}</script><script>{_LOADER}</script>")


def _script_json(data: Any) -> str:
    """JSON safe inside a <script> element: a console line reading "</script>" must not end it."""
    return json.dumps(data, separators=(",", ":")).replace("<", "\\u003c")


def _trend_html(plots: _Plots, entries: list[runhistory.HistoryEntry]) -> str:
    if not entries:
        return ""
    return ("<h2>Trend: the last runs</h2>"
            + plots.html(runhistory.trend_figure(entries, TREND_RUNS), "trend"))


def write_report(run_root: Path, out: Path | None = None, *, meta: dict[str, Any] | None = None,
                 history: Path | None = None) -> Path:
    """Write report.html for the run under ``run_root`` (default ``run_root/report.html``); returns its path.

    ``meta`` (rig, device file, seed, firmware version...) heads the page;
    ``history`` (a history JSON-lines file) adds the trend of the last runs.
    """
    began = clock.now()
    run_root = Path(run_root)
    out = Path(out) if out is not None else run_root / "report.html"
    results = runhistory.read_results(run_root)
    energy = runhistory.read_energy(run_root)
    runs = sorted((load_scenario(r) for r in results), key=ScenarioRun.order)
    figures = runhistory.run_figures(results, energy)
    plots = _Plots()
    sections = []
    for sc in runs:
        rel = _relative(sc.dir, out.parent)
        sections.append(scenario_html(sc, plots.html(scenario_figure(sc), f"plot-{sc.anchor}"), rel))
    entries = runhistory.load(Path(history)) if history is not None else []
    index = "".join(f"<li>{_badge(sc)} <a href='#{sc.anchor}'>{_e(sc.nodeid)}</a></li>" for sc in runs)
    body = (f"<h1>TLS resumption bench: {_e(run_root.name)}</h1>{_meta_html(dict(meta or {}), run_root)}"
            f"<h2>Summary</h2>{summary_html(figures, runs, energy)}"
            f"{_trend_html(plots, entries)}"
            f"<h2>Scenarios (failures first)</h2><nav><ol>{index}</ol></nav>" + "\n".join(sections)
            + plots.scripts())
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(_page(f"TLS resumption bench {run_root.name}", body), encoding="utf-8")
    log.info("report %s: %d scenarios, %d bytes in %.1f s", out, len(runs), out.stat().st_size,
             clock.now() - began)
    return out


def _relative(path: Path, base: Path) -> str:
    try:
        return path.resolve().relative_to(base.resolve()).as_posix()
    except ValueError:
        return path.resolve().as_uri()


def write_trends(history_file: Path, out: Path, last: int = TREND_RUNS) -> Path:
    """The trend alone, as its own self-contained page."""
    entries = runhistory.load(history_file)
    plots = _Plots()
    body = (f"<h1>TLS resumption bench: trend</h1><p>{len(entries)} runs in {_e(history_file)}; "
            f"the last {min(last, len(entries))} drawn.</p>"
            + (plots.html(runhistory.trend_figure(entries, last), "trend") if entries else "<p>no runs yet</p>")
            + plots.scripts())
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(_page("TLS resumption bench trend", body), encoding="utf-8")
    return out


def _history_file(path: Path) -> Path:
    """``--history`` takes the history file itself or the folder holding ``history.jsonl``."""
    return path / "history.jsonl" if path.is_dir() else path


def main(argv: Iterable[str] | None = None) -> int:
    """``python -m harness.report [RUN_ROOT] [--history PATH] [-o OUT]``: a run's report, or the trend alone."""
    parser = argparse.ArgumentParser(prog="python -m harness.report",
                                     description="Write report.html for a run, or the trend of the history alone.")
    parser.add_argument("run_root", nargs="?", type=Path, help="the run's folder (runs/<date-time>)")
    parser.add_argument("--history", type=Path, help="history file, or the folder holding history.jsonl; without "
                        "RUN_ROOT: write the trend alone (to DIR/trends.html unless -o)")
    parser.add_argument("-o", "--out", type=Path, help="where to write the page")
    parser.add_argument("--last", type=int, default=TREND_RUNS, help="runs in the trend (default %(default)s)")
    args = parser.parse_args(list(argv) if argv is not None else None)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.run_root is None:
        if args.history is None:
            parser.error("give a RUN_ROOT, or --history for the trend alone")
        source = _history_file(args.history)
        out = args.out or (args.history if args.history.is_dir() else args.history.parent) / "trends.html"
        print(write_trends(source, out, args.last))
        return 0
    if not args.run_root.is_dir():
        parser.error(f"{args.run_root}: no such folder")
    history_file = _history_file(args.history) if args.history is not None else None
    print(write_report(args.run_root, args.out, history=history_file))
    return 0


if __name__ == "__main__":
    sys.exit(main())
