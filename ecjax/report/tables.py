"""The report's tables, as plain rows (rendered to Markdown and HTML elsewhere)."""

from __future__ import annotations

import dataclasses

import numpy as np

from ..metrics import INDEX_DOC, INDEX_NAMES
from .data import LEVEL, CellView

SCENARIO_TITLES = {
    "islanded": "Islanded CC-MPC",
    "ccdmpc": "Distributed CC-MPC",
    "dmpc": "Standard DMPC",
    "centralized": "Centralized CC-MPC",
}
UNITS = {k: ("€" if k in ("E1", "E2", "E3") else "kWh") for k in INDEX_NAMES}


@dataclasses.dataclass
class Table:
    key: str
    title: str
    header: list
    rows: list
    note: str = ""


def _pm(m: float, s: float) -> str:
    return f"{m:.2f} ± {s:.2f}"


def column_title(v: CellView, views: list[CellView]) -> str:
    """A scenario's paper name when scenarios are all that differ, else the cell label."""
    if len({x.scenario for x in views}) == len(views):
        return SCENARIO_TITLES.get(v.scenario, v.scenario)
    return v.label


def table1(views: list[CellView], delta: float) -> Table:
    """Paper Table 1: E1..E8 (mean ± sd over samples) per cell at the risk level nearest δ."""
    used = [float(v.deltas[v.nearest(delta)]) for v in views]
    note = (f"Mean ± standard deviation over the S closed-loop samples of each cell, at the stored "
            f"risk level nearest δ = {delta:g} (used: "
            + ", ".join(f"{column_title(v, views)}: δ = {d:g}" for v, d in zip(views, used))
            + "; the standard DMPC runs at δ = 0.5, no tightening).")
    if len(views) <= 5:
        header = ["index"] + [column_title(v, views) for v in views]
        rows = []
        for k in INDEX_NAMES:
            rows.append([f"{k} [{UNITS[k]}]"] + [_pm(v.mean[k][v.nearest(delta)], v.sd[k][v.nearest(delta)])
                                                  for v in views])
    else:
        header = ["cell"] + [f"{k} [{UNITS[k]}]" for k in INDEX_NAMES]
        rows = [[column_title(v, views)] + [_pm(v.mean[k][v.nearest(delta)], v.sd[k][v.nearest(delta)])
                                            for k in INDEX_NAMES] for v in views]
    legend = "; ".join(f"{k}: {INDEX_DOC[k]}" for k in INDEX_NAMES)
    return Table("table1", "Table 1: economic and energy indices", header, rows, note + " " + legend)


def cells(views: list[CellView]) -> Table:
    header = ["cell", "scenario", "n (|P|)", "tightening", "δ", "S", "T", "N", "FC-MPC iters/step",
              "final θ", "QP not solved", "held / fallback per day", "slack", "curtailed kWh", "deficit kWh", "run s", "compile s"]
    rows = []
    for v in views:
        a = v.attrs
        rows.append([
            v.id, v.scenario, f"{v.n} ({v.n_prosumers})", v.tightening,
            ", ".join(f"{d:g}" for d in v.deltas), v.S, v.T, v.N,
            ", ".join(f"{x:.1f}" for x in v.iters), ", ".join(f"{x:.2g}" for x in v.theta),
            ", ".join(f"{100 * x:.1f} %" for x in v.qp_fail),
            ", ".join(f"{h:.3g} / {f:.3g}" for h, f in zip(v.qp_held, v.qp_fallback)),
            ", ".join(f"{x:.3g}" for x in v.mean.get("slack", [np.nan])),
            ", ".join(f"{x:.3g}" for x in v.mean.get("curtailed", [np.nan])),
            ", ".join(f"{x:.3g}" for x in v.mean.get("deficit", [np.nan])),
            f"{a.get('seconds', float('nan')):.1f}", f"{a.get('compile_seconds', float('nan')):.1f}",
        ])  # fmt: skip
    dev = sorted({v.attrs.get("device", "?") for v in views})
    return Table("cells", "Cells", header, rows,
                 "Values per risk level where a cell has several. QP not solved: share of steps with "
                 "a QP that did not end solved; held: FC-MPC subproblem solutions not solved, where "
                 "the prosumer kept its previous iterate; fallback: plans not solved, where the "
                 "prosumer applied its previous plan shifted (means per sample-day). "
                 "Device: " + "; ".join(dev) + ".")


def violations(views: list[CellView]) -> Table:
    header = ["cell", "δ", "lower bound: rate [CI]", "upper bound: rate [CI]", "either [CI]",
              "worst (prosumer, step)", "trials per bound", "empty-band steps"]
    rows = []
    for v in views:
        for r, d in enumerate(v.deltas):
            cols = []
            for side in ("lo", "hi", "any"):
                x = v.viol[side]
                cols.append(f"{x.rate[r]:.4f} [{x.lo[r]:.4f}, {x.hi[r]:.4f}]")
            worst = max(v.viol["lo"].worst[r], v.viol["hi"].worst[r])
            rows.append([v.label, f"{d:g}", *cols, f"{worst:.3f}", int(v.viol["lo"].n[r]),
                         f"{v.mean.get('empty_steps', [np.nan] * len(v.deltas))[r]:.2f}"])
    note = (f"Closed-loop rate of eb outside [eb_min, eb_max] after a step, pooled over samples, "
            f"prosumers and steps; {int(LEVEL * 100)} % Clopper-Pearson intervals (pooling treats "
            "the trials as independent). The chance constraint asks each bound's rate to be at "
            "most δ at every predicted step.")
    return Table("violations", "Chance constraints: closed-loop violation rates", header, rows, note)


def community_size(views: list[CellView]) -> Table | None:
    if len({v.n for v in views}) < 2:
        return None
    header = ["cell", "n", "|P|", "E3 / agent [€]", "E4 / agent [kWh]", "E6 / agent [kWh]",
              "FC-MPC iters/step", "run s", "compile s"]
    rows = []
    for v in sorted(views, key=lambda x: (x.n, x.label)):
        r = 0
        rows.append([v.label, v.n, v.n_prosumers, f"{v.mean['E3'][r] / v.n:.3f}",
                     f"{v.mean['E4'][r] / v.n:.3f}", f"{v.mean['E6'][r] / v.n:.3f}",
                     f"{v.iters[r]:.1f}", f"{v.attrs.get('seconds', float('nan')):.1f}",
                     f"{v.attrs.get('compile_seconds', float('nan')):.1f}"])
    return Table("community_size", "Community size", header, rows,
                 "Indices per agent at the first stored risk level; run time of the whole cell "
                 "(all samples and risk levels), compilation excluded (listed apart).")


def open_loop(views: list[CellView]) -> Table | None:
    vs = [v for v in views if v.open_loop is not None]
    if not vs:
        return None
    header = ["cell", "δ", "S", "active entries", "rate on active entries [CI]",
              "active entries within δ's interval", "largest rate (upper CI)", "largest model probability"]
    rows = []
    for v in vs:
        o = v.open_loop
        for r, d in enumerate(v.deltas):
            a = o.active_rate
            rows.append([
                v.label, f"{d:g}", o.S, int(o.active[r]),
                f"{a.rate[r]:.4f} [{a.lo[r]:.4f}, {a.hi[r]:.4f}]" if o.active[r] else "-",
                f"{100 * o.in_interval[r]:.0f} %" if o.active[r] else "-",
                f"{o.max_rate[r]:.4f} ({o.max_hi[r]:.4f})", f"{o.max_model[r]:.4f}",
            ])  # fmt: skip
    note = ("The plan made at hour validate.t from the initial state, applied open loop (no "
            "re-planning) to S disturbance draws; for every prosumer, predicted step k and bound, "
            "the share of draws outside [eb_min, eb_max]. An entry is active where the plan sits on "
            "its tightened bound (no slack, band not empty): there, with cumulative tightening, the "
            f"model's violation probability is δ. {int(LEVEL * 100)} % Clopper-Pearson intervals; "
            "the within-interval share uses the central interval of S Bernoulli(δ) draws.")
    return Table("open_loop", "Open-loop validation of the first plan", header, rows, note)
