"""Open-loop validation of the chance constraints of one plan (MODEL §5).

For the plan made at one stage (measured state, hour t, risk level δ), draw S disturbance
trajectories over the horizon, apply the plan's inputs open loop (no re-planning, no clipping)
and count, for every prosumer i and predicted state k = 1..N, how often

    eb_i[k] < eb_min_i     (lower side of eq 16)      eb_i[k] > eb_max_i     (upper side)

and, for every consumer j and step k, how often its realized import ul_j − Σ_i bt_{i->j} < 0
(chance-constrained only with `tighten_consumers`). Open loop, k steps ahead the battery
energy is normal with the plan's mean and the cumulative variance of MODEL §5, so where the
tightened bound is active (the plan sits on it, no slack) and the band is not empty, in
`cumulative` mode the violation probability is exactly δ; `p_model` gives this probability for
every entry, active or not (in `per_step` mode it exceeds δ past k = 1: the variant ignores the
accumulation that re-planning corrects in closed loop).

The plant of the propagation (MODEL §7, without clipping): with the plan's inputs u[k],

    eb[k+1] = eb[k] + Δt(η_c bc − bd/η_d − Σ_j bt_j/η_t − ugb + pv_real[k]) − Δt η_c (ul_real[k] − ul_fc[k])

Samples are drawn with `ecjax.disturbance.sample_day` from `fold_in(key(seed), s)` for
s = 0..S-1, the convention of `ecjax.experiment.run_batch`, and counted in chunks of fixed size
(one compilation), so S is bounded by time, not memory.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import xarray as xr
from jax.scipy.stats import norm
from jaxtyping import Array, Float

from . import ccmpc, plant
from .community import Community
from .disturbance import Draw, Profiles, check_profiles, sample_day
from .fcmpc import FCMPCSettings, make_controller
from .metrics import binomial_interval_around, clopper_pearson
from .plan import Plan, Stage, make_stage
from .qp import IPM
from .scenario import check_scenario, check_tightening
from .simulate import Options, check_dtype, initial_fallback, initial_warm, plan_step
from .weights import CostWeights

SIDES = ("lo", "hi")


def propagate(c: Community, stage: Stage, plan: Plan, draw: Draw) -> tuple[Float[Array, "n N"], Float[Array, "n N"]]:
    """Battery energy eb[k], k = 1..N, of every agent under one disturbance draw over the
    horizon (`draw.irr` [N], `draw.ul` [n, N]), and the consumers' realized import ug[k],
    k = 0..N-1 (prosumers: their scheduled import). Consumers' eb is 0."""
    pv_real = jnp.asarray(c.pv_coef())[:, None] * draw.irr[None, :]
    inc = plant.battery_increment(c, plan, pv_real, draw.ul, stage.win.ul_mu)  # no clipping here
    eb = jnp.where(jnp.asarray(c.is_prosumer)[:, None], stage.eb0[:, None] + jnp.cumsum(inc, axis=1), 0.0)
    return eb, plant.grid_import(c, plan, draw.ul, stage.win.ul_mu)


class Counts(eqx.Module):
    """Violation counts over a set of samples."""

    lo: Float[Array, "n N"]
    hi: Float[Array, "n N"]
    ug: Float[Array, "n N"]


@eqx.filter_jit
def _count_chunk(c: Community, profiles: Profiles, stage: Stage, plan: Plan, base, ids, valid) -> Counts:
    """Counts over the samples `ids` (one chunk; `valid` masks padding)."""
    N = plan.bc.shape[1]
    lo = jnp.asarray(c.eb_lo)[:, None]
    hi = jnp.asarray(c.eb_hi)[:, None]

    def one(s):
        draw = sample_day(jax.random.fold_in(base, s), profiles, N, stage.t)
        eb, ug = propagate(c, stage, plan, draw)
        return eb < lo, eb > hi, ug < 0.0

    v_lo, v_hi, v_ug = jax.vmap(one)(ids)
    m = valid[:, None, None]
    f = lambda v: jnp.sum(v & m, axis=0).astype(plan.bc.dtype)  # noqa: E731
    return Counts(lo=f(v_lo), hi=f(v_hi), ug=f(v_ug))


def violation_counts(
    c: Community, profiles: Profiles, stage: Stage, plan: Plan, S: int, seed: int = 0, chunk: int = 65536
) -> Counts:
    """Open-loop violation counts of `plan` over samples 0..S-1 (see the module docstring)."""
    base = jax.random.PRNGKey(seed)
    chunk = min(chunk, S)
    total = None
    for start in range(0, S, chunk):
        ids = start + np.arange(chunk)
        part = _count_chunk(c, profiles, stage, plan, base, jnp.asarray(ids, jnp.int32), jnp.asarray(ids < S))
        total = part if total is None else jax.tree_util.tree_map(jnp.add, total, part)
    return jax.device_get(total)


def model_probability(c: Community, stage: Stage, plan: Plan):
    """Violation probability of each battery bound under the disturbance model: eb[k] is
    normal with the open-loop mean (the plan's inputs at the forecast means) and the
    cumulative standard deviation s_i[k] of MODEL §5. Returns (p_lo, p_hi, mean, sd), [n, N]."""
    mean, _ = propagate(c, stage, plan, Draw(irr=stage.win.irr_mu, ul=stage.win.ul_mu))
    sd = ccmpc.battery_sd(c, stage.win, "cumulative")
    lo = jnp.asarray(c.eb_lo)[:, None]
    hi = jnp.asarray(c.eb_hi)[:, None]
    safe = jnp.where(sd > 0, sd, 1.0)
    p_lo = jnp.where(sd > 0, norm.cdf((lo - mean) / safe), (mean < lo).astype(mean.dtype))
    p_hi = jnp.where(sd > 0, norm.sf((hi - mean) / safe), (mean > hi).astype(mean.dtype))
    return p_lo, p_hi, mean, sd


def default_active_tol(solver: IPM, c: Community) -> float:
    """How close (kWh) the plan must sit to a tightened bound to call it active: ten times the
    solver's primal tolerance at the scale of the largest energy of the problem. Being d off
    the bound moves the violation probability by at most φ(z)·d/s <= 0.4·d/s."""
    scale = float(max(np.max(np.asarray(c.capacity)), np.max(np.asarray(c.ev_daily)), 1.0))
    return 10.0 * (float(solver.eps_abs) + float(solver.eps_rel) * scale)


def _check_sampling(S, level, chunk) -> None:
    if not (isinstance(S, (int, np.integer)) and S >= 1):
        raise ValueError(f"`validate.S` must be an integer >= 1, got {S}.")
    if not 0.0 < level < 1.0:
        raise ValueError(f"`validate.level` must be in (0, 1), got {level}.")
    if not (isinstance(chunk, (int, np.integer)) and chunk >= 1):
        raise ValueError(f"`validate.chunk` must be an integer >= 1, got {chunk}.")


def validate_plan(
    c: Community,
    profiles: Profiles,
    stage: Stage,
    plan: Plan,
    delta: float,
    S: int,
    *,
    seed: int = 0,
    level: float = 0.99,
    active_tol: float = 1e-4,
    chunk: int = 65536,
) -> xr.Dataset:
    """Open-loop validation of a given plan made at `stage` with risk level `delta`.

    **Returns:** an `xr.Dataset` with, on dims (side, agent, k) for the prosumers
    (`side` = lo, hi; `k` = 1..N, the predicted state):
    `count`, `rate` (empirical violation rate), `ci_low`, `ci_high` (Clopper–Pearson interval at
    `level`), `p_model` (probability under the disturbance model), `bound` (eb_min / eb_max),
    `tightened` (the bound of eq 17/18 the plan was made with), `planned` (the plan's eb),
    `slack`, `active` (the plan sits on the tightened bound within `active_tol` with no slack
    and the band is not empty), `empty` (empty band); `delta`, and `delta_low`, `delta_high`
    (the central `level` interval of the rate of S Bernoulli(δ) draws), `in_interval` (rate
    within it). On dims (consumer, k), k = 0..N-1: `ug_count`, `ug_rate`, `ug_ci_low`,
    `ug_ci_high`, `ug_cap` (the cap on deliveries the plan was made with).
    """
    _check_sampling(S, level, chunk)
    counts = violation_counts(c, profiles, stage, plan, int(S), seed, int(chunk))
    p_lo, p_hi, mean, sd = jax.device_get(model_probability(c, stage, plan))
    pro = np.asarray(c.prosumers)
    con = np.asarray(c.consumers, dtype=np.int64)
    N = int(np.asarray(plan.bc).shape[1])
    g = lambda a: np.asarray(a)[pro]  # noqa: E731
    eb = g(plan.eb)
    band_lo, band_hi, empty = g(stage.band.lo), g(stage.band.hi), g(stage.band.empty)
    s_lo, s_hi = g(plan.s_lo), g(plan.s_hi)
    count = np.stack([g(counts.lo), g(counts.hi)])
    rate = count / S
    ci_low, ci_high = clopper_pearson(count, S, level)
    active_lo = (np.abs(eb - band_lo) <= active_tol) & (s_lo <= active_tol) & ~empty
    active_hi = (np.abs(eb - band_hi) <= active_tol) & (s_hi <= active_tol) & ~empty
    d_low, d_high = binomial_interval_around(float(delta), int(S), level)
    bound = np.stack([np.broadcast_to(g(c.eb_lo)[:, None], eb.shape), np.broadcast_to(g(c.eb_hi)[:, None], eb.shape)])
    dims = ("side", "agent", "k")
    ug_count = np.asarray(counts.ug)[con]
    ug_low, ug_high = clopper_pearson(ug_count, S, level)
    cdims = ("consumer", "k0")
    ds = xr.Dataset(
        {
            "count": (dims, count.astype(np.int64)),
            "rate": (dims, rate),
            "ci_low": (dims, ci_low),
            "ci_high": (dims, ci_high),
            "p_model": (dims, np.stack([g(p_lo), g(p_hi)])),
            "bound": (dims, bound),
            "tightened": (dims, np.stack([band_lo, band_hi])),
            "planned": (("agent", "k"), eb),
            "eb_mean": (("agent", "k"), g(mean)),
            "eb_sd": (("agent", "k"), g(sd)),
            "slack": (dims, np.stack([s_lo, s_hi])),
            "active": (dims, np.stack([active_lo, active_hi])),
            "empty": (("agent", "k"), empty),
            "delta": ((), float(delta)),
            "delta_low": ((), float(d_low)),
            "delta_high": ((), float(d_high)),
            "in_interval": (dims, (rate >= d_low) & (rate <= d_high)),
            "ug_count": (cdims, ug_count.astype(np.int64)),
            "ug_rate": (cdims, ug_count / S),
            "ug_ci_low": (cdims, ug_low),
            "ug_ci_high": (cdims, ug_high),
            "ug_cap": (cdims, np.asarray(stage.ul_cap)[con]),
        },
        coords={
            "side": ("side", list(SIDES)),
            "agent": ("agent", pro.astype(np.int64)),
            "k": ("k", np.arange(1, N + 1)),
            "consumer": ("consumer", con),
            "k0": ("k0", np.arange(N)),
        },
    )
    ds["rate"].attrs["long_name"] = "empirical open-loop violation rate"
    ds["p_model"].attrs["long_name"] = "violation probability under the disturbance model (cumulative variance)"
    ds["active"].attrs["long_name"] = "plan on the tightened bound (no slack, band not empty)"
    ds.attrs.update(S=int(S), seed=int(seed), level=float(level), active_tol=float(active_tol), t=int(np.asarray(stage.t)))
    return ds


@eqx.filter_jit
def _plan_at(ctl, fc: FCMPCSettings, opt: Options, profiles: Profiles, t, eb0, eev0, delta):
    stage = make_stage(ctl.community, profiles, t, eb0, eev0, delta, ctl.N, opt.tightening, opt.tighten_consumers)
    res = plan_step(ctl, fc, opt, stage, initial_warm(ctl, opt), initial_fallback(ctl))
    return stage, res.plan, jnp.max(res.qp_status), res.iters


def open_loop_validation(
    community: Community,
    profiles: Profiles,
    t: int,
    eb,
    eev,
    delta: float,
    S: int,
    seed: int = 0,
    *,
    N: int = 24,
    scenario: str = "ccdmpc",
    tightening: str = "cumulative",
    tighten_consumers: bool = False,
    weights: CostWeights = CostWeights(),
    solver: IPM = IPM(),
    fc: FCMPCSettings = FCMPCSettings(),
    dtype=jnp.float64,
    level: float = 0.99,
    active_tol: float | None = None,
    chunk: int = 65536,
) -> xr.Dataset:
    """Plan once at hour `t` from the measured state (`eb`, `eev`, [n]) with `scenario`
    (islanded, ccdmpc: FC-MPC, dmpc: FC-MPC at δ = 0.5, centralized) and validate the plan
    open loop with S samples (`validate_plan`; `active_tol` defaults to `default_active_tol`).

    The returned Dataset also carries `qp_status` (worst QP status of the plan), `iters`
    (FC-MPC iterations) and attrs `scenario`, `tightening`, `N`.
    """
    ccmpc.check_delta(delta)
    check_tightening(tightening)
    check_scenario(scenario)
    if not (isinstance(t, (int, np.integer)) and 0 <= t < 24):
        raise ValueError(f"`validate.t` must be an hour in [0, 23], got {t}.")
    if not (isinstance(N, (int, np.integer)) and N >= 1):
        raise ValueError(f"`sim.N` must be an integer >= 1, got {N}.")
    check_profiles(profiles, community)
    check_dtype(dtype)
    fc.check(community)
    _check_sampling(S, level, chunk)
    eb = np.asarray(eb, dtype=np.float64)
    eev = np.asarray(eev, dtype=np.float64)
    for name, a in (("eb", eb), ("eev", eev)):
        if a.shape != (community.n,) or not np.all(np.isfinite(a)):
            raise ValueError(f"`{name}` must be a finite array of shape ({community.n},), got {a.shape}.")
    if scenario == "dmpc":
        delta = 0.5
    opt = Options(scenario=scenario, tightening=tightening, tighten_consumers=tighten_consumers)
    ctl = make_controller(community, weights, N, solver, dtype, centralized=scenario == "centralized")
    prof = jax.tree_util.tree_map(lambda a: jnp.asarray(a, dtype), profiles)

    stage, plan, status, iters = _plan_at(
        ctl, fc, opt, prof, jnp.asarray(t, jnp.int32), jnp.asarray(eb, dtype), jnp.asarray(eev, dtype),
        jnp.asarray(delta, dtype),
    )  # fmt: skip
    tol = default_active_tol(solver, community) if active_tol is None else float(active_tol)
    ds = validate_plan(community, prof, stage, plan, delta, S, seed=seed, level=level, active_tol=tol, chunk=chunk)
    ds["qp_status"] = ((), int(status))
    ds["iters"] = ((), int(iters))
    ds.attrs.update(scenario=scenario, tightening=tightening, N=int(N), z=float(ccmpc.quantile(delta)))
    return ds
