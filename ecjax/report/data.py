"""What a report needs from a store: per-cell reductions over samples (dask, lazily read)."""

from __future__ import annotations

import dataclasses

import numpy as np

from .. import store as _store
from ..metrics import INDEX_NAMES, agreement_gap, clopper_pearson

LEVEL = 0.95  # confidence level of the reported Clopper-Pearson intervals


@dataclasses.dataclass
class Rate:
    """Violations k out of n trials per risk level, with a Clopper-Pearson interval."""

    k: np.ndarray
    n: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    worst: np.ndarray  # largest rate of a single (prosumer, step) over the samples

    @property
    def rate(self) -> np.ndarray:
        return self.k / np.maximum(self.n, 1)


@dataclasses.dataclass
class OpenLoop:
    """Open-loop validation of the first plan per risk level (ecjax.validate), reduced."""

    S: int
    level: float
    active: np.ndarray  # (R,) number of (side, prosumer, k) entries on the tightened bound
    active_rate: Rate  # pooled over the active entries
    in_interval: np.ndarray  # (R,) share of active entries whose rate is in δ's binomial interval
    max_rate: np.ndarray  # (R,) largest rate of any entry
    max_hi: np.ndarray  # (R,) upper confidence bound of that entry
    max_model: np.ndarray  # (R,) largest model probability of any entry
    rate: np.ndarray  # (R, entries) every entry, for the scatter against the model
    model: np.ndarray  # (R, entries)
    lo: np.ndarray
    hi: np.ndarray


@dataclasses.dataclass
class Agreement:
    """How far the FC-MPC iterates got toward the centralized optimum, per iterate p = 0..p_max:
    the gap g_p (`ecjax.metrics.agreement_gap`) over the kept samples' steps, at the first risk
    level. Steps whose centralized solve was not solved, or whose islanded iterate was already
    at the centralized cost, are left out (`steps` counts the rest)."""

    mean: np.ndarray  # (p_max + 1,)
    worst: np.ndarray  # (p_max + 1,)
    steps: int


def _agreement(cell) -> Agreement | None:
    """From the kept trajectories of a cell run with `sim.gap` (the centralized solve each step)."""
    tr = cell.trajectories
    if not (cell.config.get("sim") or {}).get("gap") or tr is None or "cost_trace" not in tr:
        return None
    cost = tr["cost_trace"].isel(risk=0).transpose("sample", "time", "iterate0").values
    phi_c = tr["phi_central"].isel(risk=0).transpose("sample", "time").values
    solved = tr["central_status"].isel(risk=0).transpose("sample", "time").values == 0
    g = agreement_gap(cost, phi_c)[solved]
    g = g[np.isfinite(g).all(axis=1)]
    if not len(g):
        return None
    return Agreement(mean=g.mean(axis=0), worst=g.max(axis=0), steps=len(g))


def _open_loop(ds) -> OpenLoop:
    ds = ds.compute()
    S = int(ds.attrs.get("S", 0)) or int(round(float(ds["count"].max() / max(float(ds["rate"].max()), 1e-300))))
    R = ds.sizes["risk"]
    flat = lambda v: np.asarray(v.transpose("risk", ...).values).reshape(R, -1)  # noqa: E731
    count, rate, active = flat(ds["count"]), flat(ds["rate"]), flat(ds["active"]).astype(bool)
    k = np.where(active, count, 0).sum(axis=1)
    n_act = active.sum(axis=1)
    n = n_act * S
    lo, hi = clopper_pearson(k, np.maximum(n, 1), LEVEL)
    inside = flat(ds["in_interval"]).astype(bool)
    share = np.where(n_act > 0, (inside & active).sum(axis=1) / np.maximum(n_act, 1), np.nan)
    imax = rate.argmax(axis=1)
    ci_hi = flat(ds["ci_high"])
    return OpenLoop(
        S=S,
        level=float(ds.attrs.get("level", LEVEL)),
        active=n_act,
        active_rate=Rate(k=k, n=n, lo=np.asarray(lo), hi=np.asarray(hi), worst=rate.max(axis=1)),
        in_interval=share,
        max_rate=rate.max(axis=1),
        max_hi=ci_hi[np.arange(R), imax],
        max_model=flat(ds["p_model"]).max(axis=1),
        rate=rate,
        model=flat(ds["p_model"]),
        lo=flat(ds["ci_low"]),
        hi=ci_hi,
    )


@dataclasses.dataclass
class CellView:
    id: str
    params: dict
    config: dict
    attrs: dict
    scenario: str
    tightening: str
    n: int
    n_prosumers: int
    S: int
    T: int
    N: int
    deltas: np.ndarray  # (R,)
    mean: dict  # index name -> (R,) mean over samples
    sd: dict  # index name -> (R,) standard deviation over samples
    viol: dict  # "lo" | "hi" | "any" -> Rate
    iters: np.ndarray  # (R,) mean FC-MPC iterations per step
    theta: np.ndarray  # (R,) mean final max θ per step
    qp_fail: np.ndarray  # (R,) fraction of steps with a QP status other than solved
    qp_held: np.ndarray  # (R,) subproblem solutions not solved (previous iterate kept), per sample-day
    qp_fallback: np.ndarray  # (R,) fallback plans applied (first plan not solved), per sample-day
    has_trajectories: bool
    open_loop: OpenLoop | None = None
    agreement: Agreement | None = None

    @property
    def label(self) -> str:
        if not self.params:
            return self.scenario
        return ", ".join(f"{k.split('.')[-1]}={v}" for k, v in self.params.items())

    def nearest(self, delta: float) -> int:
        return int(np.argmin(np.abs(self.deltas - delta)))


EXTRA = ("curtailed", "deficit", "spilled", "slack", "empty_steps")


def _rate(v, pro, S: int, T: int) -> Rate:
    """v: (risk, sample, time, agent) booleans; pooled over samples, prosumers and steps."""
    vp = v.isel(agent=np.flatnonzero(pro))
    k = vp.sum(("sample", "agent", "time")).values.astype(np.int64)
    n = np.full_like(k, S * int(pro.sum()) * T)
    lo, hi = clopper_pearson(k, n, LEVEL)
    worst = vp.mean("sample").max(("agent", "time")).values if pro.any() else np.zeros(len(k))
    return Rate(k=k, n=n, lo=np.asarray(lo), hi=np.asarray(hi), worst=np.asarray(worst, float))


def view(path, cell_id: str, verify: str | bool = "full") -> CellView:
    """Reduce one finished cell of the store to what the report shows (`verify`: as
    `ecjax.store.open_cell`)."""
    cell = _store.open_cell(path, cell_id, verify=verify)
    s = cell.summary
    cfg = cell.config
    S, T = int(s.sizes["sample"]), int(s.sizes["time"])
    pro = np.asarray(s["is_prosumer"].values, bool)
    names = [k for k in (*INDEX_NAMES, *EXTRA) if k in s]
    red = s[names].mean("sample").compute()
    sd = s[names].std("sample").compute()
    viol = {
        "lo": _rate(s["viol_lo"], pro, S, T),
        "hi": _rate(s["viol_hi"], pro, S, T),
        "any": _rate(s["viol_lo"] | s["viol_hi"], pro, S, T),
    }
    return CellView(
        id=cell_id,
        params=dict(cell.attrs.get("params") or {}),
        config=cfg,
        attrs=cell.attrs,
        scenario=cfg["scenario"]["name"],
        tightening=cfg["ccmpc"]["tightening"],
        n=int(s.sizes["agent"]),
        n_prosumers=int(pro.sum()),
        S=S,
        T=T,
        N=int(cfg["sim"]["N"]),
        deltas=np.asarray(s["risk"].values, float),
        mean={k: np.asarray(red[k].values, float) for k in names},
        sd={k: np.asarray(sd[k].values, float) for k in names},
        viol=viol,
        iters=np.asarray(s["iters"].mean(("sample", "time")).values, float),
        theta=np.asarray(s["theta"].mean(("sample", "time")).values, float),
        qp_fail=np.asarray((s["qp_status"] != 0).mean(("sample", "time")).values, float),
        qp_held=_per_day(s, "qp_held"),
        qp_fallback=_per_day(s, "qp_fallback"),
        has_trajectories=cell.trajectories is not None,
        open_loop=_open_loop(cell.open_loop) if cell.open_loop is not None else None,
        agreement=_agreement(cell),
    )


def _per_day(s, name):
    """Mean over samples of a per-step count summed over the day (NaN in stores without it)."""
    if name not in s:
        return np.full(s.sizes["risk"], np.nan)
    return np.asarray(s[name].sum("time").mean("sample").values, float)


def collect(path, verify: str | bool = "full") -> list[CellView]:
    """Views of every finished cell of a store, in the order the run planned them (`verify`:
    as `ecjax.store.open_cell`)."""
    done = _store.list_cells(path)
    planned = ((_store.store_attrs(path).get("sweep") or {}).get("cells")) or []
    order = [c for c in planned if c in done] + [c for c in done if c not in planned]
    return [view(path, c, verify) for c in order]
