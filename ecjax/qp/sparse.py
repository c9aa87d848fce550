"""The constraint matrix A in a compact format, compiled once on the host.

Objects here are built by `prepare` from a concrete (scaled) A with numpy and passed
*unbatched* into the vmapped solve, so under `vmap` every product with them becomes one
matrix-matrix product for the whole batch.

Rows of A are split into *singleton* rows (one nonzero: a bound on one variable, merged into
the variable's bounds by the IPM) and *coupling* rows C; rows are permuted to
[singleton..., coupling...] once (`split_rows`, `SplitA`). `Mat` stores a matrix dense, as
padded gather rows and columns (ELL), or as segmented diagonals, whichever is cheapest
(`sparse_format`).
"""

import functools

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int


# --------------------------------------------------------------------------- #
# A matrix in one of three formats: dense, padded gather (ELL) rows + columns, or
# segmented diagonals.
# --------------------------------------------------------------------------- #
def _ell(M: np.ndarray):
    """Padded row form of M (r, c): idx (r, k) into a c+1 vector (c = zero pad)."""
    r, c = M.shape
    nz = M != 0
    k = max(int(nz.sum(1).max(initial=0)), 1)
    idx = np.full((r, k), c, dtype=np.int32)
    val = np.zeros((r, k))
    for i in range(r):
        (cols,) = np.nonzero(nz[i])
        idx[i, : len(cols)] = cols
        val[i, : len(cols)] = M[i, cols]
    return idx, val


# Segmented diagonals: the nonzeros of M lie on diagonals j = i + o, and along each diagonal
# in runs of consecutive rows. The row range is cut at every run's ends; on each piece
# [a, b) every run present covers it whole, so
#
#     (M x)[a:b] = Σ_runs M[a:b, a+o:b+o].diagonal() ∘ x[a+o : b+o]
#
# static slices and elementwise products only (a few small passes per product): no gathered
# indices, which a CPU runs one element at a time. The MPC matrices have block rows per time step and
# one block column per variable kind, so the runs are as long as the horizon, and they repeat
# with a fixed stride: the terms of a piece whose sources step by σ >= its length (one trade
# per partner) are one window x[s : s + Jσ] seen as (J, σ), and consecutive pieces whose
# terms' sources all step by the same σ_t (0 or >= the length: one trade column block per
# partner, each meeting the same rows) are one (P, L) block. A block's terms are then
#
#     out[a : a + P·L] ← Σ_t Σ_j V_t[p, j, l] · x[s_t + p·σ_t + j·σ'_t + l]  (P = 1 or J = 1)
#
# a few reshaped slices each, however large the community.
MAX_DIAGONAL_TERMS = 256  # more terms (short runs: no diagonal structure): ELL instead
MAX_DIAGONAL_BLOCKS = 32  # more blocks: ELL (XLA compiles every block as its own kernel)


def _runs(M: np.ndarray):
    """The runs of M's diagonals: (offset o, first row, end row) arrays."""
    rows, cols = np.nonzero(M)
    if not len(rows):
        return (np.zeros(0, np.int64),) * 3
    off = cols - rows
    order = np.lexsort((rows, off))
    rows, off = rows[order], off[order]
    start = np.ones(len(rows), bool)
    start[1:] = (off[1:] != off[:-1]) | (rows[1:] != rows[:-1] + 1)
    first = np.flatnonzero(start)
    end = np.append(first[1:], len(rows)) - 1
    return off[first], rows[first], rows[end] + 1


def _diagonal_runs(M: np.ndarray):
    """The pieces of the segmented-diagonal form: ((a, b, (source starts, sorted), values (terms, b − a)), ...)
    covering rows [0, r), by a sweep over the runs' ends."""
    r, _ = M.shape
    off, first, end = _runs(M)
    bounds = np.unique(np.concatenate([[0, r], first, end]))
    opened = {}  # boundary -> runs starting there
    for k, a in enumerate(first.tolist()):
        opened.setdefault(a, []).append(k)
    active, pieces = set(), []
    for a, b in zip(bounds[:-1].tolist(), bounds[1:].tolist()):
        active = {k for k in active if end[k] > a} | set(opened.get(a, ()))
        srcs = sorted(a + int(off[k]) for k in active)
        i = np.arange(a, b)
        vals = np.array([M[i, i + (src - a)] for src in srcs]).reshape(len(srcs), b - a)
        pieces.append((a, b, tuple(srcs), vals))
    return pieces


def _strides(x0, x1, L):
    """Per-term stride between two pieces' sources, if every one is 0 or >= L."""
    st = tuple(b - a for a, b in zip(x0, x1))
    return st if all(v == 0 or v >= L for v in st) else None


def _diagonal_blocks(M: np.ndarray):
    """(blocks, values) of the segmented-diagonal form: blocks = ((a, P, L, terms), ...) in row order, each term
    (s, σ, J, σ'); values: each term's V, (P, L) or (J, L), block after block."""
    pieces = _diagonal_runs(M)
    bands, i = [], 0
    while i < len(pieces):  # consecutive pieces of equal length with the same source strides
        a, b, srcs, _ = pieces[i]
        L, j, st = b - a, i + 1, None
        while j < len(pieces):
            a2, b2, s2, _ = pieces[j]
            _, _, s1, _ = pieces[j - 1]
            if b2 - a2 != L or a2 != pieces[j - 1][1] or len(s2) != len(srcs) or not srcs:
                break
            st2 = _strides(s1, s2, L)
            if st2 is None or (st is not None and st2 != st):
                break
            st, j = st2, j + 1
        bands.append(pieces[i:j])
        i = j
    blocks, values = [], []
    for band in bands:
        a, b, srcs, _ = band[0]
        P, L = len(band), b - a
        terms = []
        if P > 1:
            st = _strides(band[0][2], band[1][2], L)
            for t, s0 in enumerate(srcs):
                values.append(np.stack([pc[3][t] for pc in band]))
                terms.append((s0, st[t], 1, 0))
        else:
            vals, t = band[0][3], 0
            while t < len(srcs):  # sources in steps of σ' >= L: one (J, σ') window
                u = t + 1
                if u < len(srcs) and srcs[u] - srcs[t] >= L:
                    sj = srcs[u] - srcs[t]
                    while u < len(srcs) and srcs[u] - srcs[u - 1] == sj:
                        u += 1
                else:
                    sj = 0
                J = u - t
                values.append(vals[t:u])
                terms.append((srcs[t], 0, J, sj if J > 1 else 0))
                t = u
        blocks.append((a, P, L, tuple(terms)))
    return tuple(blocks), values


def _window(x, s, stride, count, L):
    """x[s + k·stride + l] as (..., count, L), stride 0 or >= L, from static slices."""
    lead = x.shape[:-1]
    if count == 1:
        return x[..., None, s : s + L]
    if stride == 0:
        return jnp.broadcast_to(x[..., None, s : s + L], lead + (count, L))
    if s + count * stride <= x.shape[-1]:
        return x[..., s : s + count * stride].reshape(lead + (count, stride))[..., :L]
    last = s + (count - 1) * stride  # the last window ends at the vector's end: no padding
    return jnp.concatenate([_window(x, s, stride, count - 1, L), x[..., None, last : last + L]], axis=-2)


@functools.partial(jax.jit, static_argnums=0)  # traced once per shape, however many call sites
def _diagonal_mv(blocks, vals, x):
    """M x from M's blocks and their terms' values."""
    parts, vals = [], iter(vals)
    for a, P, L, terms in blocks:
        acc = None
        for s, sp, J, sj in terms:
            v = next(vals)
            if J > 1:  # P = 1: Σ_j over a (J, L) window
                t = jnp.sum(v * _window(x, s, sj, J, L), axis=-2, keepdims=True)
            else:
                t = v * _window(x, s, sp, P, L)
            acc = t if acc is None else acc + t
        if acc is None:
            acc = jnp.zeros(x.shape[:-1] + (P, L), x.dtype)
        parts.append(acc.reshape(x.shape[:-1] + (P * L,)))
    return jnp.concatenate(parts, axis=-1) if len(parts) > 1 else parts[0]


def _diagonal_form(M: np.ndarray, checked: bool = True):
    """the segmented-diagonal form of M and Mᵀ: (M's blocks, their values, Mᵀ's blocks, their values); with `checked`,
    None where they need more than MAX_DIAGONAL_BLOCKS blocks or MAX_DIAGONAL_TERMS terms."""
    if checked and (M.size == 0 or not np.any(M) or len(_runs(M)[0]) > 16 * MAX_DIAGONAL_TERMS):
        return None  # (many runs: short ones, or a structure too large)
    rb, rv = _diagonal_blocks(M)
    cb, cv = _diagonal_blocks(M.T)
    n_terms = sum(len(t) for *_, t in rb + cb)
    if checked and (len(rb) + len(cb) > MAX_DIAGONAL_BLOCKS or n_terms > MAX_DIAGONAL_TERMS):
        return None
    return rb, rv, cb, cv


def sparse_format(M: np.ndarray) -> str:
    """'diagonal' where the segmented-diagonal form of M and Mᵀ together has at most MAX_DIAGONAL_BLOCKS blocks and
    MAX_DIAGONAL_TERMS terms, else 'gather'."""
    return "gather" if _diagonal_form(M) is None else "diagonal"


class Mat(eqx.Module):
    """An (r, c) matrix with `mv(x) = M x` and `rmv(y) = Mᵀ y`."""

    dense: Float[Array, "r c"] | None
    ridx: Int[Array, "r kr"] | None
    rval: Float[Array, "r kr"] | None
    cidx: Int[Array, "c kc"] | None
    cval: Float[Array, "c kc"] | None
    shape: tuple[int, int] = eqx.field(static=True)
    fmt: str = eqx.field(static=True)
    r_vals: tuple = ()  # segmented diagonals of M ('diagonal'): each term's values
    c_vals: tuple = ()  # ... of Mᵀ
    r_blocks: tuple = eqx.field(static=True, default=())  # segmented diagonals of M: blocks and terms
    c_blocks: tuple = eqx.field(static=True, default=())  # segmented diagonals of Mᵀ

    @staticmethod
    def build(M: np.ndarray, fmt: str, dtype) -> "Mat":
        """`fmt`: 'dense', 'gather' (ELL), 'diagonal' (segmented diagonals) or 'sparse' (`sparse_format`)."""
        if fmt not in ("dense", "gather", "diagonal", "sparse"):
            raise ValueError(f"`fmt` must be 'dense', 'gather', 'diagonal' or 'sparse', got {fmt!r}.")
        if fmt == "dense":
            return Mat(jnp.asarray(M, dtype), None, None, None, None, M.shape, fmt)
        form = _diagonal_form(M, checked=fmt == "sparse") if fmt in ("diagonal", "sparse") else None
        if form is not None:
            rb, rv, cb, cv = form
            rv, cv = (tuple(jnp.asarray(v, dtype) for v in vs) for vs in (rv, cv))
            return Mat(None, None, None, None, None, M.shape, "diagonal", rv, cv, rb, cb)
        fmt = "gather"
        ridx, rval = _ell(M)
        cidx, cval = _ell(M.T)
        return Mat(
            None,
            jnp.asarray(ridx),
            jnp.asarray(rval, dtype),
            jnp.asarray(cidx),
            jnp.asarray(cval, dtype),
            M.shape,
            fmt,
        )

    def mv(self, x):
        if self.fmt == "dense":
            return self.dense @ x
        if self.fmt == "diagonal":
            return _diagonal_mv(self.r_blocks, self.r_vals, x)
        xp = jnp.concatenate([x, jnp.zeros((1,), x.dtype)])
        return jnp.sum(self.rval * xp[self.ridx], axis=-1)

    def rmv(self, y):
        if self.fmt == "dense":
            return self.dense.T @ y
        if self.fmt == "diagonal":
            return _diagonal_mv(self.c_blocks, self.c_vals, y)
        yp = jnp.concatenate([y, jnp.zeros((1,), y.dtype)])
        return jnp.sum(self.cval * yp[self.cidx], axis=-1)


# --------------------------------------------------------------------------- #
# Ā split into singleton rows and coupling rows.
# --------------------------------------------------------------------------- #
class SplitA(eqx.Module):
    """Ā with rows permuted to [singleton (m_s), coupling (m_c)]."""

    s_col: Int[Array, "ms"]
    s_val: Float[Array, "ms"]
    s_cidx: Int[Array, "n ks"]  # per column: its singleton rows (pad = ms)
    s_cval: Float[Array, "n ks"]
    C: Mat
    m_s: int = eqx.field(static=True)
    m_c: int = eqx.field(static=True)
    identity: bool = eqx.field(static=True, default=False)  # singleton rows = I (one per column)

    def mv(self, x):
        """Ā x (permuted rows)."""
        if self.identity:
            return jnp.concatenate([x, self.C.mv(x)])
        return jnp.concatenate([self.s_val * x[self.s_col], self.C.mv(x)])

    def rmv(self, y):
        """Āᵀ y (y in permuted rows)."""
        if self.identity:
            return y[: self.m_s] + self.C.rmv(y[self.m_s :])
        ys = jnp.concatenate([y[: self.m_s], jnp.zeros((1,), y.dtype)])
        return jnp.sum(self.s_cval * ys[self.s_cidx], axis=-1) + self.C.rmv(y[self.m_s :])


def split_rows(Ab: np.ndarray):
    """Permutation putting singleton (<= 1 nonzero) rows first."""
    nnz = (Ab != 0).sum(axis=1)
    single = np.nonzero(nnz <= 1)[0]
    coupling = np.nonzero(nnz > 1)[0]
    return np.concatenate([single, coupling]).astype(np.int64), len(single)


def build_split(Ab_perm: np.ndarray, m_s: int, fmt: str, dtype, identity: bool = False) -> SplitA:
    """`identity`: the first m_s = n rows are the identity (checked), products skip them."""
    m, n = Ab_perm.shape
    if identity and not (m_s == n and np.array_equal(Ab_perm[:m_s], np.eye(n))):
        raise ValueError("`identity=True` needs the first n rows to be the identity.")
    S = Ab_perm[:m_s]
    s_col = np.argmax(S != 0, axis=1)  # a zero row gets column 0 with value 0
    s_val = S[np.arange(m_s), s_col] if m_s else np.zeros(0)
    # per-column padded list of singleton rows
    counts = np.bincount(s_col, minlength=n) if m_s else np.zeros(n, int)
    ks = max(int(counts.max(initial=0)), 1)
    s_cidx = np.full((n, ks), m_s, dtype=np.int32)
    s_cval = np.zeros((n, ks))
    fill = np.zeros(n, int)
    for i in range(m_s):
        j = s_col[i]
        s_cidx[j, fill[j]] = i
        s_cval[j, fill[j]] = s_val[i]
        fill[j] += 1
    return SplitA(
        s_col=jnp.asarray(s_col.astype(np.int32)),
        s_val=jnp.asarray(s_val, dtype),
        s_cidx=jnp.asarray(s_cidx),
        s_cval=jnp.asarray(s_cval, dtype),
        C=Mat.build(Ab_perm[m_s:], fmt, dtype),
        m_s=m_s,
        m_c=m - m_s,
        identity=identity,
    )
