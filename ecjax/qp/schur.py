"""The quasi-definite Newton system of `normal.py` by two-level elimination, when the coupling rows fall
into small independent groups.

Write M = diag(d_c⁻¹ + δ_d) + C_S Kd_S⁻¹ C_Sᵀ for the lower right block of that system. Two coupling
rows are tied in M only when they share a strong column, so M is block diagonal over the
connected components of |C_S||C_S|ᵀ: in the FC-MPC subproblem one component per time step
(the six rows dyn_b, dyn_ev, dis, own_ug, soft_lo, soft_hi of step k), whose strong columns
are that step's inputs and slacks. Eliminating the multipliers w of every component leaves
the Schur complement on the weak columns (battery and EV energies: the states),

    S_W = Kd_W + Σ_c C_{W,c}ᵀ M_c⁻¹ C_{W,c},
    S_W dx_W = r_W + Σ_c C_{W,c}ᵀ M_c⁻¹ t'_c,     w_c = M_c⁻¹ (C_{W,c} dx_W − t'_c),

with t' = t − C_S Kd_S⁻¹ r_S. The M_c are inverted all at once (one batched Gauss-Jordan on
(components, b, b) arrays per component size b, no sequential dependence: components are
grouped by their number of rows, so that a one-row component is not padded to the largest); S_W couples only the states of
neighbouring steps, so it is block-tridiagonal with blocks of 2-3 (`blocktri.py`): the
sequential part of the factorization is a recursion over tiny blocks, instead of one over
the quasi-definite system's blocks of ~8. This is the structure an MPC-tailored interior-point method exploits
(a Riccati recursion on the states, Rao, Wright & Rawlings 1998), found here from the sparsity
pattern alone. S_W is positive definite (M_c is), so its block Thomas factorization (`blocktri.py`) needs no pivoting.

`build` returns None when a component is larger than `max_block` (the centralized problem,
where trades tie every prosumer's rows of a step together); `normal.py` then factors the quasi-definite system
directly.
"""

import equinox as eqx
import jax.numpy as jnp
import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components
from jaxtyping import Array, Bool, Float

from . import blocktri
from .sparse import Mat
from .take import Take

MAX_BLOCK = 16  # largest component of coupling rows eliminated as a dense block


class _Group(eqx.Module):
    """The components with b coupling rows, as (components, b, ...) arrays."""

    rows: Take  # (nc, b): coupling rows of each component (pad = m_c)
    Cs_cols: Take  # (nc, kc): strong columns of each component (pad = n)
    CsCs: Float[Array, "nc b b kc"]  # C[r_a, j] C[r_b, j] over the strong columns j of c
    Cw_pos: Take  # (nc, kw): weak columns, as positions in the padded order of S_W (pad: its zero)
    Cw: Float[Array, "nc b kw"]  # C[rows_c, weak cols_c]


class SchurKKT(eqx.Module):
    """Host-built structure of the Schur complement S_W on the weak columns and its solve."""

    is_strong: Bool[Array, " n"]
    weak_cols: Take  # (nw,)
    x_pos: Take  # (n,): column j -> its position in the padded order of S_W (strong: the zero)
    C: Mat  # coupling rows (m_c × n)
    groups: tuple[_Group, ...]  # components grouped by their number of rows
    row_slot: Take  # (mc,): coupling row -> flat slot (groups one after another)
    slot_src: Take  # (nslot, k2): S_W storage slot <- sum of sources
    u_r: Take  # (u,): S_W's right-hand side, in its padded order: r at these columns (pad: n)
    u_h: Take  # (u, kr): ... plus these entries of C_{W,c}ᵀ g_c (pad: their count)
    nb: int = eqx.field(static=True)
    bs: int = eqx.field(static=True)
    nw: int = eqx.field(static=True)
    mc: int = eqx.field(static=True)

    @staticmethod
    def build(C: np.ndarray, weak: np.ndarray, max_block: int, dtype):
        mc, n = C.shape
        strong = ~weak
        weak_cols = np.nonzero(weak)[0]
        nw = len(weak_cols)
        if mc == 0 or nw == 0:
            return None
        weak_pos = np.full(n, nw, np.int64)
        weak_pos[weak_cols] = np.arange(nw)
        nzs = sp.csr_matrix((C != 0) & strong[None, :])
        ncomp, label = connected_components(nzs @ nzs.T + sp.identity(mc), directed=False)
        rows = [np.nonzero(label == c)[0] for c in range(ncomp)]
        if max(len(r) for r in rows) > max_block:
            return None
        parts, row_slot = [], np.empty(mc, np.int64)
        ent_i, ent_j, ent_s = list(range(nw)), list(range(nw)), list(range(nw))  # Kd_W
        w_lists = [[] for _ in range(nw)]
        off_slot = off_h = off_T = 0
        for b in sorted({len(r) for r in rows}):
            comps = [r for r in rows if len(r) == b]
            scols = [np.nonzero(((C[r] != 0) & strong[None, :]).any(axis=0))[0] for r in comps]
            wcols = [np.nonzero(((C[r] != 0) & weak[None, :]).any(axis=0))[0] for r in comps]
            Cs_cols, Cw_cols = blocktri.padded(scols, n), blocktri.padded(wcols, n)
            kc, kw = Cs_cols.shape[1], Cw_cols.shape[1]
            Cs = np.zeros((len(comps), b, kc))
            Cw = np.zeros((len(comps), b, kw))
            for c, r in enumerate(comps):
                row_slot[r] = off_slot + c * b + np.arange(b)
                Cs[c, :, : len(scols[c])] = C[np.ix_(r, scols[c])]
                Cw[c, :, : len(wcols[c])] = C[np.ix_(r, wcols[c])]
                # pattern of S_W on the weak columns: C_{W,c}ᵀ M_c⁻¹ C_{W,c} (sources T, then h)
                pos = weak_pos[wcols[c]]
                for a in range(len(pos)):
                    w_lists[pos[a]].append(off_h + c * kw + a)
                    for a2 in range(a, len(pos)):
                        ent_i.append(pos[a]), ent_j.append(pos[a2]), ent_s.append(nw + off_T + c * kw * kw + a * kw + a2)
            Cw_weak = np.where(Cw_cols < n, weak_pos[np.minimum(Cw_cols, n - 1)], nw)  # index among weak
            parts.append((blocktri.padded(comps, mc), Cs_cols, Cs, Cw_weak, Cw))
            off_slot, off_h, off_T = off_slot + len(comps) * b, off_h + len(comps) * kw, off_T + len(comps) * kw * kw
        pat = sp.coo_matrix((np.ones(len(ent_i)), (ent_i, ent_j)), shape=(nw, nw))
        order, bs, nb = blocktri.analyse(pat)
        slot_src, where = blocktri.slot_sources(order, bs, nb, nw, ent_i, ent_j, ent_s, nw + off_T)
        # the gathers around the recursion composed on the host: weak unknown i of S_W sits at
        # padded position where[i]; a padded solution gets one trailing zero (position nb*bs)
        pos_of = np.append(where, nb * bs)  # weak index (nw = none) -> padded position
        w_src = blocktri.padded(w_lists, off_h)
        real = order < nw
        u_r = np.where(real, weak_cols[np.minimum(order, nw - 1)], n)
        u_h = np.where(real[:, None], w_src[np.minimum(order, nw - 1)], off_h)
        groups = tuple(
            _Group(rows=Take.build(r), Cs_cols=Take.build(cs), CsCs=jnp.asarray(Cs[:, :, None, :] * Cs[:, None, :, :], dtype),
                   Cw_pos=Take.build(pos_of[cw]), Cw=jnp.asarray(Cw, dtype))
            for r, cs, Cs, cw, Cw in parts
        )  # fmt: skip
        return SchurKKT(
            is_strong=jnp.asarray(strong),
            weak_cols=Take.build(weak_cols),
            x_pos=Take.build(pos_of[weak_pos]),
            C=Mat.build(C, "sparse", dtype),
            groups=groups,
            row_slot=Take.build(row_slot),
            slot_src=Take.build(slot_src),
            u_r=Take.build(u_r),
            u_h=Take.build(u_h),
            nb=nb,
            bs=bs,
            nw=nw,
            mc=mc,
        )


class SchurFactored(eqx.Module):
    f: blocktri.Factor  # block Thomas factorization of S_W
    Minv: tuple[Float[Array, "nc b b"], ...]  # per group
    Kd_inv_s: Float[Array, " n"]
    dc_inv: Float[Array, " mc"]


def _pad1(v):
    return jnp.concatenate([v, jnp.zeros((1,), v.dtype)])


def factor(kkt: SchurKKT, Kd, dc_inv, reg_d) -> SchurFactored:
    """M_c⁻¹ for every component, then the Schur complement S_W and its block-tridiagonal
    factorization."""
    dt = Kd.dtype
    Kd_inv_s = jnp.where(kkt.is_strong, 1.0 / Kd, 0.0)
    kin_all = _pad1(Kd_inv_s)
    diag_all = jnp.concatenate([dc_inv + reg_d, jnp.ones((1,), dt)])  # pad rows: 1
    Minv, Ts = [], []
    for g in kkt.groups:
        kin, diag = g.Cs_cols(kin_all), g.rows(diag_all)
        # products written as broadcasts and sums over the small axes: XLA fuses them
        M = jnp.sum(g.CsCs * kin[:, None, None, :], axis=-1) + diag[:, :, None] * jnp.eye(diag.shape[1], dtype=dt)[None]
        Mi = blocktri._inv(M)
        MiCw = jnp.sum(Mi[:, :, :, None] * g.Cw[:, None, :, :], axis=2)  # (c, a, w) = M_c⁻¹ C_{W,c}
        Ts.append(jnp.sum(g.Cw[:, :, :, None] * MiCw[:, :, None, :], axis=1).reshape(-1))  # C_{W,c}ᵀ M_c⁻¹ C_{W,c}
        Minv.append(Mi)
    src = jnp.concatenate([kkt.weak_cols(Kd), *Ts, jnp.ones((1,), dt), jnp.zeros((1,), dt)])
    flat = jnp.sum(kkt.slot_src(src), axis=-1)
    nd = kkt.nb * kkt.bs * kkt.bs
    D = flat[:nd].reshape(kkt.nb, kkt.bs, kkt.bs)
    L = flat[nd:].reshape(kkt.nb - 1, kkt.bs, kkt.bs)
    return SchurFactored(f=blocktri.factor(D, L), Minv=tuple(Minv), Kd_inv_s=Kd_inv_s, dc_inv=dc_inv)


def solve(kkt: SchurKKT, fac: SchurFactored, r, t):
    """(dx, v) of [Kd Cᵀ; C −diag(1/d_c)] [dx; v] = [r; t]: dx_W from the Schur complement S_W,
    w_c per component, then the strong columns by their diagonal."""
    tp = _pad1(t - kkt.C.mv(fac.Kd_inv_s * r))
    tcs = [g.rows(tp) for g in kkt.groups]
    gs = [blocktri._mv(Mi, tc) for Mi, tc in zip(fac.Minv, tcs)]
    h = jnp.concatenate([blocktri._mtv(g.Cw, gg).reshape(-1) for g, gg in zip(kkt.groups, gs)])
    u = (kkt.u_r(_pad1(r)) + jnp.sum(kkt.u_h(_pad1(h)), axis=-1)).reshape(kkt.nb, kkt.bs)
    xw = _pad1(blocktri.solve(fac.f, u).reshape(-1))  # padded order, then a zero
    wv = [
        blocktri._mv(Mi, blocktri._mv(g.Cw, g.Cw_pos(xw)) - tc).reshape(-1)
        for g, Mi, tc in zip(kkt.groups, fac.Minv, tcs)
    ]
    v = kkt.row_slot(jnp.concatenate(wv))
    dx_s = fac.Kd_inv_s * (r - kkt.C.rmv(v))
    return jnp.where(kkt.is_strong, dx_s, kkt.x_pos(xw)), v
