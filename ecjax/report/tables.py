"""The report's tables, as plain rows (rendered to Markdown and HTML elsewhere).

Every column has a unit in its header (where it has one) and a one-line meaning
(`Table.meanings`, rendered under the table); a spread is shown only where a cell has more
than one sample.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ..metrics import INDEX_DOC, INDEX_NAMES
from . import paper
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
    meanings: list = dataclasses.field(default_factory=list)  # one line per column of `header`

    def __post_init__(self):
        if self.meanings and len(self.meanings) != len(self.header):
            raise ValueError(f"table {self.key!r}: {len(self.meanings)} meanings for {len(self.header)} columns.")


def _pm(m: float, s: float, S: int = 2) -> str:
    """Mean ± standard deviation; the mean alone for one sample (no spread to show)."""
    return f"{m:.2f}" if S <= 1 else f"{m:.2f} ± {s:.2f}"


def _one(v: CellView) -> str:
    return "one closed-loop day (S = 1), no spread" if v.S <= 1 else f"mean ± sd over S = {v.S} closed-loop days"


def _spread(views: list[CellView]) -> str:
    if all(v.S <= 1 for v in views):
        return "one closed-loop day per cell (S = 1): no spread to show"
    if all(v.S > 1 for v in views):
        return "mean ± standard deviation over the S closed-loop samples of each cell"
    return ("mean ± standard deviation over the S closed-loop samples of each cell (the mean alone "
            "where S = 1)")


def column_title(v: CellView, views: list[CellView]) -> str:
    """A scenario's paper name when scenarios are all that differ, else the cell label."""
    if len({x.scenario for x in views}) == len(views):
        return SCENARIO_TITLES.get(v.scenario, v.scenario)
    return v.label


def table1(views: list[CellView], delta: float) -> Table:
    """Paper Table 1: E1..E8 (mean ± sd over samples) per cell at the risk level nearest δ."""
    used = [float(v.deltas[v.nearest(delta)]) for v in views]
    spread = _spread(views)
    note = (spread[0].upper() + spread[1:] + f", at the stored risk level nearest δ = {delta:g} (used: "
            + ", ".join(f"{column_title(v, views)}: δ = {d:g}" for v, d in zip(views, used))
            + "; the standard DMPC runs at δ = 0.5, no tightening).")
    cell_meaning = lambda v: f"cell {v.id} at δ = {v.deltas[v.nearest(delta)]:g}: {_one(v)}"  # noqa: E731
    if len(views) <= 5:
        header = ["index"] + [column_title(v, views) for v in views]
        rows = []
        for k in INDEX_NAMES:
            rows.append([f"{k} [{UNITS[k]}]"] + [_pm(v.mean[k][v.nearest(delta)], v.sd[k][v.nearest(delta)], v.S)
                                                  for v in views])
        meanings = ["the paper's index, with its unit: " + "; ".join(f"{k} {INDEX_DOC[k]}" for k in INDEX_NAMES)]
        meanings += [cell_meaning(v) for v in views]
    else:
        header = ["cell"] + [f"{k} [{UNITS[k]}]" for k in INDEX_NAMES]
        rows = [[column_title(v, views)] + [_pm(v.mean[k][v.nearest(delta)], v.sd[k][v.nearest(delta)], v.S)
                                            for k in INDEX_NAMES] for v in views]
        meanings = ["the cell (its swept settings)"] + [f"{INDEX_DOC[k]}; {_spread(views)}" for k in INDEX_NAMES]
    return Table("table1", "Table 1: economic and energy indices", header, rows, note, meanings)


def _paper_cells(views: list[CellView]) -> dict | None:
    """The one cell of each of the paper's scenarios, if the store has exactly that."""
    by = {s: [v for v in views if v.scenario == s] for s in paper.SCENARIOS}
    if any(len(vs) != 1 for vs in by.values()):
        return None
    return {s: vs[0] for s, vs in by.items()}


def paper_table1(views: list[CellView], delta: float) -> list[Table]:
    """Table 1 beside the paper's published values, and the paper's relations between its
    scenarios marked as held or not by our means, with the reason where they do not hold.
    Empty unless the store has exactly one cell of each of the paper's three scenarios."""
    cells = _paper_cells(views)
    if cells is None:
        return []
    mean, se, empty = {}, {}, {}
    for s, v in cells.items():
        r = v.nearest(delta)
        mean[s] = {k: float(v.mean[k][r]) for k in INDEX_NAMES}
        se[s] = {k: float(v.sd[k][r]) / np.sqrt(v.S) if v.S > 1 else 0.0 for k in INDEX_NAMES}
        total = v.T * v.N * v.n_prosumers
        empty[s] = 100.0 * float(v.mean.get("empty_steps", [np.nan] * len(v.deltas))[r]) / total if total else np.nan
    header = ["index"]
    meanings = ["the paper's index, with its unit"]
    for s in paper.SCENARIOS:
        v = cells[s]
        header += [f"{paper.COLUMNS[s]}: paper", f"{paper.COLUMNS[s]}: ecjax", f"{paper.COLUMNS[s]}: ecjax − paper"]
        meanings += [f"{paper.COLUMNS[s]}, the paper's Table 1 (one day of its data)",
                     f"{paper.COLUMNS[s]}, ecjax: cell {v.id} at δ = {v.deltas[v.nearest(delta)]:g}: {_one(v)}",
                     "difference of the two, in the index's unit"]
    rows = []
    for i, k in enumerate(INDEX_NAMES):
        row = [f"{k} [{UNITS[k]}]"]
        for j, s in enumerate(paper.SCENARIOS):
            p = paper.TABLE1[k][j]
            row += [f"{p:.2f}", _pm(mean[s][k], cells[s].sd[k][cells[s].nearest(delta)], cells[s].S),
                    f"{mean[s][k] - p:+.2f}"]
        rows.append(row)
    kinds = sorted({f"community={(v.config.get('community') or {}).get('kind', '?')}, "
                    f"data={(v.config.get('data') or {}).get('kind', '?')}, n={v.n}" for v in cells.values()})
    case = "" if kinds == ["community=paper, data=real, n=15"] else (
        f"These cells are not the paper's case ({'; '.join(kinds)}; the paper's: community=paper, "
        "data=real, n=15): their levels are not comparable with the paper's at all, and only the "
        "relations that do not depend on the community (E4 = 0 islanded, the identities) must hold. ")
    values = Table("paper_table1", "Table 1 beside the paper's published values", header, rows,
                   case + paper.DATA_NOTE, meanings)
    rel_rows = []
    held = 0
    for rel in paper.RELATIONS:
        ok = bool(rel.holds(mean, se))
        held += ok
        theirs = bool(rel.holds(paper.MEANS, paper.ZERO_SE))
        rel_rows.append([rel.text, rel.source, "held" if theirs else "NOT held", "held" if ok else "NOT held",
                         "" if ok else rel.reason(mean, empty)])
    relations = Table(
        "paper_relations", f"The paper's relations between its scenarios: {held} of {len(paper.RELATIONS)} "
        "held by ecjax's means", ["relation", "where the paper has it", "paper", "ecjax", "why ecjax differs"],
        rel_rows,
        "Orders compare the means of the cells (islanded, distributed = ccdmpc, standard = dmpc); an "
        "equality holds within 1 % or two standard errors of the difference. A relation that is held "
        "only within the Monte Carlo error needs more samples (sim.S) to be told apart.",
        ["the relation, with the paper's scenario names", "Table 1 or the text of the paper's §6",
         "whether the paper's published values hold it", "whether ecjax's means hold it",
         "where not held: the mechanism behind the relation and what in ecjax's data turns it"])
    return [values, relations]


def cells(views: list[CellView]) -> Table:
    header = ["cell", "scenario", "n (|P|)", "tightening", "δ", "S", "T [h]", "N [h]", "FC-MPC iters/step",
              "final θ [kW]", "QP not solved [%]", "held / fallback per day", "slack [kWh]", "curtailed [kWh]",
              "deficit [kWh]", "run [s]", "compile [s]"]
    meanings = [
        "the cell's id (its swept settings)",
        "islanded: no trades; ccdmpc: FC-MPC with chance constraints; dmpc: FC-MPC at δ = 0.5; centralized",
        "agents, and prosumers among them",
        "cumulative: the variance of every step up to k; per_step: the step's own variance only",
        "risk levels the cell ran at",
        "Monte Carlo samples (closed-loop days)",
        "closed-loop steps of a day",
        "prediction horizon",
        "FC-MPC iterations after the islanded iterate, mean over samples and steps",
        "last max_i θ_i of a step (norm of a prosumer's last input change), mean over samples and steps",
        "share of steps with a QP that did not end solved",
        "subproblem solutions not solved (previous iterate kept) / plans not solved (previous plan "
        "shifted applied), mean per sample-day",
        "soft-bound slack of the applied plans, summed over the day, mean over samples",
        "PV energy clipped at full batteries per day, mean over samples",
        "energy bought to refill batteries below empty per day, mean over samples",
        "wall time of the cell's solves (all samples and risk levels), compilation excluded",
        "compilation time of the cell",
    ]
    rows = []
    for v in views:
        a = v.attrs
        rows.append([
            v.id, v.scenario, f"{v.n} ({v.n_prosumers})", v.tightening,
            ", ".join(f"{d:g}" for d in v.deltas), v.S, v.T, v.N,
            ", ".join(f"{x:.1f}" for x in v.iters), ", ".join(f"{x:.2g}" for x in v.theta),
            ", ".join(f"{100 * x:.1f}" for x in v.qp_fail),
            ", ".join(f"{h:.3g} / {f:.3g}" for h, f in zip(v.qp_held, v.qp_fallback)),
            ", ".join(f"{x:.3g}" for x in v.mean.get("slack", [np.nan])),
            ", ".join(f"{x:.3g}" for x in v.mean.get("curtailed", [np.nan])),
            ", ".join(f"{x:.3g}" for x in v.mean.get("deficit", [np.nan])),
            f"{a.get('seconds', float('nan')):.1f}", f"{a.get('compile_seconds', float('nan')):.1f}",
        ])  # fmt: skip
    dev = sorted({v.attrs.get("device", "?") for v in views})
    return Table("cells", "Cells", header, rows,
                 "Values per risk level where a cell has several. Device: " + "; ".join(dev) + ".", meanings)


def violations(views: list[CellView]) -> Table:
    header = ["cell", "δ", "lower bound: rate [CI]", "upper bound: rate [CI]", "either [CI]",
              "worst (prosumer, step)", "trials per bound", "empty-band entries per day"]
    meanings = [
        "the cell (its swept settings)",
        "risk level: the rate each bound may reach",
        "share of (sample, prosumer, step) trials with eb below eb_min after the step, and its interval",
        "share of trials with eb above eb_max after the step, and its interval",
        "share of trials outside [eb_min, eb_max] on either side, and its interval",
        "largest violation rate (either side) of a single (prosumer, step) over the samples",
        "trials pooled per bound: S × prosumers × steps",
        "predicted (prosumer, step) entries of a day's plans whose tightened band was empty (δ cannot "
        "be met there), mean over samples, of the T·N·|P| entries a day plans",
    ]
    rows = []
    for v in views:
        total = v.T * v.N * v.n_prosumers
        for r, d in enumerate(v.deltas):
            cols = []
            for side in ("lo", "hi", "any"):
                x = v.viol[side]
                cols.append(f"{x.rate[r]:.4f} [{x.lo[r]:.4f}, {x.hi[r]:.4f}]")
            worst = max(v.viol["lo"].worst[r], v.viol["hi"].worst[r])
            empty = v.mean.get("empty_steps", [np.nan] * len(v.deltas))[r]
            share = f" ({100 * empty / total:.0f} %)" if total and np.isfinite(empty) else ""
            rows.append([v.label, f"{d:g}", *cols, f"{worst:.3f}", int(v.viol["lo"].n[r]),
                         f"{empty:.1f} of {total}{share}"])
    note = (f"Closed-loop rate of eb outside [eb_min, eb_max] after a step, pooled over samples, "
            f"prosumers and steps; {int(LEVEL * 100)} % Clopper-Pearson intervals (pooling treats "
            "the trials as independent). The chance constraint asks each bound's rate to be at "
            "most δ at every predicted step.")
    return Table("violations", "Chance constraints: closed-loop violation rates", header, rows, note, meanings)


def community_size(views: list[CellView]) -> Table | None:
    if len({v.n for v in views}) < 2:
        return None
    header = ["cell", "n", "|P|", "E3 / agent [€]", "E4 / agent [kWh]", "E6 / agent [kWh]",
              "FC-MPC iters/step", "run [s]", "compile [s]"]
    meanings = ["the cell (its swept settings)", "agents", "prosumers",
                "net cost of purchases minus sales, per agent, mean over samples",
                "energy traded between agents, per agent, mean over samples",
                "energy bought from the grid, per agent, mean over samples",
                "FC-MPC iterations after the islanded iterate, mean over samples and steps",
                "wall time of the whole cell (all samples and risk levels), compilation excluded",
                "compilation time of the cell"]
    rows = []
    for v in sorted(views, key=lambda x: (x.n, x.label)):
        r = 0
        rows.append([v.label, v.n, v.n_prosumers, f"{v.mean['E3'][r] / v.n:.3f}",
                     f"{v.mean['E4'][r] / v.n:.3f}", f"{v.mean['E6'][r] / v.n:.3f}",
                     f"{v.iters[r]:.1f}", f"{v.attrs.get('seconds', float('nan')):.1f}",
                     f"{v.attrs.get('compile_seconds', float('nan')):.1f}"])
    return Table("community_size", "Community size", header, rows,
                 "At the first stored risk level of each cell.", meanings)


AGREEMENT_AT = (1, 5, 10, 30)
AGREEMENT_GAPS = (1e-2, 1e-3)


def _rule(v: CellView) -> str:
    return str(((v.config.get("fcmpc") or {}).get("weights")) or "uniform")


def agreement(views: list[CellView]) -> Table | None:
    """FC-MPC gap to the centralized optimum against the iteration, per cell run with `sim.gap`."""
    vs = sorted((v for v in views if v.agreement is not None), key=lambda x: (x.n, _rule(x), x.label))
    if not vs:
        return None
    p_max = max(len(v.agreement.mean) - 1 for v in vs)
    at = [p for p in AGREEMENT_AT if p < p_max] + [p_max]
    header = ["cell", "n", "|P|", "weights", "steps", *(f"g at p = {p}" for p in at),
              *(f"p to g <= {g:g}" for g in AGREEMENT_GAPS)]
    meanings = ["the cell (its swept settings)", "agents", "prosumers",
                "FC-MPC combination rule (fcmpc.weights)",
                "closed-loop steps of the kept samples that entered the figures",
                *(f"gap (Φ_p − Φ_c)/(Φ_0 − Φ_c) after {p} iterations: mean / worst over those steps "
                  "(held after a step's stop)" for p in at),
                *(f"first iteration at which the worst step's gap is at most {g:g} (-: not within p_max)"
                  for g in AGREEMENT_GAPS)]  # fmt: skip
    rows = []
    for v in vs:
        a = v.agreement
        last = len(a.mean) - 1
        gaps = [f"{a.mean[min(p, last)]:.2e} / {a.worst[min(p, last)]:.2e}" for p in at]
        reach = []
        for g in AGREEMENT_GAPS:
            hit = np.flatnonzero(a.worst <= g)
            reach.append(str(int(hit[0])) if len(hit) else "-")
        rows.append([v.label, v.n, v.n_prosumers, _rule(v), a.steps, *gaps, *reach])
    return Table("agreement", "FC-MPC agreement with the centralized optimum", header, rows,
                 "At the first stored risk level of each cell, over the kept samples (`sim.keep`); Φ_c from "
                 "the centralized solve of each step (`sim.gap`).", meanings)


def open_loop(views: list[CellView]) -> Table | None:
    vs = [v for v in views if v.open_loop is not None]
    if not vs:
        return None
    header = ["cell", "δ", "S", "active entries", "rate on active entries [CI]",
              "active entries within δ's interval [%]", "largest rate (upper CI)", "largest model probability"]
    meanings = [
        "the cell (its swept settings)",
        "risk level the plan was made at",
        "open-loop disturbance draws",
        "(bound, prosumer, predicted step) entries where the plan sits on its tightened bound",
        "violation rate pooled over the active entries, and its interval",
        "share of active entries whose rate lies in the central interval of S Bernoulli(δ) draws",
        "largest violation rate of any entry, with the upper end of its interval",
        "largest violation probability of any entry under the disturbance model",
    ]
    rows = []
    for v in vs:
        o = v.open_loop
        for r, d in enumerate(v.deltas):
            a = o.active_rate
            rows.append([
                v.label, f"{d:g}", o.S, int(o.active[r]),
                f"{a.rate[r]:.4f} [{a.lo[r]:.4f}, {a.hi[r]:.4f}]" if o.active[r] else "-",
                f"{100 * o.in_interval[r]:.0f}" if o.active[r] else "-",
                f"{o.max_rate[r]:.4f} ({o.max_hi[r]:.4f})", f"{o.max_model[r]:.4f}",
            ])  # fmt: skip
    note = ("The plan made at hour validate.t from the initial state, applied open loop (no "
            "re-planning) to S disturbance draws; for every prosumer, predicted step k and bound, "
            "the share of draws outside [eb_min, eb_max]. An entry is active where the plan sits on "
            "its tightened bound (no slack, band not empty): there, with cumulative tightening, the "
            f"model's violation probability is δ. {int(LEVEL * 100)} % Clopper-Pearson intervals.")
    return Table("open_loop", "Open-loop validation of the first plan", header, rows, note, meanings)
