"""Planted QPs with known primal-dual solutions, and KKT residuals.

Every instance has an exact KKT pair (x*, y*) by construction (helpers.plant), with every row
kind present: equalities, one-sided lower and upper bounds, two-sided boxes, free rows, each
active or not. The solver must return status `solved`, the planted optimal value, a KKT pair
by ecjax's own residuals (`ecjax.qp.kkt`) and by an independent numpy check, and x* itself
where it is unique (P positive definite). The interior-point method takes a diagonal P (the
community model's); non-diagonal ones serve the KKT-residual checks.
"""

import jax.numpy as jnp
import numpy as np
import pytest

from ecjax.qp import IPM, Status, kkt, prepare, solve, solve_batch

from .helpers import (
    KINDS,
    active_rows_independent,
    assign_kinds,
    dense_PA,
    kkt_numpy,
    objective,
    plant_batch,
    structured_PA,
)

B = 6
F64 = dict(eps_abs=1e-9, eps_rel=1e-9)
F32 = dict(eps_abs=1e-5, eps_rel=1e-5)


def problem(kind, seed):
    """(P, A) of one structure: diagonal P with some zero costs ("diag"), diagonal P > 0
    ("diag_pd", same A), dense P > 0 ("dense"), dense rank-deficient P ("lowrank")."""
    rng = np.random.default_rng(seed)
    if kind in ("diag", "diag_pd"):
        P, A = structured_PA(rng, 30, 10, zero_cost_frac=0.2 if kind == "diag" else 0.0)
    elif kind == "dense":
        P, A = dense_PA(rng, 20, 30)
    elif kind == "lowrank":
        P, A = dense_PA(rng, 20, 30, rank=8)
    else:
        raise ValueError(kind)
    return P, A, rng


def check_solution(P, A, q, lo, hi, x_star, y_star, sol, tol, exact_x):
    """The checks every planted solve must pass (one sample, numpy inputs). An interior-point
    solution's multipliers of inactive rows are small but not zero (of the order of the final
    barrier parameter), and its reported primal residual is that of its slacks (an upper bound
    of the returned point's)."""
    assert int(sol.status) == int(Status.solved), (int(sol.status), int(sol.num_steps))
    x, y, z = (np.asarray(v, np.float64) for v in (sol.x, sol.y, sol.z))
    f_star = objective(P, q, x_star)
    scale = max(1.0, abs(f_star))
    # optimal value (unique even when x* is not)
    assert abs(objective(P, q, x) - f_star) <= tol * scale
    assert abs(float(sol.obj) - objective(P, q, x)) <= tol * scale
    # KKT by ecjax.qp.kkt ...
    r = kkt.residuals(*(jnp.asarray(v, jnp.float64) for v in (P, q, A, lo, hi, x, y)))
    dual_tol = tol * max(1.0, np.abs(q).max())
    assert float(r.prim) <= tol * max(1.0, np.abs(A @ x_star).max())
    assert float(r.dual) <= dual_tol
    ulp = 8 * np.finfo(sol.x.dtype).eps
    y_floor = 10 * tol * max(1.0, np.abs(y).max())
    assert float(r.cone) <= y_floor
    # ... and independently in numpy
    k = kkt_numpy(P, q, A, lo, hi, x, y)
    assert k["prim"] <= tol * max(1.0, np.abs(A @ x_star).max())
    assert k["stat"] <= dual_tol
    assert k["sign"] <= ulp * max(1.0, np.abs(y).max())  # exact: y keeps the sign of its side
    assert k["compl"] <= tol * max(1.0, np.abs(y_star).max()) * max(1.0, np.abs(A @ x_star).max())
    # z is A x projected on the box: inside [lo, hi], y presses only where z is at a bound
    bnd = ulp * np.maximum(1.0, np.abs(np.where(np.isfinite(lo), lo, 0.0)) + np.abs(np.where(np.isfinite(hi), hi, 0.0)))
    assert np.all((z >= lo - bnd) & (z <= hi + bnd))
    big = np.abs(y) > y_floor
    at = bnd * tol / ulp  # an interior point reaches a bound within tol
    assert np.all(np.where(big & (y > 0), np.abs(z - hi) <= at, True))
    assert np.all(np.where(big & (y < 0), np.abs(z - lo) <= at, True))
    # the reported residuals are the unscaled ones of the returned point
    prim = np.abs(A @ x - z).max()
    dual = np.abs(P @ x + q + A.T @ y).max()
    terms = max(np.abs(A @ x).max(), np.abs(P @ x).max(), np.abs(q).max(), np.abs(A.T @ y).max())
    rtol = 1e-6 if sol.x.dtype == np.float64 else 1e-2
    assert prim <= float(sol.prim_res) * (1 + rtol) + 100 * ulp * terms
    np.testing.assert_allclose(float(sol.dual_res), dual, rtol=rtol, atol=100 * ulp * terms)
    if exact_x:  # P > 0: x* is the unique minimiser
        assert np.abs(x - x_star).max() <= 100 * tol * max(1.0, np.abs(x_star).max())
        if active_rows_independent(A, y_star):  # and y* the unique multiplier
            assert np.abs(y - y_star).max() <= 1e3 * tol * max(1.0, np.abs(y_star).max())


def _run(kind, dtype, settings, tol, seed=0, per_sample_kinds=False):
    P, A, rng = problem(kind, seed)
    m = A.shape[0]
    kinds = None if per_sample_kinds else assign_kinds(rng, m)
    q, lo, hi, xs, ys, kd = plant_batch(rng, P, A, B, kinds=kinds)
    for k in KINDS:  # the batch covers every row kind
        assert (kd == k).any(), k
    op = prepare(P, A, IPM(**settings), dtype=dtype)
    sols = solve_batch(op, jnp.asarray(q), jnp.asarray(lo), jnp.asarray(hi))
    assert sols.x.dtype == dtype
    exact = bool(np.all(np.linalg.eigvalsh(P) > 1e-6))
    for b in range(B):
        sol = type(sols)(**{f: getattr(sols, f)[b] for f in sols.__dataclass_fields__})
        check_solution(P, A, q[b], lo[b], hi[b], xs[b], ys[b], sol, tol, exact)


@pytest.mark.parametrize("kind", ["diag", "diag_pd"])
@pytest.mark.parametrize("per_sample_kinds", [False, True])
@pytest.mark.parametrize("seed", [0, 2])
def test_planted_float64(kind, per_sample_kinds, seed):
    """Diagonal P, with ("diag") and without ("diag_pd") costless columns. A quarter of the
    columns have two bound rows (coefficients 1, −2 or 0.5): the IPM merges them into one bound
    pair per column and hands the multipliers back to the rows that attain the bounds, so y
    must satisfy the KKT conditions of the user's rows. Samples of one batch need not share
    which rows are equalities, bounds or free (`per_sample_kinds`)."""
    _run(kind, jnp.float64, F64, 1e-7, seed=seed, per_sample_kinds=per_sample_kinds)


@pytest.mark.parametrize("kind", ["diag", "diag_pd"])
def test_planted_float32(kind):
    """float32 operator (x64 stays enabled globally): the whole solve runs in float32."""
    _run(kind, jnp.float32, F32, 1e-3)


# --------------------------------------------------------------------------- free columns
# Columns with zero cost and no bound row of their own, bounded only through coupling rows:
# the battery and EV energies of every agent QP have exactly this structure.
def _free_cols(dtype, settings, tol):
    rng = np.random.default_rng(1)
    P, A = structured_PA(rng, 24, 8, free_cols=4)
    kinds = assign_kinds(rng, A.shape[0])
    q, lo, hi, xs, ys, _ = plant_batch(rng, P, A, 4, kinds=kinds)
    op = prepare(P, A, IPM(**settings), dtype=dtype, lo=lo[0], hi=hi[0])
    sols = solve_batch(op, jnp.asarray(q), jnp.asarray(lo), jnp.asarray(hi))
    status = np.asarray(sols.status)
    assert np.all(status == int(Status.solved)), (status, np.asarray(sols.num_steps))
    for b in range(4):
        sol = type(sols)(**{f: getattr(sols, f)[b] for f in sols.__dataclass_fields__})
        check_solution(P, A, q[b], lo[b], hi[b], xs[b], ys[b], sol, tol, exact_x=False)


def test_free_columns_float64():
    _free_cols(jnp.float64, F64, 1e-7)


def test_free_columns_float32():
    _free_cols(jnp.float32, F32, 1e-3)


# --------------------------------------------------------------------------- KKT residuals
@pytest.mark.parametrize("kind", ["diag", "dense"])
def test_kkt_residuals_zero_at_planted_and_detect_perturbations(kind):
    """ecjax.qp.kkt and the numpy check agree: zero at (x*, y*), and each residual reacts to
    the perturbation that breaks its condition."""
    P, A, rng = problem(kind, 5)
    q, lo, hi, x, y, kinds = plant_batch(rng, P, A, 1)
    q, lo, hi, x, y, kinds = (v[0] for v in (q, lo, hi, x, y, kinds))
    J = lambda *v: [jnp.asarray(a) for a in v]  # noqa: E731

    def both(x_, y_):
        r = kkt.residuals(*J(P, q, A, lo, hi, x_, y_))
        k = kkt_numpy(P, q, A, lo, hi, x_, y_)
        return r, k

    r, k = both(x, y)
    assert float(r.max) <= 1e-12 and max(k.values()) <= 1e-12
    assert float(kkt.optimality_error(*J(P, q, A, lo, hi, x, y))) <= 1e-12

    # primal: push an active row past its bound (x moves, so stationarity breaks too)
    r, k = both(x + 0.1 * rng.normal(size=x.size), y)
    assert float(r.prim) > 1e-3 and k["prim"] > 1e-3 and abs(float(r.prim) - k["prim"]) <= 1e-12
    assert float(r.dual) > 1e-3 and abs(float(r.dual) - k["stat"]) <= 1e-12
    # wrong sign: y > 0 on a row with hi = +inf (a lower-active one)
    r_lo = int(np.flatnonzero(kinds == "lo_active")[0])
    y2 = y.copy()
    y2[r_lo] = 0.5
    r, k = both(x, y2)
    assert abs(float(r.cone) - 0.5) <= 1e-12 and abs(k["sign"] - 0.5) <= 1e-12
    # complementarity: a multiplier on an inactive box row
    r_in = int(np.flatnonzero(kinds == "box_inactive")[0])
    y3 = y.copy()
    y3[r_in] = 0.3
    gap = hi[r_in] - A[r_in] @ x
    r, k = both(x, y3)
    assert abs(float(r.compl) - 0.3 * gap) <= 1e-12 and abs(k["compl"] - 0.3 * gap) <= 1e-12
    # single-residual helpers agree with the bundle
    assert float(kkt.primal_residual(*J(A, lo, hi, x))) <= 1e-12
    assert float(kkt.dual_residual(*J(P, q, A, x, y3))) > 0.2 * np.abs(A[r_in]).max()


@pytest.mark.parametrize("seed", [2, 7])
def test_single_solve_matches_planted(seed):
    """`solve` (one instance, no batch axis) on a planted QP; seed 7 is one that a first-order
    method needs ~8000 iterations for at eps 1e-9 (OSQP needs 8450)."""
    P, A, rng = problem("diag_pd", seed)
    q, lo, hi, x, y, _ = plant_batch(rng, P, A, 1)
    op = prepare(P, A, IPM(**F64), lo=lo[0], hi=hi[0])
    sol = solve(op, jnp.asarray(q[0]), jnp.asarray(lo[0]), jnp.asarray(hi[0]))
    check_solution(P, A, q[0], lo[0], hi[0], x[0], y[0], sol, 1e-7, exact_x=True)


def test_box_only_qp():
    """Only bound rows (no coupling row, so the IPM's reduced Newton system is empty), some
    columns without cost (LP-like), two rows on one column, a free column with cost: the
    optimum is clip(−q/p, lb, ub) per column (the costless ones at the bound their q points
    to), y = −(p x + q) on the binding row."""
    rng = np.random.default_rng(3)
    n = 7
    p = np.array([1.0, 2.0, 0.0, 0.0, 0.5, 3.0, 1.0])
    A = np.vstack([np.eye(n), np.eye(n)[[4]]])  # column 4 has a second bound row
    q = rng.normal(size=(B, n)) * 2.0
    q[:, 2:4] = np.where(np.abs(q[:, 2:4]) < 0.1, 0.5, q[:, 2:4])  # costless columns: a clear direction
    lo = np.tile(np.r_[-np.ones(n), -0.2], (B, 1))
    hi = np.tile(np.r_[np.ones(n), 0.3], (B, 1))
    lo[:, 6], hi[:, 6] = -np.inf, np.inf  # column 6: free, cost ½x² + q x
    lb, ub = lo[:, :n].copy(), hi[:, :n].copy()
    lb[:, 4], ub[:, 4] = np.maximum(lo[:, 4], lo[:, 7]), np.minimum(hi[:, 4], hi[:, 7])
    with np.errstate(divide="ignore"):
        x_free = np.where(p > 0, -q / np.where(p > 0, p, 1.0), -np.sign(q) * np.inf)
    x_star = np.clip(x_free, lb, ub)
    op = prepare(np.diag(p), A, IPM(**F64))
    sols = solve_batch(op, jnp.asarray(q), jnp.asarray(lo), jnp.asarray(hi))
    assert np.all(np.asarray(sols.status) == int(Status.solved))
    np.testing.assert_allclose(np.asarray(sols.x), x_star, atol=1e-6)
    y = np.asarray(sols.y)
    g = p * x_star + q  # stationarity: g + Aᵀy = 0
    np.testing.assert_allclose(g + y @ A, 0.0, atol=1e-6)
