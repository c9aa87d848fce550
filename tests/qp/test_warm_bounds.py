"""A warm start from a problem with other bounds: the solver must not take the old active set
for the new one (the interior-point method re-derives slacks and multipliers from the new
bounds)."""

import jax.numpy as jnp
import numpy as np
from ecjax.qp import IPM, Solution, Status, prepare, solve


def _solution(x, y, z):
    one = jnp.ones((), jnp.float64)
    return Solution(
        x=jnp.asarray(x), y=jnp.asarray(y), z=jnp.asarray(z), status=jnp.asarray(0),
        num_steps=jnp.asarray(5), prim_res=one, dual_res=one, obj=one,
    )  # fmt: skip


def test_warm_start_from_a_tighter_bound():
    """min ½‖x‖² − 2 x₁ − x₂ over 0 <= x <= (1, 2): x* = (1, 1), y* = (1, 0) (x₁ at its upper
    bound). Relaxed to x <= (3, 3) the optimum is (2, 1), y = 0. Warm-started from the old
    (x*, y*, z*), whose residuals in the new problem are zero (Px + q + Aᵀy = 0, Ax = z), the
    solver must still move to the new optimum."""
    P, A = np.eye(2), np.eye(2)
    q = jnp.asarray([-2.0, -1.0])
    op = prepare(P, A, IPM(eps_abs=1e-8, eps_rel=1e-8))
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
