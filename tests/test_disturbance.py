"""Forecast profiles and sampled disturbances (`ecjax.disturbance`) against MODEL §5 and §7.

Validation of `make_profiles`; the documented closed-form shapes of `synthetic_profiles`;
the forecast window's wrap past midnight (numpy indexing of hours (t + k) mod 24); and the
draws of `sample_day` against the distribution MODEL §5 specifies: ϖ[h] ~ N(μ, σ²) shared by
all agents, ul_i[h] ~ N(μ_i, σ_i²) independent across agents and hours. Moments, quantiles
and correlations of S = 4000 draws (keys `fold_in(key, s)`, as the experiment draws them) are
compared with tolerances from the sample size; zero-variance profiles pin the hour mapping
exactly.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.stats import binom, norm

from ecjax.community import generate_community
from ecjax.disturbance import (
    Draw,
    ProfileError,
    Profiles,
    check_profiles,
    make_profiles,
    sample_day,
    synthetic_profiles,
    window,
)

S = 4000  # draws for the statistical tests
# |z| bound for a standard-normal statistic over ~100 simultaneous checks: P(|Z| > 5) = 5.7e-7,
# so a correct sampler fails a whole test with probability < 1e-4 (the keys are fixed anyway).
ZMAX = 5.0


def good_arrays(n=3):
    rng = np.random.default_rng(0)
    return dict(
        irr_mu=rng.uniform(0, 800, 24),
        irr_sd=rng.uniform(0, 100, 24),
        ul_mu=rng.uniform(0.1, 1.0, (n, 24)),
        ul_sd=rng.uniform(0.0, 0.3, (n, 24)),
        price=rng.uniform(0.1, 0.5, 24),
    )


def test_make_profiles_keeps_the_values_as_float64():
    arrays = good_arrays()
    p = make_profiles(**arrays)
    for k, v in arrays.items():
        got = getattr(p, k)
        assert got.dtype == np.float64, k
        np.testing.assert_array_equal(got, v, err_msg=k)


@pytest.mark.parametrize(
    "field,value",
    [
        ("irr_mu", np.ones(23)),
        ("irr_sd", np.ones((1, 24))),
        ("price", np.ones(25)),
        ("ul_mu", np.ones(24)),
        ("ul_sd", np.ones((3, 12))),
        ("ul_mu", np.full((3, 24), np.nan)),
        ("irr_mu", np.full(24, np.inf)),
        ("irr_sd", -np.ones(24)),
        ("ul_sd", -np.ones((3, 24))),
        ("ul_mu", -np.ones((3, 24))),
        ("price", -np.ones(24)),
    ],
)
def test_make_profiles_names_the_malformed_field(field, value):
    arrays = good_arrays()
    arrays[field] = value
    with pytest.raises(ProfileError, match=f"profiles.{field}"):
        make_profiles(**arrays)


def test_make_profiles_rejects_mismatched_load_tables():
    arrays = good_arrays()
    arrays["ul_sd"] = np.ones((2, 24))
    with pytest.raises(ProfileError, match="same shape"):
        make_profiles(**arrays)


def test_check_profiles_counts_agents():
    c = generate_community(3, seed=0)
    check_profiles(synthetic_profiles(3), c)
    with pytest.raises(ProfileError, match="4 agents, the community has 3"):
        check_profiles(synthetic_profiles(4), c)


def test_synthetic_irradiance_is_the_documented_bell():
    """Zero outside 07:45–20:15 (hour h is [h, h+1), taken at its middle), symmetric about
    the peak at 14:00 and at most 800 W/m²; std 18 % of the mean (0 at night)."""
    p = synthetic_profiles(5, seed=1)
    mu, sd = np.asarray(p.irr_mu), np.asarray(p.irr_sd)
    night = [h for h in range(24) if not 7.75 < h + 0.5 < 20.25]
    assert night == list(range(0, 8)) + list(range(20, 24))
    # after sunset the bell is 800·sin(π)^1.5 = 800·(1.2e-16)^1.5 ≈ 1e-21 W/m², not 0: zero
    # for any physical purpose (1e-12 W/m² is 1e-15 kW of PV on 12 m²)
    np.testing.assert_allclose(mu[night], 0.0, atol=1e-12)
    assert np.all(mu[8:20] > 10.0)
    # the middles of hours 13 and 14 are 0.5 h either side of 14:00; 13−k and 14+k mirror
    np.testing.assert_allclose(mu[13::-1][:6], mu[14:20], rtol=1e-12)
    assert 780.0 < mu[13] <= 800.0 and mu.argmax() in (13, 14)
    np.testing.assert_allclose(sd, 0.18 * mu, rtol=1e-15)


def test_synthetic_loads_are_one_shape_scaled_per_agent():
    """Every agent's mean load is the same daily shape times a factor in U(0.6, 1.4): ratios
    between agents are constant over the day and within [0.6/1.4, 1.4/0.6]; morning and
    evening peaks; std 30 % of the mean; community mean near 0.45 kW."""
    n = 200
    p = synthetic_profiles(n, seed=2)
    mu, sd = np.asarray(p.ul_mu), np.asarray(p.ul_sd)
    assert mu.shape == sd.shape == (n, 24) and np.all(mu > 0)
    ratio = mu / mu[0]
    np.testing.assert_allclose(ratio, ratio[:, :1] * np.ones((1, 24)), rtol=1e-12)
    assert ratio.max() / ratio.min() <= 1.4 / 0.6
    # 200 factors from U(0.6, 1.4): their spread nearly fills the interval
    assert ratio.max() / ratio.min() > 0.9 * 1.4 / 0.6
    np.testing.assert_allclose(sd, 0.3 * mu, rtol=1e-15)
    shape = mu.mean(axis=0)
    assert shape[7:10].max() > shape[3] and shape[7:10].max() > shape[12]  # morning peak
    assert shape[20:23].max() == shape.max()  # evening peak is the day's highest
    # "about 0.45 kW": the mean of 200 factors has std 0.23/√200 = 0.016; the shape's own
    # mean is ~0.48 kW; allow ±0.1 kW around the documented figure (a W/kW slip is ×1000)
    assert abs(mu.mean() - 0.45) < 0.1


@pytest.mark.parametrize("price_mean", [0.34, 0.1])
def test_synthetic_price_has_the_requested_mean_and_two_peaks(price_mean):
    p = synthetic_profiles(3, seed=0, price_mean=price_mean)
    price = np.asarray(p.price)
    np.testing.assert_allclose(price.mean(), price_mean, rtol=1e-12)
    assert np.all(price > 0)
    assert price[20:23].max() == price.max()  # evening peak
    assert price[8:10].max() > price[5] and price[8:10].max() > price[14]  # morning peak over the afternoon dip


def test_synthetic_profiles_are_seeded():
    a, b, c = synthetic_profiles(4, seed=7), synthetic_profiles(4, seed=7), synthetic_profiles(4, seed=8)
    for k in ("irr_mu", "irr_sd", "ul_mu", "ul_sd", "price"):
        np.testing.assert_array_equal(getattr(a, k), getattr(b, k), err_msg=k)
    assert not np.allclose(a.ul_mu, c.ul_mu)  # the seed draws the agents' factors
    np.testing.assert_array_equal(a.irr_mu, c.irr_mu)  # weather and price do not depend on it
    np.testing.assert_array_equal(a.price, c.price)


def hour_coded_profiles(n, sd=0.0):
    """Means that encode the hour (and the agent), so that any wrong hour shows."""
    h = np.arange(24, dtype=np.float64)
    return make_profiles(
        irr_mu=100.0 + h,
        irr_sd=np.full(24, sd),
        ul_mu=1000.0 * (1 + np.arange(n))[:, None] + h[None, :],
        ul_sd=np.full((n, 24), sd),
        price=0.01 * (1 + h),
    )


@pytest.mark.parametrize("t,N", [(0, 24), (5, 1), (20, 8), (23, 24), (13, 30)])
def test_window_takes_hours_t_plus_k_mod_24(t, N):
    n = 3
    prof = hour_coded_profiles(n)
    win = window(prof, t, N)
    hours = [(t + k) % 24 for k in range(N)]
    np.testing.assert_array_equal(win.irr_mu, np.asarray(prof.irr_mu)[hours])
    np.testing.assert_array_equal(win.irr_sd, np.asarray(prof.irr_sd)[hours])
    np.testing.assert_array_equal(win.price, 0.01 * (1 + np.array(hours, dtype=np.float64)))
    assert win.ul_mu.shape == win.ul_sd.shape == (n, N)
    for i in range(n):
        np.testing.assert_array_equal(win.ul_mu[i], 1000.0 * (1 + i) + np.array(hours, dtype=np.float64))
    # a traced start hour gives the same window
    traced = jax.jit(lambda tt: window(prof, tt, N))(jnp.asarray(t))
    np.testing.assert_array_equal(traced.ul_mu, win.ul_mu)
    np.testing.assert_array_equal(traced.price, win.price)


@pytest.mark.parametrize("T,t0", [(24, 0), (1, 0), (8, 20), (5, 23)])
def test_zero_variance_draw_is_the_mean_of_hours_t0_plus_k(T, t0):
    n = 3
    prof = hour_coded_profiles(n, sd=0.0)
    d = sample_day(jax.random.PRNGKey(0), prof, T, t0)
    assert isinstance(d, Draw) and d.irr.shape == (T,) and d.ul.shape == (n, T)
    hours = np.array([(t0 + k) % 24 for k in range(T)], dtype=np.float64)
    np.testing.assert_array_equal(d.irr, 100.0 + hours)
    np.testing.assert_array_equal(d.ul, 1000.0 * (1 + np.arange(n))[:, None] + hours[None, :])


def draws(prof, T=24, t0=0, key=0):
    keys = jax.vmap(lambda s: jax.random.fold_in(jax.random.PRNGKey(key), s))(jnp.arange(S))
    d = jax.jit(jax.vmap(lambda k: sample_day(k, prof, T, t0)))(keys)
    return np.asarray(d.irr), np.asarray(d.ul)  # [S, T], [S, n, T]


@pytest.fixture(scope="module")
def sampled():
    prof = synthetic_profiles(3, seed=4)
    irr, ul = draws(prof)
    return prof, irr, ul


def test_draws_are_reproducible_float64_and_differ_between_keys():
    prof = synthetic_profiles(3, seed=4)
    key = jax.random.PRNGKey(11)
    a, b = sample_day(key, prof), sample_day(key, prof)
    assert a.irr.dtype == a.ul.dtype == jnp.float64
    assert a.irr.shape == (24,) and a.ul.shape == (3, 24)
    np.testing.assert_array_equal(a.irr, b.irr)
    np.testing.assert_array_equal(a.ul, b.ul)
    c = sample_day(jax.random.fold_in(key, 1), prof)
    day = np.asarray(prof.irr_mu) > 1.0  # daylight hours (after sunset σ ≈ 2e-22 W/m²)
    assert np.all(np.asarray(c.irr)[day] != np.asarray(a.irr)[day])
    assert np.all(np.asarray(c.ul) != np.asarray(a.ul))


def test_draw_means_and_variances_match_the_profiles(sampled):
    """Per hour and agent: the sample mean lies within ZMAX standard errors σ/√S of μ, and
    the sample variance within ZMAX·√(2/(S−1)) (its relative std for normal data) of σ²."""
    prof, irr, ul = sampled
    day = np.asarray(prof.irr_mu) > 1.0  # daylight hours (after sunset σ ≈ 2e-22 W/m²)
    np.testing.assert_allclose(irr[:, ~day], 0.0, atol=1e-12)  # night: no irradiance, no noise
    for x, mu, sd in ((irr[:, day], np.asarray(prof.irr_mu)[day], np.asarray(prof.irr_sd)[day]),
                      (ul, np.asarray(prof.ul_mu), np.asarray(prof.ul_sd))):  # fmt: skip
        z_mean = (x.mean(axis=0) - mu) / (sd / np.sqrt(S))
        assert np.abs(z_mean).max() < ZMAX
        rel_var = x.var(axis=0, ddof=1) / sd**2 - 1.0
        assert np.abs(rel_var).max() < ZMAX * np.sqrt(2.0 / (S - 1))


def test_draws_have_normal_quantiles(sampled):
    """Standardized draws, pooled over hours and agents (iid N(0, 1) under MODEL §5): the
    fraction below Φ⁻¹(q) lies in the 99.99 % binomial interval around q."""
    prof, irr, ul = sampled
    day = np.asarray(prof.irr_mu) > 1.0  # daylight hours (after sunset σ ≈ 2e-22 W/m²)
    zi = ((irr - np.asarray(prof.irr_mu)) / np.where(day, np.asarray(prof.irr_sd), 1.0))[:, day]
    zu = (ul - np.asarray(prof.ul_mu)) / np.asarray(prof.ul_sd)
    for z in (zi.ravel(), zu.ravel()):
        M = z.size
        for q in (0.001, 0.025, 0.16, 0.5, 0.84, 0.975, 0.999):
            frac = np.mean(z < norm.ppf(q))
            lo, hi = binom.ppf(5e-5, M, q) / M, binom.ppf(1 - 5e-5, M, q) / M
            assert lo <= frac <= hi, (q, frac, lo, hi)


def test_draws_are_independent_across_agents_hours_and_samples(sampled):
    """Correlations of standardized draws: between agents at one hour, between consecutive
    hours, between irradiance and load, and between samples s and s+1 (keys fold_in(key, s)).
    Under independence each is ~N(0, 1/M) for M pairs; |r| < ZMAX/√M."""
    prof, irr, ul = sampled
    day = np.asarray(prof.irr_mu) > 1.0  # daylight hours (after sunset σ ≈ 2e-22 W/m²)
    zi = ((irr - np.asarray(prof.irr_mu)) / np.where(day, np.asarray(prof.irr_sd), 1.0))[:, day]
    zu = (ul - np.asarray(prof.ul_mu)) / np.asarray(prof.ul_sd)  # [S, n, 24]

    def r(a, b):
        a, b = a.ravel(), b.ravel()
        return np.mean(a * b), a.size  # both ~N(0, 1): the mean product is the correlation

    pairs = [
        r(zu[:, 0], zu[:, 1]),  # agents 0 and 1, same hours
        r(zu[:, 1], zu[:, 2]),
        r(zu[:, :, :-1], zu[:, :, 1:]),  # hour h and h+1, same agent
        r(zi[:, :-1], zi[:, 1:]),
        r(zi, zu[:, 0][:, day]),  # irradiance and a load, same hours
        r(zu[:-1], zu[1:]),  # sample s and s+1
        r(zi[:-1], zi[1:]),
    ]
    for k, (rho, M) in enumerate(pairs):
        assert abs(rho) < ZMAX / np.sqrt(M), (k, rho)


def test_irradiance_is_shared_by_all_agents():
    """One ϖ draw per hour for the whole community (MODEL §5): the draw carries no agent
    axis, and scaling the agents' loads does not change it."""
    prof = synthetic_profiles(4, seed=1)
    key = jax.random.PRNGKey(3)
    d = sample_day(key, prof)
    assert d.irr.shape == (24,)
    scaled = Profiles(irr_mu=prof.irr_mu, irr_sd=prof.irr_sd, ul_mu=2 * prof.ul_mu, ul_sd=2 * prof.ul_sd,
                      price=prof.price)  # fmt: skip
    d2 = sample_day(key, scaled)
    np.testing.assert_array_equal(d2.irr, d.irr)
    np.testing.assert_allclose(d2.ul, 2 * np.asarray(d.ul), rtol=1e-15)  # same standard normals


def test_start_hour_shifts_the_distribution(sampled):
    """Hours drawn from t0 = 18 are the profiles' hours 18..23, 0..5 (means within ZMAX
    standard errors)."""
    prof, _, _ = sampled
    irr, ul = draws(prof, T=12, t0=18, key=5)
    hours = [(18 + k) % 24 for k in range(12)]
    mu, sd = np.asarray(prof.ul_mu)[:, hours], np.asarray(prof.ul_sd)[:, hours]
    assert np.abs((ul.mean(axis=0) - mu) / (sd / np.sqrt(S))).max() < ZMAX
    np.testing.assert_allclose(ul.std(axis=0, ddof=1) / sd, 1.0, atol=ZMAX * np.sqrt(0.5 / (S - 1)))
    assert np.abs((irr.mean(axis=0)[:2] - np.asarray(prof.irr_mu)[18:20]) /
                  (np.asarray(prof.irr_sd)[18:20] / np.sqrt(S))).max() < ZMAX  # fmt: skip
    np.testing.assert_allclose(irr[:, 2:], 0.0, atol=1e-12)  # 20:00–06:00 is night (≈ 1e-21 W/m²)
