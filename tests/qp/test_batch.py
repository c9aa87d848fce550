"""Batching: vmap equals a loop of single solves, new data never recompiles, and a float32
operator runs entirely in float32 with x64 enabled."""

import contextlib
import logging

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ecjax import ocp
from ecjax.fcmpc import make_controller
from ecjax.plan import make_stage, zero_plan
from ecjax.qp import IPM, Solution, Status, prepare, solve, solve_batch
from ecjax.weights import CostWeights
from helpers_community import random_case

from .helpers import assign_kinds, objective, plant_batch, structured_PA


def planted(seed, batch, n=30, m_c=10):
    rng = np.random.default_rng(seed)
    P, A = structured_PA(rng, n, m_c, zero_cost_frac=0.0)
    q, lo, hi, x, y, _ = plant_batch(rng, P, A, batch, kinds=assign_kinds(rng, A.shape[0]))
    return P, A, q, lo, hi, x


def _sample(sols, b):
    return jax.tree.map(lambda v: v[b], sols)


# --------------------------------------------------------------------------- vmap == loop
def test_vmap_equals_loop_of_single_solves():
    """Same status and iteration count, and the same answer far below the solver tolerance.

    Bitwise equality is not available: XLA sums a batched matrix product in another order
    than an unbatched one, and the solver carries those last-bit differences through its
    iterations. Required here: agreement 1e-10 (relative to the solution's size), 10x below
    eps = 1e-9."""
    P, A, q, lo, hi, _ = planted(0, 4)
    op = prepare(P, A, IPM(eps_abs=1e-9, eps_rel=1e-9), lo=lo[0], hi=hi[0])
    sols = solve_batch(op, q, lo, hi)
    vm = jax.vmap(solve, in_axes=(None, 0, 0, 0))(op, q, lo, hi)  # the documented vmap of `solve`
    # solve_batch splits the batch over the local devices (ecjax.parallel): the same up to the
    # order of sums in the batched products
    for f in ("status", "num_steps"):
        np.testing.assert_array_equal(np.asarray(getattr(vm, f)), np.asarray(getattr(sols, f)), err_msg=f)
    for f in ("x", "y", "z", "obj"):
        a, g = np.asarray(getattr(vm, f)), np.asarray(getattr(sols, f))
        np.testing.assert_allclose(g, a, rtol=0, atol=1e-10 * max(1.0, np.abs(a).max()), err_msg=f)
    for b in range(q.shape[0]):
        alone, got = solve(op, q[b], lo[b], hi[b]), _sample(sols, b)
        assert int(got.status) == int(alone.status) == int(Status.solved)
        assert int(got.num_steps) == int(alone.num_steps)
        for f in ("x", "y", "z", "obj"):
            a, g = np.asarray(getattr(alone, f)), np.asarray(getattr(got, f))
            np.testing.assert_allclose(g, a, rtol=0, atol=1e-10 * max(1.0, np.abs(a).max()), err_msg=f)


# --------------------------------------------------------------------------- compilation
class _Compiles(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.names = []

    def emit(self, record):
        msg = record.getMessage()
        if msg.startswith("Compiling "):
            self.names.append(msg.split(" with ")[0])


@contextlib.contextmanager
def count_compiles():
    """Collects one entry per XLA compilation inside the block."""
    h = _Compiles()
    logger = logging.getLogger("jax")
    logger.addHandler(h)
    try:
        with jax.log_compiles():
            yield h.names
    finally:
        logger.removeHandler(h)


def _agent_data(c, prof, w, t, delta, eb0, eev0, trades_on, mode="cumulative"):
    stage = make_stage(c, prof, t, jnp.asarray(eb0), jnp.asarray(eev0), delta, 24, mode)
    ids = jnp.asarray(c.prosumers)
    plan = zero_plan(c.n, 24)
    q, lo, hi = jax.vmap(lambda i: ocp.agent_qp(c, w, stage, i, plan, trades_on=trades_on))(ids)
    return jax.block_until_ready((q, lo, hi))


def test_new_data_does_not_recompile():
    """A new δ, start hour, state or trades flag (i.e. new q, lo, hi), or a new operator of the
    same structure, reuses the compiled solve; a new batch size does not."""
    c, prof, _ = random_case(3, 4)
    w = CostWeights()
    rng = np.random.default_rng(0)
    cap = np.asarray(c.capacity)
    settings = IPM(eps_abs=1e-6, eps_rel=1e-6)  # the engine's default method
    ctl = make_controller(c, w, 24, settings)
    # EV energy delivered so far: half the daily energy after hour 3 (none delivered by hour 11
    # would leave too few available hours for the deadline (9): a primal infeasible QP)
    data = [
        _agent_data(c, prof, w, t, d, rng.uniform(0.3, 0.8, c.n) * cap, (t > 3) * 0.5 * np.asarray(c.ev_daily), on, mode)
        for t, d, on, mode in ((3, 0.05, True, "cumulative"), (11, 0.3, False, "cumulative"), (20, 0.01, True, "per_step"))
    ]
    first = jax.block_until_ready(solve_batch(ctl.agent_op, *data[0]))  # compiles
    c2, _, _ = random_case(3, 5)  # another community of the same size: same structure
    op2 = make_controller(c2, w, 24, settings).agent_op
    with count_compiles() as compiled:
        outs = [solve_batch(ctl.agent_op, *d) for d in data[1:]]
        outs.append(solve_batch(op2, *data[0]))
        jax.block_until_ready(outs)
    assert compiled == [], compiled
    for o in [first] + outs:
        assert np.all(np.asarray(o.status) == int(Status.solved))
    assert not np.allclose(np.asarray(outs[0].x), np.asarray(first.x))  # the data did change
    # the counter sees a compilation when there is one: a batch of another size
    with count_compiles() as compiled:
        jax.block_until_ready(solve_batch(ctl.agent_op, *(v[:1] for v in data[0])))
    assert any("solve_batch" in name for name in compiled), compiled


def test_new_tolerances_do_not_recompile():
    """A tolerance sweep compiles once: the float settings are traced."""
    c, prof, _ = random_case(3, 4)
    w = CostWeights()
    data = _agent_data(c, prof, w, 3, 0.05, 0.5 * np.asarray(c.capacity), np.zeros(c.n), True)
    loose = make_controller(c, w, 24, IPM(eps_abs=1e-5, eps_rel=1e-5)).agent_op
    tight = make_controller(c, w, 24, IPM(eps_abs=1e-9, eps_rel=1e-9, warm_scale=0.02)).agent_op
    a = jax.block_until_ready(solve_batch(loose, *data))
    with count_compiles() as compiled:
        b = jax.block_until_ready(solve_batch(tight, *data))
    assert np.all(np.asarray(b.num_steps) > np.asarray(a.num_steps))  # the tolerance did change
    assert compiled == [], compiled


# --------------------------------------------------------------------------- float32
def _float_avals(jaxpr):
    """Every floating dtype a closed jaxpr computes with, sub-jaxprs included (weakly typed
    Python scalars such as the 0.0 of `jnp.where(c, x, 0.0)` take the other operand's dtype
    and are skipped)."""
    seen = set()

    def add(v):
        aval = getattr(v, "aval", None)
        dt = getattr(aval, "dtype", None)
        if dt is not None and jnp.issubdtype(dt, jnp.floating) and not getattr(aval, "weak_type", False):
            seen.add(jnp.dtype(dt))

    def walk(jp):
        for v in list(jp.invars) + list(jp.outvars) + list(jp.constvars):
            add(v)
        for eqn in jp.eqns:
            for v in list(eqn.invars) + list(eqn.outvars):
                add(v)
            for p in eqn.params.values():
                for sub in p if isinstance(p, (tuple, list)) else (p,):
                    if hasattr(sub, "jaxpr") and hasattr(sub.jaxpr, "eqns"):
                        walk(sub.jaxpr)
                    elif hasattr(sub, "eqns"):
                        walk(sub)

    walk(jaxpr.jaxpr)
    return seen


def test_float32_operator_runs_in_float32_with_x64_on():
    assert jax.config.jax_enable_x64
    P, A, q, lo, hi, x_star = planted(2, 3)
    op = prepare(P, A, IPM(eps_abs=1e-5, eps_rel=1e-5), dtype=jnp.float32, lo=lo[0], hi=hi[0])
    assert op.dtype == jnp.float32
    q32, lo32, hi32 = (jnp.asarray(v, jnp.float32) for v in (q, lo, hi))
    jaxpr = jax.make_jaxpr(lambda a, b, c: jax.vmap(solve, in_axes=(None, 0, 0, 0))(op, a, b, c))(q32, lo32, hi32)
    assert _float_avals(jaxpr) == {jnp.dtype(jnp.float32)}
    sols = solve_batch(op, q32, lo32, hi32)
    for f in Solution.__dataclass_fields__:
        v = getattr(sols, f)
        assert v.dtype in (jnp.float32, jnp.int32), (f, v.dtype)
    assert np.all(np.asarray(sols.status) == int(Status.solved))
    for b in range(q.shape[0]):
        f_star = objective(P, q[b], x_star[b])
        assert abs(float(sols.obj[b]) - f_star) <= 1e-3 * max(1.0, abs(f_star))
    # float64 inputs are cast to the operator's dtype and give the same answer
    s64 = solve_batch(op, q, lo, hi)
    assert s64.x.dtype == jnp.float32
    np.testing.assert_array_equal(np.asarray(s64.x), np.asarray(sols.x))


def test_float64_needs_x64():
    P, A, *_ = planted(3, 1, n=6, m_c=2)
    jax.config.update("jax_enable_x64", False)
    try:
        with pytest.raises(ValueError, match="jax_enable_x64"):
            prepare(P, A, IPM(), dtype=jnp.float64)
    finally:
        jax.config.update("jax_enable_x64", True)


# --------------------------------------------------------------------------- chunked batches
@pytest.mark.parametrize("chunk", [1, 2, 4])
def test_chunked_batch_equals_one_piece(chunk):
    """`solve_batch(..., chunk=k)` (pieces of k samples, the last one shorter) gives every
    sample what the batch in one piece gives it: same status and iterations, the same answer
    to rounding."""
    c, prof, _ = random_case(3, 4)
    w = CostWeights()
    rng = np.random.default_rng(1)
    cap = np.asarray(c.capacity)
    parts = [
        _agent_data(c, prof, w, t, d, rng.uniform(0.3, 0.8, c.n) * cap, (t > 3) * 0.5 * np.asarray(c.ev_daily), True)
        for t, d in ((2, 0.05), (9, 0.2), (15, 0.1))
    ]
    q, lo, hi = (jnp.concatenate([p[k] for p in parts]) for k in range(3))  # 6 QPs
    op = make_controller(c, w, 24, IPM(eps_abs=1e-8, eps_rel=1e-8)).agent_op
    whole = solve_batch(op, q, lo, hi)
    pieces = solve_batch(op, q, lo, hi, chunk=chunk)
    np.testing.assert_array_equal(np.asarray(pieces.status), np.asarray(whole.status))
    assert np.all(np.asarray(whole.status) == int(Status.solved))
    np.testing.assert_array_equal(np.asarray(pieces.num_steps), np.asarray(whole.num_steps))
    for f in ("x", "obj"):
        a, b = np.asarray(getattr(whole, f)), np.asarray(getattr(pieces, f))
        np.testing.assert_allclose(b, a, rtol=0, atol=1e-10 * max(1.0, np.abs(a).max()), err_msg=f)
    # the duals of these near-LPs are not unique: rounding moves them along the optimal face
    # (2e-7 here), while both stay dual feasible at the solver's tolerance
    a, b = np.asarray(whole.y), np.asarray(pieces.y)
    np.testing.assert_allclose(b, a, rtol=0, atol=1e-5 * max(1.0, np.abs(a).max()))
    assert np.all(np.asarray(pieces.dual_res) <= 1e-7) and np.all(np.asarray(whole.dual_res) <= 1e-7)
    with pytest.raises(ValueError, match="chunk"):
        solve_batch(op, q, lo, hi, chunk=0)
