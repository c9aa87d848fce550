"""`ecjax report STORE`: the paper's tables and figures from a results store alone.

Writes into one directory: `report.md` (Markdown with relative PNG links), the PNG figures, and
`index.html`, one self-contained page (figures embedded) that opens in any browser.

Contents, as far as the store's cells allow: Table 1 (E1..E8 per cell, mean ± sd over samples,
the mean alone for one sample, at the risk level `report.delta`); when the store has one cell of
each of the paper's scenarios, Table 1 beside the paper's published values and the paper's
relations between its scenarios, each marked held or not with the reason where not
(`ecjax.report.paper`); a table of the cells (iterations, final θ, QP failures,
slack, run times), closed-loop violation rates with Clopper-Pearson intervals; figures: the
indices as bars, battery energy / trades / grid import of the first kept sample of each cell
(the paper's Figs. 2–4), the risk calibration plot (violation rate against δ), indices against
δ when cells hold several risk levels, cost / trading / iterations / run time against n
when cells differ in community size, and the open-loop validation of the first plan (rates
against the model probability) when cells carry one. Every table column has its unit and a
one-line meaning; counts are drawn on integer axes.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from .. import store as _store
from ..config import build_community
from . import html as _html
from . import markdown as _md
from . import plots, tables
from .data import CellView, collect

__all__ = ["ReportPaths", "make_report", "collect", "CellView"]


@dataclasses.dataclass
class ReportPaths:
    markdown: Path
    html: Path
    figures: list  # PNG paths


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "cell"


def make_report(store_path, out_dir, verify: bool = True) -> ReportPaths:
    """Render the report of a store into `out_dir` (created); returns the written paths.

    `verify`: first check every cell against its manifest (`ecjax.store.check_store`); a
    damaged cell raises `ecjax.store.DamagedCellError` and nothing is written.
    """
    if verify:
        _store.check_store(store_path)
    views = collect(store_path, verify=False)  # checked above, or by the caller
    if not views:
        raise _store.StoreError(f"{store_path} has no finished cell to report on.")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rcfg = views[0].config.get("report") or {}
    delta = float(rcfg.get("delta", 0.05))
    draw = bool(rcfg.get("figures", True))
    root = _store.store_attrs(store_path)
    sweep = root.get("sweep") or {}
    title = sweep.get("title") or "ecjax report"
    intro = [
        f"Store: {Path(store_path).resolve()} (created {root.get('created', '?')}, "
        f"ecjax {root.get('ecjax_version', '?')}).",
        f"{len(views)} finished cell(s); samples per cell: "
        + ", ".join(sorted({str(v.S) for v in views})) + ".",
    ]
    if sweep.get("argv"):
        intro.append("Command: ecjax " + " ".join(sweep["argv"]))
    legacy = [v.id for v in views if not (_store.cell_attrs(store_path, v.id) or {}).get("integrity")]
    if legacy:
        intro.append(f"Not verifiable (written before ecjax stored checksums): {', '.join(legacy)}.")
    tabs = [tables.table1(views, delta), *tables.paper_table1(views, delta), tables.cells(views),
            tables.violations(views)]
    size = tables.community_size(views)
    if size is not None:
        tabs.append(size)
    agree = tables.agreement(views)
    if agree is not None:
        tabs.append(agree)
    ol = tables.open_loop(views)
    if ol is not None:
        tabs.append(ol)
    figs: list[tuple[str, Path]] = []
    if draw:
        figs.append(("Indices per cell (Table 1 as bars)",
                     plots.indices_bars(views, delta, out / "indices.png")))
        for v in views:
            if not v.has_trajectories:
                continue
            cell = _store.open_cell(store_path, v.id, verify=False)
            community = build_community(v.config["community"])
            p = plots.trajectories(v, cell.trajectories, community, delta, out / f"traj_{_safe(v.id)}.png")
            figs.append((f"{tables.column_title(v, views)}: battery energy, trades and grid import "
                         "of the first kept sample (paper Figs. 2–4)", p))
        cc = [v for v in views if v.scenario != "dmpc"]
        if cc:
            figs.append(("Risk calibration: closed-loop violation rate against δ",
                         plots.calibration(cc, out / "calibration.png")))
        if any(len(v.deltas) > 1 for v in views):
            figs.append(("Indices against the risk level δ",
                         plots.indices_vs_delta([v for v in views if len(v.deltas) > 1],
                                                out / "indices_vs_delta.png")))
        if size is not None:
            figs.append(("Cost, trading, iterations and run time against community size",
                         plots.community_size(views, out / "community_size.png")))
        if agree is not None:
            figs.append(("FC-MPC gap to the centralized optimum against the iteration, per community size",
                         plots.agreement(views, out / "agreement.png")))
        if ol is not None:
            figs.append(("Open-loop violation rate of the first plan against the model probability",
                         plots.open_loop([v for v in views if v.open_loop is not None],
                                         out / "open_loop.png")))
    md = out / "report.md"
    md.write_text(_md.render(title, intro, tabs, [(c, p.name) for c, p in figs]), encoding="utf-8")
    page = out / "index.html"
    page.write_text(_html.render(title, intro, tabs, figs), encoding="utf-8")
    return ReportPaths(markdown=md, html=page, figures=[p for _, p in figs])
