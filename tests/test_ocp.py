"""QP assembly (ecjax.ocp) against the MODEL equations written directly in CVXPY.

The canonical QP (P, A, q, lo, hi) built by ecjax is solved by Clarabel and compared with the
reference model of tests/reference.py, which never sees ecjax's matrices. This isolates the
assembly from ecjax's own solver (tested in tests/test_solve_reference.py).
"""

import cvxpy as cp
import jax.numpy as jnp
import numpy as np
import pytest

from ecjax import evaluate, ocp
from ecjax.plan import Plan, plan_from_vectors
from ecjax.weights import CostWeights
from helpers_community import random_case
from reference import solve_reference

pytestmark = pytest.mark.reference


def clarabel_canonical(S, q, lo, hi):
    x = cp.Variable(S.shape[1])
    lo, hi = np.asarray(lo), np.asarray(hi)
    fl, fh = np.isfinite(lo), np.isfinite(hi)
    cons = [S.A[fl] @ x >= lo[fl], S.A[fh] @ x <= hi[fh]]
    obj = 0.5 * cp.sum(cp.multiply(S.P_diag, cp.square(x))) + np.asarray(q) @ x
    cp.Problem(cp.Minimize(obj), cons).solve(
        solver=cp.CLARABEL, tol_gap_abs=1e-10, tol_gap_rel=1e-10, tol_feas=1e-10
    )
    return x.value


def as_plan(d):
    return Plan(**{k: jnp.asarray(v) for k, v in d.items()})


CASES = [(n, seed, mode) for n in (3, 6, 15) for seed, mode in ((1, "cumulative"), (2, "per_step"))]


@pytest.mark.parametrize("n,seed,mode", CASES)
def test_centralized_assembly_matches_model(n, seed, mode):
    c, _, stage = random_case(n, seed, tightening=mode)
    w = CostWeights()
    phi_ref, ref, status = solve_reference(c, w, stage, free=c.prosumers)
    assert status == "optimal"
    # the plain evaluator agrees with the reference's own objective
    assert abs(float(evaluate.cost(c, w, stage, as_plan(ref))) - phi_ref) <= 1e-8 * max(1, abs(phi_ref))
    S = ocp.centralized_structure(c, 24, w)
    q, lo, hi = ocp.centralized_qp(c, w, stage)
    x = clarabel_canonical(S, q, lo, hi)
    plan = plan_from_vectors(jnp.asarray(x.reshape(len(c.prosumers), -1)), c, 24)
    phi = float(evaluate.cost(c, w, stage, plan))
    assert abs(phi - phi_ref) <= 1e-7 * max(1.0, abs(phi_ref))
    assert float(evaluate.max_violation(evaluate.residuals(c, stage, plan))) <= 1e-7


@pytest.mark.parametrize("n,seed,mode", CASES)
def test_agent_assembly_matches_model(n, seed, mode):
    c, _, stage = random_case(n, seed, tightening=mode)
    w = CostWeights()
    _, central, _ = solve_reference(c, w, stage, free=c.prosumers)
    _, island, _ = solve_reference(c, w, stage, free=c.prosumers, trades_on=False)
    # a feasible previous iterate that is not optimal: halfway between islanded and central
    prev = {k: 0.5 * (central[k] + island[k]) for k in central}
    S = ocp.agent_structure(c, 24, w)
    for i in c.prosumers:
        phi_ref, ref, status = solve_reference(c, w, stage, free=[i], fixed=as_plan(prev))
        assert status == "optimal"
        q, lo, hi = ocp.agent_qp(c, w, stage, i, as_plan(prev))
        x = clarabel_canonical(S, q, lo, hi)
        xs = np.array(ocp_vectors(prev, c))
        xs[c.prosumers.index(i)] = x
        plan = plan_from_vectors(jnp.asarray(xs), c, 24)
        phi = float(evaluate.cost(c, w, stage, plan))
        assert abs(phi - phi_ref) <= 1e-7 * max(1.0, abs(phi_ref)), i
        assert float(evaluate.max_violation(evaluate.residuals(c, stage, plan))) <= 1e-7


def ocp_vectors(plan_dict, c):
    from ecjax.plan import vectors_from_plan

    return vectors_from_plan(as_plan(plan_dict), c)


def test_islanded_agent_matches_model():
    c, _, stage = random_case(6, 3)
    w = CostWeights()
    phi_ref, ref, _ = solve_reference(c, w, stage, free=c.prosumers, trades_on=False)
    S = ocp.agent_structure(c, 24, w)
    xs = []
    for i in c.prosumers:
        q, lo, hi = ocp.agent_qp(c, w, stage, i, as_plan(ref), trades_on=False)
        xs.append(clarabel_canonical(S, q, lo, hi))
    plan = plan_from_vectors(jnp.asarray(np.stack(xs)), c, 24)
    assert float(jnp.abs(plan.bt).max()) <= 1e-9
    assert abs(float(evaluate.cost(c, w, stage, plan)) - phi_ref) <= 1e-7 * max(1, abs(phi_ref))


def test_structure_shared_across_agents_and_stages():
    """P and A do not depend on the agent, the stage or δ: only q, lo, hi do."""
    c, prof, stage = random_case(6, 4)
    w = CostWeights()
    S1 = ocp.agent_structure(c, 24, w)
    c2, _, _ = random_case(6, 5)  # other parameters, same n and efficiencies
    S2 = ocp.agent_structure(c2, 24, w)
    assert (S1.A != S2.A).nnz == 0
    np.testing.assert_array_equal(S1.P_diag, S2.P_diag)
