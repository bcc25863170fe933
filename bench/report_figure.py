"""Time to build one scenario's report figure for a soak: the shipped way against one shape and arrow per call.

    python bench/report_figure.py [--cuts 100]

A soak of N cuts draws N grey bands on each of the two subplots and about
2N lineage arrows.  The shipped :func:`harness.htmlreport.scenario_figure`
sets them as one list; the baseline (measured here, in the same run) adds
them one call at a time with plotly's ``add_vrect``/``add_annotation``, as
the report did before, which copy and revalidate every shape already there
on each call.  Last line: ``ratio=`` (shipped / baseline; lower is better).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from harness import htmlreport
from harness.htmlreport import ScenarioRun, _cuts, _refs, lineage_arrows


def soak(cuts: int) -> ScenarioRun:
    """A soak's run read back: a full handshake, then per cut a resumption of the one before."""
    t0, step = 1000.0, 1.0
    records = [{"id": 1, "mono": t0 + 0.3, "version": "TLSv1.3", "resumed": False, "mechanism": "full",
                "issued": ["t1"], "offered": {}}]
    cut_rows, boots = [], []
    for n in range(cuts):
        off = t0 + 0.5 + n * step
        cut_rows.append({"off_mono": off, "on_mono": off + 0.3, "kind": "off", "verified": True})
        boots.append({"mono": off + 0.35, "cause": "power-on", "line": "reset cause: power-on"})
        records.append({"id": n + 2, "mono": off + 0.5, "version": "TLSv1.3", "resumed": True, "mechanism": "psk",
                        "resumed_from": n + 1, "issued": [f"t{n + 2}"], "offered": {"psk": [f"t{n + 1}"]}})
    return ScenarioRun(dir=Path("soak"), result={"nodeid": "soak", "outcome": "passed"}, start=t0,
                       end=t0 + cuts * step + 1, records=records, cuts=cut_rows, boots=boots)


def baseline(sc: ScenarioRun) -> Any:
    """The figure with one plotly call per band and per arrow (the report's code before this benchmark)."""
    fig = htmlreport.scenario_figure(ScenarioRun(dir=sc.dir, result=sc.result, start=sc.start, end=sc.end))
    t = sc.start
    for off, on, _ in _cuts(sc):
        fig.add_vrect(x0=off - t, x1=(float(on) if on is not None else sc.end) - t, fillcolor="#888",
                      opacity=0.18, line_width=0, row="all", col=1, exclude_empty_subplots=False)
    xref, yref = _refs(fig, 2)
    for arrow in lineage_arrows(sc.records):
        fig.add_annotation(x=arrow.dst, y=1, ax=arrow.src, ay=1, xref=xref, yref=yref, axref=xref, ayref=yref,
                           text="", showarrow=True, arrowhead=2, hovertext=arrow.note)
    return fig


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cuts", type=int, default=100)
    args = parser.parse_args()
    sc = soak(args.cuts)
    began = time.monotonic()
    shipped = htmlreport.scenario_figure(sc)
    new = time.monotonic() - began
    began = time.monotonic()
    old = baseline(sc)
    before = time.monotonic() - began
    assert len(shipped.layout.shapes) == len(old.layout.shapes) == 2 * args.cuts
    assert len(shipped.layout.annotations) == len(old.layout.annotations) == args.cuts
    print(f"cuts={args.cuts} shipped_s={new:.2f} one_call_each_s={before:.2f}")
    print(f"ratio={new / before:.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
