"""Plain evaluation of a plan: the global cost Φ and every constraint residual.

Written directly from the MODEL equations (§3–§5), not from the QP matrices, so that tests and
the FC-MPC checks see the plan as the model defines it. Residuals are violation amounts
(>= 0, zero when the constraint holds), one array per constraint family.
"""

from __future__ import annotations

import jax.numpy as jnp

from .community import Community
from .plan import Plan, Stage
from .weights import CostWeights


def _prev(x0, x):
    """States at k = 0..N-1 given x0 and the predicted states k = 1..N."""
    return jnp.concatenate([x0[:, None], x[:, :-1]], axis=1)


def grid_import(c: Community, stage: Stage, plan: Plan, load=None):
    """ug_i[k] = bc − bd − Σ_l bt_{l->i} + ul_i + ev   (eq 10; consumers: ul − Σ_l bt_{l->i})."""
    ul = stage.win.ul_mu if load is None else load
    return plan.bc - plan.bd - plan.bt.sum(axis=0) + ul + plan.ev


def cost(c: Community, w: CostWeights, stage: Stage, plan: Plan):
    """Φ = (1/n) Σ_i Φ_i at the forecast means (MODEL §4; eq 19: E[Φ] = Φ(means))."""
    price = stage.win.price[None, :]
    ug = grid_import(c, stage, plan)
    stage_cost = (
        price * c.dt * ug
        - w.gamma * price * c.dt * plan.ugb
        + w.r_c * plan.bc**2
        + w.r_d * plan.bd**2
        + w.r_t * (plan.bt**2).sum(axis=1)
        + w.r_ugb * plan.ugb**2
        + w.r_ev * plan.ev**2
    )
    pro = jnp.asarray(c.is_prosumer, dtype=plan.bc.dtype)
    gap_b = jnp.asarray(c.eb_hi)[:, None] - plan.eb
    gap_ev = jnp.asarray(c.ev_daily)[:, None] - plan.eev
    track = w.delta_b * gap_b + w.delta_ev * gap_ev
    terminal = w.w_T * track[:, -1]
    slack = w.rho1 * (plan.s_lo + plan.s_hi) + w.rho2 * (plan.s_lo**2 + plan.s_hi**2)
    phi_i = stage_cost.sum(axis=1) + pro * (track.sum(axis=1) + terminal + slack.sum(axis=1))
    return phi_i.mean()


def residuals(c: Community, stage: Stage, plan: Plan, trades_on=True) -> dict:
    """Violation of every constraint family, per agent and step (shape [n, N] unless noted)."""
    pos = lambda x: jnp.maximum(x, 0.0)  # noqa: E731
    pro = jnp.asarray(c.is_prosumer)[:, None]
    dt = c.dt
    pv = jnp.asarray(c.pv_coef())[:, None] * stage.win.irr_mu[None, :]
    sent = (plan.bt / c.eta_t).sum(axis=1)
    eb_prev = _prev(stage.eb0, plan.eb)
    eev_prev = _prev(stage.eev0, plan.eev)
    eb_next = eb_prev + dt * (c.eta_c * plan.bc - plan.bd / c.eta_d - sent - plan.ugb + pv)  # (1)
    eev_next = eev_prev + dt * c.eta_ev * plan.ev  # (6)
    col = lambda a: jnp.asarray(a)[:, None]  # noqa: E731
    bt_max = jnp.where(trades_on, col(c.bt_max), 0.0)[:, :, None]
    ug = grid_import(c, stage, plan, load=jnp.where(pro, stage.win.ul_mu, stage.ul_cap))
    r = {
        "dyn_b": jnp.where(pro, jnp.abs(plan.eb - eb_next), 0.0),
        "dyn_ev": jnp.where(pro, jnp.abs(plan.eev - eev_next), 0.0),
        "bc": pos(-plan.bc) + pos(plan.bc - col(c.bc_max)),  # (3)
        "bd": pos(-plan.bd) + pos(plan.bd - col(c.bd_max)),  # (4)
        "ugb": pos(-plan.ugb) + pos(plan.ugb - col(c.ugb_max)),
        "ev": pos(-plan.ev) + pos(plan.ev - stage.ev_hi),  # (8)
        "bt": (pos(-plan.bt) + pos(plan.bt - bt_max)).max(axis=1),  # (5), max over partners
        "bt_self": jnp.abs(jnp.diagonal(plan.bt, axis1=0, axis2=1)).T,  # no trade with oneself
        "dis": pos(plan.bd + sent + plan.ugb - col(c.bd_max)),
        "ug": pos(-ug),  # (11); consumers use the (possibly tightened) cap
        "eev": pos(stage.eev_lo - plan.eev) + pos(plan.eev - stage.eev_hi),  # (7), (9)
        "soft_lo": jnp.where(pro, pos(stage.band.lo - plan.s_lo - plan.eb), 0.0),  # (17)
        "soft_hi": jnp.where(pro, pos(plan.eb - plan.s_hi - stage.band.hi), 0.0),  # (18)
        "slack": pos(-plan.s_lo) + pos(-plan.s_hi),
    }
    idle = jnp.abs(plan.bc) + jnp.abs(plan.bd) + jnp.abs(plan.ugb) + jnp.abs(plan.ev)
    idle = idle + jnp.abs(plan.bt).sum(axis=1) + jnp.abs(plan.s_lo) + jnp.abs(plan.s_hi)
    r["consumer_idle"] = jnp.where(pro, 0.0, idle)  # consumers have no decision variables
    return r


def max_violation(res: dict):
    return jnp.max(jnp.stack([jnp.max(v) for v in res.values()]))
