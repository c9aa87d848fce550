"""Indices of the paper's Table 1 and violation statistics (MODEL §8).

`indices` is a pure JAX function of one closed-loop record (stacked over T); the binomial
intervals are host-side numpy (scipy), used on the reduced counts.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from scipy.stats import beta as _beta

from .community import Community
from .simulate import StepRecord

INDEX_NAMES = ("E1", "E2", "E3", "E4", "E5", "E6", "E7", "E8")
INDEX_DOC = {
    "E1": "cost of purchases from the utility grid (€)",
    "E2": "revenue of sales to the utility grid at γ·c (€)",
    "E3": "E1 − E2 (€)",
    "E4": "energy traded between agents, as delivered (kWh)",
    "E5": "energy sold to the utility grid (kWh)",
    "E6": "energy bought from the utility grid (kWh)",
    "E7": "energy bought from the grid by consumers (kWh)",
    "E8": "energy bought from the grid by prosumers (kWh)",
}


def indices(c: Community, gamma: float, rec: StepRecord) -> dict:
    """E1..E8 of one closed-loop day (arrays over [T, ...] in `rec`)."""
    return indices_of(c, gamma, rec.price, rec.ug, rec.u_ugb, rec.u_bt)


def indices_of(c: Community, gamma: float, price, ug, u_ugb, u_bt) -> dict:
    """E1..E8 from the price [T], grid purchases ug [T, n] (kW), sales u_ugb [T, n] and trades
    u_bt [T, n, n] of one day."""
    dt = c.dt
    pro = jnp.asarray(c.is_prosumer)
    price = jnp.asarray(price)[:, None]
    bought = jnp.asarray(ug) * dt  # [T, n] kWh, deficit purchases included
    e1 = jnp.sum(price * bought)
    e2 = jnp.sum(gamma * price * u_ugb * dt)
    e6 = jnp.sum(bought)
    return {
        "E1": e1,
        "E2": e2,
        "E3": e1 - e2,
        "E4": jnp.sum(u_bt) * dt,
        "E5": jnp.sum(u_ugb) * dt,
        "E6": e6,
        "E7": jnp.sum(jnp.where(pro, 0.0, bought)),
        "E8": jnp.sum(jnp.where(pro, bought, 0.0)),
    }


STATUS_DOC = {
    "qp_status": "worst QP status of the step (0 solved, 1 max_iter, 2 primal infeasible, "
    "3 dual infeasible, 4 numerical error)",
    "qp_held": "FC-MPC subproblem solutions of the step not solved: the prosumer kept its "
    "previous iterate",
    "qp_fallback": "prosumers whose first plan of the step was not solved: their previous plan "
    "shifted was applied",
    "qp_weight_fallback": "FC-MPC iterations of the step whose optimal-weight QP (fcmpc.weights = "
    "optimal) was not solved or did no better: the uniform weight was used",
}


def summary(c: Community, gamma: float, rec: StepRecord) -> dict:
    """Per-sample scalars and per-(agent, step) indicators kept for every sample."""
    out = indices(c, gamma, rec)
    pro = jnp.asarray(c.is_prosumer)
    out.update(
        curtailed=jnp.sum(rec.curtail),
        deficit=jnp.sum(rec.deficit),
        spilled=jnp.sum(rec.spill) * c.dt,
        slack=jnp.sum(rec.slack),
        empty_steps=jnp.sum(rec.empty),
        iters=rec.iters,  # [T]
        theta=rec.theta,  # [T]
        gap=rec.phi - rec.phi_central,  # [T] (Options.gap; valid where central_status == 0)
        central_status=rec.central_status,  # [T]
        phi=rec.phi,  # [T]
        qp_status=rec.qp_status,  # [T]
        qp_held=rec.qp_held,  # [T]
        qp_fallback=rec.qp_fallback,  # [T]
        qp_weight_fallback=jnp.zeros_like(rec.qp_held) if rec.qp_weight_fallback is None else rec.qp_weight_fallback,
        qp_steps=rec.qp_steps,  # [T]
        viol_lo=rec.viol_lo & pro[None, :],  # [T, n], as in the trajectories
        viol_hi=rec.viol_hi & pro[None, :],
    )
    return out


def clopper_pearson(k, n, level: float = 0.99):
    """Exact binomial confidence interval for k successes out of n (numpy, vectorized)."""
    k = np.asarray(k, dtype=np.float64)
    n = np.asarray(n, dtype=np.float64)
    a = 1.0 - level
    lo = np.where(k > 0, _beta.ppf(a / 2, k, n - k + 1), 0.0)
    hi = np.where(k < n, _beta.ppf(1 - a / 2, k + 1, n - k), 1.0)
    return np.nan_to_num(lo, nan=0.0), np.nan_to_num(hi, nan=1.0)


def binomial_interval_around(p: float, n: int, level: float = 0.99):
    """The central `level` interval of the empirical rate of n Bernoulli(p) draws."""
    from scipy.stats import binom

    a = 1.0 - level
    return binom.ppf(a / 2, n, p) / n, binom.ppf(1 - a / 2, n, p) / n


def agreement_gap(cost, phi_central, floor: float = 1e-9):
    """Share of the islanded iterate's excess cost still left after each FC-MPC iterate:

        g_p = (Φ_p − Φ_c) / (Φ_0 − Φ_c),

    0 at the centralized optimum Φ_c, 1 before any cooperation. `cost`: (..., p_max + 1) the
    costs Φ_0..Φ_p_max of the iterates; `phi_central`: (...) Φ_c. Where the islanded iterate is
    already within `floor`·max(1, |Φ_c|) of Φ_c, there is nothing to agree on: NaN.
    """
    cost = np.asarray(cost, float)
    phi_c = np.asarray(phi_central, float)[..., None]
    excess = cost[..., :1] - phi_c
    ok = excess > floor * np.maximum(1.0, np.abs(phi_c))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(ok, (cost - phi_c) / np.where(ok, excess, 1.0), np.nan)
