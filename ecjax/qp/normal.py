"""The interior-point Newton system, structured: K(d) dx = r with

    K(d) = P̄ + δ_p I + Āᵀ diag(d) Ā,

P̄ diagonal, d >= 0 a per-sample row weight that changes at every interior-point iteration
(the barrier Hessian λ/s, huge on active and equality rows, zero on free rows).

Rows of Ā are split into singleton rows (they add to the diagonal Kd = P̄ + δ_p + Σ_s a_s² d_s)
and coupling rows C; columns into *strong* ones (P̄_jj >= `weak_p`, or in no coupling row) and
*weak* ones W (P̄_jj ≈ 0 and in a coupling row: battery energies, EV energies). With
w = diag(d_c) C dx, K(d) dx = r is the quasi-definite system of weak columns and coupling rows

    [ Kd_W   C_Wᵀ                    ] [dx_W]   [ r_W                ]
    [ C_W   −(d_c⁻¹ + δ_d + C_S Kd_S⁻¹ C_Sᵀ) ] [ w  ] = [ −C_S Kd_S⁻¹ r_S  ],

followed by the back substitution of the strong columns

    dx_S = Kd_S⁻¹ (r_S − C_Sᵀ w).

Strong columns are eliminated by their diagonal; weak columns stay in the quasi-definite
system, so no 1/δ_p appears in a Woodbury product (which would cancel catastrophically). That
system has a fixed sparsity pattern: every row/column of it is tied to one time step of the
horizon and couples only with its neighbours, so after reverse Cuthill-McKee it is
block-tridiagonal with small blocks (`blocktri.py`): the per-sample factorization costs a few
thousand flops.

When the coupling rows fall into small groups that share no strong column (one group per time
step in the FC-MPC subproblem), `schur.py` eliminates those groups first and factors only the
Schur complement on the weak columns: same solution, a shorter sequential recursion. That
Schur complement is a normal-equations matrix: the equality rows enter it with weight 1/δ_e,
so it is well conditioned only when those rows alone fix every weak column (the states,
through the dynamics). With a weak column that they leave free (an input without
curvature: MODEL's `ugb` and `ev`, any weight set to 0) the 1/δ_e part is singular on that
column, the rest of S_W is of the order of δ_p there, and the solve loses every digit; the
quasi-definite form keeps such a column as an unknown of its own and stays accurate.
`NormalKKT.build` therefore takes the Schur form only when the equality coupling rows
restricted to the weak columns have full column rank (and `max_dense` is 0).
"""

import equinox as eqx
import jax.numpy as jnp
import numpy as np
import scipy.sparse as sp
from jaxtyping import Array, Bool, Float, Int

from . import blocktri, schur
from .sparse import Mat, SplitA
from .take import Take


def _ell_lists(lists, n_src_pad):
    """Padded (len(lists), k) index/value arrays from python lists of (src, coef)."""
    k = max((len(v) for v in lists), default=1) or 1
    idx = np.full((len(lists), k), n_src_pad, np.int32)
    val = np.zeros((len(lists), k))
    for i, v in enumerate(lists):
        for j, (s, c) in enumerate(v):
            idx[i, j] = s
            val[i, j] = c
    return idx, val


class NormalKKT(eqx.Module):
    """Host-built structure of the quasi-definite system; `factor` and `solve` run per sample."""

    is_strong: Bool[Array, " n"]
    weak_cols: Int[Array, " nw"]
    weak_pos: Int[Array, " n"]  # column j -> its index among weak columns (nw = none)
    C: Mat  # coupling rows (m_c × n)
    pair_col: Int[Array, "npair k"]  # pair (r, r') of coupling rows sharing strong columns
    pair_coef: Float[Array, "npair k"]  # C[r,j] C[r',j]
    const: Float[Array, " nconst"]  # C[r, w] entries of the quasi-definite system
    slot_one: Take  # (nslot,): storage slot <- one entry of [sources | sums]
    slot_sum: Take  # (nsum, k2): the sums of the slots with more than one source
    order: Int[Array, " u"]  # padded position -> unknown (u0 = pad)
    where: Int[Array, " u0"]  # unknown -> padded position
    nb: int = eqx.field(static=True)
    bs: int = eqx.field(static=True)
    nw: int = eqx.field(static=True)
    mc: int = eqx.field(static=True)

    @staticmethod
    def build(pdiag: np.ndarray, Ab_perm: np.ndarray, m_s: int, weak_p: float, max_dense: int, dtype, eq_c=None):
        """`eq_c`: which coupling rows are equalities in every instance (None: unknown, and the
        Schur form is not taken)."""
        n = pdiag.shape[0]
        C = Ab_perm[m_s:]
        mc = C.shape[0]
        in_c = (C != 0).any(axis=0) if mc else np.zeros(n, bool)
        weak = (pdiag < weak_p) & in_c
        if max_dense == 0 and schur_is_stable(C, weak, eq_c):
            two_level = schur.SchurKKT.build(C, weak, schur.MAX_BLOCK, dtype)
            if two_level is not None:
                return two_level
        weak_cols = np.nonzero(weak)[0]
        nw = len(weak_cols)
        weak_pos = np.full(n, nw, np.int64)
        weak_pos[weak_cols] = np.arange(nw)
        u0 = nw + mc
        # pattern of the quasi-definite system: unknowns [weak columns | coupling rows]
        Cs = sp.csr_matrix(C * (~weak)[None, :])
        Cw = sp.csr_matrix(C[:, weak_cols]) if nw else sp.csr_matrix((mc, 0))
        CCt = (abs(Cs) @ abs(Cs).T).tocoo()
        pat = sp.bmat([[sp.identity(nw), Cw.T], [Cw, CCt + sp.identity(mc)]], format="csr") if u0 else sp.csr_matrix((0, 0))
        order, bs, nb = blocktri.analyse(pat, max_dense)
        # sources: [Kd_W (nw) | -(1/d_c + δ_d) (mc) | -pairs (npair) | const (nconst) | 1 | 0]
        pairs = [(int(r), int(s)) for r, s in zip(CCt.row, CCt.col) if r <= s]
        Csc = sp.csc_matrix(Cs)
        rows_of = [Csc.indices[Csc.indptr[j] : Csc.indptr[j + 1]] for j in range(n)]
        vals_of = [Csc.data[Csc.indptr[j] : Csc.indptr[j + 1]] for j in range(n)]
        pair_id = {p: i for i, p in enumerate(pairs)}
        plists = [[] for _ in pairs]
        for j in range(n):
            r, v = rows_of[j], vals_of[j]
            for a in range(len(r)):
                for b in range(len(r)):
                    if r[a] <= r[b]:
                        plists[pair_id[(int(r[a]), int(r[b]))]].append((j, v[a] * v[b]))
        pair_col, pair_coef = _ell_lists(plists, n)
        Cw_coo = Cw.tocoo()
        const = Cw_coo.data
        npair, nconst = len(pairs), len(const)
        off_c, off_p, off_k = nw, nw + mc, nw + mc + npair
        one_src = off_k + nconst  # then the zero source
        # entries (unknown i, unknown j, source)
        ent_i = list(range(nw)) + [nw + r for r in range(mc)]
        ent_j = list(ent_i)
        ent_s = list(range(nw)) + [off_c + r for r in range(mc)]
        for p, (r, s) in enumerate(pairs):
            ent_i.append(nw + r), ent_j.append(nw + s), ent_s.append(off_p + p)
        for e in range(nconst):
            ent_i.append(nw + int(Cw_coo.row[e])), ent_j.append(int(Cw_coo.col[e])), ent_s.append(off_k + e)
        slot_src, where = blocktri.slot_sources(order, bs, nb, u0, ent_i, ent_j, ent_s, one_src)
        return NormalKKT(
            is_strong=jnp.asarray(~weak),
            weak_cols=jnp.asarray(weak_cols.astype(np.int32)),
            weak_pos=jnp.asarray(weak_pos.astype(np.int32)),
            C=Mat.build(C, "sparse", dtype),
            pair_col=jnp.asarray(pair_col),
            pair_coef=jnp.asarray(pair_coef, dtype),
            const=jnp.asarray(const, dtype),
            **_slot_maps(slot_src, one_src),
            order=jnp.asarray(order.astype(np.int32)),
            where=jnp.asarray(where.astype(np.int32)),
            nb=nb,
            bs=bs,
            nw=nw,
            mc=mc,
        )


def _slot_maps(slot_src: np.ndarray, one_src: int) -> dict:
    """`slot_src` (slots, k: sources summed into each slot, padded with the zero source
    `one_src + 1`) as one index per slot into [sources | sums], the sums taken only for the
    few slots with two sources or more: most slots of the blocks are zero or hold a single
    source, and a gather of k entries per slot costs k times one of a single entry."""
    zero = one_src + 1
    count = np.sum(slot_src != zero, axis=1)
    multi = np.flatnonzero(count >= 2)
    one = np.where(count >= 1, slot_src[:, 0], zero)
    one[multi] = zero + 1 + np.arange(len(multi))
    sums = slot_src[multi] if len(multi) else np.full((1, 1), zero)
    return dict(slot_one=Take.build(one), slot_sum=Take.build(sums))


def schur_is_stable(C: np.ndarray, weak: np.ndarray, eq_c) -> bool:
    """Whether the equality coupling rows fix every weak column (full column rank on them)."""
    if eq_c is None or not weak.any():
        return False
    Cw = C[np.asarray(eq_c, bool)][:, weak]
    return Cw.shape[0] >= Cw.shape[1] and np.linalg.matrix_rank(Cw) == Cw.shape[1]


class Factored(eqx.Module):
    """The quasi-definite system factored for one sample, with what the back substitution of
    the strong columns and the refinement need."""

    f: blocktri.Factor
    Kd_inv_s: Float[Array, " n"]  # 1/Kd on strong columns, 0 on weak
    dc_inv: Float[Array, " mc"]  # 1/d on coupling rows (capped for free rows)


def factor(kkt: "NormalKKT | schur.SchurKKT", A: SplitA, pdiag, d, reg_p, reg_d):
    """Assemble and factor the quasi-definite system for row weights d (permuted rows,
    [singleton | coupling])."""
    dt = pdiag.dtype
    if A.identity:
        Kd = pdiag + reg_p + d[: A.m_s]
    else:
        ds = jnp.concatenate([d[: A.m_s], jnp.zeros((1,), dt)])
        Kd = pdiag + reg_p + jnp.sum(A.s_cval**2 * ds[A.s_cidx], axis=-1)
    dc = d[A.m_s :]
    dc_inv = 1.0 / jnp.maximum(dc, jnp.finfo(dt).tiny ** 0.5)
    if isinstance(kkt, schur.SchurKKT):
        return schur.factor(kkt, Kd, dc_inv, reg_d)
    Kd_inv_s = jnp.where(kkt.is_strong, 1.0 / Kd, 0.0)
    kpad = jnp.concatenate([Kd_inv_s, jnp.zeros((1,), dt)])
    pairs = jnp.sum(kkt.pair_coef * kpad[kkt.pair_col], axis=-1)
    src = jnp.concatenate(
        [Kd[kkt.weak_cols], -(dc_inv + reg_d), -pairs, kkt.const, jnp.ones((1,), dt), jnp.zeros((1,), dt)]
    )
    flat = kkt.slot_one(jnp.concatenate([src, jnp.sum(kkt.slot_sum(src), axis=-1)]))
    nd = kkt.nb * kkt.bs * kkt.bs
    D = flat[:nd].reshape(kkt.nb, kkt.bs, kkt.bs)
    L = flat[nd:].reshape(kkt.nb - 1, kkt.bs, kkt.bs)
    return Factored(f=blocktri.factor(D, L), Kd_inv_s=Kd_inv_s, dc_inv=dc_inv)


def solve(kkt: "NormalKKT | schur.SchurKKT", fac: "Factored | schur.SchurFactored", r, t):
    """(dx, v) with [Kd Cᵀ; C −diag(1/d_c)] [dx; v] = [r; t], up to the regularization.

    v is the step of the coupling rows' multipliers: the quasi-definite system with the second
    block right-hand side t − C_S Kd_S⁻¹ r_S, then the back substitution of the strong columns.
    """
    if isinstance(kkt, schur.SchurKKT):
        return schur.solve(kkt, fac, r, t)
    dt = r.dtype
    u_s = fac.Kd_inv_s * r
    rhs = jnp.concatenate([r[kkt.weak_cols], t - kkt.C.mv(u_s), jnp.zeros((1,), dt)])
    u = rhs[kkt.order].reshape(kkt.nb, kkt.bs)
    sol = blocktri.solve(fac.f, u).reshape(-1)
    s = sol[kkt.where]
    xw, v = s[: kkt.nw], s[kkt.nw :]
    dx_s = fac.Kd_inv_s * (r - kkt.C.rmv(v))
    xw_full = jnp.concatenate([xw, jnp.zeros((1,), dt)])[kkt.weak_pos]
    return jnp.where(kkt.is_strong, dx_s, xw_full), v
