"""Plain evaluation of a plan (`ecjax.evaluate`) against MODEL §3–§5 written in numpy loops.

A plan is planted by hand: small random inputs within their limits, battery and EV states
integrated here from eqs (1) and (6), slacks set to exactly what the soft bounds need. Then
- the grid import is eq (10) (consumers: load less what they receive);
- the cost is Φ of MODEL §4, computed term by term, with each weight alone and all together;
- every residual family is zero on the planted plan, and each planted violation (an amount
  at one agent and step) shows up as exactly that amount in exactly its family's slot.
Communities: two prosumers and two consumers, one prosumer (n = 2), all prosumers; N = 5
and N = 1.
"""

import jax.numpy as jnp
import numpy as np
import pytest
from scipy.stats import norm

from ecjax import evaluate
from ecjax.community import generate_community
from ecjax.disturbance import synthetic_profiles
from ecjax.plan import Plan, make_stage
from ecjax.weights import CostWeights

FIELDS = ("bc", "bd", "ugb", "ev", "bt", "eb", "eev", "s_lo", "s_hi")
# planted numbers are O(1) and the reference sums a few hundred terms: float64 agreement to
# 1e-12 (absolute, kWh / € / kW) leaves a margin of ~1e3 over rounding
TOL = 1e-12

CASES = {
    "mixed": (dict(n=4, prosumer_share=0.5, seed=2), 5),  # prosumers 0, 1; consumers 2, 3
    "one_prosumer_N1": (dict(n=2, prosumer_share=0.1, seed=3), 1),
    "all_prosumers": (dict(n=3, prosumer_share=1.0, seed=4), 5),
}
T0 = 18  # hours 18..22: EVs at home, loads high; hour 24 is outside a 5-step horizon


def make_case(name, t=T0, delta=0.05, **stage_kw):
    kw, N = CASES[name]
    kw = dict(kw)
    n = kw.pop("n")
    c = generate_community(n, **kw)
    prof = synthetic_profiles(n, seed=kw["seed"])
    eb0 = 0.5 * np.asarray(c.capacity)
    eev0 = np.zeros(n)
    stage = make_stage(c, prof, t, eb0, eev0, delta, N, **stage_kw)
    return c, stage


def np_stage(stage):
    g = lambda a: np.asarray(a, dtype=np.float64)  # noqa: E731
    return dict(
        price=g(stage.win.price), irr=g(stage.win.irr_mu), ul=g(stage.win.ul_mu), ul_cap=g(stage.ul_cap),
        lo=g(stage.band.lo), hi=g(stage.band.hi), ev_hi=g(stage.ev_hi), eev_lo=g(stage.eev_lo),
        eev_hi=g(stage.eev_hi), eb0=g(stage.eb0), eev0=g(stage.eev0),
    )  # fmt: skip


def integrate(c, s, p):
    """eb and eev for k = 1..N from eqs (1) and (6), step by step (prosumers; consumers 0)."""
    n, N = p["bc"].shape
    eb, eev = np.zeros((n, N)), np.zeros((n, N))
    for i in c.prosumers:
        e, v = s["eb0"][i], s["eev0"][i]
        for k in range(N):
            pv = c.eta_pv * float(c.pv_area[i]) * s["irr"][k] / 1000.0
            sent = sum(p["bt"][i, j, k] / c.eta_t for j in range(n) if j != i)
            e = e + c.dt * (c.eta_c * p["bc"][i, k] - p["bd"][i, k] / c.eta_d - sent - p["ugb"][i, k] + pv)
            v = v + c.dt * c.eta_ev * p["ev"][i, k]
            eb[i, k], eev[i, k] = e, v
    return eb, eev


def planted_plan(c, stage, seed=0):
    """A plan that meets every constraint of MODEL §3 and the soft bounds of §5."""
    s = np_stage(stage)
    n, N = s["ul"].shape
    rng = np.random.default_rng(seed)
    pro = c.is_prosumer[:, None]
    p = {
        "bc": rng.uniform(0.0, 0.5, (n, N)) * pro,
        "bd": rng.uniform(0.0, 0.05, (n, N)) * pro,
        "ugb": rng.uniform(0.0, 0.3, (n, N)) * pro,
        "ev": rng.uniform(0.0, 0.5, (n, N)) * s["ev_hi"] * pro,
        "bt": rng.uniform(0.0, 0.03, (n, n, N)) * pro[:, :, None] * (1 - np.eye(n))[:, :, None],
    }
    p["eb"], p["eev"] = integrate(c, s, p)
    p["s_lo"] = np.maximum(s["lo"] - p["eb"], 0.0) * pro
    p["s_hi"] = np.maximum(p["eb"] - s["hi"], 0.0) * pro
    # the construction's own preconditions (MODEL §3): imports >= 0, EV energy within bounds
    ug = loop_import(c, s, p)
    assert ug.min() > 0 and np.all(p["eev"] <= s["eev_hi"]) and np.all(p["eev"] >= s["eev_lo"])
    return p


def as_plan(p):
    return Plan(**{f: jnp.asarray(p[f]) for f in FIELDS})


def loop_import(c, s, p, load=None):
    """Eq (10): ug_i = bc − bd − Σ_l bt_{l→i} + ul_i + ev; consumers ul_j − Σ_l bt_{l→j}."""
    ul = s["ul"] if load is None else load
    n, N = ul.shape
    ug = np.zeros((n, N))
    for i in range(n):
        for k in range(N):
            incoming = sum(p["bt"][l, i, k] for l in range(n) if l != i)
            if i in c.prosumers:
                ug[i, k] = p["bc"][i, k] - p["bd"][i, k] - incoming + ul[i, k] + p["ev"][i, k]
            else:
                ug[i, k] = ul[i, k] - incoming
    return ug


def loop_cost(c, w, s, p):
    """Φ = (1/n) Σ_i Φ_i of MODEL §4 (with the r_ugb, r_ev regularizations of ecjax.weights)."""
    n, N = p["bc"].shape
    ug = loop_import(c, s, p)
    phi = 0.0
    for i in range(n):
        phi_i = 0.0
        for k in range(N):
            ck = s["price"][k]
            phi_i += ck * c.dt * ug[i, k] - w.gamma * ck * c.dt * p["ugb"][i, k]
            phi_i += w.r_c * p["bc"][i, k] ** 2 + w.r_d * p["bd"][i, k] ** 2
            phi_i += w.r_t * sum(p["bt"][i, j, k] ** 2 for j in range(n))
            phi_i += w.r_ugb * p["ugb"][i, k] ** 2 + w.r_ev * p["ev"][i, k] ** 2
        if i in c.prosumers:  # consumers have no battery, EV or slack
            track = [
                w.delta_b * (float(c.eb_hi[i]) - p["eb"][i, k]) + w.delta_ev * (float(c.ev_daily[i]) - p["eev"][i, k])
                for k in range(N)
            ]  # states k = 1..N
            phi_i += sum(track) + w.w_T * track[-1]
            for k in range(N):
                lo, hi = p["s_lo"][i, k], p["s_hi"][i, k]
                phi_i += w.rho1 * (lo + hi) + w.rho2 * (lo**2 + hi**2)
        phi += phi_i / n  # α_i = 1/n
    return phi


@pytest.mark.parametrize("name", sorted(CASES))
def test_grid_import_is_eq_10(name):
    c, stage = make_case(name)
    s = np_stage(stage)
    p = planted_plan(c, stage)
    np.testing.assert_allclose(evaluate.grid_import(c, stage, as_plan(p)), loop_import(c, s, p), atol=TOL)
    other = s["ul"] * 1.7 + 0.1  # an explicit load replaces the forecast
    np.testing.assert_allclose(
        evaluate.grid_import(c, stage, as_plan(p), load=jnp.asarray(other)), loop_import(c, s, p, other), atol=TOL
    )


WEIGHTS = {
    "price_only": CostWeights(gamma=0.0, r_c=0, r_d=0, r_t=0, delta_b=0, delta_ev=0, w_T=0, rho1=0, rho2=0),
    "gamma": CostWeights(gamma=0.7, r_c=0, r_d=0, r_t=0, delta_b=0, delta_ev=0, w_T=0, rho1=0, rho2=0),
    "r_c": CostWeights(gamma=0.0, r_c=0.3, r_d=0, r_t=0, delta_b=0, delta_ev=0, w_T=0, rho1=0, rho2=0),
    "r_d": CostWeights(gamma=0.0, r_c=0, r_d=0.3, r_t=0, delta_b=0, delta_ev=0, w_T=0, rho1=0, rho2=0),
    "r_t": CostWeights(gamma=0.0, r_c=0, r_d=0, r_t=0.3, delta_b=0, delta_ev=0, w_T=0, rho1=0, rho2=0),
    "r_ugb": CostWeights(gamma=0.0, r_c=0, r_d=0, r_t=0, r_ugb=0.3, delta_b=0, delta_ev=0, w_T=0, rho1=0, rho2=0),
    "r_ev": CostWeights(gamma=0.0, r_c=0, r_d=0, r_t=0, r_ev=0.3, delta_b=0, delta_ev=0, w_T=0, rho1=0, rho2=0),
    "delta_b": CostWeights(gamma=0.0, r_c=0, r_d=0, r_t=0, delta_b=0.3, delta_ev=0, w_T=0, rho1=0, rho2=0),
    "delta_ev": CostWeights(gamma=0.0, r_c=0, r_d=0, r_t=0, delta_b=0, delta_ev=0.3, w_T=0, rho1=0, rho2=0),
    "terminal": CostWeights(gamma=0.0, r_c=0, r_d=0, r_t=0, delta_b=0.3, delta_ev=0.2, w_T=5.0, rho1=0, rho2=0),
    "rho1": CostWeights(gamma=0.0, r_c=0, r_d=0, r_t=0, delta_b=0, delta_ev=0, w_T=0, rho1=3.0, rho2=0),
    "rho2": CostWeights(gamma=0.0, r_c=0, r_d=0, r_t=0, delta_b=0, delta_ev=0, w_T=0, rho1=0, rho2=3.0),
    "defaults": CostWeights(),
    "all": CostWeights(gamma=0.5, r_c=0.1, r_d=0.2, r_t=0.3, r_ugb=0.05, r_ev=0.07, delta_b=0.4, delta_ev=0.6,
                       w_T=2.0, rho1=1.5, rho2=2.5),  # fmt: skip
}


@pytest.mark.parametrize("wname", sorted(WEIGHTS))
@pytest.mark.parametrize("name", sorted(CASES))
def test_cost_is_phi_of_model_term_by_term(name, wname):
    """Each weight alone (the others 0) isolates one term of Φ: a wrong sign, square, axis,
    efficiency or averaging in any term changes that case's number."""
    c, stage = make_case(name)
    s = np_stage(stage)
    # the cost needs no feasibility: every prosumer entry in [0.2, 1] makes every term visible
    rng = np.random.default_rng(5)
    n, N = s["ul"].shape
    p = {f: rng.uniform(0.2, 1.0, (n, n, N) if f == "bt" else (n, N)) for f in FIELDS}
    p["bt"] = p["bt"] * (1 - np.eye(n))[:, :, None] * c.is_prosumer[:, None, None]
    for f in FIELDS[:4] + FIELDS[5:]:  # all but bt
        p[f] = p[f] * c.is_prosumer[:, None]
    w = WEIGHTS[wname]
    want = loop_cost(c, w, s, p)
    got = float(evaluate.cost(c, w, stage, as_plan(p)))
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=TOL)
    if wname != "price_only":  # the term is visible: Φ differs from the price-only Φ
        assert abs(want - loop_cost(c, WEIGHTS["price_only"], s, p)) > 1e-6


def test_cost_of_an_idle_plan_is_the_load_bill_plus_the_tracking_gaps():
    """All inputs 0 and the states held at 0: Φ = (1/n)[Σ_i Σ_k c_k ul_ik + Σ_{i∈P} (N + w_T)
    (δ_b eb_hi_i + δ_ev e_daily_i)], by hand."""
    c, stage = make_case("mixed")
    s = np_stage(stage)
    n, N = s["ul"].shape
    w = CostWeights(delta_b=0.3, delta_ev=0.2, w_T=4.0)
    zero = {f: np.zeros((n, n, N) if f == "bt" else (n, N)) for f in FIELDS}
    bill = float((s["price"][None, :] * s["ul"]).sum())
    gaps = sum((N + 4.0) * (0.3 * float(c.eb_hi[i]) + 0.2 * float(c.ev_daily[i])) for i in c.prosumers)
    np.testing.assert_allclose(float(evaluate.cost(c, w, stage, as_plan(zero))), (bill + gaps) / n, rtol=1e-12)


def test_cost_uses_the_forecast_means_not_the_tightened_caps():
    """E[Φ] = Φ at the means (eq 19): the stage's risk level and consumer tightening do not
    change the cost of a plan."""
    c, a = make_case("mixed", delta=0.5)
    _, b = make_case("mixed", delta=0.01, tighten_consumers=True)
    p = as_plan(planted_plan(c, a))
    w = CostWeights()
    assert float(evaluate.cost(c, w, a, p)) == float(evaluate.cost(c, w, b, p))


FAMILIES = ("dyn_b", "dyn_ev", "bc", "bd", "ugb", "ev", "bt", "bt_self", "dis", "ug", "eev", "soft_lo",
            "soft_hi", "slack", "consumer_idle")  # fmt: skip


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("mode", ["cumulative", "per_step"])
def test_residuals_vanish_on_a_feasible_plan(name, mode):
    c, stage = make_case(name, tightening=mode)
    p = planted_plan(c, stage)
    r = evaluate.residuals(c, stage, as_plan(p))
    assert set(r) == set(FAMILIES)
    n, N = p["bc"].shape
    for k, v in r.items():
        assert v.shape == (n, N), k
        assert float(np.max(np.asarray(v))) <= TOL, k
        assert float(np.min(np.asarray(v))) >= 0.0, k  # violation amounts are >= 0
    assert float(evaluate.max_violation(r)) <= TOL


def violations(c, s, p):
    """(family, modified plan, expected family array) for one planted violation each.
    Agents: i a prosumer, j another agent; step k = N − 1 (the last, so that a state change
    affects one dynamics row only) and k0 = 0."""
    n, N = p["bc"].shape
    i = c.prosumers[-1]
    j = 0 if i != 0 else 1
    k, k0 = N - 1, 0
    out = []

    def case(family, where, amount, **changes):
        q = {f: v.copy() for f, v in p.items()}
        for f, fn in changes.items():
            fn(q[f])
        want = np.zeros((n, N))
        for (a, b), v in zip(where, amount):
            want[a, b] = v
        out.append((family, q, want))

    def put(idx, value):
        def fn(a):
            a[idx] = value

        return fn

    def add(idx, value):
        def fn(a):
            a[idx] += value

        return fn

    case("bc", [(i, k)], [0.3], bc=put((i, k), float(c.bc_max[i]) + 0.3))
    case("bc", [(i, k0)], [0.2], bc=put((i, k0), -0.2))
    case("bd", [(i, k)], [0.1], bd=put((i, k), float(c.bd_max[i]) + 0.1))
    case("ugb", [(i, k)], [0.25], ugb=put((i, k), float(c.ugb_max[i]) + 0.25))
    case("ugb", [(i, k0)], [0.05], ugb=put((i, k0), -0.05))
    case("ev", [(i, k)], [0.4], ev=put((i, k), s["ev_hi"][i, k] + 0.4))
    case("ev", [(i, k0)], [0.15], ev=put((i, k0), -0.15))
    case("bt", [(i, k)], [0.2], bt=put((i, j, k), float(c.bt_max[i]) + 0.2))
    case("bt", [(i, k0)], [0.07], bt=put((i, j, k0), -0.07))
    case("bt_self", [(i, k)], [0.3], bt=put((i, i, k), 0.3))
    # the joint discharge limit broken by 0.12 kW, each input within its own bound
    half = 0.5 * float(c.bd_max[i])
    case("dis", [(i, k)], [0.12], bd=put((i, k), half),
         ugb=put((i, k), half - sum(p["bt"][i, :, k]) / c.eta_t + 0.12))  # fmt: skip
    # a prosumer's import below 0: discharge its whole import and 0.1 kW more to its load
    ug_i = loop_import(c, s, p)[i, k]
    case("ug", [(i, k)], [0.1], bd=add((i, k), ug_i + 0.1))
    # a consumer receiving 0.1 kW more than its load
    if c.consumers:
        jc = c.consumers[0]
        ug_j = loop_import(c, s, p)[jc, k]
        case("ug", [(jc, k)], [0.1], bt=add((i, jc, k), ug_j + 0.1))
        case("consumer_idle", [(jc, k)], [0.2 + 0.3], bc=put((jc, k), 0.2), bt=put((jc, i, k), 0.3))
        case("consumer_idle", [(jc, k0)], [0.05 + 0.06], s_lo=put((jc, k0), 0.05), ev=put((jc, k0), -0.06))
    case("eev", [(i, k)], [0.2], eev=put((i, k), s["eev_hi"][i, k] + 0.2))
    case("eev", [(i, k0)], [0.3], eev=put((i, k0), -0.3))
    case("soft_lo", [(i, k)], [0.06], eb=put((i, k), s["lo"][i, k] - 0.1), s_lo=put((i, k), 0.04))
    case("soft_hi", [(i, k)], [0.09], eb=put((i, k), s["hi"][i, k] + 0.1), s_hi=put((i, k), 0.01))
    case("slack", [(i, k)], [0.05 + 0.02], s_lo=put((i, k), -0.05), s_hi=put((i, k), -0.02))
    # a state off its dynamics at step a: the rows of a and (if any) of a+1 differ by as much
    rows = [(i, k0)] + ([(i, k0 + 1)] if N > 1 else [])
    case("dyn_b", rows, [0.01] * len(rows), eb=add((i, k0), 0.01))
    case("dyn_ev", rows, [0.02] * len(rows), eev=add((i, k0), 0.02))
    # an input change that the state does not follow: eq (1) and eq (6) rows of that step only
    case("dyn_b", [(i, k)], [0.3 / c.eta_d], bd=add((i, k), 0.3))
    case("dyn_b", [(i, k)], [0.2 / c.eta_t], bt=add((i, j, k), 0.2))
    case("dyn_b", [(i, k)], [0.1 * c.eta_c], bc=add((i, k), 0.1))
    case("dyn_b", [(i, k)], [0.15], ugb=add((i, k), 0.15))
    case("dyn_ev", [(i, k)], [0.4 * c.eta_ev], ev=add((i, k), 0.4))
    return out


@pytest.mark.parametrize("name", sorted(CASES))
def test_each_planted_violation_is_measured_in_its_slot(name):
    c, stage = make_case(name)
    s = np_stage(stage)
    p = planted_plan(c, stage)
    for n_case, (family, q, want) in enumerate(violations(c, s, p)):
        r = evaluate.residuals(c, stage, as_plan(q))
        np.testing.assert_allclose(np.asarray(r[family]), want, atol=TOL, err_msg=f"{family} #{n_case}")
        assert float(evaluate.max_violation(r)) >= want.max() - TOL


def test_trades_off_make_every_trade_a_violation():
    c, stage = make_case("mixed")
    p = planted_plan(c, stage)
    r = evaluate.residuals(c, stage, as_plan(p), trades_on=False)
    np.testing.assert_allclose(np.asarray(r["bt"]), p["bt"].max(axis=1), atol=TOL)  # max over partners
    assert float(np.asarray(r["bt"]).max()) > 0
    r_on = evaluate.residuals(c, stage, as_plan(p), trades_on=True)
    assert float(np.asarray(r_on["bt"]).max()) == 0.0


def test_eev_must_meet_the_daily_energy_at_hour_24():
    """Horizon from hour 22 over 4 steps: state k = 2 is hour 24, where eev = e_daily (eq 9);
    a plan 0.5 kWh short there shows 0.5 at that step only."""
    kw, _ = CASES["mixed"]
    kw = dict(kw)
    n = kw.pop("n")
    c = generate_community(n, **kw)
    prof = synthetic_profiles(n, seed=kw["seed"])
    N, t = 4, 22
    ed = np.asarray(c.ev_daily)
    eev0 = ed - 2.0 * c.is_prosumer  # 2 kWh still due at 22:00
    stage = make_stage(c, prof, t, 0.5 * np.asarray(c.capacity), eev0, 0.05, N)
    s = np_stage(stage)
    p = {f: np.zeros((n, n, N) if f == "bt" else (n, N)) for f in FIELDS}
    # 1 kWh delivered in each of the hours 22 and 23: eev reaches e_daily at hour 24 and stays
    p["ev"][list(c.prosumers), :2] = 1.0 / c.eta_ev
    p["eb"], p["eev"] = integrate(c, s, p)
    p["s_lo"] = np.maximum(s["lo"] - p["eb"], 0.0) * c.is_prosumer[:, None]
    p["s_hi"] = np.maximum(p["eb"] - s["hi"], 0.0) * c.is_prosumer[:, None]
    assert np.all(s["ev_hi"][list(c.prosumers), :2] >= 1.0 / c.eta_ev)  # EVs are home by 22:00
    r = evaluate.residuals(c, stage, as_plan(p))
    assert float(evaluate.max_violation(r)) <= TOL
    i = c.prosumers[0]
    short = {f: v.copy() for f, v in p.items()}
    short["ev"][i, 1] -= 0.5 / c.eta_ev
    short["eb"], short["eev"] = integrate(c, s, short)
    r = evaluate.residuals(c, stage, as_plan(short))
    want = np.zeros((n, N))
    want[i, 1] = 0.5  # the deadline step; the next day's steps have no lower bound
    np.testing.assert_allclose(np.asarray(r["eev"]), want, atol=TOL)


def test_tightened_consumer_cap_enters_the_import_residual():
    """With the optional consumer tightening, delivering a consumer its whole forecast load
    leaves it min(z σ_ul, μ_ul) short of the import floor (MODEL §5)."""
    delta = 0.05
    c, stage = make_case("mixed", delta=delta, tighten_consumers=True)
    s = np_stage(stage)
    p = planted_plan(c, stage)
    jc, i, k = c.consumers[0], c.prosumers[0], 2
    others = sum(p["bt"][l, jc, k] for l in range(c.n) if l not in (i, jc))
    p["bt"][i, jc, k] = s["ul"][jc, k] - others  # incoming = forecast load
    r = evaluate.residuals(c, stage, as_plan(p))
    want = min(norm.ppf(1 - delta) * float(stage.win.ul_sd[jc, k]), s["ul"][jc, k])
    np.testing.assert_allclose(float(r["ug"][jc, k]), want, rtol=1e-12)
    r_plain = evaluate.residuals(c, make_case("mixed", delta=delta)[1], as_plan(p))
    assert float(r_plain["ug"][jc, k]) <= TOL
