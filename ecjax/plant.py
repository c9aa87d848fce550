"""The plant of MODEL §7, written once: how applied inputs and realized disturbances move the
states. The closed loop (`ecjax.simulate`), the open-loop validation (`ecjax.validate`, over a
horizon, without the physical clipping) and the on-chain replay (`ecjax.chain.plant`) all call
these functions.

Every function takes the agent axis first; the trades `bt[i, j, ...]` (from i, as delivered at
j) may carry further axes (the horizon), which then follow on every other argument too.
"""

from __future__ import annotations

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Float

from .community import Community


def _prosumer(c: Community, like):
    """The prosumer mask, shaped to broadcast against `like` (agent axis first)."""
    pro = jnp.asarray(c.is_prosumer)
    return pro.reshape(pro.shape + (1,) * (jnp.ndim(like) - 1))


def battery_increment(c: Community, u, pv_real, ul_real, ul_fc):
    """Δeb of one step: eq (1) with the applied inputs and the realized PV, less the load
    error, which the battery absorbs through the charging path (MODEL §5, §7). Consumers: 0."""
    sent = u.bt.sum(axis=1) / c.eta_t
    d = c.dt * (c.eta_c * u.bc - u.bd / c.eta_d - sent - u.ugb + pv_real)
    d = d - c.dt * c.eta_c * (ul_real - ul_fc)
    return jnp.where(_prosumer(c, d), d, 0.0)


def grid_import(c: Community, u, ul_real, ul_fc, deficit=0.0):
    """Net import from the grid (kW; negative: spilled): a prosumer imports what it scheduled,
    eq (10) at the forecast load, plus the energy bought to refill a battery below 0; a
    consumer its realized load less what it receives."""
    into = u.bt.sum(axis=0)
    scheduled = u.bc - u.bd - into + ul_fc + u.ev
    return jnp.where(_prosumer(c, scheduled), scheduled + deficit / c.dt, ul_real - into)


class PlantStep(eqx.Module):
    """The states after one step and what the grid saw ([n] each)."""

    eb: Float[Array, " n"]  # battery energy, clipped to [0, capacity]
    eb_raw: Float[Array, " n"]  # before clipping
    eev: Float[Array, " n"]
    ug: Float[Array, " n"]  # bought from the grid (kW), deficit purchase included
    spill: Float[Array, " n"]  # unpaid export (kW)
    curtail: Float[Array, " n"]  # PV energy clipped at the top (kWh)
    deficit: Float[Array, " n"]  # energy bought to refill below 0 (kWh)


def step(c: Community, eb, eev, u, pv_real, ul_real, ul_fc) -> PlantStep:
    """One closed-loop step of the plant (MODEL §7) from the measured states (eb, eev), the
    applied inputs `u` (`ecjax.simulate.Applied`), the realized PV and load and the load
    forecast: eb follows eq (1) and is clipped to [0, capacity] (curtailed PV at the top, a
    deficit bought at the bottom); eev follows eq (6)."""
    cap = jnp.asarray(c.capacity)
    eb_raw = jnp.where(_prosumer(c, eb), eb + battery_increment(c, u, pv_real, ul_real, ul_fc), 0.0)
    deficit = jnp.maximum(-eb_raw, 0.0)
    net = grid_import(c, u, ul_real, ul_fc, deficit)
    return PlantStep(
        eb=jnp.clip(eb_raw, 0.0, cap),
        eb_raw=eb_raw,
        eev=eev + c.dt * c.eta_ev * u.ev,
        ug=jnp.maximum(net, 0.0),
        spill=jnp.maximum(-net, 0.0),
        curtail=jnp.maximum(eb_raw - cap, 0.0),
        deficit=deficit,
    )
