"""The audit's tolerance, derived from the fixed-point quantization and the solver's tolerance.

Per entry (kW) of a plan, with h = 1/(2·scale) (rounding to nearest; plus 4·eps·M for the float
round-off of the stored run's own combinations, negligible in float64), w the FC-MPC weight:

- ε_pri = eps_abs + eps_rel·M: the solver's primal tolerance. A solution may leave its box by up
  to ε_pri (the agents clip it into the contract's bounds before rounding), and the predicted
  states satisfy the dynamics (1) within ε_pri. M bounds the magnitude of the QP's row values
  (battery and EV energy, power limits, PV), from the community.
- σ = ε_dua/μ + ε_pri: how far an ε-solution of a subproblem lies from its exact optimum, to
  first order: a dual residual r moves the optimum of a cost with curvature ≥ μ by ≤ |r|/μ, with
  ε_dua = eps_abs + eps_rel·‖q‖∞ and μ = 2·α·min(r_c, r_d, r_t, r_ugb, r_ev) the smallest
  curvature of an input in the subproblem (α = 1/n). MODEL's cost has no curvature in ugb
  and ev (r_ugb = r_ev = 0 by default): there the first-order bound does not hold, and μ is
  the smallest positive weight of the five. Solve mode then assumes that the same solver, on
  data equal up to the fixed-point rounding, returns the same point of a non-unique optimum;
  stored mode does not depend on μ.

stored mode (the stored iterates are uploaded):
    a_p = h + ε_pri                                   uploaded optimum u_i^{p,*}
    e_0 = h + ε_pri,  e_p = (1 − w)·e_{p−1} + w·a_p + h  committed iterate u_i^p vs stored
solve mode (each agent solves again from the chain's rounded data):
    a_p = 2σ + e_{p−1} + h  (two ε-solutions, and the shared data differing by e_{p−1}, entering
                             the subproblem's rows with unit coefficients: first-order model)
    e_0 = 2σ + h,  e_p = (1 − w)·e_{p−1} + w·a_p + h
θ_i^p: |Δθ| ≤ √nu·(e_p + e_{p−1}). Applied controls: e at the step's last iteration. The plant
and E1..E8 propagate that bound through the plant equations (MODEL §7) with absolute
coefficients (`ecjax.chain.plant`). A step that the chain and the stored run stop at different
iterations, with the deciding θ within its tolerance of ϰ, is a borderline decision: the applied
controls of that step are compared within e plus the θ of the extra iterations.

A difference within the tolerance means: the chain's record is what the stored run computed, up
to the fixed-point rounding of what went on chain and (solve mode) the accuracy to which each QP
was solved. It does not certify more digits than that.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ecjax.chain.sample import RunInputs

FLOAT_SLACK = 1e-9  # float64 round-off of sums of a few hundred terms of O(10)


@dataclasses.dataclass(frozen=True)
class AuditTolerance:
    mode: str
    scale: int
    w: float
    nu: int
    h: float  # half a fixed-point unit (kW)
    eps_pri: float
    eps_dua: float
    mu: float
    sigma: float  # solver accuracy per entry (solve mode)
    p_max: int
    f: float = 0.0  # float round-off of one stored combination (4·eps(dtype)·M)

    def _bounds(self, p: int) -> tuple[float, float]:
        """(a_p, e_p) of the module docstring, without the float slack."""
        h = self.h + self.f
        e = (h + self.eps_pri) if self.mode == "stored" else (2 * self.sigma + h)
        a = 0.0
        for _ in range(1, p + 1):
            a = (h + self.eps_pri) if self.mode == "stored" else (2 * self.sigma + e + h)
            e = (1 - self.w) * e + self.w * a + h
        return a, e

    def u_star(self, p: int) -> float:
        """Uploaded subproblem optimum at iteration p >= 1 vs the stored one."""
        return self._bounds(p)[0] + FLOAT_SLACK

    def u_iter(self, p: int) -> float:
        """Committed iterate after iteration p vs the stored iterate p."""
        return self._bounds(p)[1] + FLOAT_SLACK

    def theta(self, p: int) -> float:
        return float(np.sqrt(self.nu)) * (self.u_iter(p) + self.u_iter(p - 1)) + FLOAT_SLACK

    def state(self) -> float:
        """Measured state uploaded at p = 0 vs stored (rounding only)."""
        return self.h + FLOAT_SLACK

    def as_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["u_iter_by_iteration"] = [self.u_iter(p) for p in range(self.p_max + 1)]
        d["u_star_by_iteration"] = [None] + [self.u_star(p) for p in range(1, self.p_max + 1)]
        return d


MEANING = (
    "A difference within the tolerance is explained by the fixed-point rounding of what went on "
    "chain (1/(2·scale) per value, compounded through the contract's rounded combination of "
    "iterates) and, in solve mode, by the accuracy to which each QP was solved (the solver's "
    "eps_abs/eps_rel, turned into a distance between solutions by the smallest curvature of the "
    "cost). Within it, the chain's record and the stored run are the same computation; a larger "
    "difference is not explained by rounding or solver accuracy and means the stored data and "
    "the negotiation on chain disagree."
)


def row_scale(inputs: RunInputs) -> float:
    """M: a bound on the magnitude of the subproblem's row values (kWh, kW)."""
    c = inputs.community
    pro = np.asarray(c.prosumers)
    g = lambda a: np.asarray(a, dtype=np.float64)[pro]  # noqa: E731
    pv = g(c.pv_coef()) * float(np.max(np.asarray(inputs.profiles.irr_mu))) * c.dt
    ul = float(np.max(np.asarray(inputs.profiles.ul_mu)))
    m = c.n - 1
    candidates = [
        g(c.capacity) + pv,
        g(c.ev_daily),
        g(c.bc_max) + g(c.bd_max) + g(c.ev_max) + ul + m * g(c.bt_max),
        g(c.bd_max) + m * g(c.bt_max) / c.eta_t + g(c.ugb_max),
    ]
    return float(max(np.max(x) for x in candidates))


def dual_scale(inputs: RunInputs) -> float:
    """‖q‖∞ of the subproblem (MODEL §4 with α = 1/n)."""
    c, weights = inputs.community, inputs.weights
    alpha = 1.0 / c.n
    price = float(np.max(np.asarray(inputs.profiles.price)))
    return alpha * max(price * c.dt, weights.rho1, weights.delta_b * (1 + weights.w_T),
                       weights.delta_ev * (1 + weights.w_T))


def derive(inputs: RunInputs, mode: str, scale: int, w: float) -> AuditTolerance:
    """The audit tolerance of a run made with `inputs` (see the module docstring)."""
    s = inputs.solver
    c, weights = inputs.community, inputs.weights
    eps_pri = s.eps_abs + s.eps_rel * row_scale(inputs)
    eps_dua = s.eps_abs + s.eps_rel * dual_scale(inputs)
    curv = [r for r in (weights.r_c, weights.r_d, weights.r_t, weights.r_ugb, weights.r_ev) if r > 0]
    mu = 2.0 / c.n * (min(curv) if curv else 1.0)  # see the module docstring
    return AuditTolerance(
        mode=mode,
        scale=int(scale),
        w=float(w),
        nu=(c.n + 3) * int(inputs.N),
        h=0.5 / scale,
        eps_pri=float(eps_pri),
        eps_dua=float(eps_dua),
        mu=float(mu),
        sigma=float(eps_dua / mu + eps_pri),
        p_max=int(inputs.fc.p_max),
        f=float(4 * np.finfo(np.dtype(inputs.dtype)).eps * row_scale(inputs)),
    )
