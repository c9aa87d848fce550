"""Block-tridiagonal factorization of a symmetric matrix with a fixed sparsity pattern.

A sparse symmetric pattern is reordered once on the host by reverse Cuthill-McKee; with
bandwidth b, cutting the reordered matrix into blocks of size b makes it block-tridiagonal:

    M = tridiag(Lₖ, Dₖ, Lₖ₊₁ᵀ),   Dₖ (b×b) diagonal blocks, Lₖ = M[k, k−1] (b×b).

The factorization is the block Thomas recursion (block LU without pivoting; every leading
block of a quasi-definite matrix is nonsingular)

    S₀ = D₀,   Gₖ = Lₖ Sₖ₋₁⁻¹,   Sₖ = Dₖ − Gₖ Lₖᵀ,

which is stable for the regularized quasi-definite matrices of `ecjax.qp.ipm` (Vanderbei
1995: a quasi-definite matrix is strongly factorizable, in any symmetric order). Cost per factorization: ~3 nb b³ flops instead
of ~(nb b)³/3 for a dense Cholesky. Written for one matrix; vmap at the edge.

The diagonal blocks are inverted by Gauss-Jordan elimination: unrolled and without pivoting
for small blocks; for larger ones with partial pivoting, which they need: late in an
interior-point solve the barrier weights span 20 and more orders of magnitude, and without
row exchanges a block of ~40 of the centralized LP (every weight 0) lost 8 digits of the
Newton step. On a CPU the larger blocks are eliminated in a loop over the pivots, never by
LAPACK: jaxlib's LAPACK kernels split a batch of matrices over XLA's intra-op thread pool
and block their thread until the pieces are done, and with one XLA device per core
(`ecjax._platform`) every thread of that pool may be running a device's program that waits
in this way, so a batched solve would never finish (the centralized QP from n = 3 on, with
16 samples per device). Other platforms keep the library's LU with partial pivoting.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import reverse_cuthill_mckee
from jaxtyping import Array, Float, Int


class Blocking(eqx.Module):
    """Host-side result of `analyse`: where unknown i of the original order lives."""

    order: Int[Array, " u"]  # position p (padded order) holds original unknown order[p] (u = pad)
    where: Int[Array, " u0"]  # original unknown i sits at padded position where[i]
    nb: int = eqx.field(static=True)
    bs: int = eqx.field(static=True)
    u0: int = eqx.field(static=True)


def analyse(pattern: sp.spmatrix, max_dense: int = 0):
    """Reorder a symmetric pattern (u0×u0) and choose the block size.

    **Returns:** `(order, bs, nb)` as numpy: `order[p]` is the original unknown at padded
    position p (`u0` marks a padding unknown), `bs` the block size, `nb` the block count.
    With `max_dense` >= u0 (or when the band is wider than half the matrix) one dense block
    is used.
    """
    u0 = pattern.shape[0]
    if u0 == 0:
        return np.zeros(0, np.int64), 1, 0
    pat = sp.csr_matrix((pattern != 0).astype(np.int8))
    pat = pat + pat.T + sp.identity(u0, dtype=np.int8, format="csr")
    perm = np.asarray(reverse_cuthill_mckee(sp.csr_matrix(pat), symmetric_mode=True), np.int64)
    inv = np.empty(u0, np.int64)
    inv[perm] = np.arange(u0)
    coo = pat.tocoo()
    band = int(np.abs(inv[coo.row] - inv[coo.col]).max(initial=0))
    bs = max(band, 1)
    if u0 <= max_dense or 2 * bs >= u0:
        bs = u0
    nb = -(-u0 // bs)
    order = np.full(nb * bs, u0, np.int64)
    order[:u0] = perm
    return order, bs, nb


def block_slots(order: np.ndarray, bs: int, nb: int, u0: int, rows: np.ndarray, cols: np.ndarray):
    """Flat slots of entries (rows[i], cols[i]) (original unknown ids, lower or upper) in the
    storage [D (nb,bs,bs) | L (nb−1,bs,bs)], with L[k−1] = M[block k, block k−1].

    Entries (i, j) and (j, i) map to the same slot (each stored entry is symmetric in use).
    """
    where = np.empty(u0, np.int64)
    pos = np.nonzero(order < u0)[0]
    where[order[pos]] = pos
    pi, pj = where[rows], where[cols]
    hi = np.maximum(pi, pj)
    lo = np.minimum(pi, pj)
    bh, bl = hi // bs, lo // bs
    if np.any(bh - bl > 1):
        raise ValueError("pattern is not block-tridiagonal in this blocking.")
    diag = bh == bl
    slot_d = bh * bs * bs + (hi % bs) * bs + (lo % bs)
    slot_o = nb * bs * bs + (bh - 1) * bs * bs + (hi % bs) * bs + (lo % bs)
    # diagonal blocks are stored fully symmetric: also the mirrored slot
    slot = np.where(diag, slot_d, slot_o)
    mirror = np.where(diag, bh * bs * bs + (lo % bs) * bs + (hi % bs), slot_o)
    return slot, mirror, where


def padded(lists, pad: int, k: int | None = None) -> np.ndarray:
    """(len(lists), k) int array of the lists, filled with `pad` (k: the longest list)."""
    k = k or max((len(v) for v in lists), default=1) or 1
    out = np.full((len(lists), k), pad, np.int64)
    for i, v in enumerate(lists):
        out[i, : len(v)] = v
    return out


def slot_sources(order: np.ndarray, bs: int, nb: int, u0: int, rows, cols, srcs, one_src: int):
    """For entries (rows[i], cols[i]) of value src[srcs[i]] (each unordered pair once), the
    sources summed into every storage slot of [D | L] (`block_slots`), padding unknowns on
    the identity (source `one_src`; `one_src + 1` is the zero source that pads the lists).
    Returns ((nslot, k) source ids, where)."""
    slot, mirror, where = block_slots(order, bs, nb, u0, np.asarray(rows, np.int64), np.asarray(cols, np.int64))
    lists = [[] for _ in range((2 * nb - 1) * bs * bs if nb else 0)]
    for sl, mi, s in zip(slot, mirror, srcs):
        lists[sl].append(int(s))
        if mi != sl:
            lists[mi].append(int(s))
    for p in np.nonzero(order == u0)[0]:
        b, o = divmod(p, bs)
        lists[b * bs * bs + o * bs + o].append(one_src)
    return padded(lists, one_src + 1), where


class Factor(eqx.Module):
    """The block Thomas recursion for one matrix: Gₖ, Sₖ⁻¹ and the sub-diagonal blocks Lₖ."""

    G: Float[Array, "nb1 bs bs"]
    Sinv: Float[Array, "nb bs bs"]
    L: Float[Array, "nb1 bs bs"]


MAX_UNROLLED_BLOCK = 16  # Gauss-Jordan unrolled up to this block size; above: a loop (CPU) or LU
MAX_UNROLLED_CHAIN = 0  # Python-unrolled recursions up to this many blocks, lax.scan above
SCAN_UNROLL = 1  # lax.scan unroll factor (speed against compile time)


# Small-block products as broadcasts and sums: XLA fuses them with their neighbours, where a
# batched dot of 3×3 blocks is a kernel of its own.
def _mm(A, B):
    """A @ B over the last two axes."""
    return jnp.sum(A[..., :, :, None] * B[..., None, :, :], axis=-2)


def _mv(A, x):
    """A @ x."""
    return jnp.sum(A * x[..., None, :], axis=-1)


def _mtv(A, x):
    """Aᵀ @ x."""
    return jnp.sum(A * x[..., :, None], axis=-2)


def _gj_pivot_step(k, M, inv):
    """Pivot k of Gauss-Jordan elimination with partial pivoting (k traced): the row of
    largest magnitude in column k among rows k.. is swapped into row k, divided by the pivot,
    and column k is cleared elsewhere, in M and in the inverse being built. Row exchanges on
    [M | I] still end at [I | M⁻¹]."""
    iota = jnp.arange(M.shape[-1])
    col = jax.lax.dynamic_index_in_dim(M, k, axis=-1, keepdims=False)
    p = jnp.argmax(jnp.where(iota >= k, jnp.abs(col), -1.0), axis=-1)
    e_k = (iota == k).astype(M.dtype)
    e_p = (iota == p[..., None]).astype(M.dtype)
    swap = (e_k - e_p)[..., :, None]  # adds row p − row k to row k, subtracts it from row p

    def exchanged(X):
        row_k = jax.lax.dynamic_index_in_dim(X, k, axis=-2, keepdims=False)
        row_p = jnp.sum(e_p[..., :, None] * X, axis=-2)
        return X + swap * (row_p - row_k)[..., None, :]

    M, inv = exchanged(M), exchanged(inv)
    row_m = jax.lax.dynamic_index_in_dim(M, k, axis=-2, keepdims=False)
    row_i = jax.lax.dynamic_index_in_dim(inv, k, axis=-2, keepdims=False)
    col = jax.lax.dynamic_index_in_dim(M, k, axis=-1, keepdims=False)
    piv = jax.lax.dynamic_index_in_dim(row_m, k, axis=-1, keepdims=True)
    row_m, row_i = row_m / piv, row_i / piv
    col = jnp.where(iota == k, 0.0, col)[..., :, None]
    is_k = (iota == k)[:, None]
    M = jnp.where(is_k, row_m[..., None, :], M - col * row_m[..., None, :])
    inv = jnp.where(is_k, row_i[..., None, :], inv - col * row_i[..., None, :])
    return M, inv


def _inv(M):
    """Inverse of a block (or of a stack of them: leading axes are batch). Up to
    MAX_UNROLLED_BLOCK: Gauss-Jordan without pivoting (exists for the quasi-definite blocks Sₖ
    of the block Thomas recursion and for positive definite ones), unrolled and written with
    selects instead of indexed updates so that XLA fuses it into a few elementwise kernels,
    in place: pivot k turns column k of the block into column k of the inverse, so each pivot
    is one pass over a b×b block instead of two over [M | I] (the block Thomas factorization
    of the paper case's agent QP, 30 blocks of 8, ~8 % faster). In
    exact arithmetic every pivot of a quasi-definite block keeps the sign of its diagonal entry;
    a pivot that rounding has cancelled to 0 or past it (an LP's Newton system late in the
    solve: entries from 1e-10 to 1e10) is replaced by that diagonal entry, a static pivot
    perturbation whose error the Newton solve's iterative refinement removes, instead of an inf
    that would end the solve. Larger blocks: with partial pivoting, as a loop over the pivots
    on a CPU and by LU elsewhere (see the module docstring)."""
    n = M.shape[-1]
    if n > MAX_UNROLLED_BLOCK:
        inv = jnp.broadcast_to(jnp.eye(n, dtype=M.dtype), M.shape)
        loop = lambda M, inv: jax.lax.fori_loop(0, n, lambda k, c: _gj_pivot_step(k, *c), (M, inv))[1]  # noqa: E731
        return jax.lax.platform_dependent(M, inv, cpu=loop, default=lambda M, inv: jnp.linalg.inv(M))
    iota = jnp.arange(n)
    diag = jnp.diagonal(M, axis1=-2, axis2=-1)
    for k in range(n):  # in place: after pivot k, column k holds the inverse's column
        piv = M[..., k, k][..., None]
        d0 = diag[..., k, None]
        piv = jnp.where(piv * d0 > 0, piv, d0)  # cancelled to 0 or past it: see the docstring
        p = 1.0 / piv
        row = M[..., k, :] * p
        col = jnp.where(iota == k, 0.0, M[..., :, k])
        is_row, is_col = (iota == k)[:, None], (iota == k)[None, :]
        M = jnp.where(
            is_row,
            jnp.where(is_col, p[..., None], row[..., None, :]),
            jnp.where(is_col, -col[..., :, None] * p[..., None], M - col[..., :, None] * row[..., None, :]),
        )
    return M


def factor(D: Float[Array, "nb bs bs"], L: Float[Array, "nb1 bs bs"]) -> Factor:
    """Block Thomas factorization of tridiag(L, D, Lᵀ)."""
    nb = D.shape[0]
    if nb == 0:  # nothing to factor (a QP without coupling rows or weak columns)
        return Factor(G=L[:0], Sinv=D, L=L[:0])
    if nb <= MAX_UNROLLED_CHAIN:
        Sinv, G = [_inv(D[0])], []
        for k in range(1, nb):
            G.append(_mm(L[k - 1], Sinv[-1]))
            Sinv.append(_inv(D[k] - _mm(G[-1], jnp.swapaxes(L[k - 1], -1, -2))))
        G = jnp.stack(G) if G else L
        return Factor(G=G, Sinv=jnp.stack(Sinv), L=L)

    def body(Sinv_prev, DL):
        Dk, Lk = DL
        Gk = _mm(Lk, Sinv_prev)
        Sinv = _inv(Dk - _mm(Gk, jnp.swapaxes(Lk, -1, -2)))
        return Sinv, (Gk, Sinv)

    S0inv = _inv(D[0])
    _, (G, Sinv) = jax.lax.scan(body, S0inv, (D[1:], L), unroll=SCAN_UNROLL)
    return Factor(G=G, Sinv=jnp.concatenate([S0inv[None], Sinv]), L=L)


def solve(f: Factor, b: Float[Array, "nb bs"]) -> Float[Array, "nb bs"]:
    """Solve tridiag(L, D, Lᵀ) x = b with a `Factor`."""
    nb = f.Sinv.shape[0]
    if nb == 0:
        return b
    if nb <= MAX_UNROLLED_CHAIN:
        y = [b[0]]
        for k in range(1, nb):
            y.append(b[k] - _mv(f.G[k - 1], y[-1]))
        x = [_mv(f.Sinv[-1], y[-1])]
        for k in range(nb - 2, -1, -1):
            x.append(_mv(f.Sinv[k], y[k] - _mtv(f.L[k], x[-1])))
        return jnp.stack(x[::-1])

    def fwd(y_prev, Gb):
        Gk, bk = Gb
        y = bk - _mv(Gk, y_prev)
        return y, y

    _, ys = jax.lax.scan(fwd, b[0], (f.G, b[1:]), unroll=SCAN_UNROLL)
    y = jnp.concatenate([b[:1], ys])
    x_last = _mv(f.Sinv[-1], y[-1])

    def bwd(x_next, SyL):
        Sinv, yk, Lk1 = SyL
        x = _mv(Sinv, yk - _mtv(Lk1, x_next))
        return x, x

    _, xs = jax.lax.scan(bwd, x_last, (f.Sinv[:-1], y[:-1], f.L), reverse=True, unroll=SCAN_UNROLL)
    return jnp.concatenate([xs, x_last[None]])
