"""The second backend: jaxopt's BoxOSQP behind `solve(..., backend="jaxopt")`, on planted QPs
with known optimal values (helpers.plant), batched, with status and residuals as data."""

import jax.numpy as jnp
import numpy as np
import pytest

from ecjax.qp import ADMM, IPM, Solution, Status, prepare, solve, solve_batch

from .helpers import assign_kinds, kkt_numpy, objective, plant_batch, structured_PA


def planted(seed, batch):
    rng = np.random.default_rng(seed)
    P, A = structured_PA(rng, 12, 4, zero_cost_frac=0.0)
    q, lo, hi, x, y, _ = plant_batch(rng, P, A, batch, kinds=assign_kinds(rng, A.shape[0]))
    return P, A, q, lo, hi, x


def test_jaxopt_backend_solves_planted_qps():
    P, A, q, lo, hi, x_star = planted(0, 3)
    op = prepare(P, A, ADMM(eps_abs=1e-7, eps_rel=1e-7, max_iter=20000, check_every=10), lo=lo, hi=hi)
    sols = solve_batch(op, q, lo, hi, backend="jaxopt")
    assert np.all(np.asarray(sols.status) == int(Status.solved)), np.asarray(sols.status)
    for b in range(q.shape[0]):
        x = np.asarray(sols.x[b])
        f_star = objective(P, q[b], x_star[b])
        assert abs(objective(P, q[b], x) - f_star) <= 1e-5 * max(1.0, abs(f_star))
        np.testing.assert_allclose(x, x_star[b], atol=1e-4)  # P > 0: x* is unique
        r = kkt_numpy(P, q[b], A, lo[b], hi[b], x, np.asarray(sols.y[b]))
        assert r["prim"] <= 1e-5 and r["stat"] <= 1e-4 and r["sign"] <= 1e-4, r
    for f in Solution.__dataclass_fields__:
        assert np.all(np.isfinite(np.asarray(getattr(sols, f)))), f


def test_jaxopt_backend_reports_its_iteration_cap_and_bad_data():
    P, A, q, lo, hi, _ = planted(1, 2)
    op = prepare(P, A, ADMM(eps_abs=1e-12, eps_rel=1e-12, max_iter=20, check_every=10), lo=lo, hi=hi)
    q = q.copy()
    q[1, 0] = np.nan
    sols = solve_batch(op, q, lo, hi, backend="jaxopt")
    assert int(sols.status[0]) == int(Status.max_iter)
    assert int(sols.status[1]) == int(Status.numerical_error)
    assert np.all(np.isfinite(np.asarray(sols.prim_res))) and np.all(np.isfinite(np.asarray(sols.x)))


def test_backend_choice_is_checked():
    P, A, q, lo, hi, _ = planted(2, 1)
    with pytest.raises(ValueError, match="backend"):
        solve(prepare(P, A, ADMM(), lo=lo, hi=hi), q[0], lo[0], hi[0], backend="osqp")
    with pytest.raises(ValueError, match="backend"):
        solve(prepare(P, A, IPM()), jnp.asarray(q[0]), lo[0], hi[0], backend="jaxopt")
