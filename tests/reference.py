"""Independent reference: the MODEL equations written directly in CVXPY (solved by Clarabel).

Nothing here uses ecjax's QP matrices: variables are named as in MODEL §2, constraints are
eqs (1)–(11) and (16)–(18) as MODEL §3 and §5 state them, and the objective is Φ of MODEL §4.
Agents in `free` are decision variables; every other agent is fixed at `fixed` (an ecjax Plan,
numpy-converted). `free = all prosumers` is the centralized problem; `free = [i]` is the FC-MPC
subproblem of prosumer i.
"""

from __future__ import annotations

import cvxpy as cp
import numpy as np


def _np(x):
    return np.asarray(x, dtype=np.float64)


def solve_reference(c, w, stage, free, fixed=None, trades_on=True, tol=1e-10):
    """Returns (Φ*, plan dict of numpy arrays [n, N] / bt [n, n, N], status)."""
    n = c.n
    N = int(stage.win.price.shape[0])
    dt = c.dt
    price = _np(stage.win.price)
    irr = _np(stage.win.irr_mu)
    ul = _np(stage.win.ul_mu)
    ul_cap = _np(stage.ul_cap)
    band_lo, band_hi = _np(stage.band.lo), _np(stage.band.hi)
    ev_hi, eev_lo, eev_hi = _np(stage.ev_hi), _np(stage.eev_lo), _np(stage.eev_hi)
    eb0, eev0 = _np(stage.eb0), _np(stage.eev0)
    pro = set(c.prosumers)
    free = list(free)

    def const(name):
        if fixed is None:
            return np.zeros((n, n, N)) if name == "bt" else np.zeros((n, N))
        return _np(getattr(fixed, name))

    V = {}  # per agent: dict of expressions (variables if free, constants otherwise)
    for i in range(n):
        if i in free:
            v = {k: cp.Variable(N, nonneg=True) for k in ("bc", "bd", "ugb", "ev", "s_lo", "s_hi")}
            v["eb"] = cp.Variable(N)
            v["eev"] = cp.Variable(N)
            v["bt"] = {j: cp.Variable(N, nonneg=True) for j in range(n) if j != i}
        else:
            v = {k: const(k)[i] for k in ("bc", "bd", "ugb", "ev", "s_lo", "s_hi", "eb", "eev")}
            v["bt"] = {j: const("bt")[i, j] for j in range(n) if j != i}
        V[i] = v

    cons = []
    for i in free:
        v = V[i]
        pv = c.eta_pv * c.pv_area[i] * irr / 1000.0
        sent = sum(v["bt"][j] for j in v["bt"]) / c.eta_t
        eb_prev = cp.hstack([np.array([eb0[i]]), v["eb"][:-1]])
        eev_prev = cp.hstack([np.array([eev0[i]]), v["eev"][:-1]])
        cons += [
            v["eb"] == eb_prev + dt * (c.eta_c * v["bc"] - v["bd"] / c.eta_d - sent - v["ugb"] + pv),  # (1)
            v["eev"] == eev_prev + dt * c.eta_ev * v["ev"],  # (6)
            v["bc"] <= c.bc_max[i],  # (3)
            v["bd"] <= c.bd_max[i],  # (4)
            v["ugb"] <= c.ugb_max[i],
            v["ev"] <= ev_hi[i],  # (8)
            v["eev"] >= eev_lo[i],  # (7), (9)
            v["eev"] <= eev_hi[i],
            v["bd"] + sent + v["ugb"] <= c.bd_max[i],  # one battery, one discharge limit
            v["eb"] + v["s_lo"] >= band_lo[i],  # (17) soft
            v["eb"] - v["s_hi"] <= band_hi[i],  # (18) soft
        ]
        for j, b in v["bt"].items():
            cons.append(b <= (c.bt_max[i] if trades_on else 0.0))  # (5)

    def ug(j):  # (10); consumers: ul_j − Σ incoming
        incoming = sum(V[l]["bt"][j] for l in range(n) if l != j)
        if j in pro:
            return V[j]["bc"] - V[j]["bd"] - incoming + ul[j] + V[j]["ev"]
        return ul_cap[j] - incoming

    def involves_free(j):
        return j in free or (trades_on and any(l != j for l in free))

    for j in range(n):
        if involves_free(j):
            cons.append(ug(j) >= 0)  # (11)

    alpha = 1.0 / n
    phi = 0
    for i in range(n):
        v = V[i]
        if i in pro:
            ug_i = ug(i)
            track_b = w.delta_b * (c.eb_hi[i] - v["eb"])
            track_ev = w.delta_ev * (c.ev_daily[i] - v["eev"])
            phi_i = (
                cp.sum(cp.multiply(price * dt, ug_i))
                - w.gamma * cp.sum(cp.multiply(price * dt, v["ugb"]))
                + w.r_c * cp.sum_squares(v["bc"])
                + w.r_d * cp.sum_squares(v["bd"])
                + w.r_t * sum(cp.sum_squares(b) for b in v["bt"].values())
                + w.r_ugb * cp.sum_squares(v["ugb"])
                + w.r_ev * cp.sum_squares(v["ev"])
                + cp.sum(track_b)
                + cp.sum(track_ev)
                + w.w_T * (track_b[N - 1] + track_ev[N - 1])
                + w.rho1 * cp.sum(v["s_lo"] + v["s_hi"])
                + w.rho2 * (cp.sum_squares(v["s_lo"]) + cp.sum_squares(v["s_hi"]))
            )
        else:  # consumers pay for what they import at the forecast load
            incoming = sum(V[l]["bt"][i] for l in range(n) if l != i)
            phi_i = cp.sum(cp.multiply(price * dt, ul[i] - incoming))
        phi = phi + alpha * phi_i

    prob = cp.Problem(cp.Minimize(phi), cons)
    prob.solve(
        solver=cp.CLARABEL,
        tol_gap_abs=tol,
        tol_gap_rel=tol,
        tol_feas=tol,
        tol_ktratio=1e-8,
        max_iter=500,
    )
    plan = {k: const(k).copy() for k in ("bc", "bd", "ugb", "ev", "eb", "eev", "s_lo", "s_hi")}
    plan["bt"] = const("bt").copy()
    if prob.status in ("optimal", "optimal_inaccurate"):
        for i in free:
            for k in plan:
                if k == "bt":
                    for j, b in V[i]["bt"].items():
                        plan["bt"][i, j] = b.value
                else:
                    plan[k][i] = V[i][k].value
    return float(prob.value), plan, prob.status
