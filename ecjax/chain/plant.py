"""The plant (MODEL §7) driven by the controls applied on chain, and E1..E8 from it.

Given the applied controls of every step (the first input step of the last committed iterate of
each prosumer), the stored measured states and the stored disturbance draw (realized PV and
load), this recomputes what the plant did: battery energy, grid purchases, deficits; then the
paper's indices with `ecjax.metrics.indices`. `bounds` turns a per-entry tolerance on the applied
controls into tolerances on these quantities (absolute coefficients of the plant equations).
"""

from __future__ import annotations

import dataclasses
import types

import jax.numpy as jnp
import numpy as np

from ecjax.community import HOURS, Community
from ecjax.disturbance import Profiles
from ecjax.layout import AgentLayout
from ecjax.metrics import INDEX_NAMES, indices
from ecjax.chain.sample import StoredSample

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
    u_ugb: np.ndarray
    u_bt: np.ndarray  # [T, n, n]

    def indices(self, c: Community, gamma: float) -> dict[str, float]:
        rec = types.SimpleNamespace(
            price=jnp.asarray(self.price), ug=jnp.asarray(self.ug), u_ugb=jnp.asarray(self.u_ugb),
            u_bt=jnp.asarray(self.u_bt),
        )  # fmt: skip
        return {k: float(v) for k, v in indices(c, gamma, rec).items()}


def run_plant(c: Community, profiles: Profiles, sample: StoredSample, applied: dict[str, np.ndarray]) -> PlantRecord:
    """The plant step of `ecjax.simulate.closed_loop` for every t, from the stored measured state
    of step t, the `applied` controls ([T, n] / [T, n, n]) and the stored draw."""
    T = sample.T
    pro = np.asarray(c.is_prosumer)
    cap = np.asarray(c.capacity, dtype=np.float64)
    pv_coef = np.asarray(c.pv_coef(), dtype=np.float64)
    dt = c.dt
    irr_mu = np.asarray(profiles.irr_mu)
    ul_mu = np.asarray(profiles.ul_mu)
    out = {k: np.zeros((T, c.n)) for k in ("eb", "eev", "ug", "deficit")}
    price = np.zeros(T)
    for t in range(T):
        h = t % HOURS
        bc, bd, ugb, ev = (applied[k][t] for k in APPLIED)
        bt = applied["u_bt"][t]
        eb0, eev0 = sample.measured_state(t, c)
        pv_fc = pv_coef * irr_mu[h]
        ul_fc = ul_mu[:, h]
        eb1 = eb0 + dt * (c.eta_c * bc - bd / c.eta_d - bt.sum(axis=1) / c.eta_t - ugb + pv_fc)  # (1)
        into = bt.sum(axis=0)
        ul_real = sample.load[t]
        pv_real = np.where(pro, sample.pv[t], 0.0)
        eb_raw = np.where(pro, eb1 + dt * (pv_real - pv_fc) - dt * c.eta_c * (ul_real - ul_fc), 0.0)
        deficit = np.maximum(-eb_raw, 0.0)
        ug_sched = bc - bd - into + ul_fc + ev
        ug_con = ul_real - into
        out["eb"][t] = np.clip(eb_raw, 0.0, cap)
        out["eev"][t] = eev0 + dt * c.eta_ev * ev
        out["ug"][t] = np.where(pro, ug_sched + deficit / dt, np.maximum(ug_con, 0.0))
        out["deficit"][t] = deficit
        price[t] = float(np.asarray(profiles.price)[h])
    return PlantRecord(price=price, u_ugb=applied["u_ugb"], u_bt=applied["u_bt"], **out)


@dataclasses.dataclass(frozen=True)
class PlantBounds:
    """Tolerances of plant quantities given e (kW) per applied control and the dynamics residual."""

    eb: np.ndarray  # [T] per agent
    eev: np.ndarray  # [T]
    ug: np.ndarray  # [T, n]
    indices: dict[str, float]


def bounds(c: Community, price: np.ndarray, e: np.ndarray, eps_dyn: float, gamma: float) -> PlantBounds:
    """Propagate a per-entry control tolerance e[t] (kW) through the plant and E1..E8.

    eb: |Δeb| <= Δt(η_c + 1/η_d + (n−1)/η_t + 1)·e + ε_dyn (clipping is 1-Lipschitz);
    ug: prosumer i: (3 + senders into i)·e + |Δdeficit|/Δt; consumer: senders·e.
    """
    n, dt = c.n, c.dt
    pro = np.asarray(c.is_prosumer)
    P = int(pro.sum())
    e = np.asarray(e, dtype=np.float64)
    k_eb = dt * (c.eta_c + 1 / c.eta_d + (n - 1) / c.eta_t + 1)
    senders = np.where(pro, P - 1, P)
    ug_unit = np.where(pro, 3 + senders + k_eb / dt, senders)  # per unit of e (plus ε_dyn/Δt)
    ug_dyn = np.where(pro, 1.0, 0.0) / dt
    ug = e[:, None] * ug_unit[None, :] + eps_dyn * ug_dyn[None, :]  # [T, n]
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
    return PlantBounds(eb=k_eb * e + eps_dyn, eev=dt * c.eta_ev * e, ug=ug, indices=idx)
