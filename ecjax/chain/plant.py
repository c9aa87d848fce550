"""The plant (MODEL §7) driven by the controls agreed on chain, and E1..E8 from it.

Given the planned first-step inputs of every step (the first input step of the last committed
iterate of each prosumer), held to the physical limits as the plant applies them
(`ecjax.simulate.applied_inputs`), the stored measured states and the stored disturbance draw
(realized PV and load), this recomputes what the plant did (`ecjax.plant.step`, the batch
engine's own plant step): battery energy, grid purchases,
deficits; then the paper's indices with `ecjax.metrics.indices`. `bounds` turns a per-entry tolerance on the applied
controls into tolerances on these quantities (absolute coefficients of the plant equations).
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np

from ecjax.chain.sample import StoredSample
from ecjax.community import HOURS, Community
from ecjax.disturbance import Profiles
from ecjax.layout import AgentLayout
from ecjax.metrics import INDEX_NAMES, indices_of
from ecjax.plan import make_stage
from ecjax import plant
from ecjax.simulate import Applied, applied_inputs

APPLIED = ("u_bc", "u_bd", "u_ugb", "u_ev")


def applied_controls(u: np.ndarray, c: Community, N: int) -> dict[str, np.ndarray]:
    """First input step of each prosumer's plan `u` [P, nu]: u_bc.. [n] and u_bt [n, n] (from, to)."""
    lay = AgentLayout(c.n, N)
    out = {k: np.zeros(c.n) for k in APPLIED}
    out["u_bt"] = np.zeros((c.n, c.n))
    for k, i in enumerate(c.prosumers):
        for name, sl in zip(APPLIED, (lay.bc, lay.bd, lay.ugb, lay.ev)):
            out[name][i] = u[k, sl.start]
        for j in lay.partners(i):
            out["u_bt"][i, j] = u[k, lay.bt_index(i, int(j), 0)]
    return out


@dataclasses.dataclass
class PlantRecord:
    """What the plant did over T steps under the given controls ([T, n] unless noted)."""

    eb: np.ndarray
    eev: np.ndarray
    ug: np.ndarray
    deficit: np.ndarray
    price: np.ndarray  # [T]
    u_bc: np.ndarray  # applied inputs (held to the physical limits)
    u_bd: np.ndarray
    u_ugb: np.ndarray
    u_ev: np.ndarray
    u_bt: np.ndarray  # [T, n, n]

    def indices(self, c: Community, gamma: float) -> dict[str, float]:
        e = indices_of(c, gamma, self.price, self.ug, jnp.asarray(self.u_ugb), jnp.asarray(self.u_bt))
        return {k: float(v) for k, v in e.items()}


def run_plant(
    c: Community, profiles: Profiles, sample: StoredSample, planned: dict[str, np.ndarray], *, N: int, trades_on: bool = True
) -> PlantRecord:
    """The plant step of `ecjax.simulate.closed_loop` for every t, from the stored measured state
    of step t, the `planned` first-step inputs ([T, n] / [T, n, n]) held to the physical limits
    by `ecjax.simulate.applied_inputs`, and the stored draw."""
    T = sample.T
    pro = np.asarray(c.is_prosumer)
    ul_mu = np.asarray(profiles.ul_mu)
    out = {k: np.zeros((T, c.n)) for k in ("eb", "eev", "ug", "deficit") + APPLIED}
    out["u_bt"] = np.zeros((T, c.n, c.n))
    price = np.zeros(T)
    for t in range(T):
        h = t % HOURS
        eb0, eev0 = sample.measured_state(t, c)
        stage = make_stage(c, profiles, t, jnp.asarray(eb0), jnp.asarray(eev0), 0.5, N)  # ev_hi only
        planned_t = Applied(**{k.removeprefix("u_"): jnp.asarray(planned[k][t]) for k in APPLIED + ("u_bt",)})
        u = applied_inputs(c, stage, planned_t, jnp.asarray(eev0), trades_on)
        pv_real = jnp.asarray(np.where(pro, sample.pv[t], 0.0))
        ps = plant.step(c, jnp.asarray(eb0), jnp.asarray(eev0), u, pv_real, jnp.asarray(sample.load[t]), jnp.asarray(ul_mu[:, h]))
        for k in ("eb", "eev", "ug", "deficit"):
            out[k][t] = np.asarray(getattr(ps, k), dtype=np.float64)
        for k in APPLIED + ("u_bt",):
            out[k][t] = np.asarray(getattr(u, k.removeprefix("u_")), dtype=np.float64)
        price[t] = float(np.asarray(profiles.price)[h])
    return PlantRecord(price=price, **out)


@dataclasses.dataclass(frozen=True)
class PlantBounds:
    """Tolerances of plant quantities given e (kW) per applied control and the dynamics residual."""

    eb: np.ndarray  # [T] per agent
    eev: np.ndarray  # [T]
    ug: np.ndarray  # [T, n]
    indices: dict[str, float]


def bounds(c: Community, price: np.ndarray, e: np.ndarray, gamma: float) -> PlantBounds:
    """Propagate a per-entry tolerance e[t] (kW) of the planned first-step inputs through the
    plant and E1..E8 (holding to the limits and clipping are 1-Lipschitz per entry).

    eb: |Δeb| <= Δt(η_c + 1/η_d + (n−1)/η_t + 1)·e;
    ug: prosumer i: (3 + senders into i)·e + |Δdeficit|/Δt; consumer: senders·e.
    """
    n, dt = c.n, c.dt
    pro = np.asarray(c.is_prosumer)
    P = int(pro.sum())
    e = np.asarray(e, dtype=np.float64)
    k_eb = dt * (c.eta_c + 1 / c.eta_d + (n - 1) / c.eta_t + 1)
    senders = np.where(pro, P - 1, P)
    ug_unit = np.where(pro, 3 + senders + k_eb / dt, senders)  # per unit of e
    ug = e[:, None] * ug_unit[None, :]  # [T, n]
    bought = ug * dt
    e1 = float(np.sum(price[:, None] * bought))
    e2 = float(np.sum(gamma * price * P * e * dt))
    idx = {
        "E1": e1,
        "E2": e2,
        "E3": e1 + e2,
        "E4": float(np.sum(P * (n - 1) * e * dt)),
        "E5": float(np.sum(P * e * dt)),
        "E6": float(np.sum(bought)),
        "E7": float(np.sum(bought[:, ~pro])),
        "E8": float(np.sum(bought[:, pro])),
    }
    assert set(idx) == set(INDEX_NAMES)
    return PlantBounds(eb=k_eb * e, eev=dt * c.eta_ev * e, ug=ug, indices=idx)
