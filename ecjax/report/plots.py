"""The report's figures (matplotlib, Agg; no pyplot state): PNG files from store reductions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from ..metrics import INDEX_NAMES
from .data import LEVEL, CellView
from .tables import column_title

DPI = 110


def _save(fig: Figure, path: Path) -> Path:
    fig.savefig(path, dpi=DPI, format="png")
    return path


def indices_bars(views: list[CellView], delta: float, path: Path) -> Path:
    """Table 1 as grouped bars (mean ± sd over samples): € indices and kWh indices."""
    fig = Figure(figsize=(9, 3.6), layout="constrained")
    axes = fig.subplots(1, 2, gridspec_kw={"width_ratios": [3, 5]})
    groups = (INDEX_NAMES[:3], INDEX_NAMES[3:])
    width = 0.8 / max(len(views), 1)
    for ax, names, unit in zip(axes, groups, ("€", "kWh")):
        x = np.arange(len(names))
        for j, v in enumerate(views):
            r = v.nearest(delta)
            err = [v.sd[k][r] for k in names] if v.S > 1 else None  # no spread of one sample
            ax.bar(x + (j - (len(views) - 1) / 2) * width, [v.mean[k][r] for k in names], width,
                   yerr=err, capsize=2, label=column_title(v, views))
        ax.set_xticks(x, names)
        ax.set_ylabel(unit)
        ax.grid(axis="y", alpha=0.3)
    axes[1].legend(fontsize=8)
    spread = "mean ± sd over samples" if any(v.S > 1 for v in views) else "one day per cell"
    fig.suptitle(f"Indices per cell (δ nearest {delta:g}; {spread})", fontsize=10)
    return _save(fig, path)


def trajectories(view: CellView, traj, community, delta: float, path: Path, sample: int = 0) -> Path:
    """Paper Figs. 2–4 for one kept sample: battery energy, trades and sales, grid import."""
    r = view.nearest(delta)
    t = traj.isel(risk=r, sample=sample).compute()
    steps = t["time"].values
    hours = np.concatenate([[steps[0]], steps + 1])  # eb at the start of the day, then after each step
    mid = steps + 0.5  # inputs act over the hour [t, t+1)
    pro = list(community.prosumers)
    fig = Figure(figsize=(9, 8), layout="constrained")
    ax_e, ax_t, ax_g = fig.subplots(3, 1, sharex=True)
    for i in pro:
        eb = np.concatenate([[community.eb0[i]], t["eb"].values[:, i]])
        line = ax_e.plot(hours, eb, marker=".", label=f"agent {i}")[0]
        ax_e.hlines([community.eb_lo[i], community.eb_hi[i]], hours[0], hours[-1],
                    colors=line.get_color(), linestyles=":", linewidth=0.8)
    ax_e.set_ylabel("battery energy eb [kWh]")
    ax_e.set_title("battery energy (dotted: eb_min, eb_max)", fontsize=9)
    ax_e.legend(fontsize=7, ncol=4)
    sent = t["u_bt"].values.sum(axis=2)  # (time, agent): power sent by each agent
    bottom = np.zeros(len(steps))
    for i in pro:
        ax_t.bar(mid, sent[:, i], bottom=bottom, width=0.8, label=f"agent {i}")
        bottom = bottom + sent[:, i]
    ax_t.plot(mid, -t["u_ugb"].values.sum(axis=1), "k.-", label="sold to UG (negative)")
    ax_t.axhline(0, color="k", linewidth=0.5)
    ax_t.set_ylabel("power [kW]")
    ax_t.set_title("energy traded between agents (stacked by sender) and sold to the grid", fontsize=9)
    ax_t.legend(fontsize=7, ncol=4)
    ug = t["ug"].values
    mask = np.asarray(community.is_prosumer, bool)
    ax_g.bar(mid, ug[:, mask].sum(axis=1), width=0.8, label="prosumers")
    ax_g.bar(mid, ug[:, ~mask].sum(axis=1), width=0.8, bottom=ug[:, mask].sum(axis=1),
             label="consumers")
    ax_g.set_ylabel("grid import ug [kW]")
    ax_g.set_xlabel("hour")
    ax_g.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax_p = ax_g.twinx()
    ax_p.step(np.append(steps, steps[-1] + 1), np.append(t["price"].values, t["price"].values[-1]),
              "k--", where="post", linewidth=1, label="price")
    ax_p.set_ylabel("price [€/kWh]")
    ax_g.legend(fontsize=7, loc="upper left")
    ax_g.set_title("power bought from the utility grid", fontsize=9)
    fig.suptitle(f"{view.label}: sample {int(t['sample'].values)}, δ = {view.deltas[r]:g}", fontsize=10)
    return _save(fig, path)


def calibration(views: list[CellView], path: Path) -> Path:
    """Closed-loop violation rate of each bound against δ, with Clopper-Pearson intervals."""
    fig = Figure(figsize=(6.5, 4.5), layout="constrained")
    ax = fig.subplots()
    top = max(float(np.max(v.deltas)) for v in views)
    ax.plot([0, top], [0, top], "k:", linewidth=1, label="rate = δ")
    for v in views:
        for side, marker in (("lo", "v"), ("hi", "^")):
            x = v.viol[side]
            err = np.vstack([x.rate - x.lo, x.hi - x.rate])
            ax.errorbar(v.deltas, x.rate, yerr=np.maximum(err, 0), marker=marker, capsize=3,
                        linestyle="-", label=f"{v.label} ({'lower' if side == 'lo' else 'upper'})")
    for v in views:
        if v.open_loop is None or not v.open_loop.active.any():
            continue
        a = v.open_loop.active_rate
        ok = v.open_loop.active > 0
        err = np.vstack([a.rate - a.lo, a.hi - a.rate])[:, ok]
        ax.errorbar(v.deltas[ok], a.rate[ok], yerr=np.maximum(err, 0), marker="s", capsize=3,
                    linestyle="--", label=f"{v.label} (open loop, active bounds)")
    ax.set_xlabel("risk level δ")
    ax.set_ylabel("violation rate")
    ax.set_title(f"Risk calibration ({int(LEVEL * 100)} % Clopper-Pearson intervals)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return _save(fig, path)


def indices_vs_delta(views: list[CellView], path: Path) -> Path:
    """E3 (net cost), E4 (traded) and E6 (bought) against δ."""
    fig = Figure(figsize=(10, 3.4), layout="constrained")
    axes = fig.subplots(1, 3)
    for ax, k, unit in zip(axes, ("E3", "E4", "E6"), ("€", "kWh", "kWh")):
        for v in views:
            ax.errorbar(v.deltas, v.mean[k], yerr=v.sd[k] if v.S > 1 else None, marker="o", capsize=2,
                        label=v.label)
        ax.set_xlabel("risk level δ")
        ax.set_ylabel(f"{k} [{unit}]")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle("Indices against the risk level (mean ± sd over samples)", fontsize=10)
    return _save(fig, path)


def community_size(views: list[CellView], path: Path) -> Path:
    """Cost, trading, iterations and run time against the number of agents n."""
    fig = Figure(figsize=(10, 7), layout="constrained")
    axes = fig.subplots(2, 2).ravel()
    series: dict[str, list[CellView]] = {}
    for v in views:
        key = ", ".join(f"{k.split('.')[-1]}={x}" for k, x in v.params.items() if k != "community.n") \
            or v.scenario  # fmt: skip
        series.setdefault(key, []).append(v)
    panels = (
        ("net cost E3 per agent [€]", lambda v: v.mean["E3"][0] / v.n),
        ("energy traded E4 per agent [kWh]", lambda v: v.mean["E4"][0] / v.n),
        ("FC-MPC iterations per step", lambda v: v.iters[0]),
        ("run time of the cell [s] (solid: run, dashed: compile)", lambda v: v.attrs.get("seconds", np.nan)),
    )
    for ax, (title, f) in zip(axes, panels):
        for key, vs in series.items():
            vs = sorted(vs, key=lambda v: v.n)
            line = ax.plot([v.n for v in vs], [f(v) for v in vs], "o-", label=key)[0]
            if title.startswith("run time"):
                ax.plot([v.n for v in vs], [v.attrs.get("compile_seconds", np.nan) for v in vs], "o--",
                        color=line.get_color())
        ax.set_xlabel("agents n")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # a count: no fractional agents
        ax.set_title(title, fontsize=9)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle("Community size", fontsize=10)
    return _save(fig, path)


def agreement(views: list[CellView], path: Path) -> Path:
    """FC-MPC gap to the centralized optimum against the iteration: a panel per community size,
    a line per combination rule (mean over steps solid, worst dashed)."""
    vs = [v for v in views if v.agreement is not None]
    sizes = sorted({v.n for v in vs})
    fig = Figure(figsize=(4.2 * len(sizes), 3.8), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(sizes), sharey=True))
    for ax, n in zip(axes, sizes):
        for v in sorted((v for v in vs if v.n == n), key=lambda x: x.label):
            a = v.agreement
            p = np.arange(len(a.mean))
            label = ", ".join(f"{k.split('.')[-1]}={x}" for k, x in v.params.items() if k != "community.n") or v.label
            line = ax.semilogy(p, np.maximum(a.mean, 1e-8), "-", label=f"{label} (mean)")[0]
            ax.semilogy(p, np.maximum(a.worst, 1e-8), "--", color=line.get_color(), label=f"{label} (worst)")
        ax.set_xlabel("FC-MPC iteration p")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(f"n = {n}", fontsize=9)
        ax.grid(alpha=0.3, which="both")
    axes[0].set_ylabel("gap (Φ_p − Φ_c) / (Φ_0 − Φ_c)")
    axes[0].legend(fontsize=7)
    fig.suptitle("FC-MPC agreement with the centralized optimum", fontsize=10)
    return _save(fig, path)


def open_loop(views: list[CellView], path: Path) -> Path:
    """Open-loop violation rate of every (bound, prosumer, step) against its model probability."""
    fig = Figure(figsize=(6.5, 5), layout="constrained")
    ax = fig.subplots()
    top = 0.0
    for v in views:
        o = v.open_loop
        for r, d in enumerate(v.deltas):
            err = np.maximum(np.vstack([o.rate[r] - o.lo[r], o.hi[r] - o.rate[r]]), 0)
            ax.errorbar(o.model[r], o.rate[r], yerr=err, fmt="o", markersize=3, capsize=1, alpha=0.7,
                        label=f"{v.label}, δ = {d:g}")
            top = max(top, float(o.model[r].max()), float(o.hi[r].max()))
    ax.plot([0, top], [0, top], "k:", linewidth=1, label="rate = model probability")
    ax.set_xlabel("model violation probability of the entry")
    ax.set_ylabel("open-loop violation rate")
    ax.set_title(f"Open-loop validation of the first plan ({int(LEVEL * 100)} % Clopper-Pearson)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return _save(fig, path)
