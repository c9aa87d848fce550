"""A community-wide plan over the horizon, and the stage data of one MPC step.

`Plan` holds every agent's inputs and predicted states (consumers: zeros). `Stage` holds what
the controllers know at MPC step t (MODEL §7): measured states, the forecast window and the
tightened bounds. Both are pytrees; conversions to and from the per-prosumer decision vectors
of `ecjax.layout` live here.
"""

from __future__ import annotations

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int

from . import ccmpc
from .community import HOURS, Community
from .disturbance import Profiles, Window, window
from .layout import AgentLayout


class Plan(eqx.Module):
    """Inputs for k = 0..N-1 and states for k = 1..N of every agent (MODEL §2)."""

    bc: Float[Array, "n N"]
    bd: Float[Array, "n N"]
    ugb: Float[Array, "n N"]
    ev: Float[Array, "n N"]
    bt: Float[Array, "n n N"]  # bt[i, j, k]: from i to j, as delivered at j
    eb: Float[Array, "n N"]
    eev: Float[Array, "n N"]
    s_lo: Float[Array, "n N"]
    s_hi: Float[Array, "n N"]


class Stage(eqx.Module):
    """What every controller knows at MPC step t (hour of day of horizon step 0)."""

    t: Int[Array, ""]
    eb0: Float[Array, " n"]
    eev0: Float[Array, " n"]
    win: Window
    band: ccmpc.Band
    ul_cap: Float[Array, "n N"]  # cap on power delivered to each consumer (forecast load)
    ev_hi: Float[Array, "n N"]  # EV charging limit v_i[t+k]·ev_max_i; 0 past midnight
    eev_lo: Float[Array, "n N"]  # EV energy bounds; lo = hi = e_daily at the deadline
    eev_hi: Float[Array, "n N"]


def partner_table(n: int) -> np.ndarray:
    """[n, n-1]: row i lists the agents j != i in the order of i's bt blocks."""
    return np.array([[j for j in range(n) if j != i] for i in range(n)], dtype=np.int32)


def make_stage(
    community: Community,
    profiles: Profiles,
    t,
    eb0,
    eev0,
    delta,
    N: int,
    tightening: ccmpc.Tightening = "cumulative",
    tighten_consumers: bool = False,
) -> Stage:
    """Stage data at MPC step t (t, eb0, eev0 and delta may be traced)."""
    t = jnp.asarray(t, dtype=jnp.int32)
    win = window(profiles, t, N)
    band = ccmpc.tightened_band(community, win, delta, tightening)
    ul_cap = ccmpc.consumer_import_floor(win, delta, tighten_consumers)
    hour = t + jnp.arange(N)  # absolute hour of input step k
    today = hour < HOURS
    avail = jnp.take(jnp.asarray(community.ev_avail), jnp.minimum(hour, HOURS - 1), axis=1)
    ev_max = jnp.asarray(community.ev_max)[:, None]
    ev_hi = jnp.where(today[None, :], avail * ev_max, 0.0)
    e_daily = jnp.asarray(community.ev_daily)[:, None]
    deadline = (hour + 1) == HOURS  # state k+1 is hour 24
    eev_hi = jnp.broadcast_to(e_daily, ev_hi.shape)
    eev_lo = jnp.where(deadline[None, :], e_daily, 0.0)
    return Stage(
        t=t,
        eb0=jnp.asarray(eb0),
        eev0=jnp.asarray(eev0),
        win=win,
        band=band,
        ul_cap=ul_cap,
        ev_hi=ev_hi,
        eev_lo=eev_lo,
        eev_hi=eev_hi,
    )


def zero_plan(n: int, N: int, dtype=jnp.float64) -> Plan:
    z = jnp.zeros((n, N), dtype)
    return Plan(bc=z, bd=z, ugb=z, ev=z, bt=jnp.zeros((n, n, N), dtype), eb=z, eev=z, s_lo=z, s_hi=z)


def plan_from_vectors(xs: Float[Array, "P nx"], community: Community, N: int) -> Plan:
    """Scatter the prosumers' decision vectors (rows in `community.prosumers` order)."""
    n = community.n
    lay = AgentLayout(n, N)
    pro = np.asarray(community.prosumers)
    partners = partner_table(n)[pro]  # [P, m]
    nP = len(pro)

    def full(block):
        out = jnp.zeros((n, N), xs.dtype)
        return out.at[pro].set(xs[:, block])

    bt_blocks = xs[:, lay.bt].reshape(nP, lay.m, N)
    bt = jnp.zeros((n, n, N), xs.dtype).at[pro[:, None], partners].set(bt_blocks)
    return Plan(
        bc=full(lay.bc),
        bd=full(lay.bd),
        ugb=full(lay.ugb),
        ev=full(lay.ev),
        bt=bt,
        eb=full(lay.eb),
        eev=full(lay.eev),
        s_lo=full(lay.s_lo),
        s_hi=full(lay.s_hi),
    )


def vectors_from_plan(plan: Plan, community: Community) -> Float[Array, "P nx"]:
    """Gather the prosumers' decision vectors from a plan (inverse of `plan_from_vectors`)."""
    n = community.n
    N = plan.bc.shape[1]
    pro = np.asarray(community.prosumers)
    partners = partner_table(n)[pro]
    bt = plan.bt[pro[:, None], partners].reshape(len(pro), -1)
    return jnp.concatenate(
        [
            plan.bc[pro],
            plan.bd[pro],
            plan.ugb[pro],
            plan.ev[pro],
            bt,
            plan.eb[pro],
            plan.eev[pro],
            plan.s_lo[pro],
            plan.s_hi[pro],
        ],
        axis=1,
    ).reshape(len(pro), AgentLayout(n, N).nx)

