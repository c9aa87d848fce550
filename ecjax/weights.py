"""Weights of the global cost Φ (MODEL §4, paper eqs 14 and 20).

    Φ_i = Σ_{k<N} [ c[k]Δt·ug_i[k] − γ c[k]Δt·ugb_i[k] + r_c bc² + r_d bd² + r_t Σ_j bt[j]²
                           + r_ugb ugb² + r_ev ev² ]
        + Σ_{k=1..N} [ δ_b (eb_hi − eb[k]) + δ_ev (e_daily − eev[k]) ]
        + w_T [ δ_b (eb_hi − eb[N]) + δ_ev (e_daily − eev[N]) ]
        + ρ_1 Σ (s_lo + s_hi) + ρ_2 Σ (s_lo² + s_hi²)
    Φ = Σ_i α_i Φ_i,   α_i = 1/n.

r_ugb and r_ev are 0 by default: MODEL's cost has no quadratic term on the sale and EV inputs
(the paper penalises bc, bd, bt only), so Φ is only positive semidefinite in them and an
optimum need not be unique in those inputs; the QP solvers handle that. A positive r_ugb or
r_ev is a regularization beyond MODEL (a deviation, off by default): it makes every input
strictly convex, so that different solvers agree on the plan and not only on its cost.
Every weight may be 0 (an LP in the inputs it leaves without curvature).

The paper gives γ = 0.5 and leaves the rest open; these defaults are ecjax's choice and live
in the config. r_* are in €/(kW²·h); δ_* in €/kWh per step; ρ_1 in €/kWh; ρ_2 in €/kWh².
"""

from __future__ import annotations

import math

import equinox as eqx


class CostWeights(eqx.Module):
    gamma: float = eqx.field(static=True, default=0.5)  # sale price factor: c^b = γ c
    r_c: float = eqx.field(static=True, default=0.005)
    r_d: float = eqx.field(static=True, default=0.005)
    r_t: float = eqx.field(static=True, default=0.005)
    r_ugb: float = eqx.field(static=True, default=0.0)  # > 0: a regularization beyond MODEL
    r_ev: float = eqx.field(static=True, default=0.0)
    delta_b: float = eqx.field(static=True, default=0.002)
    delta_ev: float = eqx.field(static=True, default=0.01)
    w_T: float = eqx.field(static=True, default=1.0)
    rho1: float = eqx.field(static=True, default=2.0)
    rho2: float = eqx.field(static=True, default=10.0)

    def __check_init__(self):
        for name in ("r_c", "r_d", "r_t", "r_ugb", "r_ev", "rho2", "delta_b", "delta_ev", "w_T", "rho1"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v >= 0):
                raise ValueError(f"`weights.{name}` must be >= 0, got {v}.")
        if not (math.isfinite(self.gamma) and 0 <= self.gamma < 1):
            raise ValueError(f"`weights.gamma` must be in [0, 1), got {self.gamma}.")
