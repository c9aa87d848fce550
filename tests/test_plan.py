"""The Plan pytree, its decision-vector conversions and the stage data (`ecjax.plan`).

Conversions are checked against the layout documented in `ecjax.layout`, written out here by
hand (blocks of N: bc, bd, ugb, ev, bt to each other agent in increasing order, eb, eev, s_lo,
s_hi): a planted vector whose every entry is distinct must land in the documented plan slots,
and the two conversions are inverse on what the vectors hold. `make_stage` is checked against
MODEL §3 and §5 written in numpy: the tightened band (both tightenings, the empty-band
midpoint), the EV limits and deadline (eqs 7–9) and the optional consumer import tightening.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.stats import norm

from ecjax.community import generate_community
from ecjax.disturbance import synthetic_profiles
from ecjax.plan import Plan, make_stage, partner_table, plan_from_vectors, vectors_from_plan, zero_plan

FIELDS = ("bc", "bd", "ugb", "ev", "bt", "eb", "eev", "s_lo", "s_hi")

CASES = {
    "mixed": (dict(n=5, prosumer_share=0.4, seed=1), 6),  # prosumers 0, 1
    "scattered": (dict(n=5, seed=2, prosumers=(1, 3)), 4),  # prosumers between consumers
    "one_prosumer_N1": (dict(n=2, prosumer_share=0.1, seed=3), 1),
    "all_prosumers": (dict(n=3, prosumer_share=1.0, seed=4), 24),
}


def case(name):
    kw, N = CASES[name]
    kw = dict(kw)
    return generate_community(kw.pop("n"), **kw), N


def documented_slot(n, N, i, field, k, j=None):
    """Index of `field`[k] (bt: to agent j) in agent i's vector, from the layout docstring."""
    m = n - 1
    order = {"bc": 0, "bd": 1, "ugb": 2, "ev": 3}
    if field in order:
        return order[field] * N + k
    if field == "bt":
        others = [a for a in range(n) if a != i]
        return (4 + others.index(j)) * N + k
    after = {"eb": 0, "eev": 1, "s_lo": 2, "s_hi": 3}[field]
    return (4 + m + after) * N + k


def test_partner_table_lists_every_other_agent_in_increasing_order():
    for n in (2, 3, 6):
        tab = partner_table(n)
        assert tab.shape == (n, n - 1)
        for i in range(n):
            assert list(tab[i]) == sorted(set(range(n)) - {i})


def test_zero_plan_shapes():
    p = zero_plan(3, 5)
    for f in FIELDS:
        a = getattr(p, f)
        assert a.shape == ((3, 3, 5) if f == "bt" else (3, 5)), f
        assert a.dtype == jnp.float64 and not np.any(np.asarray(a)), f
    assert zero_plan(2, 1, jnp.float32).eb.dtype == jnp.float32


@pytest.mark.parametrize("name", sorted(CASES))
def test_planted_vector_lands_in_the_documented_slots(name):
    c, N = case(name)
    n, P = c.n, len(c.prosumers)
    nx = (8 + n - 1) * N  # 4 input blocks, n−1 trade blocks, eb, eev, s_lo, s_hi
    xs = 1000.0 * (1 + np.arange(P))[:, None] + 1.0 + np.arange(nx)[None, :]  # all distinct, none 0
    plan = plan_from_vectors(jnp.asarray(xs), c, N)
    for f in FIELDS:
        a = np.asarray(getattr(plan, f))
        assert a.shape == ((n, n, N) if f == "bt" else (n, N)), f
        for i in range(n):
            for k in range(N):
                if f == "bt":
                    for j in range(n):
                        want = xs[c.prosumers.index(i), documented_slot(n, N, i, f, k, j)] if (
                            i in c.prosumers and j != i) else 0.0  # fmt: skip
                        assert a[i, j, k] == want, (f, i, j, k)
                else:
                    want = xs[c.prosumers.index(i), documented_slot(n, N, i, f, k)] if i in c.prosumers else 0.0
                    assert a[i, k] == want, (f, i, k)


@pytest.mark.parametrize("name", sorted(CASES))
def test_vectors_from_plan_inverts_plan_from_vectors(name):
    c, N = case(name)
    nx = (8 + c.n - 1) * N
    xs = jnp.asarray(np.random.default_rng(0).normal(size=(len(c.prosumers), nx)))
    back = vectors_from_plan(plan_from_vectors(xs, c, N), c)
    assert back.shape == xs.shape
    np.testing.assert_array_equal(back, xs)  # a permutation of entries: exact


@pytest.mark.parametrize("name", sorted(CASES))
def test_plan_round_trip_keeps_the_prosumers_entries_and_drops_the_rest(name):
    """A plan with every entry filled goes through the vectors: the prosumers' inputs, states,
    slacks and trades to other agents come back; consumers' rows and trades to oneself,
    which no vector holds, come back as zero."""
    c, N = case(name)
    n = c.n
    rng = np.random.default_rng(1)
    full = Plan(**{f: jnp.asarray(rng.normal(size=(n, n, N) if f == "bt" else (n, N))) for f in FIELDS})
    back = plan_from_vectors(vectors_from_plan(full, c), c, N)
    pro = c.is_prosumer
    for f in FIELDS:
        a, b = np.asarray(getattr(full, f)), np.asarray(getattr(back, f))
        if f == "bt":
            keep = pro[:, None, None] & ~np.eye(n, dtype=bool)[:, :, None]
        else:
            keep = pro[:, None]
        np.testing.assert_array_equal(b, np.where(keep, a, 0.0), err_msg=f)


def test_conversions_trace_under_jit():
    c, N = case("scattered")
    nx = (8 + c.n - 1) * N
    xs = jnp.asarray(np.random.default_rng(2).normal(size=(len(c.prosumers), nx)))
    f = jax.jit(lambda x: vectors_from_plan(plan_from_vectors(x, c, N), c))
    np.testing.assert_array_equal(f(xs), xs)


# ----- stage data (MODEL §3, §5) ------------------------------------------------------------


@pytest.fixture(scope="module")
def world():
    c = generate_community(4, prosumer_share=0.5, seed=5)
    return c, synthetic_profiles(4, seed=5)


def model_sd(c, prof, t, N, mode):
    """s_i[k] of MODEL §5 for the states k = 1..N, by loops over τ."""
    s = np.zeros((c.n, N))
    for i in range(c.n):
        a = c.eta_pv * float(c.pv_area[i]) / 1000.0
        for k in range(1, N + 1):
            taus = range(k) if mode == "cumulative" else [k - 1]
            var = 0.0
            for tau in taus:
                h = (t + tau) % 24
                var += (a * prof.irr_sd[h]) ** 2 + (c.eta_c * prof.ul_sd[i, h]) ** 2
            s[i, k - 1] = c.dt * np.sqrt(var)
    return s


@pytest.mark.parametrize("mode", ["cumulative", "per_step"])
@pytest.mark.parametrize("t,N,delta", [(6, 12, 0.05), (20, 8, 0.2), (0, 1, 0.01), (9, 24, 0.5)])
def test_stage_band_is_the_tightened_battery_bound(world, mode, t, N, delta):
    c, prof = world
    eb0 = 0.5 * np.asarray(c.capacity)
    st = make_stage(c, prof, t, eb0, np.zeros(c.n), delta, N, mode)
    z = norm.ppf(1 - delta)
    s = model_sd(c, prof, t, N, mode)
    lo = np.asarray(c.eb_lo)[:, None] + z * s
    hi = np.asarray(c.eb_hi)[:, None] - z * s
    empty = lo > hi
    mid = 0.5 * (lo + hi)
    pro = list(c.prosumers)
    # z from scipy and the sums in another order: agreement to ~1e-13 kWh
    np.testing.assert_allclose(np.asarray(st.band.lo)[pro], np.where(empty, mid, lo)[pro], rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(np.asarray(st.band.hi)[pro], np.where(empty, mid, hi)[pro], rtol=1e-12, atol=1e-13)
    np.testing.assert_array_equal(np.asarray(st.band.empty)[pro], empty[pro])
    if delta == 0.5:  # the deterministic MPC: no back-off
        np.testing.assert_array_equal(np.asarray(st.band.lo)[pro], np.asarray(c.eb_lo)[pro, None] * np.ones((1, N)))
        np.testing.assert_array_equal(np.asarray(st.band.hi)[pro], np.asarray(c.eb_hi)[pro, None] * np.ones((1, N)))
    assert int(st.t) == t and st.t.dtype == jnp.int32
    np.testing.assert_array_equal(st.eb0, eb0)
    np.testing.assert_array_equal(st.win.price, np.asarray(prof.price)[[(t + k) % 24 for k in range(N)]])


def test_stage_band_empties_late_in_the_horizon_at_a_tiny_risk(world):
    """With cumulative variance and δ = 1e-6 the late band is empty: both bounds sit at the
    middle of [eb_lo, eb_hi] and the step is flagged."""
    c, prof = world
    st = make_stage(c, prof, 8, np.asarray(c.eb0), np.zeros(c.n), 1e-6, 24, "cumulative")
    for i in c.prosumers:
        emp = np.asarray(st.band.empty[i])
        assert emp[-1] and not emp[0]
        mid = 0.5 * (float(c.eb_lo[i]) + float(c.eb_hi[i]))
        np.testing.assert_allclose(np.asarray(st.band.lo[i])[emp], mid, rtol=1e-14)
        np.testing.assert_allclose(np.asarray(st.band.hi[i])[emp], mid, rtol=1e-14)


@pytest.mark.parametrize("t,N", [(20, 8), (0, 6), (23, 1), (16, 24)])
def test_stage_ev_limits_and_deadline(world, t, N):
    """ev_hi[k] = v[t+k]·ev_max while t+k is today, 0 past midnight (no EV modelled for the
    next day); eev[k] (the state at hour t+k+1) must equal e_daily at hour 24 and stay in
    [0, e_daily] elsewhere (eqs 7–9)."""
    c, prof = world
    st = make_stage(c, prof, t, np.asarray(c.eb0), np.zeros(c.n), 0.05, N)
    for i in range(c.n):
        for k in range(N):
            hour = t + k
            want = float(c.ev_avail[i, hour]) * float(c.ev_max[i]) if hour < 24 else 0.0
            assert float(st.ev_hi[i, k]) == want, (i, k)
            deadline = hour + 1 == 24
            assert float(st.eev_lo[i, k]) == (float(c.ev_daily[i]) if deadline else 0.0), (i, k)
            assert float(st.eev_hi[i, k]) == float(c.ev_daily[i]), (i, k)
    assert (t + N >= 24) == bool(np.any(np.asarray(st.eev_lo)[list(c.prosumers)] > 0))


@pytest.mark.parametrize("delta", [0.05, 1e-4])
def test_stage_consumer_import_cap(world, delta):
    """Untightened: trades to a consumer are capped by its forecast load. Tightened (MODEL §5,
    optional): ug_j >= z σ_ul_j, i.e. the cap is max(μ_ul − z σ_ul, 0)."""
    c, prof = world
    t, N = 7, 10
    hours = [(t + k) % 24 for k in range(N)]
    mu, sd = np.asarray(prof.ul_mu)[:, hours], np.asarray(prof.ul_sd)[:, hours]
    plain = make_stage(c, prof, t, np.asarray(c.eb0), np.zeros(c.n), delta, N)
    np.testing.assert_array_equal(plain.ul_cap, mu)
    tight = make_stage(c, prof, t, np.asarray(c.eb0), np.zeros(c.n), delta, N, tighten_consumers=True)
    want = np.maximum(mu - norm.ppf(1 - delta) * sd, 0.0)
    np.testing.assert_allclose(tight.ul_cap, want, rtol=1e-12, atol=1e-15)
    if delta == 1e-4:  # z = 3.72 > 1/0.3: σ = 0.3 μ, so the whole load is reserved
        np.testing.assert_array_equal(tight.ul_cap, 0.0)
    else:
        assert np.all(np.asarray(tight.ul_cap) > 0) and np.all(np.asarray(tight.ul_cap) < mu)


def test_stage_accepts_a_traced_hour_and_risk(world):
    c, prof = world
    pj = jax.tree_util.tree_map(jnp.asarray, prof)
    f = jax.jit(lambda t, d: make_stage(c, pj, t, jnp.asarray(c.eb0), jnp.zeros(c.n), d, 6))
    for t in (3, 21):
        a = f(jnp.asarray(t), jnp.asarray(0.05))
        b = make_stage(c, prof, t, np.asarray(c.eb0), np.zeros(c.n), 0.05, 6)
        for leaf_a, leaf_b in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
            leaf_a, leaf_b = np.asarray(leaf_a), np.asarray(leaf_b)
            if leaf_a.dtype.kind == "f":  # fused and eager float64 may round differently
                np.testing.assert_allclose(leaf_a, leaf_b, rtol=1e-13, atol=1e-15)
            else:
                np.testing.assert_array_equal(leaf_a, leaf_b)
