"""The paper's indices E1..E8 and the run summary (`ecjax.metrics`) against MODEL §7–§8.

No closed loop is run: records are planted by hand, and every expectation is computed here
from MODEL §8 with plain Python loops over (t, i, j) (E1 = Σ c_t Δt ug, E2 = Σ γ c_t Δt ugb,
E4 = Σ delivered bt Δt, E6 split into consumers' E7 and prosumers' E8; MODEL §7: spill is
unpaid). The binomial intervals are checked against their defining tail equations, summed
exactly with `math.comb` (no scipy).
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ecjax import metrics
from ecjax.community import generate_community
from ecjax.metrics import INDEX_NAMES
from ecjax.simulate import StepRecord

FLOAT_FIELDS = ("eb", "eb_raw", "eev", "u_bc", "u_bd", "u_ugb", "u_ev", "ug", "spill", "curtail",
                "deficit", "pv", "load", "slack", "u_clip")  # fmt: skip


def planted_record(c, T, seed, **fields):
    """A StepRecord stacked over T steps with random non-negative entries (consumers' inputs
    zero, as the plant applies them), any field replaced by `fields`."""
    rng = np.random.default_rng(seed)
    n = c.n
    pro = c.is_prosumer
    f = {k: rng.uniform(0.0, 2.0, (T, n)) for k in FLOAT_FIELDS}
    for k in ("u_bc", "u_bd", "u_ugb", "u_ev"):
        f[k] = np.where(pro[None, :], f[k], 0.0)
    bt = rng.uniform(0.0, 1.5, (T, n, n)) * pro[None, :, None] * (1.0 - np.eye(n))[None]
    f.update(
        u_bt=bt,
        price=rng.uniform(0.05, 0.6, T),
        viol_lo=rng.random((T, n)) < 0.3,
        viol_hi=rng.random((T, n)) < 0.3,
        empty=rng.integers(0, 5, (T, n)),
        iters=rng.integers(0, 20, T),
        theta=rng.uniform(0.0, 1e-2, T),
        cost_trace=rng.uniform(0.0, 1.0, (T, 3)),
        theta_trace=rng.uniform(0.0, 1.0, (T, 3)),
        phi=rng.uniform(1.0, 2.0, T),
        phi_central=rng.uniform(0.5, 1.0, T),
        central_status=rng.integers(0, 2, T),
        qp_status=rng.integers(0, 5, T),
        qp_held=rng.integers(0, 3, T),
        qp_fallback=rng.integers(0, 3, T),
        qp_steps=rng.integers(1, 100, T),
        u_iter=np.zeros((T, 0, len(c.prosumers), 1)),
        u_star=np.zeros((T, 0, len(c.prosumers), 1)),
    )
    f.update(fields)
    return StepRecord(**{k: jnp.asarray(v) for k, v in f.items()})


def loop_indices(c, gamma, rec):
    """E1..E8 of MODEL §8 by explicit loops over steps, agents and partners."""
    price, ug, ugb, bt = (np.asarray(a) for a in (rec.price, rec.ug, rec.u_ugb, rec.u_bt))
    T, n = ug.shape
    e = dict.fromkeys(INDEX_NAMES, 0.0)
    for t in range(T):
        for i in range(n):
            bought = ug[t, i] * c.dt  # kWh bought from the UG (deficit purchases included)
            e["E1"] += price[t] * bought
            e["E2"] += gamma * price[t] * ugb[t, i] * c.dt  # sold at c^b = γ c
            e["E5"] += ugb[t, i] * c.dt
            e["E6"] += bought
            e["E8" if i in c.prosumers else "E7"] += bought
            for j in range(n):
                e["E4"] += bt[t, i, j] * c.dt
    e["E3"] = e["E1"] - e["E2"]
    return e


COMMUNITIES = {
    "mixed": dict(n=5, prosumer_share=0.4, seed=3),  # prosumers 0, 1; consumers 2, 3, 4
    "one_prosumer": dict(n=2, prosumer_share=0.1, seed=4),
    "all_prosumers": dict(n=4, prosumer_share=1.0, seed=5),
    "scattered": dict(n=5, seed=6, prosumers=(1, 3)),  # prosumers not first in the order
}


def community(name):
    kw = dict(COMMUNITIES[name])
    return generate_community(kw.pop("n"), **kw)


def test_indices_by_hand_one_prosumer_one_consumer_one_step():
    c = community("one_prosumer")
    assert c.prosumers == (0,) and c.consumers == (1,)
    rec = planted_record(
        c, 1, 0,
        price=np.array([0.2]),
        ug=np.array([[1.5, 0.8]]),
        u_ugb=np.array([[0.5, 0.0]]),
        u_bt=np.array([[[0.0, 0.4], [0.0, 0.0]]]),
    )  # fmt: skip
    e = {k: float(v) for k, v in metrics.indices(c, 0.5, rec).items()}
    exact = {
        "E1": 0.2 * (1.5 + 0.8),  # 0.46 €
        "E2": 0.5 * 0.2 * 0.5,  # 0.05 €
        "E3": 0.46 - 0.05,
        "E4": 0.4,
        "E5": 0.5,
        "E6": 2.3,
        "E7": 0.8,  # the consumer
        "E8": 1.5,  # the prosumer
    }
    for k, v in exact.items():
        assert e[k] == pytest.approx(v, abs=1e-14), k  # a few roundings of numbers near 1


@pytest.mark.parametrize("name", sorted(COMMUNITIES))
@pytest.mark.parametrize("T,gamma", [(1, 0.5), (7, 0.0), (24, 0.9)])
def test_indices_match_loops_over_the_definitions(name, T, gamma):
    """T != n, distinct prices per step and per-agent values: summing over a wrong axis,
    a wrong price factor or a wrong agent split changes the numbers."""
    c = community(name)
    rec = planted_record(c, T, seed=T + 10 * c.n)
    got = metrics.indices(c, gamma, rec)
    ref = loop_indices(c, gamma, rec)
    assert set(got) == set(INDEX_NAMES)
    for k in INDEX_NAMES:
        # sums of at most 24·5·5 terms of size <= 2: float64 rounding is far below 1e-12
        np.testing.assert_allclose(float(got[k]), ref[k], rtol=1e-12, atol=1e-12, err_msg=k)
    if len(c.consumers) == 0:
        assert float(got["E7"]) == 0.0
    if gamma == 0.0:
        assert float(got["E2"]) == 0.0


def test_indices_of_matches_indices():
    c = community("mixed")
    rec = planted_record(c, 6, 1)
    a = metrics.indices(c, 0.5, rec)
    b = metrics.indices_of(c, 0.5, np.asarray(rec.price), np.asarray(rec.ug), np.asarray(rec.u_ugb),
                           np.asarray(rec.u_bt))  # fmt: skip
    for k in INDEX_NAMES:
        assert float(a[k]) == float(b[k]), k


def test_indices_use_only_what_the_grid_saw():
    """Spill is unpaid (MODEL §7) and the battery, PV, load and plan fields are not purchases:
    changing them leaves every index unchanged; changing ug moves E1, E6 and E7/E8 only."""
    c = community("mixed")
    rec = planted_record(c, 5, 2)
    base = {k: float(v) for k, v in metrics.indices(c, 0.5, rec).items()}
    other = planted_record(c, 5, 99, price=rec.price, ug=rec.ug, u_ugb=rec.u_ugb, u_bt=rec.u_bt)
    assert {k: float(v) for k, v in metrics.indices(c, 0.5, other).items()} == base
    # one more kWh bought by consumer 3 at step 2
    ug = np.asarray(rec.ug).copy()
    ug[2, 3] += 1.0
    moved = {k: float(v) for k, v in metrics.indices(c, 0.5, planted_record(c, 5, 2, ug=ug)).items()}
    p2 = float(rec.price[2])
    np.testing.assert_allclose(moved["E1"] - base["E1"], p2, rtol=1e-12)
    np.testing.assert_allclose(moved["E6"] - base["E6"], 1.0, rtol=1e-12)
    np.testing.assert_allclose(moved["E7"] - base["E7"], 1.0, rtol=1e-12)
    for k in ("E2", "E4", "E5", "E8"):
        assert moved[k] == base[k], k


def test_indices_jit_and_vmap_over_samples():
    """`indices` is a pure JAX function of one record: vmapped over stacked samples (as the
    experiment does) it gives each sample's own indices."""
    c = community("mixed")
    recs = [planted_record(c, 4, s) for s in range(3)]
    stacked = jax.tree_util.tree_map(lambda *a: jnp.stack(a), *recs)
    out = jax.jit(jax.vmap(lambda r: metrics.indices(c, 0.5, r)))(stacked)
    for s, rec in enumerate(recs):
        ref = loop_indices(c, 0.5, rec)
        for k in INDEX_NAMES:
            np.testing.assert_allclose(float(out[k][s]), ref[k], rtol=1e-12, atol=1e-12, err_msg=k)


@pytest.mark.parametrize("name", ["mixed", "all_prosumers", "scattered"])
@pytest.mark.parametrize("T", [1, 6])
def test_summary_reduces_and_passes_through(name, T):
    c = community(name)
    rec = planted_record(c, T, 7)
    s = metrics.summary(c, 0.5, rec)
    ref = loop_indices(c, 0.5, rec)
    for k in INDEX_NAMES:
        np.testing.assert_allclose(float(s[k]), ref[k], rtol=1e-12, atol=1e-12, err_msg=k)
    total = lambda f: sum(float(v) for v in np.asarray(getattr(rec, f)).ravel())  # noqa: E731
    np.testing.assert_allclose(float(s["curtailed"]), total("curtail"), rtol=1e-12)  # kWh
    np.testing.assert_allclose(float(s["deficit"]), total("deficit"), rtol=1e-12)  # kWh
    np.testing.assert_allclose(float(s["spilled"]), total("spill") * c.dt, rtol=1e-12)  # kW → kWh
    np.testing.assert_allclose(float(s["slack"]), total("slack"), rtol=1e-12)
    assert int(s["empty_steps"]) == int(np.asarray(rec.empty).sum())
    for k in ("iters", "theta", "phi", "central_status", "qp_status", "qp_held", "qp_fallback", "qp_steps"):
        np.testing.assert_array_equal(np.asarray(s[k]), np.asarray(getattr(rec, k)), err_msg=k)
    np.testing.assert_allclose(np.asarray(s["gap"]), np.asarray(rec.phi) - np.asarray(rec.phi_central), rtol=1e-15)
    # violation indicators: [step, agent] as in the trajectories, prosumers only (consumers have
    # no battery bound)
    for side in ("viol_lo", "viol_hi"):
        got = np.asarray(s[side])
        flags = np.asarray(getattr(rec, side))
        assert got.shape == (T, c.n), side
        for i in range(c.n):
            for t in range(T):
                assert got[t, i] == (bool(flags[t, i]) and i in c.prosumers), (side, i, t)


def _tail_ge(k, n, p):
    """P(X >= k) for X ~ Binomial(n, p), summed exactly term by term."""
    return sum(math.comb(n, x) * p**x * (1 - p) ** (n - x) for x in range(k, n + 1))


def _cdf(k, n, p):
    return sum(math.comb(n, x) * p**x * (1 - p) ** (n - x) for x in range(0, k + 1))


@pytest.mark.parametrize("level", [0.95, 0.99])
def test_clopper_pearson_solves_its_tail_equations(level):
    """lo: P(X >= k | lo) = a/2, hi: P(X <= k | hi) = a/2 (a = 1 − level); lo = 0 at k = 0 and
    hi = 1 at k = n. Vectorized over k."""
    n = 30
    a = 1.0 - level
    k = np.arange(n + 1)
    lo, hi = metrics.clopper_pearson(k, n, level)
    assert lo.shape == hi.shape == (n + 1,)
    assert lo[0] == 0.0 and hi[n] == 1.0
    for kk in range(1, n + 1):
        # the tail is a smooth polynomial in p; the beta quantile solves it to ~1e-12
        assert _tail_ge(kk, n, lo[kk]) == pytest.approx(a / 2, rel=1e-8), kk
    for kk in range(0, n):
        assert _cdf(kk, n, hi[kk]) == pytest.approx(a / 2, rel=1e-8), kk
    assert np.all(lo <= k / n) and np.all(k / n <= hi) and np.all(np.diff(lo) > 0) and np.all(np.diff(hi) > 0)


def test_clopper_pearson_covers_at_least_its_level():
    """The exact interval's guarantee: for every p, the k whose interval contains p have
    probability >= level (enumerated exactly over k = 0..n)."""
    n, level = 25, 0.9
    lo, hi = metrics.clopper_pearson(np.arange(n + 1), n, level)
    for p in np.linspace(0.001, 0.999, 101):
        cover = sum(math.comb(n, k) * p**k * (1 - p) ** (n - k) for k in range(n + 1) if lo[k] <= p <= hi[k])
        assert cover >= level - 1e-12, p


def test_clopper_pearson_broadcasts_k_and_n():
    lo, hi = metrics.clopper_pearson(np.array([[0], [3]]), np.array([10, 20]), 0.95)
    assert lo.shape == (2, 2)
    for r, k in enumerate((0, 3)):
        for col, n in enumerate((10, 20)):
            a, b = metrics.clopper_pearson(k, n, 0.95)
            assert lo[r, col] == a and hi[r, col] == b


@pytest.mark.parametrize("p,n", [(0.05, 40), (0.3, 40), (0.5, 17)])
@pytest.mark.parametrize("level", [0.9, 0.99])
def test_binomial_interval_around_is_the_central_quantile_range(p, n, level):
    """n·lo is the smallest count x with P(X <= x) >= a/2, n·hi the smallest with
    P(X <= x) >= 1 − a/2 (X ~ Binomial(n, p))."""
    a = 1.0 - level
    lo, hi = metrics.binomial_interval_around(p, n, level)

    def quantile(q):
        return next(x for x in range(n + 1) if _cdf(x, n, p) >= q - 1e-12)

    assert lo * n == pytest.approx(quantile(a / 2), abs=1e-9)
    assert hi * n == pytest.approx(quantile(1 - a / 2), abs=1e-9)
    assert lo <= p <= hi


def test_agreement_gap_planted():
    """g_p = (Φ_p − Φ_c)/(Φ_0 − Φ_c) on planted costs; NaN where the islanded iterate is
    already at the centralized cost; shapes broadcast over leading axes."""
    cost = np.array([[10.0, 6.0, 4.0, 2.0], [5.0, 5.0, 5.0, 5.0], [-3.0, -4.0, -5.0, -5.0]])
    phi_c = np.array([2.0, 5.0 - 1e-12, -5.0])
    g = metrics.agreement_gap(cost, phi_c)
    np.testing.assert_allclose(g[0], [1.0, 0.5, 0.25, 0.0])
    assert np.isnan(g[1]).all()  # excess 1e-12 below the floor: nothing to agree on
    np.testing.assert_allclose(g[2], [1.0, 0.5, 0.0, 0.0])
    assert metrics.agreement_gap(cost[None], phi_c[None]).shape == (1, 3, 4)
