"""A warm start from a problem with other bounds: the solver must not take the old active set
for the new one (ADMM projects the warm multipliers onto the new bounds' normal cone, the
interior-point method re-derives slacks and multipliers from the new bounds)."""

import jax.numpy as jnp
import numpy as np
import pytest

from ecjax.qp import ADMM, IPM, Solution, Status, prepare, solve


def _solution(x, y, z):
    one = jnp.ones((), jnp.float64)
    return Solution(
        x=jnp.asarray(x), y=jnp.asarray(y), z=jnp.asarray(z), rho=jnp.asarray(0.1), status=jnp.asarray(0),
        num_steps=jnp.asarray(5), prim_res=one, dual_res=one, obj=one,
    )  # fmt: skip


@pytest.mark.parametrize("settings", [ADMM(eps_abs=1e-8, eps_rel=1e-8), IPM(eps_abs=1e-8, eps_rel=1e-8)], ids=["admm", "ipm"])
def test_warm_start_from_a_tighter_bound(settings):
    """min ½‖x‖² − 2 x₁ − x₂ over 0 <= x <= (1, 2): x* = (1, 1), y* = (1, 0) (x₁ at its upper
    bound). Relaxed to x <= (3, 3) the optimum is (2, 1), y = 0. Warm-started from the old
    (x*, y*, z*), whose residuals in the new problem are zero (Px + q + Aᵀy = 0, Ax = z), the
    solver must still move to the new optimum."""
    P, A = np.eye(2), np.eye(2)
    q = jnp.asarray([-2.0, -1.0])
    op = prepare(P, A, settings)
    old = solve(op, q, jnp.zeros(2), jnp.asarray([1.0, 2.0]))
    assert int(old.status) == Status.solved
    np.testing.assert_allclose(np.asarray(old.x), [1.0, 1.0], atol=1e-6)
    np.testing.assert_allclose(np.asarray(old.y), [1.0, 0.0], atol=1e-6)
    warm = _solution([1.0, 1.0], [1.0, 0.0], [1.0, 1.0])  # the exact old optimum
    new = solve(op, q, jnp.zeros(2), jnp.asarray([3.0, 3.0]), warm)
    assert int(new.status) == Status.solved
    np.testing.assert_allclose(np.asarray(new.x), [2.0, 1.0], atol=1e-6)
    np.testing.assert_allclose(np.asarray(new.y), [0.0, 0.0], atol=1e-6)
    assert int(new.num_steps) >= 1


def test_admm_warm_start_of_the_same_problem_keeps_its_multipliers():
    """On its own solution (same bounds) the projection changes nothing: ADMM stops at once."""
    P, A = np.eye(2), np.eye(2)
    q, lo, hi = jnp.asarray([-2.0, -1.0]), jnp.zeros(2), jnp.asarray([1.0, 2.0])
    op = prepare(P, A, ADMM(eps_abs=1e-6, eps_rel=1e-6))
    warm = _solution([1.0, 1.0], [1.0, 0.0], [1.0, 1.0])
    sol = solve(op, q, lo, hi, warm)
    assert int(sol.status) == Status.solved
    np.testing.assert_allclose(np.asarray(sol.x), [1.0, 1.0], atol=1e-6)
    np.testing.assert_allclose(np.asarray(sol.y), [1.0, 0.0], atol=1e-6)
