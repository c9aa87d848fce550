"""Warm starts of the interior-point method: from a previous solution (x, y), every
slack/multiplier pair pushed to a product of at least `warm_margin`²; the answer is the cold
start's (up to the tolerance)."""

import jax.numpy as jnp
import numpy as np
import pytest

from ecjax.qp import IPM, Status, prepare, solve, solve_batch

from .helpers import assign_kinds, objective, plant_batch, structured_PA

B = 6


def _problem(seed):
    rng = np.random.default_rng(seed)
    P, A = structured_PA(rng, 30, 10, zero_cost_frac=0.2)
    q, lo, hi, xs, ys, _ = plant_batch(rng, P, A, B, kinds=assign_kinds(rng, A.shape[0]))
    return P, A, q, lo, hi, xs, rng


def _f(P, q, x):
    return np.array([objective(P, q[b], np.asarray(x[b])) for b in range(q.shape[0])])


def test_centred_pairs():
    """An active side keeps its multiplier and gets the slack tau²/λ, an inactive side keeps
    its slack and gets tau²/s, a degenerate pair (0, 0) becomes (tau, tau); a negative slack
    counts as 0; pairs already in the interior stay."""
    from ecjax.qp.ipm import _pair

    tau = 0.1
    s = jnp.asarray([0.0, 2.0, 0.0, -0.3, 0.5, 1e-3])
    lam = jnp.asarray([4.0, 0.0, 0.0, 2.0, 0.5, 1e-3])
    s1, l1 = (np.asarray(v) for v in _pair(s, lam, tau, centred=True))
    np.testing.assert_allclose(s1, [tau**2 / 4.0, 2.0, tau, tau**2 / 2.0, 0.5, tau], rtol=1e-15)
    np.testing.assert_allclose(l1, [4.0, tau**2 / 2.0, tau, 2.0, 0.5, tau], rtol=1e-15)
    assert np.all(s1 * l1 >= tau**2 * (1 - 1e-15))
    s0, l0 = (np.asarray(v) for v in _pair(s, lam, tau, centred=False))  # the cold start's rule
    np.testing.assert_array_equal(s0, np.maximum(np.asarray(s), tau))
    np.testing.assert_array_equal(l0, np.maximum(np.asarray(lam), tau))


@pytest.mark.parametrize("margin", [0.1, 0.05, 1e-2, 2e-3, 5e-4])
def test_warm_start_from_a_nearby_solution(margin):
    """Solve, perturb q and the bounds a little, re-solve warm: solved, the cold start's
    optimum, and no more iterations than the cold start on average."""
    P, A, q, lo, hi, xs, rng = _problem(0)
    op = prepare(P, A, IPM(eps_abs=1e-9, eps_rel=1e-9, warm_margin=margin))
    first = solve_batch(op, jnp.asarray(q), jnp.asarray(lo), jnp.asarray(hi))
    q2 = q + 1e-2 * rng.normal(size=q.shape)
    shift = 1e-2 * rng.uniform(size=lo.shape)
    lo2, hi2 = lo - shift, hi + shift
    cold = solve_batch(op, jnp.asarray(q2), jnp.asarray(lo2), jnp.asarray(hi2))
    warm = solve_batch(op, jnp.asarray(q2), jnp.asarray(lo2), jnp.asarray(hi2), warm=first)
    assert np.all(np.asarray(warm.status) == int(Status.solved))
    f_c, f_w = _f(P, q2, cold.x), _f(P, q2, warm.x)
    np.testing.assert_allclose(f_w, f_c, rtol=0, atol=1e-7 * max(1.0, np.abs(f_c).max()))
    assert np.asarray(warm.num_steps).mean() <= np.asarray(cold.num_steps).mean()


def test_warm_start_from_nonsense_still_solves():
    """Any x, y: the start is an interior point all the same (infeasible-start method)."""
    P, A, q, lo, hi, xs, rng = _problem(1)
    op = prepare(P, A, IPM(eps_abs=1e-9, eps_rel=1e-9))
    cold = solve_batch(op, jnp.asarray(q), jnp.asarray(lo), jnp.asarray(hi))
    junk = cold.__class__(**{**{f: getattr(cold, f) for f in cold.__dataclass_fields__},
                             "x": jnp.asarray(100 * rng.normal(size=cold.x.shape)),
                             "y": jnp.asarray(100 * rng.normal(size=cold.y.shape))})  # fmt: skip
    warm = solve_batch(op, jnp.asarray(q), jnp.asarray(lo), jnp.asarray(hi), warm=junk)
    assert np.all(np.asarray(warm.status) == int(Status.solved))
    np.testing.assert_allclose(_f(P, q, warm.x), _f(P, q, xs), rtol=0, atol=1e-7 * max(1.0, np.abs(_f(P, q, xs)).max()))


def test_warm_margin_none_ignores_the_warm_start():
    P, A, q, lo, hi, _, rng = _problem(2)
    op = prepare(P, A, IPM(warm_margin=None))
    cold = solve(op, jnp.asarray(q[0]), jnp.asarray(lo[0]), jnp.asarray(hi[0]))
    junk = cold.__class__(**{**{f: getattr(cold, f) for f in cold.__dataclass_fields__}, "x": jnp.full_like(cold.x, 7.0)})
    again = solve(op, jnp.asarray(q[0]), jnp.asarray(lo[0]), jnp.asarray(hi[0]), junk)
    np.testing.assert_array_equal(np.asarray(again.x), np.asarray(cold.x))
    assert int(again.num_steps) == int(cold.num_steps)


def test_warm_margin_is_checked():
    with pytest.raises(ValueError, match="warm_margin"):
        IPM(warm_margin=0.0)


@pytest.mark.parametrize("margin", [0.05, 2e-3])
def test_warm_start_with_stale_multipliers(margin):
    """The warm y as it is (FC-MPC passes the IPM its previous solution unprojected): every row
    active at the old optimum is relaxed by 1 (as the islanded solution's bt <= 0 becomes
    bt <= bt_max), so the old multipliers are all wrong; the (x, z, y) residuals alone would
    not notice, the complementarity test does: solved, at the cold start's optimum."""
    P, A, q, lo, hi, xs, rng = _problem(1)
    op = prepare(P, A, IPM(eps_abs=1e-9, eps_rel=1e-9, warm_margin=margin))
    first = solve_batch(op, jnp.asarray(q), jnp.asarray(lo), jnp.asarray(hi))
    y = np.asarray(first.y)
    assert np.sum(np.abs(y) > 1e-6) >= B  # there are active rows to relax
    lo2 = np.where(y < -1e-6, lo - 1.0, lo)
    hi2 = np.where(y > 1e-6, hi + 1.0, hi)
    cold = solve_batch(op, jnp.asarray(q), jnp.asarray(lo2), jnp.asarray(hi2))
    warm = solve_batch(op, jnp.asarray(q), jnp.asarray(lo2), jnp.asarray(hi2), warm=first)
    assert np.all(np.asarray(warm.status) == int(Status.solved))
    assert np.all(np.asarray(warm.num_steps) >= 1)  # the stale point is not taken as optimal
    f_c, f_w = _f(P, q, cold.x), _f(P, q, warm.x)
    assert np.all(f_c < _f(P, q, first.x) - 1e-6)  # relaxing changed the optimum
    np.testing.assert_allclose(f_w, f_c, rtol=0, atol=1e-7 * max(1.0, np.abs(f_c).max()))


@pytest.mark.parametrize("scale", [0.0, 0.01, 1.0])
def test_warm_margin_grows_with_the_warm_points_residual(scale):
    """The centred warm start: every slack/multiplier pair of the warm start has a product >= μ₀ = max(τ², κ_w r₀),
    with r₀ the warm point's dual residual in the new problem, here computed in numpy from the
    user's data (q moved, bounds kept): c·D·(P x + q₂ + Aᵀ y) in the solver's scaled units; the
    smallest product is μ₀ itself (an inactive side gets the multiplier μ₀/s)."""
    from ecjax.qp.ipm import _merge, _sides, init_warm

    tau = 1e-3
    P, A, q, lo, hi, xs, rng = _problem(3)
    op = prepare(P, A, IPM(eps_abs=1e-9, eps_rel=1e-9, warm_margin=tau, warm_scale=scale))
    first = solve_batch(op, jnp.asarray(q), jnp.asarray(lo), jnp.asarray(hi))
    q2 = q[0] + 0.1 * rng.normal(size=q.shape[1])
    x, y = np.asarray(first.x[0]), np.asarray(first.y[0])
    r0 = np.max(np.abs(float(op.c) * np.asarray(op.D) * (P @ x + q2 + A.T @ y)))
    mu0 = max(tau**2, scale * r0)
    if scale >= 0.01:
        assert scale * r0 > 10 * tau**2  # the residual term decides
    b = _merge(op, jnp.asarray(q2), jnp.asarray(lo[0]), jnp.asarray(hi[0]))
    sd = _sides(b.data, b.half_gap)
    warm = first.__class__(**{f: getattr(first, f)[0] for f in first.__dataclass_fields__})
    st = init_warm(op, b.data, sd, warm, op.settings.warm_margin, op.settings.warm_scale)
    prods = np.concatenate([np.asarray(st.sl * st.ll)[np.asarray(sd.hl) > 0], np.asarray(st.su * st.lu)[np.asarray(sd.hu) > 0]])
    assert prods.min() >= mu0 * (1 - 1e-9)
    np.testing.assert_allclose(prods.min(), mu0, rtol=1e-6)


def test_warm_scale_is_checked():
    with pytest.raises(ValueError, match="warm_scale"):
        IPM(warm_scale=-1.0)


def test_skipped_certificates_leave_feasible_solves_unchanged():
    """Delayed infeasibility certificates (`IPM.certify_from`): skipping the infeasibility test in the first iterations changes nothing for
    QPs that are feasible, cold or warm: the same iterations and the same iterate."""
    P, A, q, lo, hi, xs, rng = _problem(2)
    q2 = q + 1e-2 * rng.normal(size=q.shape)
    sols = {}
    for k in (0, 4, 80):
        op = prepare(P, A, IPM(eps_abs=1e-9, eps_rel=1e-9, certify_from=k))
        cold = solve_batch(op, jnp.asarray(q), jnp.asarray(lo), jnp.asarray(hi))
        warm = solve_batch(op, jnp.asarray(q2), jnp.asarray(lo), jnp.asarray(hi), warm=cold)
        sols[k] = (cold, warm)
    for k in (4, 80):
        for a, b in zip(sols[0], sols[k]):
            assert np.all(np.asarray(a.status) == int(Status.solved))
            np.testing.assert_array_equal(np.asarray(a.num_steps), np.asarray(b.num_steps))
            # the programs differ (a test more or less in the loop), so XLA may fuse and round
            # differently: the same iterate up to the last bits
            np.testing.assert_allclose(np.asarray(a.x), np.asarray(b.x), rtol=1e-12, atol=1e-14)
            np.testing.assert_allclose(np.asarray(a.y), np.asarray(b.y), rtol=1e-12, atol=1e-14)
    assert np.asarray(sols[0][0].num_steps).min() > 4  # the cold solves cross the switch
