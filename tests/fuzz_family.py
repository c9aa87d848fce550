"""The QP family of ecjax's controllers, drawn at random, and an independent reference for it.

A *structure* is what a controller compiles once: the QP kind, the n agents and which of them
are prosumers, the horizon N, the cost weights and the efficiencies (they enter P and A). An
*instance* is everything that enters q, lo, hi: the community's per-agent parameters, the
disturbance profiles and prices, the MPC stage (start hour, measured states, risk level δ,
tightening mode) and, for the FC-MPC subproblem, the other agents' plan. Instances are drawn
with degenerate corners on purpose: zero limits and zero PV, flat or zero prices, an EV at
its deadline or with no slack left to meet it, empty tightened bands (large σ, small δ),
trade caps used up exactly by the other agents.

Three QP kinds (MODEL §6):
  island    agent QP with trades off, the others at the zero plan (FC-MPC iterate 0)
  fcmpc     agent QP with trades on, the others fixed at a jointly feasible plan
  central   every prosumer's variables at once

`reference` writes MODEL §3-§5 for the free agents as a sparse QP (its own variables and rows;
neither ecjax.ocp nor ecjax's layout) and solves it with Clarabel. `phi` and `violation`
evaluate plans with MODEL's equations (numpy, over a leading batch axis).
"""

from __future__ import annotations

import dataclasses

import clarabel
import jax
import jax.numpy as jnp
import numpy as np
import scipy.sparse as sp

from ecjax.community import HOURS, make_community
from ecjax.disturbance import make_profiles, synthetic_profiles
from ecjax.plan import Plan, make_stage
from ecjax.weights import CostWeights

KINDS = ("island", "fcmpc", "central")
WEIGHT_NAMES = ("r_c", "r_d", "r_t", "r_ugb", "r_ev", "rho1", "rho2", "delta_b", "delta_ev", "w_T")
WEIGHT_VALUES = (0.0,) + tuple(10.0**k for k in range(-9, 4))  # 0, 1e-9, 1e-8, ..., 1e3
GAMMA_VALUES = (0.0, 1e-9, 1e-6, 1e-3, 0.1, 0.5, 0.9, 0.999)
ETAS = ((0.945, 0.945, 0.93, 0.95), (1.0, 1.0, 1.0, 1.0), (0.5, 0.8, 0.6, 0.7), (0.99, 0.3, 0.95, 1.0))
PLAN_FIELDS = ("bc", "bd", "ugb", "ev", "eb", "eev", "s_lo", "s_hi")


@dataclasses.dataclass(frozen=True)
class Structure:
    kind: str
    n: int
    prosumers: tuple[int, ...]
    N: int
    weights: CostWeights
    eta: tuple[float, float, float, float]  # η_c, η_d, η_t, η_ev

    @property
    def trades_on(self) -> bool:
        return self.kind != "island"

    def describe(self) -> str:
        w = {k: getattr(self.weights, k) for k in ("gamma",) + WEIGHT_NAMES}
        return f"{self.kind} n={self.n} prosumers={self.prosumers} N={self.N} eta={self.eta} weights={w}"


@dataclasses.dataclass
class Batch:
    """B instances of one structure: ecjax's pytrees (stacked) and the same data as numpy."""

    s: Structure
    community: object  # ecjax Community, leaves stacked over the batch
    stage: object  # ecjax Stage, stacked
    others: Plan  # fixed agents' plan (zero plan for island and central), stacked
    agent: np.ndarray  # (B,) the free prosumer of an agent QP
    feasible: np.ndarray  # (B,) False: drawn infeasible on purpose
    d: dict  # numpy data of MODEL §2-§5, leading axis B

    @property
    def B(self) -> int:
        return len(self.agent)

    @property
    def checked(self) -> np.ndarray:
        """(B, n): the agents whose constraints a plan of this batch must meet (islanded: the
        free agent alone; the others sit at the zero plan, which is no plan of theirs)."""
        if self.s.kind != "island":
            return np.ones((self.B, self.s.n), bool)
        return np.arange(self.s.n)[None, :] == self.agent[:, None]

    def free(self, b: int) -> list[int]:
        return list(self.s.prosumers) if self.s.kind == "central" else [int(self.agent[b])]

    def fixed(self, b: int) -> dict:
        return {k: np.asarray(getattr(self.others, k)[b], np.float64) for k in PLAN_FIELDS + ("bt",)}


# ------------------------------------------------------------------------------- drawing
def _pick(rng, options, p=None):
    return options[rng.choice(len(options), p=p)]


def _per_agent(rng, n, lo, hi, p_zero):
    v = rng.uniform(lo, hi, n)
    v[rng.random(n) < p_zero] = 0.0
    return v


def _community(rng, s: Structure):
    n = s.n
    avail = np.zeros((n, HOURS))
    for i in range(n):
        style = rng.integers(4)
        if style == 0:  # overnight at home, as generate_community draws it
            avail[i, : rng.integers(4, 11)] = 1.0
            avail[i, rng.integers(15, 23) :] = 1.0
        elif style == 1:
            avail[i] = rng.random(HOURS) < rng.uniform(0.1, 1.0)
        elif style == 2:
            avail[i] = 1.0
        # style 3: never available (its daily energy is then 0)
    ev_max = _per_agent(rng, n, 0.5, 7.0, 0.05)
    deliverable = avail.sum(axis=1) * ev_max * s.eta[3]
    frac = np.array([_pick(rng, (0.0, 1.0, rng.uniform(0.0, 0.95))) for _ in range(n)])
    frac = np.minimum(frac, 40.0 / np.maximum(deliverable, 1e-300))  # at most 40 kWh a day
    lo_frac = rng.uniform(0.0, 0.5, n)
    return make_community(
        prosumers=s.prosumers,
        capacity=rng.uniform(0.5, 10.0, n),
        eb_lo_frac=lo_frac,
        eb_hi_frac=np.minimum(lo_frac + rng.uniform(0.01, 1.0, n), 1.0),
        bc_max=_per_agent(rng, n, 0.0, 4.0, 0.1),
        bd_max=_per_agent(rng, n, 0.0, 4.0, 0.1),
        bt_max=_per_agent(rng, n, 0.0, 3.0, 0.2),
        ugb_max=_per_agent(rng, n, 0.0, 3.0, 0.2),
        pv_area=_per_agent(rng, n, 0.0, 25.0, 0.1),
        ev_daily=frac * deliverable,
        ev_max=ev_max,
        ev_avail=avail,
        eta_c=s.eta[0],
        eta_d=s.eta[1],
        eta_t=s.eta[2],
        eta_ev=s.eta[3],
    )


def _profiles(rng, n):
    p = synthetic_profiles(n, seed=int(rng.integers(2**31)), price_mean=rng.uniform(0.05, 0.6))
    irr = p.irr_mu * _pick(rng, (0.0, rng.uniform(0.3, 1.5)), p=(0.15, 0.85))  # 0: no PV at all
    sd_scale = _pick(rng, (0.0, 1.0, 5.0, 50.0), p=(0.1, 0.5, 0.25, 0.15))  # large: empty bands
    ul = p.ul_mu * rng.uniform(0.1, 3.0, (n, 1))
    kind = rng.integers(4)
    if kind == 0:
        price = p.price
    elif kind == 1:  # flat: every hour ties with every other
        price = np.full(HOURS, rng.uniform(0.0, 0.6))
    else:  # random, some hours free
        price = rng.uniform(0.0, 0.6, HOURS) * (rng.random(HOURS) > 0.15)
    return make_profiles(
        irr, irr * rng.uniform(0.0, 0.5) * sd_scale, ul, ul * rng.uniform(0.0, 0.5) * sd_scale, price
    )


def _stack(trees):
    return jax.tree_util.tree_map(lambda *v: np.stack([np.asarray(x) for x in v]), *trees)


def _stage_fn(N, mode):
    return jax.jit(jax.vmap(lambda c, p, t, eb0, eev0, delta: make_stage(c, p, t, eb0, eev0, delta, N, mode)))


_STAGE_FNS: dict = {}


def draw_batch(s: Structure, seed: int, B: int, infeasible_share: float = 0.05) -> Batch:
    """B random instances of structure `s` (numpy seed `seed`); about `infeasible_share` of
    them made primal infeasible on purpose (an EV that can no longer meet its daily energy,
    or one already past it)."""
    rng = np.random.default_rng(seed)
    n, N = s.n, s.N
    pro = np.zeros(n, bool)
    pro[list(s.prosumers)] = True
    cs, ps, t, eb0, eev0, delta, mode, agent, feasible = [], [], [], [], [], [], [], [], []
    for _ in range(B):
        c = _community(rng, s)
        cs.append(c)
        ps.append(_profiles(rng, n))
        tb = int(_pick(rng, (23, rng.integers(0, HOURS)), p=(0.25, 0.75)))  # 23: the EV's last hour
        t.append(tb)
        cap = np.asarray(c.capacity)
        eb0.append(cap * np.array([_pick(rng, (0.0, 1.0, rng.uniform()), p=(0.1, 0.1, 0.8)) for _ in range(n)]))
        ev_daily = np.asarray(c.ev_daily)
        remaining = np.asarray(c.ev_avail)[:, tb:].sum(axis=1) * np.asarray(c.ev_max) * s.eta[3]
        if tb + N >= HOURS:  # the deadline (hour 24) is inside the horizon: leave enough time
            frac = np.array([_pick(rng, (0.0, 1.0, rng.uniform()), p=(0.2, 0.2, 0.6)) for _ in range(n)])
            e0 = ev_daily - np.minimum(ev_daily, frac * remaining)
        else:
            e0 = ev_daily * rng.uniform(0.0, 1.0, n)
        i = int(rng.choice(s.prosumers))
        ok = rng.random() >= infeasible_share
        if not ok:  # the free agent (any prosumer for the centralized QP) cannot be served
            if tb + N >= HOURS and remaining[i] + 0.05 < ev_daily[i]:
                e0[i] = ev_daily[i] - remaining[i] - rng.uniform(0.01, 1.0) * (ev_daily[i] - remaining[i])
            else:
                e0[i] = ev_daily[i] + rng.uniform(0.01, 1.0)
        eev0.append(np.where(pro, e0, 0.0))
        delta.append(_pick(rng, (0.5, 1e-6, 1e-3, rng.uniform(0.01, 0.5)), p=(0.2, 0.15, 0.15, 0.5)))
        mode.append(rng.integers(2))
        agent.append(i)
        feasible.append(ok)
    c_st, p_st = _stack(cs), _stack(ps)
    args = (c_st, p_st, np.array(t, np.int32), np.stack(eb0), np.stack(eev0), np.array(delta))
    stages = []
    for m in ("cumulative", "per_step"):
        if (N, m) not in _STAGE_FNS:
            _STAGE_FNS[N, m] = _stage_fn(N, m)
        stages.append(_STAGE_FNS[N, m](*args))
    pick = np.array(mode) == 1
    stage = jax.tree_util.tree_map(
        lambda a, b: np.where(pick.reshape((-1,) + (1,) * (np.ndim(a) - 1)), np.asarray(b), np.asarray(a)), *stages
    )
    d = _numpy_data(s, c_st, stage)
    zero = {k: np.zeros((B, n, N)) for k in PLAN_FIELDS}
    zero["bt"] = np.zeros((B, n, n, N))
    if s.kind == "fcmpc":
        others = [feasible_plan(rng, s, {k: v[b] for k, v in d.items()}) for b in range(B)]
        others = {k: np.stack([o[k] for o in others]) for k in zero}
        v = violation(s, d, others, trades_on=True)[np.array(feasible)]
        assert v.max(initial=0.0) <= 1e-9, ("the drawn plan of the other agents is infeasible", v.max())
    else:
        others = zero
    return Batch(
        s=s, community=c_st, stage=stage, others=Plan(**{k: jnp.asarray(v) for k, v in others.items()}),
        agent=np.array(agent), feasible=np.array(feasible), d=d,
    )  # fmt: skip


def _numpy_data(s: Structure, c, stage) -> dict:
    """The data of MODEL §2-§5 per instance (leading axis B)."""
    f = lambda a: np.asarray(a, np.float64)  # noqa: E731
    pv = (c.eta_pv * f(c.pv_area) / 1000.0)[:, :, None] * f(stage.win.irr_mu)[:, None, :]  # kW: η_pv a_i ϖ / 1000
    return dict(
        price=f(stage.win.price), ul=f(stage.win.ul_mu), ul_cap=f(stage.ul_cap), pv=pv,
        band_lo=f(stage.band.lo), band_hi=f(stage.band.hi), ev_hi=f(stage.ev_hi),
        eev_lo=f(stage.eev_lo), eev_hi=f(stage.eev_hi), eb0=f(stage.eb0), eev0=f(stage.eev0),
        bc_max=f(c.bc_max), bd_max=f(c.bd_max), bt_max=f(c.bt_max), ugb_max=f(c.ugb_max),
        eb_hi=f(c.eb_hi), ev_daily=f(c.ev_daily),
    )  # fmt: skip


def feasible_plan(rng, s: Structure, d: dict) -> dict:
    """A random plan of every agent that meets MODEL §3 and the soft bounds (slacks set to the
    bands' violation): prosumers' inputs drawn inside their limits, the EV charged to its
    daily energy where the deadline is in the horizon, trades scaled down until every
    receiver's import is >= 0 (often exactly 0) and every battery's discharge limit holds."""
    n, N = s.n, s.N
    eta_c, eta_d, eta_t, eta_ev = s.eta
    pro = np.zeros(n, bool)
    pro[list(s.prosumers)] = True
    P = pro[:, None].astype(float)

    def u(hi, p_zero=0.2):
        v = hi * rng.uniform(0.0, 1.0, (n, N))
        return v * (rng.random((n, N)) > p_zero) * P

    ev = np.zeros((n, N))
    for i in s.prosumers:
        hi = d["ev_hi"][i]
        room = d["eev_hi"][i, -1] - d["eev0"][i]  # eev stays <= e_daily
        need = max(d["eev_lo"][i].max() - d["eev0"][i], 0.0)  # e_daily at the deadline
        target = need if need > 0 else rng.uniform(0.0, 1.0) * min(room, eta_ev * hi.sum())
        if rng.random() < 0.5 and hi.sum() > 0:  # as late and as evenly as possible
            ev[i] = hi * min(target / (eta_ev * hi.sum()), 1.0)
        else:  # earliest hours at the limit
            left = target
            for k in range(N):
                ev[i, k] = min(hi[k], left / eta_ev)
                left -= eta_ev * ev[i, k]
    bc, bd, ugb = u(d["bc_max"][:, None]), u(d["bd_max"][:, None]), u(d["ugb_max"][:, None])
    bd = np.minimum(bd, bc + ev + d["ul"])  # own import >= 0 before any trade arrives
    bt = d["bt_max"][:, None, None] * rng.uniform(0.0, 1.0, (n, n, N)) * (rng.random((n, n, 1)) > 0.3)
    bt *= P[:, :, None] * (1.0 - np.eye(n))[:, :, None]
    room = np.where(pro[:, None], bc - bd + ev + d["ul"], d["ul_cap"])  # what each agent may receive
    into = bt.sum(axis=0)
    scale = np.where(into > room, room / np.where(into > 0, into, 1.0), 1.0)
    bt *= scale[None]
    out = bd + bt.sum(axis=1) / eta_t + ugb
    scale = np.where(out > d["bd_max"][:, None], d["bd_max"][:, None] / np.where(out > 0, out, 1.0), 1.0)
    bd, ugb, bt = bd * scale, ugb * scale, bt * scale[:, None, :]
    eb = d["eb0"][:, None] + np.cumsum(eta_c * bc - bd / eta_d - bt.sum(axis=1) / eta_t - ugb + d["pv"], axis=1)
    eev = d["eev0"][:, None] + np.cumsum(eta_ev * ev, axis=1)
    eb, eev = eb * P, eev * P
    s_lo = np.maximum(d["band_lo"] - eb, 0.0) * P
    s_hi = np.maximum(eb - d["band_hi"], 0.0) * P
    return dict(bc=bc, bd=bd, ugb=ugb, ev=ev * P, bt=bt, eb=eb, eev=eev, s_lo=s_lo, s_hi=s_hi)


# ----------------------------------------------------------------------- MODEL's equations
def phi(s: Structure, d: dict, plan: dict) -> np.ndarray:
    """Φ = (1/n) Σ_i Φ_i of MODEL §4 at the forecast means, per instance."""
    w = s.weights
    pro = np.zeros(s.n)
    pro[list(s.prosumers)] = 1.0
    c = d["price"][:, None, :]
    ug = plan["bc"] - plan["bd"] - plan["bt"].sum(axis=-3) + d["ul"] + plan["ev"]
    stage = (
        c * ug - w.gamma * c * plan["ugb"] + w.r_c * plan["bc"] ** 2 + w.r_d * plan["bd"] ** 2
        + w.r_t * (plan["bt"] ** 2).sum(axis=-2) + w.r_ugb * plan["ugb"] ** 2 + w.r_ev * plan["ev"] ** 2
    )  # fmt: skip
    track = w.delta_b * (d["eb_hi"][..., None] - plan["eb"]) + w.delta_ev * (d["ev_daily"][..., None] - plan["eev"])
    slack = w.rho1 * (plan["s_lo"] + plan["s_hi"]) + w.rho2 * (plan["s_lo"] ** 2 + plan["s_hi"] ** 2)
    own = track.sum(axis=-1) + w.w_T * track[..., -1] + slack.sum(axis=-1)
    return (stage.sum(axis=-1) + pro * own).mean(axis=-1)


def violation(s: Structure, d: dict, plan: dict, trades_on: bool, agents=None) -> np.ndarray:
    """Largest violation of MODEL §3 and §5's soft bounds, per instance (0 when feasible), over
    the rows of `agents` ((B, n) mask; None: every agent)."""
    eta_c, eta_d, eta_t, eta_ev = s.eta
    pro = np.zeros(s.n, bool)
    pro[list(s.prosumers)] = True
    P = pro[:, None]
    pos = lambda x: np.maximum(x, 0.0)  # noqa: E731
    bc, bd, ugb, ev, bt, eb, eev = (plan[k] for k in ("bc", "bd", "ugb", "ev", "bt", "eb", "eev"))
    s_lo, s_hi = plan["s_lo"], plan["s_hi"]
    sent = bt.sum(axis=-2) / eta_t
    eb_prev = np.concatenate([d["eb0"][..., None], eb[..., :-1]], axis=-1)
    eev_prev = np.concatenate([d["eev0"][..., None], eev[..., :-1]], axis=-1)
    col = lambda k: d[k][..., None]  # noqa: E731
    bt_max = d["bt_max"][..., None, None] if trades_on else 0.0
    into = bt.sum(axis=-3)
    ug = np.where(P, bc - bd + ev + d["ul"], d["ul_cap"]) - into
    fam = [
        np.where(P, np.abs(eb - eb_prev - (eta_c * bc - bd / eta_d - sent - ugb + d["pv"])), 0.0),  # (1)
        np.where(P, np.abs(eev - eev_prev - eta_ev * ev), 0.0),  # (6)
        pos(-bc) + pos(bc - col("bc_max")),  # (3)
        pos(-bd) + pos(bd - col("bd_max")),  # (4)
        pos(-ugb) + pos(ugb - col("ugb_max")),
        pos(-ev) + pos(ev - d["ev_hi"]),  # (8)
        (pos(-bt) + pos(bt - bt_max)).max(axis=-2),  # (5)
        pos(bd + sent + ugb - col("bd_max")),  # one discharge limit
        pos(-ug),  # (10), (11)
        np.where(P, pos(d["eev_lo"] - eev) + pos(eev - d["eev_hi"]), 0.0),  # (7), (9)
        np.where(P, pos(d["band_lo"] - s_lo - eb) + pos(eb - s_hi - d["band_hi"]), 0.0),  # (17), (18)
        pos(-s_lo) + pos(-s_hi),
        np.where(P, 0.0, np.abs(bc) + np.abs(bd) + np.abs(ugb) + np.abs(ev) + np.abs(s_lo) + np.abs(s_hi)),
        np.abs(np.diagonal(bt, axis1=-3, axis2=-2)).swapaxes(-1, -2) + np.where(P, 0.0, np.abs(bt).sum(axis=-2)),
    ]
    per_agent = np.max(np.stack([np.broadcast_to(f, ug.shape).max(axis=-1) for f in fam]), axis=0)
    return np.max(per_agent, axis=-1, where=True if agents is None else agents, initial=0.0)


# ------------------------------------------------------------------------- the reference
class _Rows:
    """Rows a x (=, <=) b as COO triplets."""

    def __init__(self):
        self.r, self.c, self.v, self.b, self.m = [], [], [], [], 0

    def new(self, rhs):
        rhs = np.asarray(rhs, np.float64)
        ids = self.m + np.arange(rhs.size)
        self.m += rhs.size
        self.b.append(rhs)
        return ids

    def add(self, ids, cols, vals):
        self.r.append(np.asarray(ids))
        self.c.append(np.asarray(cols))
        self.v.append(np.broadcast_to(np.asarray(vals, np.float64), np.shape(ids)))


def reference(s: Structure, d: dict, free, fixed: dict, trades_on: bool, tol: float = 1e-10):
    """min Φ over the variables of the agents `free` (the others at `fixed`, a numpy plan of one
    instance), with Clarabel. Returns (status, plan, objective of the QP, constant part of Φ):
    Φ(plan) = objective + constant."""
    n, N = s.n, s.N
    eta_c, eta_d, eta_t, eta_ev = s.eta
    w, a = s.weights, 1.0 / n
    pro = set(s.prosumers)
    free = list(free)
    nv = 0
    var = {}
    for f in free:  # time-major blocks of N per (agent, input/state)
        for name in PLAN_FIELDS:
            var[f, name] = np.arange(nv, nv + N)
            nv += N
        if trades_on:
            for j in range(n):
                if j != f:
                    var[f, "bt", j] = np.arange(nv, nv + N)
                    nv += N
    P = np.zeros(nv)
    q = np.zeros(nv)
    eq, le = _Rows(), _Rows()
    k = np.arange(N)
    c = d["price"]
    end = np.zeros(N)
    end[-1] = w.w_T
    for f in free:
        x = lambda name: var[f, name]  # noqa: E731
        bts = [var[f, "bt", j] for j in range(n) if j != f] if trades_on else []
        # (1): eb[k] − eb[k−1] − (η_c bc − bd/η_d − Σ bt/η_t − ugb) = pv[k] (+ eb0 at k = 0)
        r = eq.new(d["pv"][f] + np.where(k == 0, d["eb0"][f], 0.0))
        eq.add(r, x("eb"), 1.0)
        eq.add(r[1:], x("eb")[:-1], -1.0)
        eq.add(r, x("bc"), -eta_c)
        eq.add(r, x("bd"), 1.0 / eta_d)
        eq.add(r, x("ugb"), 1.0)
        for bt in bts:
            eq.add(r, bt, 1.0 / eta_t)
        # (6): eev[k] − eev[k−1] − η_ev ev = eev0 at k = 0
        r = eq.new(np.where(k == 0, d["eev0"][f], 0.0))
        eq.add(r, x("eev"), 1.0)
        eq.add(r[1:], x("eev")[:-1], -1.0)
        eq.add(r, x("ev"), -eta_ev)
        # limits (3)-(5), (8), eev (7)/(9), slacks >= 0
        for name, hi in (("bc", d["bc_max"][f]), ("bd", d["bd_max"][f]), ("ugb", d["ugb_max"][f]), ("ev", d["ev_hi"][f])):
            le.add(le.new(np.broadcast_to(hi, (N,))), x(name), 1.0)
            le.add(le.new(np.zeros(N)), x(name), -1.0)
        for bt in bts:
            le.add(le.new(np.full(N, d["bt_max"][f])), bt, 1.0)
            le.add(le.new(np.zeros(N)), bt, -1.0)
        le.add(le.new(d["eev_hi"][f]), x("eev"), 1.0)
        le.add(le.new(-d["eev_lo"][f]), x("eev"), -1.0)
        le.add(le.new(np.zeros(N)), x("s_lo"), -1.0)
        le.add(le.new(np.zeros(N)), x("s_hi"), -1.0)
        # one discharge limit: bd + Σ bt/η_t + ugb <= bd_max
        r = le.new(np.full(N, d["bd_max"][f]))
        le.add(r, x("bd"), 1.0)
        le.add(r, x("ugb"), 1.0)
        for bt in bts:
            le.add(r, bt, 1.0 / eta_t)
        # soft bounds (17), (18): eb + s_lo >= band_lo, eb − s_hi <= band_hi
        r = le.new(-d["band_lo"][f])
        le.add(r, x("eb"), -1.0)
        le.add(r, x("s_lo"), -1.0)
        r = le.new(d["band_hi"][f])
        le.add(r, x("eb"), 1.0)
        le.add(r, x("s_hi"), -1.0)
        # cost (MODEL §4): own import and sales, quadratic weights, tracking, slacks
        q[x("bc")] += a * c
        q[x("bd")] -= a * c
        q[x("ev")] += a * c
        q[x("ugb")] -= a * w.gamma * c
        q[x("eb")] -= a * w.delta_b * (1.0 + end)
        q[x("eev")] -= a * w.delta_ev * (1.0 + end)
        q[x("s_lo")] += a * w.rho1
        q[x("s_hi")] += a * w.rho1
        for name, r_ in (("bc", w.r_c), ("bd", w.r_d), ("ugb", w.r_ugb), ("ev", w.r_ev), ("s_lo", w.rho2), ("s_hi", w.rho2)):
            P[x(name)] += 2 * a * r_
        for bt in bts:
            P[bt] += 2 * a * w.r_t
            q[bt] -= a * c  # the receiver imports that much less
    # (10)-(11): ug_j >= 0 of every agent whose import a free variable changes
    for j in range(n):
        senders = [f for f in free if f != j] if trades_on else []
        if j not in free and not senders:
            continue
        inc = sum(fixed["bt"][l_, j] for l_ in range(n) if l_ != j and l_ not in free)
        if j in free:
            base = d["ul"][j] - inc  # ug_j = bc − bd + ev + base − Σ_free bt_{f→j}
        elif j in pro:
            base = fixed["bc"][j] - fixed["bd"][j] + fixed["ev"][j] + d["ul"][j] - inc
        else:
            base = d["ul_cap"][j] - inc
        r = le.new(base)  # −(free part of ug_j) <= base
        if j in free:
            le.add(r, var[j, "bc"], -1.0)
            le.add(r, var[j, "bd"], 1.0)
            le.add(r, var[j, "ev"], -1.0)
        for f in senders:
            le.add(r, var[f, "bt", j], 1.0)
    A = sp.vstack(
        [sp.coo_matrix((np.concatenate(R.v), (np.concatenate(R.r), np.concatenate(R.c))), shape=(R.m, nv)) for R in (eq, le)]
    ).tocsc()
    b = np.concatenate(eq.b + le.b)
    st = clarabel.DefaultSettings()
    st.verbose = False
    st.tol_gap_abs = st.tol_gap_rel = st.tol_feas = tol
    st.tol_ktratio = 1e-8
    st.max_iter = 300
    sol = clarabel.DefaultSolver(sp.diags(P).tocsc(), q, A, b, [clarabel.ZeroConeT(eq.m), clarabel.NonnegativeConeT(le.m)], st).solve()
    status = str(sol.status)
    plan = {key: np.array(v, np.float64) for key, v in fixed.items()}
    xs = np.asarray(sol.x)
    zero = {key: np.array(v, np.float64) for key, v in fixed.items()}
    for f in free:
        for name in PLAN_FIELDS:
            plan[name][f] = xs[var[f, name]]
            zero[name][f] = 0.0
        plan["bt"][f] = 0.0
        zero["bt"][f] = 0.0
        if trades_on:
            for j in range(n):
                if j != f:
                    plan["bt"][f, j] = xs[var[f, "bt", j]]
    one = {key: v[None] for key, v in d.items()}
    const = float(phi(s, one, {key: v[None] for key, v in zero.items()})[0])
    return status, plan, float(sol.obj_val), const
