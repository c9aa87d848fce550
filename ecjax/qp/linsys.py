"""Shared linear algebra of the ADMM x-update, built once on the host.

Every ADMM iteration solves (OSQP eq. 24, reduced form)

    K(ρ) x̃ = r,    K(ρ) = P̄ + σ I + Āᵀ diag(ρ) Ā.                          (L1)

All objects here are built by `prepare` from concrete (P̄, Ā) with numpy and
are passed *unbatched* into the vmapped solve, so under `vmap` every product
with them becomes one matrix-matrix product for the whole batch.

Rows of Ā are split into *singleton* rows (one nonzero: a bound on one
variable; they add a diagonal to K) and *coupling* rows C (m_c of them).
Rows are permuted to [singleton..., coupling...] once.

Two solvers for (L1):

* `Woodbury` (diagonal P): ρ on singleton rows is fixed at prepare time
  (ρ_s = ρ₀ w_s), ρ on coupling rows is ρ̄ w_c with a per-sample adaptive
  scalar ρ̄ and fixed class weights w_c (1e3 for equality rows). Then
  D = P̄ + σI + Σ_s ρ_s a_s² e_j e_jᵀ is fixed and, with G = C D⁻¹ Cᵀ,
  Ê = diag(√w_c), Ê G Ê = U Γ Uᵀ (eigendecomposition, once):

      K⁻¹ = D⁻¹ − D⁻¹Cᵀ (ρ̄⁻¹ diag(w_c)⁻¹ + G)⁻¹ C D⁻¹                   (L2)
      (ρ̄⁻¹ diag(w_c)⁻¹ + G)⁻¹ = ÊU (ρ̄⁻¹ I + Γ)⁻¹ UᵀÊ                    (L3)

  so any ρ̄ costs nothing: no per-sample factorization at all, ever.
* `DenseEig` (any PSD P): ρ = ρ̄ w on all rows. With M = P̄ + σI and the
  eigendecomposition M^{-1/2} ĀᵀWĀ M^{-1/2} = V Λ Vᵀ (once; the ReLU-QP idea),

      K(ρ̄)⁻¹ = M^{-1/2} V (I + ρ̄Λ)⁻¹ Vᵀ M^{-1/2}                          (L4)

  two n×n products per iteration, any ρ̄ free.
"""

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int


# --------------------------------------------------------------------------- #
# A matrix in one of two formats: dense, or padded gather (ELL) rows + columns.
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


class Mat(eqx.Module):
    """An (r, c) matrix with `mv(x) = M x` and `rmv(y) = Mᵀ y`."""

    dense: Float[Array, "r c"] | None
    ridx: Int[Array, "r kr"] | None
    rval: Float[Array, "r kr"] | None
    cidx: Int[Array, "c kc"] | None
    cval: Float[Array, "c kc"] | None
    shape: tuple[int, int] = eqx.field(static=True)
    fmt: str = eqx.field(static=True)

    @staticmethod
    def build(M: np.ndarray, fmt: str, dtype) -> "Mat":
        if fmt not in ("dense", "gather"):
            raise ValueError(f"`fmt` must be 'dense' or 'gather', got {fmt!r}.")
        if fmt == "dense":
            return Mat(jnp.asarray(M, dtype), None, None, None, None, M.shape, fmt)
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
        xp = jnp.concatenate([x, jnp.zeros((1,), x.dtype)])
        return jnp.sum(self.rval * xp[self.ridx], axis=-1)

    def rmv(self, y):
        if self.fmt == "dense":
            return self.dense.T @ y
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


# --------------------------------------------------------------------------- #
# Solvers for (L1).
# --------------------------------------------------------------------------- #
class DenseEig(eqx.Module):
    """(L4): x = W (Wᵀ r ⊘ (1 + ρ̄ λ)),  W = M^{-1/2} V."""

    W: Float[Array, "n n"]
    lam: Float[Array, "n"]
    w: Float[Array, "m"]  # row class weights, ρ = ρ̄ w

    def rho_vec(self, rho_bar):
        return rho_bar * self.w

    def solve(self, rho_bar, r):
        return self.W @ ((self.W.T @ r) / (1.0 + rho_bar * self.lam))

    @staticmethod
    def build(Pb, Ab, w, sigma, dtype) -> "DenseEig":
        n = Pb.shape[0]
        M = 0.5 * (Pb + Pb.T) + sigma * np.eye(n)
        mu, Q = np.linalg.eigh(M)
        mu = np.maximum(mu, sigma)
        Mih = (Q / np.sqrt(mu)) @ Q.T
        B = Mih @ (Ab.T * w) @ Ab @ Mih
        lam, V = np.linalg.eigh(0.5 * (B + B.T))
        return DenseEig(
            W=jnp.asarray(Mih @ V, dtype), lam=jnp.asarray(np.maximum(lam, 0.0), dtype), w=jnp.asarray(w, dtype)
        )


class Woodbury(eqx.Module):
    """(L2)-(L3): x = D⁻¹r − Cdᵀ ÊU ((UᵀÊ Cd r) ⊘ (ρ̄⁻¹ + Γ)),  Cd = C D⁻¹."""

    Dinv: Float[Array, "n"]
    Cd: Mat
    Uh: Float[Array, "mc mc"]
    gam: Float[Array, "mc"]
    rho_s: Float[Array, "ms"]  # fixed ρ on singleton rows
    w_c: Float[Array, "mc"]  # coupling row class weights, ρ_c = ρ̄ w_c

    def rho_vec(self, rho_bar):
        return jnp.concatenate([self.rho_s, rho_bar * self.w_c])

    def solve(self, rho_bar, r):
        u = self.Cd.mv(r)
        v = self.Uh @ ((self.Uh.T @ u) / (1.0 / rho_bar + self.gam))
        return self.Dinv * r - self.Cd.rmv(v)

    @staticmethod
    def build(pdiag, Ab_perm, m_s, w, rho0, sigma, fmt, dtype) -> "Woodbury":
        n = pdiag.shape[0]
        S = Ab_perm[:m_s]
        rho_s = rho0 * w[:m_s]
        D = pdiag + sigma + (rho_s[:, None] * S**2).sum(axis=0) if m_s else pdiag + sigma + np.zeros(n)
        C = Ab_perm[m_s:]
        Cd = C / D[None, :]
        G = Cd @ C.T
        eh = np.sqrt(w[m_s:])
        gam, U = np.linalg.eigh(eh[:, None] * G * eh[None, :])
        return Woodbury(
            Dinv=jnp.asarray(1.0 / D, dtype),
            Cd=Mat.build(Cd, fmt, dtype),
            Uh=jnp.asarray(eh[:, None] * U, dtype),
            gam=jnp.asarray(np.maximum(gam, 0.0), dtype),
            rho_s=jnp.asarray(rho_s, dtype),
            w_c=jnp.asarray(w[m_s:], dtype),
        )
