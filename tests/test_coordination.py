"""FC-MPC's combination rules (`fcmpc.weights`): the paper's uniform weight and the optimal
convex weights of `ecjax.coordination` (docs/fcmpc.md).

For both rules, on a case no other test uses (n = 5, three prosumers, seed 4242): Φ never
increases, every iterate satisfies the MODEL constraints (`evaluate.residuals`), the
centralized optimum is a fixed point, and from the same previous iterate the optimal weights
give a Φ no larger than the uniform weight's. The optimal λ is checked against CVXPY + Clarabel
on the λ-QP built here by evaluating Φ (`evaluate.cost`) at x^{p−1} + e_i- and
(e_i + e_j)-steps (exact for a quadratic, and independent of the engine's derivatives), against
a grid over the simplex, and the small interior-point method against CVXPY on random λ-QPs.

Tolerances as in tests/test_fcmpc.py: the subproblems are solved by the engine's IPM at eps
1e-6, so every iterate violates every constraint by at most ε_p = eps(1 + max(e_daily,
capacity) + 1), and Φ may rise by at most the cost bound `cost_tol` there (written out again
here, with the weight sum Σλ <= 1 in place of w·|P|).
"""

import types

import cvxpy as cp
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ecjax import coordination, evaluate, fcmpc
from ecjax.community import generate_community
from ecjax.disturbance import synthetic_profiles
from ecjax.fcmpc import FCMPCSettings, cold_start, make_controller
from ecjax.plan import Plan, make_stage, plan_from_vectors, vectors_from_plan
from ecjax.qp import IPM, Status
from ecjax.weights import CostWeights
from reference import solve_reference

EPS = 1e-6
SOLVER = IPM(eps_abs=EPS, eps_rel=EPS)
W = CostWeights()
N = 6
P_ITERS = 8
CASE = (5, 0.6, 4242, 14)  # n, prosumer share, seed, start hour: used by no other test
RULES = ("uniform", "optimal")


def settings(rule):
    return FCMPCSettings(kappa=jnp.asarray(1e-12), p_max=P_ITERS, weights=rule)


@eqx.filter_jit
def _init(ctl, fc, stage, cold):
    return fcmpc.init(ctl, fc, stage, cold, cold)


@eqx.filter_jit
def _step(ctl, fc, stage, s):
    return fcmpc.step(ctl, fc, stage, s)


def phi_of(c, stage, xs):
    return float(evaluate.cost(c, W, stage, plan_from_vectors(jnp.asarray(xs), c, N)))


def eps_p(c):
    return EPS + EPS * (max(float(np.max(c.ev_daily)), float(np.max(c.capacity))) + 1.0)


def cost_tol(c, sol, x_prev):
    """Σ_i [ε_d ‖x̂_i − x̄_i‖₁ + 2 ε_p ‖ŷ_i‖₁], doubled (tests/test_fcmpc.py), with Σλ <= 1."""
    per = 2 * EPS * jnp.abs(sol.x - x_prev).sum(axis=1) + 2 * eps_p(c) * jnp.abs(sol.y).sum(axis=1)
    return 2.0 * float(per.sum())


@pytest.fixture(scope="module")
def case():
    n, share, seed, t = CASE
    c = generate_community(n, prosumer_share=share, seed=seed)
    prof = synthetic_profiles(n, seed=seed)
    eb0 = np.random.default_rng(seed).uniform(0.3, 0.8, n) * np.asarray(c.capacity)
    stage = make_stage(c, prof, t, jnp.asarray(eb0), jnp.zeros(n), 0.05, N)
    ctl = make_controller(c, W, N, SOLVER)
    assert len(c.prosumers) == 3
    return c, stage, ctl


@pytest.fixture(scope="module")
def runs(case):
    """Per rule, P_ITERS iterations: each iterate, the proposals x* it was combined from, the
    weights, and Φ of both rules' steps from the same previous iterate."""
    c, stage, ctl = case
    cold = cold_start(ctl.agent_op, len(c.prosumers))
    s0 = _init(ctl, settings("uniform"), stage, cold)
    out = {}
    for rule in RULES:
        s, rec = s0, {"xs": [np.asarray(s0.xs)], "x_star": [], "lam": [], "phi_both": [], "sol": []}
        for p in range(P_ITERS):
            both = {r: _step(ctl, settings(r), stage, s) for r in RULES}
            for r, t in both.items():
                assert np.all(np.asarray(t.sol.status) == Status.solved), (rule, p, r)
            rec["phi_both"].append({r: float(t.cost[p + 1]) for r, t in both.items()})
            new = both[rule]
            rec["x_star"].append(np.asarray(fcmpc.accepted(new.sol, s.xs)[0]))
            rec["lam"].append(np.asarray(new.lam[p]))
            rec["sol"].append(new.sol)
            rec["xs"].append(np.asarray(new.xs))
            rec["cost"] = np.asarray(new.cost)
            rec["fallback"] = int(new.weight_fallback)
            s = new
        out[rule] = rec
    return out


def test_cost_never_increases(case, runs):
    c, stage, _ = case
    for rule, rec in runs.items():
        cost = rec["cost"]
        for p in range(P_ITERS):
            tol = cost_tol(c, rec["sol"][p], rec["xs"][p])
            assert cost[p + 1] <= cost[p] + tol, (rule, p, cost[p + 1] - cost[p], tol)
            assert cost[p + 1] == pytest.approx(phi_of(c, stage, rec["xs"][p + 1]), abs=1e-12)
        assert cost[-1] < cost[0] - 1e-3 * abs(cost[0]), rule  # the iteration does real work


def test_every_iterate_satisfies_the_model(case, runs):
    c, stage, _ = case
    for rule, rec in runs.items():
        for p, xs in enumerate(rec["xs"]):
            r = evaluate.residuals(c, stage, plan_from_vectors(jnp.asarray(xs), c, N))
            worst = max(float(v.max()) for v in r.values())
            assert worst <= eps_p(c), (rule, p, worst)
        lam = np.asarray(rec["lam"])
        assert np.all(lam >= 0) and np.all(lam.sum(axis=1) <= 1 + 1e-12), rule


def test_optimal_weights_never_worse_than_uniform(case, runs):
    """From the same previous iterate (of either rule's run), Φ(optimal) <= Φ(uniform), and
    strictly better at the first iteration here (the weights move away from 1/|P|)."""
    for rule, rec in runs.items():
        for p, phis in enumerate(rec["phi_both"]):
            assert phis["optimal"] <= phis["uniform"] + 1e-13 * abs(phis["uniform"]), (rule, p, phis)
    first = runs["uniform"]["phi_both"][0]
    assert first["optimal"] < first["uniform"] - 1e-6 * abs(first["uniform"])
    assert runs["optimal"]["fallback"] == 0  # every λ-QP solved here


def lambda_qp_by_evaluation(c, stage, x_prev, x_star):
    """(M, b) of λ ↦ Φ(x^{p−1} + Σ λ_i d_i) from Φ at 0, ±e_i and e_i + e_j."""
    d = x_star - x_prev
    P = d.shape[0]
    g = lambda lam: phi_of(c, stage, x_prev + np.asarray(lam)[:, None] * d)  # noqa: E731
    e = np.eye(P)
    g0 = g(np.zeros(P))
    gp, gm = [g(e[i]) for i in range(P)], [g(-e[i]) for i in range(P)]
    b = np.array([(gp[i] - gm[i]) / 2 for i in range(P)])
    M = np.zeros((P, P))
    for i in range(P):
        M[i, i] = gp[i] + gm[i] - 2 * g0
        for j in range(i):
            M[i, j] = M[j, i] = g(e[i] + e[j]) - gp[i] - gp[j] + g0
    return M, b


def cvxpy_simplex_qp(M, b):
    w, V = np.linalg.eigh(0.5 * (M + M.T))
    R = (V * np.sqrt(np.maximum(w, 0.0))).T  # M = RᵀR up to rounding
    lam = cp.Variable(b.shape[0])
    prob = cp.Problem(cp.Minimize(0.5 * cp.sum_squares(R @ lam) + b @ lam), [lam >= 0, cp.sum(lam) <= 1])
    prob.solve(solver=cp.CLARABEL, tol_gap_abs=1e-12, tol_gap_rel=1e-12, tol_feas=1e-12)
    assert prob.status == "optimal"
    return np.asarray(lam.value)


def qval(M, b, lam):
    return float(b @ lam + 0.5 * lam @ M @ lam)


def test_weights_equal_cvxpy_on_the_lambda_qp(case, runs):
    """At every iteration of the optimal run: the engine's λ equals Clarabel's optimum of the
    λ-QP built by evaluation (objective to 1e-9 of its scale; λ itself to 1e-5 where M is
    positive definite, so that the optimum is unique), and the engine's M and b (automatic
    differentiation) equal the evaluated ones."""
    c, stage, _ = case
    rec = runs["optimal"]
    for p in range(P_ITERS):
        x_prev, x_star = rec["xs"][p], rec["x_star"][p]
        M, b = lambda_qp_by_evaluation(c, stage, x_prev, x_star)
        scale = max(np.abs(M).max(), np.abs(b).max())
        if scale < 1e-9:
            continue  # at a fixed point: every λ is optimal
        ref = cvxpy_simplex_qp(M, b)
        got = rec["lam"][p]
        # the evaluated M, b carry the rounding of Φ itself: a few ulp of |Φ|
        ulp = 64 * np.finfo(np.float64).eps * abs(phi_of(c, stage, x_prev))
        assert qval(M, b, got) <= qval(M, b, ref) + 1e-9 * scale + ulp, (p, got, ref)
        if np.linalg.eigvalsh(M).min() > 1e-6 * scale:
            np.testing.assert_allclose(got, ref, atol=1e-5, err_msg=f"p={p}")
        phi = lambda xs: evaluate.cost(c, W, stage, plan_from_vectors(xs, c, N))  # noqa: E731
        _, b_ad, M_ad = coordination.weight_qp(phi, jnp.asarray(x_prev), jnp.asarray(x_star))
        np.testing.assert_allclose(np.asarray(b_ad), b, rtol=0, atol=1e-9 * scale + ulp)
        np.testing.assert_allclose(np.asarray(M_ad), M, rtol=0, atol=1e-9 * scale + ulp)


def test_weights_against_a_grid_over_the_simplex(case, runs):
    """Φ at the engine's λ is no larger than Φ at any point of a grid of step 1/40 over the
    simplex (evaluated with `evaluate.cost`), at the first two iterations (|P| = 3), up to the
    λ-QP's stopping tolerance (1e-9 of max(|M|, |b|), M and b evaluated as above)."""
    c, stage, _ = case
    rec = runs["optimal"]
    k = 40
    grid = np.array([(i, j, l) for i in range(k + 1) for j in range(k + 1 - i) for l in range(k + 1 - i - j)]) / k
    for p in (0, 1):
        x_prev, d = jnp.asarray(rec["xs"][p]), jnp.asarray(rec["x_star"][p] - rec["xs"][p])
        f = jax.jit(jax.vmap(lambda lam: evaluate.cost(c, W, stage, plan_from_vectors(x_prev + lam[:, None] * d, c, N))))
        on_grid = np.asarray(f(jnp.asarray(grid)))
        at_lam = phi_of(c, stage, rec["xs"][p + 1])
        M, b = lambda_qp_by_evaluation(c, stage, rec["xs"][p], rec["x_star"][p])
        tol = 1e-9 * max(np.abs(M).max(), np.abs(b).max())
        assert at_lam <= on_grid.min() + tol, (p, at_lam, on_grid.min(), tol)
        # and the grid's best is near: it is within one grid cell of the optimum
        assert on_grid.min() - at_lam <= 0.05 * (on_grid.max() - on_grid.min()), p


# compiled once per size, the problem data as arguments (called eagerly, every problem's
# constants would be compiled into a program of its own)
SIMPLEX_QP = jax.jit(coordination.simplex_qp)


def test_brute_force_two_prosumers():
    """|P| = 2: `simplex_qp` against a fine grid of the triangle on λ-QPs from Φ's own
    structure (random PSD M, singular ones included) and against Clarabel."""
    rng = np.random.default_rng(4242)
    t = np.linspace(0.0, 1.0, 401)
    L1, L2 = np.meshgrid(t, t, indexing="ij")
    inside = L1 + L2 <= 1.0 + 1e-15
    for trial in range(12):
        A = rng.normal(size=(2, 1 if trial % 3 == 0 else 2))
        M = A @ A.T
        b = rng.normal(size=2) * (3.0 if trial % 2 else 0.3)
        sol = SIMPLEX_QP(jnp.asarray(M), jnp.asarray(b))
        assert int(sol.status) == Status.solved
        lam = np.asarray(sol.lam)
        vals = b[0] * L1 + b[1] * L2 + 0.5 * (M[0, 0] * L1**2 + 2 * M[0, 1] * L1 * L2 + M[1, 1] * L2**2)
        best = vals[inside].min()
        tol = 1e-9 * max(np.abs(M).max(), np.abs(b).max())  # the IPM's stopping rule, scaled
        assert qval(M, b, lam) <= best + tol, (trial, lam)
        assert qval(M, b, lam) <= qval(M, b, cvxpy_simplex_qp(M, b)) + tol, trial


@pytest.mark.parametrize("P", [3, 15, 60])
def test_simplex_qp_matches_cvxpy_on_random_problems(P):
    rng = np.random.default_rng(100 + P)
    for rank in (P, P // 2):
        A = rng.normal(size=(P, rank)) * rng.uniform(0.01, 10.0)
        M = A @ A.T
        b = rng.normal(size=P) * rng.uniform(0.01, 10.0)
        sol = SIMPLEX_QP(jnp.asarray(M), jnp.asarray(b))
        assert int(sol.status) == Status.solved, (P, rank)
        lam = np.asarray(sol.lam)
        assert lam.min() >= 0 and lam.sum() <= 1.0 + 1e-12
        ref = cvxpy_simplex_qp(M, b)
        scale = max(np.abs(M).max(), np.abs(b).max())
        assert qval(M, b, lam) <= qval(M, b, ref) + 1e-9 * scale, (P, rank)
        if rank == P:
            np.testing.assert_allclose(lam, ref, atol=1e-5)
    # a non-finite problem ends in numerical_error, which the engine turns into the uniform weight
    bad = SIMPLEX_QP(jnp.full((P, P), jnp.nan), jnp.zeros(P))
    assert int(bad.status) == Status.numerical_error


def test_failed_lambda_qp_falls_back_to_uniform():
    """A λ-QP that is not solved (here: a NaN in Φ's derivatives) gives the uniform weight and
    reports the fallback; one that is solved does not."""
    x_prev = jnp.zeros((3, 2))
    x_star = jnp.ones((3, 2))
    nan_phi = lambda xs: jnp.sum(xs**2) * jnp.nan  # noqa: E731
    out = coordination.optimal_weights(nan_phi, x_prev, x_star, 1.0 / 3)
    assert bool(out.fallback) and int(out.status) != Status.solved
    np.testing.assert_array_equal(np.asarray(out.lam), np.full(3, 1.0 / 3))
    ok_phi = lambda xs: jnp.sum((xs - 0.5) ** 2)  # noqa: E731  # optimum λ_i = 1/2 each, Σ = 3/2 > 1
    out = coordination.optimal_weights(ok_phi, x_prev, x_star, 1.0 / 3)
    assert not bool(out.fallback)
    np.testing.assert_allclose(np.asarray(out.lam), np.full(3, 1.0 / 3), atol=1e-8)  # the simplex's face


@pytest.mark.reference
@pytest.mark.parametrize("rule", RULES)
def test_centralized_optimum_is_a_fixed_point(case, rule):
    """Started at the centralized optimum (CVXPY + Clarabel), one iteration does not move Φ
    beyond the solver tolerance, nor the inputs with curvature (bc, bd, bt: r > 0; Φ is linear
    in ugb and ev, whose optimum need not be unique)."""
    c, stage, ctl = case
    phi_c, ref, status = solve_reference(c, W, stage, free=c.prosumers)
    assert status == "optimal"
    x_c = vectors_from_plan(Plan(**{k: jnp.asarray(v) for k, v in ref.items()}), c)
    cold = cold_start(ctl.agent_op, len(c.prosumers))
    s0 = eqx.tree_at(lambda s: s.xs, _init(ctl, settings(rule), stage, cold), x_c)
    s1 = _step(ctl, settings(rule), stage, s0)
    assert np.all(np.asarray(s1.sol.status) == Status.solved)
    tol = cost_tol(c, s1.sol, x_c)
    assert abs(float(s1.cost[1]) - phi_c) <= tol, (rule, float(s1.cost[1]) - phi_c, tol)
    before, after = plan_from_vectors(x_c, c, N), plan_from_vectors(s1.xs, c, N)
    for k in ("bc", "bd", "bt"):
        err = float(jnp.abs(getattr(after, k) - getattr(before, k)).max())
        assert err <= 1e-3, (rule, k, err)


def test_rule_is_checked():
    """(The on-chain audit of both rules: tests/chain/test_chain_weights.py.)"""
    from ecjax.config import ConfigError
    from ecjax.config.groups import FCMPCConfig

    c = generate_community(4, prosumer_share=0.5, seed=1)
    with pytest.raises(ValueError, match="fcmpc.weights"):
        FCMPCSettings(weights="best").check(c)
    assert FCMPCConfig(weights="optimal").settings(c).weights == "optimal"
    assert FCMPCConfig().settings(c).weights == "uniform"  # the paper's rule is the default
    with pytest.raises(ConfigError, match="fcmpc.weights"):
        FCMPCConfig.parse({"weights": "best"})
