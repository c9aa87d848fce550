"""Open-loop validation of the chance constraints (MODEL §5, `ecjax.validate`).

A plan is made once; S open-loop disturbance trajectories are cheap, so S = 200,000. Where the
plan sits on a tightened bound (active, no slack, band not empty), the cumulative tightening
makes the violation probability exactly δ, and the empirical rate must lie in the 99 %
binomial interval around δ. Several entries are tested at once, so the interval of each is
taken at level 1 − 0.01/m for m entries (Bonferroni): all m lie in their intervals with
probability >= 99 % when the model holds.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.stats import binom, norm

from ecjax import ccmpc, validate
from ecjax.community import generate_community
from ecjax.disturbance import Draw, synthetic_profiles
from ecjax.metrics import binomial_interval_around
from ecjax.qp import IPM

SOLVER = IPM()
S = 200_000
N = 8
# (start hour, initial battery energy as a fraction of capacity)
STATES = ((8, 0.8), (16, 0.4))


@pytest.fixture(scope="module")
def world():
    c = generate_community(4, prosumer_share=0.5, seed=1)
    return c, synthetic_profiles(4, seed=1)


def run(world, t, frac, delta, seed=0, **kw):
    c, prof = world
    kw.setdefault("scenario", "centralized")
    return validate.open_loop_validation(
        c, prof, t, frac * np.asarray(c.capacity), np.zeros(c.n), delta, S, seed, N=N, solver=SOLVER, **kw
    )


def familywise_interval(p, m, level=0.99):
    a = (1 - level) / max(m, 1)
    return binom.ppf(a / 2, S, p) / S, binom.ppf(1 - a / 2, S, p) / S


@pytest.mark.parametrize("delta", [0.01, 0.05, 0.2])
def test_active_bounds_are_violated_at_rate_delta(world, delta):
    m_total = 0
    for t, frac in STATES:
        ds = run(world, t, frac, delta)
        assert int(ds.qp_status) == 0
        act = ds.active.values
        m = int(act.sum())
        m_total += m
        if m == 0:
            continue
        rate = ds.rate.values[act]
        lo, hi = familywise_interval(delta, m)
        assert np.all((rate >= lo) & (rate <= hi)), (t, delta, rate, lo, hi)
        # on an active bound the model probability is δ (the plan is within active_tol of it)
        np.testing.assert_allclose(ds.p_model.values[act], delta, atol=1e-3 * delta)
        # the plain 99 % interval reported next to δ
        a, b = binomial_interval_around(delta, S, 0.99)
        assert float(ds.delta_low) == a and float(ds.delta_high) == b
    assert m_total >= 5, "no active bound to test"


def test_every_entry_matches_the_model_probability(world):
    """Active or not, each rate agrees with the normal model of MODEL §5 (propagation and
    sampling against the analytic variance of `ccmpc.battery_sd`)."""
    ds = run(world, 8, 0.8, 0.05)
    p = ds.p_model.values
    keep = (p > 1e-3) & (p < 1 - 1e-3)
    m = int(keep.sum())
    assert m >= 10
    lo, hi = familywise_interval(p[keep], m)
    rate = ds.rate.values[keep]
    assert np.all((rate >= lo) & (rate <= hi))
    # Clopper–Pearson intervals contain the rate
    assert np.all(ds.ci_low.values <= ds.rate.values) and np.all(ds.rate.values <= ds.ci_high.values)


def test_per_step_tightening_meets_delta_only_one_step_ahead(world):
    ds = run(world, 16, 0.4, 0.05, tightening="per_step")
    act = ds.active.values
    k = np.broadcast_to(ds.k.values, act.shape)
    first = act & (k == 1)
    later = act & (k >= 3)
    assert first.any() and later.any()
    lo, hi = familywise_interval(0.05, int(first.sum()))
    assert np.all((ds.rate.values[first] >= lo) & (ds.rate.values[first] <= hi))
    # past k = 1 the open-loop variance has accumulated: the rate exceeds δ
    assert np.all(ds.rate.values[later] > float(ds.delta_high))
    assert np.all(ds.p_model.values[later] > 0.05)


@pytest.mark.slow
def test_fcmpc_plan(world):
    """The plan of FC-MPC (any iterate is feasible) validates like the centralized one."""
    ds = run(world, 8, 0.8, 0.05, scenario="ccdmpc")
    assert int(ds.qp_status) == 0 and int(ds.iters) >= 1
    act = ds.active.values
    assert act.sum() >= 2
    lo, hi = familywise_interval(0.05, int(act.sum()))
    assert np.all((ds.rate.values[act] >= lo) & (ds.rate.values[act] <= hi))


def test_empty_bands_are_flagged(world):
    """Cumulative tightening at small δ empties the band late in the horizon (MODEL §5: both
    bounds meet in the middle); such entries are never 'active' and miss δ."""
    c, prof = world
    ds = run(world, 8, 0.8, 0.01)
    emp = ds.empty.values
    assert emp.any()
    assert not np.any(ds.active.values & emp[None])
    # the band of the plan is its middle there
    mid = 0.5 * (ds.tightened.sel(side="lo").values + ds.tightened.sel(side="hi").values)
    np.testing.assert_allclose(ds.tightened.sel(side="lo").values[emp], mid[emp])
    # and empty exactly where 2 z s > eb_max − eb_min
    z = norm.ppf(0.99)
    sd = ds.eb_sd.values
    width = (ds.bound.sel(side="hi") - ds.bound.sel(side="lo")).values
    np.testing.assert_array_equal(emp, 2 * z * sd > width)


def test_propagation_at_the_means_is_the_plan(world):
    """With the disturbances at their means the open-loop propagation reproduces the plan's
    states (eq 1) up to the solver's tolerance; the sampled mean converges to it."""
    c, prof = world
    ds = run(world, 16, 0.4, 0.05)
    np.testing.assert_allclose(ds.eb_mean.values, ds.planned.values, atol=1e-5)
    # sd of eb[k] is the cumulative sd of MODEL §5 (also with per_step tightening)
    from ecjax.disturbance import window

    win = window(jax.tree_util.tree_map(jnp.asarray, prof), 16, N)
    np.testing.assert_allclose(ds.eb_sd.values, np.asarray(ccmpc.battery_sd(c, win, "cumulative"))[list(c.prosumers)])
    # a draw equal to the means propagates to the mean
    from ecjax.plan import zero_plan, make_stage

    stage = make_stage(c, jax.tree_util.tree_map(jnp.asarray, prof), 16, jnp.asarray(c.eb0), jnp.zeros(c.n), 0.05, N)
    eb, ug = validate.propagate(c, stage, zero_plan(c.n, N), Draw(irr=stage.win.irr_mu, ul=stage.win.ul_mu))
    pv = np.asarray(c.pv_coef())[:, None] * np.asarray(stage.win.irr_mu)[None]
    expect = np.asarray(c.eb0)[:, None] + np.cumsum(pv, axis=1)
    np.testing.assert_allclose(eb, np.where(c.is_prosumer[:, None], expect, 0.0), atol=1e-12)


def test_same_seed_same_counts_other_seed_other_counts(world):
    a = run(world, 16, 0.4, 0.2, seed=3)
    b = run(world, 16, 0.4, 0.2, seed=3)
    d = run(world, 16, 0.4, 0.2, seed=4)
    np.testing.assert_array_equal(a["count"].values, b["count"].values)
    assert np.any(a["count"].values != d["count"].values)


def test_bad_arguments_are_named(world):
    c, prof = world
    with pytest.raises(ValueError, match="ccmpc.deltas"):
        validate.open_loop_validation(c, prof, 8, c.eb0, np.zeros(c.n), 0.0, 10)
    with pytest.raises(ValueError, match="validate.t"):
        validate.open_loop_validation(c, prof, 24, c.eb0, np.zeros(c.n), 0.05, 10)
    with pytest.raises(ValueError, match="`eb` must be"):
        validate.open_loop_validation(c, prof, 8, c.eb0[:2], np.zeros(c.n), 0.05, 10)
    with pytest.raises(ValueError, match="scenario"):
        validate.open_loop_validation(c, prof, 8, c.eb0, np.zeros(c.n), 0.05, 10, scenario="greedy")
    with pytest.raises(ValueError, match=r"sim\.dtype.*must be float64"):
        validate.open_loop_validation(c, prof, 8, c.eb0, np.zeros(c.n), 0.05, 10, dtype=jnp.float32)
