"""The QPs of one MPC step in canonical form  min ½xᵀPx + qᵀx  s.t.  lo <= A x <= hi.

Two problems (MODEL §4, §6):
- the FC-MPC subproblem of prosumer i: the GLOBAL cost Φ over i's own variables, every other
  agent fixed at the previous iterate, with the `ug_j >= 0` rows of every agent it sends to;
- the centralized problem: every prosumer's variables at once.

P and A depend only on the structure (n, N, prosumer set, efficiencies, weights) and are built
once on the host (`agent_structure`, `centralized_structure`); everything that changes between
samples, risk levels, MPC steps and FC-MPC iterations goes into q, lo, hi, built in JAX for one
instance (`agent_qp`, `centralized_qp`) and vmapped at the edge.

Rows of the agent QP, in order (each block N rows unless noted):
  box      one row per variable except eb: input limits (3)-(5), (8); 0 <= eev <= e_daily with
           eev = e_daily at hour 24 (7), (9); slacks >= 0                       [nx - N rows]
  recv     bt_{i->j}[k] <= cap_j[k]: ug_j >= 0 of each partner j (10)-(11)     [(n-1)·N rows]
  dyn_b    eb[k+1] − eb[k] − Δt(η_c bc − bd/η_d − Σ_j bt_j/η_t − ugb) = Δt·pv[k]   (1)
  dyn_ev   eev[k+1] − eev[k] − Δt η_ev ev = 0                                      (6)
  dis      bd + Σ_j bt_j/η_t + ugb <= bd_max                                        (MODEL §3)
  own_ug   bc − bd + ev >= Σ_l bt_{l->i} − ul_i      (ug_i >= 0)                    (10)-(11)
  soft_lo  eb + s_lo >= eb_lo + z s                                                 (17)
  soft_hi  eb − s_hi <= eb_hi − z s                                                 (18)
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np
import scipy.sparse as sp
from jaxtyping import Array, Float

from .community import Community
from .layout import AgentLayout
from .plan import Plan, Stage, partner_table
from .weights import CostWeights


@dataclasses.dataclass(frozen=True)
class AgentRows:
    """Row offsets of the agent QP (see module docstring)."""

    lay: AgentLayout
    with_recv: bool = True  # the centralized problem has no recv rows

    @property
    def n_box(self) -> int:
        return self.lay.nx - self.lay.N

    @property
    def recv(self) -> slice:
        return slice(self.n_box, self.n_box + (self.lay.m * self.lay.N if self.with_recv else 0))

    def _c(self, b: int) -> slice:
        start = self.recv.stop + b * self.lay.N
        return slice(start, start + self.lay.N)

    dyn_b = property(lambda self: self._c(0))
    dyn_ev = property(lambda self: self._c(1))
    dis = property(lambda self: self._c(2))
    own_ug = property(lambda self: self._c(3))
    soft_lo = property(lambda self: self._c(4))
    soft_hi = property(lambda self: self._c(5))

    @property
    def m(self) -> int:
        return self.soft_hi.stop

    def box_vars(self) -> np.ndarray:
        """Variables with a box row: all but eb."""
        lay = self.lay
        idx = np.arange(lay.nx)
        return idx[(idx < lay.eb.start) | (idx >= lay.eb.stop)]


@dataclasses.dataclass(frozen=True)
class QPStructure:
    """The batch-shared part of a QP: diagonal P and sparse A (host side, numpy/scipy)."""

    P_diag: np.ndarray
    A: sp.csr_matrix

    @property
    def P(self) -> sp.csr_matrix:
        return sp.diags(self.P_diag).tocsr()

    @property
    def shape(self) -> tuple[int, int]:
        return self.A.shape


def _agent_P(lay: AgentLayout, w: CostWeights, alpha: float) -> np.ndarray:
    p = np.zeros(lay.nx)
    p[lay.bc] = 2 * alpha * w.r_c
    p[lay.bd] = 2 * alpha * w.r_d
    p[lay.ugb] = 2 * alpha * w.r_ugb
    p[lay.ev] = 2 * alpha * w.r_ev
    p[lay.bt] = 2 * alpha * w.r_t
    p[lay.s_lo] = 2 * alpha * w.rho2
    p[lay.s_hi] = 2 * alpha * w.rho2
    return p


def _agent_blocks(c: Community, lay: AgentLayout, rows: AgentRows, col0: int = 0, row0: int = 0):
    """COO triplets of one prosumer's own rows (box, dyn_b, dyn_ev, dis, soft_lo, soft_hi)
    at column offset col0 / row offset row0; `recv` and `own_ug` are added by the caller."""
    N, m, dt = lay.N, lay.m, c.dt
    r, col, v = [], [], []

    def add(rr, cc, vv):
        r.append(row0 + np.asarray(rr))
        col.append(col0 + np.asarray(cc))
        v.append(np.broadcast_to(np.asarray(vv, dtype=np.float64), np.shape(rr)))

    box = rows.box_vars()
    add(np.arange(box.size), box, 1.0)
    k = np.arange(N)
    for rs, var in ((rows.dyn_b, lay.eb), (rows.dyn_ev, lay.eev)):
        add(rs.start + k, var.start + k, 1.0)  # x[k+1]
        add(rs.start + k[1:], var.start + k[:-1], -1.0)  # − x[k]
    dyn = rows.dyn_b.start + k
    add(dyn, lay.bc.start + k, -dt * c.eta_c)
    add(dyn, lay.bd.start + k, dt / c.eta_d)
    add(dyn, lay.ugb.start + k, dt)
    for jj in range(m):
        add(dyn, lay.bt.start + jj * N + k, dt / c.eta_t)
    add(rows.dyn_ev.start + k, lay.ev.start + k, -dt * c.eta_ev)
    dis = rows.dis.start + k
    add(dis, lay.bd.start + k, 1.0)
    add(dis, lay.ugb.start + k, 1.0)
    for jj in range(m):
        add(dis, lay.bt.start + jj * N + k, 1.0 / c.eta_t)
    add(rows.soft_lo.start + k, lay.eb.start + k, 1.0)
    add(rows.soft_lo.start + k, lay.s_lo.start + k, 1.0)
    add(rows.soft_hi.start + k, lay.eb.start + k, 1.0)
    add(rows.soft_hi.start + k, lay.s_hi.start + k, -1.0)
    own = rows.own_ug.start + k
    add(own, lay.bc.start + k, 1.0)
    add(own, lay.bd.start + k, -1.0)
    add(own, lay.ev.start + k, 1.0)
    return r, col, v


def agent_structure(c: Community, N: int, w: CostWeights) -> QPStructure:
    """P and A of the FC-MPC subproblem; the same for every prosumer of the community."""
    lay = AgentLayout(c.n, N)
    rows = AgentRows(lay)
    r, col, v = _agent_blocks(c, lay, rows)
    k = np.arange(N)
    for jj in range(lay.m):  # recv: bt_{i->j}[k] <= cap
        r.append(rows.recv.start + jj * N + k)
        col.append(lay.bt.start + jj * N + k)
        v.append(np.ones(N))
    A = sp.csr_matrix(
        (np.concatenate(v), (np.concatenate(r), np.concatenate(col))), shape=(rows.m, lay.nx)
    )
    return QPStructure(P_diag=_agent_P(lay, w, 1.0 / c.n), A=A)


def _agent_q(c: Community, w: CostWeights, stage: Stage, lay: AgentLayout) -> Array:
    """Linear cost of prosumer i's variables in Φ = (1/n) Σ_j Φ_j (MODEL §4)."""
    alpha, N = 1.0 / c.n, lay.N
    cdt = alpha * stage.win.price * c.dt
    tail = jnp.zeros(N).at[N - 1].set(w.w_T)  # terminal weight on the last state
    parts = [
        cdt,  # bc: bought through i's meter
        -cdt,  # bd: serves i's load
        -w.gamma * cdt,  # ugb: sold at γ c
        cdt,  # ev: bought through i's meter
        jnp.tile(-cdt, lay.m),  # bt_{i->j}: saves j's purchase c·bt (j's meter)
        -alpha * w.delta_b * (1.0 + tail),  # eb tracking toward eb_hi
        -alpha * w.delta_ev * (1.0 + tail),  # eev tracking toward e_daily
        jnp.full(N, alpha * w.rho1),
        jnp.full(N, alpha * w.rho1),
    ]
    return jnp.concatenate(parts)


def _own_bounds(c: Community, stage: Stage, lay: AgentLayout, rows: AgentRows, i, trades_on):
    """lo/hi of prosumer i's own rows (everything but recv and own_ug)."""
    N = lay.N
    inf = jnp.inf
    z = jnp.zeros(N)

    def g(a):  # per-agent parameter of agent i (i may be traced)
        return jnp.asarray(a)[i]

    bt_hi = jnp.where(trades_on, g(c.bt_max), 0.0) * jnp.ones(lay.m * N)
    box_lo = jnp.concatenate([z, z, z, z, jnp.zeros(lay.m * N), stage.eev_lo[i], z, z])
    box_hi = jnp.concatenate(
        [
            jnp.full(N, g(c.bc_max)),
            jnp.full(N, g(c.bd_max)),
            jnp.full(N, g(c.ugb_max)),
            stage.ev_hi[i],
            bt_hi,
            stage.eev_hi[i],
            jnp.full(N, inf),
            jnp.full(N, inf),
        ]
    )
    pv = g(c.pv_coef()) * stage.win.irr_mu
    dyn_b = (c.dt * pv).at[0].add(stage.eb0[i])
    dyn_ev = z.at[0].add(stage.eev0[i])
    return {
        "box": (box_lo, box_hi),
        "dyn_b": (dyn_b, dyn_b),
        "dyn_ev": (dyn_ev, dyn_ev),
        "dis": (jnp.full(N, -inf), jnp.full(N, g(c.bd_max))),
        "soft_lo": (stage.band.lo[i], jnp.full(N, inf)),
        "soft_hi": (jnp.full(N, -inf), stage.band.hi[i]),
    }


def receiver_base(c: Community, stage: Stage, others: Plan) -> Float[Array, "n N"]:
    """ug_j + Σ_l bt_{l->j}: what agent j would import with no trades delivered to it.
    Consumers: the (possibly tightened) forecast load; prosumers: bc − bd + ul + ev."""
    pro = jnp.asarray(c.is_prosumer)[:, None]
    own = others.bc - others.bd + stage.win.ul_mu + others.ev
    return jnp.where(pro, own, stage.ul_cap)


def agent_qp(
    c: Community,
    w: CostWeights,
    stage: Stage,
    i,
    others: Plan,
    trades_on=True,
):
    """q, lo, hi of prosumer i's FC-MPC subproblem (i is an agent index; may be traced).

    `others` is the previous iterate (i's own entries are ignored). With `trades_on` False
    (iterate 0 and the islanded scenario), i's trades are fixed at 0 and nobody sends to i.
    """
    N = stage.win.price.shape[0]
    lay = AgentLayout(c.n, N)
    rows = AgentRows(lay)
    q = _agent_q(c, w, stage, lay)
    b = _own_bounds(c, stage, lay, rows, i, trades_on)
    partners = jnp.asarray(partner_table(c.n))[i]  # [m]
    # recv rows: bt_{i->j} <= base_j − Σ_{l != i} bt_{l->j}   (ug_j >= 0)
    into = others.bt.sum(axis=0)  # Σ_l bt_{l->j}[k]
    into_excl_i = into - others.bt[i]  # without i's own previous trades
    cap = receiver_base(c, stage, others) - into_excl_i
    cap = jnp.where(trades_on, cap[partners].reshape(-1), jnp.inf)
    # own_ug: bc − bd + ev >= Σ_{l != i} bt_{l->i} − ul_i
    incoming = jnp.where(trades_on, into_excl_i[i], 0.0)
    own_lo = incoming - stage.win.ul_mu[i]
    inf = jnp.full(N, jnp.inf)
    lo = jnp.concatenate(
        [
            b["box"][0],
            jnp.full(lay.m * N, -jnp.inf),
            b["dyn_b"][0],
            b["dyn_ev"][0],
            b["dis"][0],
            own_lo,
            b["soft_lo"][0],
            b["soft_hi"][0],
        ]
    )
    hi = jnp.concatenate(
        [b["box"][1], cap, b["dyn_b"][1], b["dyn_ev"][1], b["dis"][1], inf, b["soft_lo"][1], b["soft_hi"][1]]
    )
    return q, lo, hi


# ---------------------------------------------------------------------------- centralized


@dataclasses.dataclass(frozen=True)
class CentralRows:
    """Row offsets of the centralized QP: each prosumer's own rows (agent rows without
    `recv`), stacked, then one `cons` block of N rows per consumer (Σ_i bt_{i->j} <= ul_j)."""

    lay: AgentLayout
    n_pro: int
    n_con: int

    @property
    def per_agent(self) -> int:
        return AgentRows(self.lay, with_recv=False).m

    @property
    def cons(self) -> slice:
        start = self.n_pro * self.per_agent
        return slice(start, start + self.n_con * self.lay.N)

    @property
    def m(self) -> int:
        return self.cons.stop


def centralized_structure(c: Community, N: int, w: CostWeights) -> QPStructure:
    """P and A of the joint problem over all prosumers (MODEL §6, last point)."""
    lay = AgentLayout(c.n, N)
    rows = AgentRows(lay, with_recv=False)
    pro = list(c.prosumers)
    cons = list(c.consumers)
    cr = CentralRows(lay, len(pro), len(cons))
    partners = partner_table(c.n)
    r, col, v = [], [], []
    k = np.arange(N)
    for p, i in enumerate(pro):
        rr, cc, vv = _agent_blocks(c, lay, rows, col0=p * lay.nx, row0=p * cr.per_agent)
        r += rr
        col += cc
        v += vv
        for jj, j in enumerate(partners[i]):
            src = p * lay.nx + lay.bt.start + jj * N + k
            if j in pro:  # into j's own_ug row: − bt_{i->j}
                q_ = pro.index(j)
                r.append(q_ * cr.per_agent + rows.own_ug.start + k)
                v.append(-np.ones(N))
            else:  # into consumer j's row
                r.append(cr.cons.start + cons.index(j) * N + k)
                v.append(np.ones(N))
            col.append(src)
    A = sp.csr_matrix(
        (np.concatenate(v), (np.concatenate(r), np.concatenate(col))),
        shape=(cr.m, len(pro) * lay.nx),
    )
    P = np.tile(_agent_P(lay, w, 1.0 / c.n), len(pro))
    return QPStructure(P_diag=P, A=A)


def centralized_qp(c: Community, w: CostWeights, stage: Stage, trades_on=True):
    """q, lo, hi of the centralized problem (one instance)."""
    N = stage.win.price.shape[0]
    lay = AgentLayout(c.n, N)
    rows = AgentRows(lay, with_recv=False)
    qs, los, his = [], [], []
    for i in c.prosumers:
        qs.append(_agent_q(c, w, stage, lay))
        b = _own_bounds(c, stage, lay, rows, i, trades_on)
        own_lo = -stage.win.ul_mu[i]
        los.append(
            jnp.concatenate(
                [b["box"][0], b["dyn_b"][0], b["dyn_ev"][0], b["dis"][0], own_lo, b["soft_lo"][0], b["soft_hi"][0]]
            )
        )
        his.append(
            jnp.concatenate(
                [b["box"][1], b["dyn_b"][1], b["dyn_ev"][1], b["dis"][1], jnp.full(N, jnp.inf), b["soft_lo"][1], b["soft_hi"][1]]
            )
        )
    cons = list(c.consumers)
    if cons:
        cap = stage.ul_cap[jnp.asarray(cons)].reshape(-1)
        los.append(jnp.full(cap.shape, -jnp.inf))
        his.append(cap)
    return jnp.concatenate(qs), jnp.concatenate(los), jnp.concatenate(his)
