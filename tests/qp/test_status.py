"""Failure is data: infeasible, unbounded and malformed instances get a status, never a NaN,
and never stop the other samples of their batch."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ecjax import ocp
from ecjax.fcmpc import make_controller
from ecjax.layout import AgentLayout
from ecjax.plan import zero_plan
from ecjax.qp import IPM, Solution, Status, prepare, solve, solve_batch
from ecjax.qp.status import message
from ecjax.weights import CostWeights
from helpers_community import random_case

INF = np.inf


def settings(max_iter=None, **kw):
    return IPM(**kw) if max_iter is None else IPM(max_iter=max_iter, **kw)


def assert_finite(sol: Solution):
    for name in Solution.__dataclass_fields__:
        v = np.asarray(getattr(sol, name))
        assert np.all(np.isfinite(v)), name


def _sample(sols, b):
    return jax.tree.map(lambda v: v[b], sols)


# --------------------------------------------------------------------------- small instances
# min ½(x0² + x1²) + ¼x2² + x0 − x1 + 0.3 x2  s.t.  0 <= x0, x1 <= 1,  −1 <= x2 <= 1,  x0 + x1 >= lo3
P3 = np.diag([1.0, 1.0, 0.5])
A3 = np.array([[1.0, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0]])
Q3 = np.array([1.0, -1.0, 0.3])
LO3 = np.array([0.0, 0.0, -1.0, 0.5])
HI3 = np.array([1.0, 1.0, 1.0, INF])

# min ½x0² − x1 s.t. −1 <= x0 <= 1, x1 >= 0: unbounded below along x1
P2 = np.diag([1.0, 0.0])
A2 = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
LO2 = np.array([-1.0, 0.0, -INF])
HI2 = np.array([1.0, INF, INF])

def test_primal_infeasible():
    op = prepare(P3, A3, settings(max_iter=200))
    sol = solve(op, Q3, LO3, HI3.copy())
    assert int(sol.status) == int(Status.solved)  # the feasible version solves
    lo = LO3.copy()
    lo[3] = 3.0  # x0 + x1 >= 3 with x0, x1 <= 1
    sol = solve(op, Q3, lo, HI3)
    assert_finite(sol)
    assert int(sol.status) == int(Status.primal_infeasible), (int(sol.status), int(sol.num_steps))


@pytest.mark.parametrize("certify_from", [0, 8, 20, 60])
def test_ipm_certificates_wait_for_certify_from(certify_from):
    """Delayed infeasibility certificates: no certificate before iteration `certify_from` + 1, and the infeasible QPs
    here are certified at once after it, however long the iterates have stalled (the test is
    on the Newton direction, not on the step: the step's certificate of the primal infeasible
    QP shows only in iterations 5-11)."""
    op = prepare(P3, A3, IPM(max_iter=200, certify_from=certify_from))
    lo = LO3.copy()
    lo[3] = 3.0
    sol = solve(op, Q3, lo, HI3)
    assert int(sol.status) == int(Status.primal_infeasible), (int(sol.status), int(sol.num_steps))
    assert certify_from + 1 <= int(sol.num_steps) <= max(certify_from + 1, 5) + 1
    op = prepare(P2, A2, IPM(max_iter=200, certify_from=certify_from))  # unbounded below
    sol = solve(op, jnp.array([0.0, -1.0]), LO2, HI2)
    assert int(sol.status) == int(Status.dual_infeasible), (int(sol.status), int(sol.num_steps))
    assert certify_from + 1 <= int(sol.num_steps) <= certify_from + 2


def test_crossed_bounds_are_not_solved():
    """lo > hi on a row: infeasible, whatever the rest."""
    op = prepare(P3, A3, settings(max_iter=200))
    lo = LO3.copy()
    lo[2] = 2.0  # 2 <= x2 <= 1
    sol = solve(op, Q3, lo, HI3)
    assert_finite(sol)
    assert int(sol.status) == int(Status.primal_infeasible), (int(sol.status), int(sol.num_steps))


# the x0 bounds twice more, as rows of their own: x0 <= hi5 and −2 x0 <= −lo6 (x0 >= lo6/2)
A5 = np.vstack([A3, [[1.0, 0, 0], [-2.0, 0, 0]]])


def test_bounds_crossed_across_rows():
    """Every row has lo <= hi, but two rows on one variable leave no room (x0 <= 0.2 and
    x0 >= 0.4): primal infeasible, without NaN, and the other sample of the batch solves with
    the tighter of the bounds active (the IPM merges such bound rows)."""
    op = prepare(P3, A5, settings(max_iter=200))
    lo = np.stack([np.r_[LO3, -INF, -INF], np.r_[LO3, -INF, -INF]])
    hi = np.stack([np.r_[HI3, 0.2, -0.8], np.r_[HI3, 0.2, INF]])  # sample 0: x0 >= 0.4
    lo[:, 3] = -INF  # x0 + x1 free: only the bound rows act on x0
    q = np.stack([[-1.0, -1.0, 0.3]] * 2)  # pulls x0 up to its upper bound
    sols = solve_batch(op, jnp.asarray(q), jnp.asarray(lo), jnp.asarray(hi))
    assert_finite(sols)
    assert [int(v) for v in sols.status] == [int(Status.primal_infeasible), int(Status.solved)]
    x, y = np.asarray(sols.x[1]), np.asarray(sols.y[1])
    assert abs(x[0] - 0.2) <= 1e-5  # the row x0 <= 0.2 binds, not x0 <= 1
    assert y[4] > 0.5 and abs(y[0]) <= 1e-5  # its multiplier: 1 − x0 = 0.8 on row 4, none on row 0
    np.testing.assert_allclose(y[4], 0.8, atol=1e-5)


def test_bounds_crossed_within_tolerance():
    """x0 >= 0 and x0 <= −g on two rows: for g within the primal tolerance (eps_abs + eps_rel ×
    the largest bound = 2e-6 here) the QP counts as solved, as OSQP's criterion has it, with x0
    in the middle of the gap and a primal residual of at least g/2; for g beyond it, primal
    infeasible (never solved). Planted optimum of the rest: x1 = 1 (its bound, multiplier 1),
    x2 = −0.6 (inside)."""
    op = prepare(P3, A5, settings(max_iter=200))
    gaps = [1e-6, 1e-5]
    lo = np.stack([np.r_[LO3, -INF, -INF]] * 2)
    lo[:, 3] = -INF
    hi = np.stack([np.r_[HI3, -g, INF] for g in gaps])
    q = np.stack([[1.0, -2.0, 0.3]] * 2)  # x1 pressed against its bound with multiplier 1
    sols = solve_batch(op, jnp.asarray(q), jnp.asarray(lo), jnp.asarray(hi))
    assert_finite(sols)
    assert int(sols.status[0]) == int(Status.solved)
    # the merged bounds cross: certified at once
    assert int(sols.status[1]) == int(Status.primal_infeasible)
    x = np.asarray(sols.x[0])
    # x2's error is bounded by the dual tolerance (~2e-6) over its curvature (0.5)
    np.testing.assert_allclose(x, [-gaps[0] / 2, 1.0, -0.6], atol=5e-6)
    assert abs(x[0] + gaps[0] / 2) <= 1e-8  # the merged equality sits in the middle of the gap
    assert gaps[0] / 2 * (1 - 1e-6) <= float(sols.prim_res[0]) <= 2e-6


def test_dual_infeasible():
    """min ½x0² − x1 s.t. −1 <= x0 <= 1, x1 >= 0 (P2, A2): unbounded below along x1."""
    op = prepare(P2, A2, settings())
    sol = solve(op, jnp.array([0.0, -1.0]), LO2, HI2)
    assert_finite(sol)
    assert int(sol.status) == int(Status.dual_infeasible)
    # the same problem with a cost pushing x1 down is bounded
    sol = solve(op, jnp.array([0.5, 1.0]), LO2, HI2)
    assert int(sol.status) == int(Status.solved)
    np.testing.assert_allclose(np.asarray(sol.x), [-0.5, 0.0], atol=1e-5)


@pytest.mark.parametrize(
    "bad",
    [np.nan, INF, -INF],
    ids=["nan", "+inf", "-inf"],
)
def test_nonfinite_q(bad):
    op = prepare(P3, A3, settings())
    q = Q3.copy()
    q[2] = bad
    sol = solve(op, q, LO3, HI3)
    assert int(sol.status) == int(Status.numerical_error)
    assert_finite(sol)


def test_nan_bound():
    op = prepare(P3, A3, settings())
    lo = LO3.copy()
    lo[3] = np.nan
    sol = solve(op, Q3, lo, HI3)
    assert int(sol.status) == int(Status.numerical_error)
    assert_finite(sol)


def test_iteration_limit():
    op = prepare(P3, A3, IPM(max_iter=3, eps_abs=1e-15, eps_rel=1e-15))
    sol = solve(op, Q3, LO3, HI3)  # feasible, at a tolerance 3 iterations do not reach
    assert_finite(sol)
    assert int(sol.status) == int(Status.max_iter)
    assert int(sol.num_steps) == 3


def test_every_status_has_a_message():
    """Each code reads back as its own, distinct message, from a Python int or a 0-d array."""
    keys = {Status.running: "iterating", Status.solved: "Solved", Status.max_iter: "max_iter",
            Status.primal_infeasible: "Primal infeasible", Status.dual_infeasible: "Dual infeasible",
            Status.numerical_error: "non-finite"}  # fmt: skip
    assert set(keys) == set(Status)
    for s, word in keys.items():
        assert word in message(jnp.asarray(int(s), jnp.int32)) and word in message(int(s))
    assert len({message(int(s)) for s in Status}) == len(Status)


# --------------------------------------------------------------------------- bad samples in a batch
def _agent_batch():
    """Agent QPs of a 3-agent community: both prosumers with trades on and off."""
    c, _, stage = random_case(3, 4, t=2)
    w = CostWeights()
    ids = jnp.asarray(c.prosumers)
    qs, los, his = [], [], []
    for on in (True, False):
        q, lo, hi = jax.vmap(lambda i: ocp.agent_qp(c, w, stage, i, zero_plan(c.n, 24), trades_on=on))(ids)
        qs.append(q), los.append(lo), his.append(hi)
    q, lo, hi = (np.concatenate(v) for v in (qs, los, his))
    return c, w, q, lo, hi


BAD = {1: "ev_unreachable", 3: "nan_q", 5: "inf_q"}  # batch position -> what is wrong


@functools.lru_cache(maxsize=None)
def bad_batch():
    """Six agent QPs with three bad samples interleaved: the EV deadline unreachable (no
    charging allowed), a NaN and an inf in q. Returns (op, Q, LO, HI, solutions, clean) with
    `clean` the solutions of the same batch with every bad sample replaced by a good one."""
    c, w, q, lo, hi = _agent_batch()
    ctl = make_controller(c, w, 24, settings(eps_abs=1e-6, eps_rel=1e-6, max_iter=200))
    lay = AgentLayout(c.n, 24)
    Q, LO, HI = [], [], []
    good = iter(range(q.shape[0]))
    for pos in range(q.shape[0] + len(BAD)):
        b = 0 if pos in BAD else next(good)
        qq, ll, hh = q[b].copy(), lo[b].copy(), hi[b].copy()
        if BAD.get(pos) == "ev_unreachable":
            hh[lay.ev] = 0.0  # the box rows of the inputs come in variable order
        elif BAD.get(pos) == "nan_q":
            qq[5] = np.nan
        elif BAD.get(pos) == "inf_q":
            qq[7] = np.inf
        Q.append(qq), LO.append(ll), HI.append(hh)
    Q, LO, HI = (np.stack(v) for v in (Q, LO, HI))
    sols = solve_batch(ctl.agent_op, Q, LO, HI)
    idx = np.array([0 if pos in BAD else pos for pos in range(Q.shape[0])])
    clean = solve_batch(ctl.agent_op, Q[idx], LO[idx], HI[idx])
    return ctl.agent_op, Q, LO, HI, sols, clean


def test_bad_samples_do_not_disturb_the_batch():
    """Every good sample of a batch with bad samples gets exactly (bitwise) what it gets in
    the same batch without them; the bad ones are not `solved` and their x, y, z, obj are finite."""
    op, Q, LO, HI, sols, clean = bad_batch()
    for pos in range(Q.shape[0]):
        if pos in BAD:
            continue
        got, ref = _sample(sols, pos), _sample(clean, pos)
        assert int(ref.status) == int(Status.solved)
        for f in Solution.__dataclass_fields__:
            np.testing.assert_array_equal(np.asarray(getattr(got, f)), np.asarray(getattr(ref, f)), err_msg=f)
    status = np.asarray(sols.status)
    assert status[3] == int(Status.numerical_error)  # NaN in q
    assert status[1] != int(Status.solved)  # infeasible
    for f in ("x", "y", "z", "obj"):
        assert np.all(np.isfinite(np.asarray(getattr(sols, f)))), f


def test_bad_samples_get_their_status():
    sols = bad_batch()[4]
    status = np.asarray(sols.status)
    assert status[1] == int(Status.primal_infeasible)
    assert status[3] == int(Status.numerical_error)
    assert status[5] == int(Status.numerical_error)
    assert_finite(sols)
