"""OSQP-style ADMM for a batch of QPs that share (P, A).

    minimise ½ xᵀPx + qᵀx   subject to   lo <= A x <= hi

`prepare` (host, numpy, once per structure) computes the Ruiz scaling, splits
A into singleton and coupling rows and builds the shared linear solver (see
`linsys.py`). `solve` handles one instance (q, lo, hi) and is written without
a batch axis; `solve_batch` is `jit(vmap(solve))` with the operator unbatched.

Iteration (Stellato et al. 2020, OSQP, Algorithm 1, on the scaled problem):

    x̃ = K(ρ)⁻¹ (σx − q + Āᵀ(ρ∘z − y))                                   (A1)
    z̃ = Ā x̃                                                              (A2)
    x⁺ = α x̃ + (1 − α) x                                                  (A3)
    z⁺ = Π_[lo,hi](α z̃ + (1 − α) z + y ⊘ ρ)                               (A4)
    y⁺ = y + ρ ∘ (α z̃ + (1 − α) z − z⁺)                                   (A5)

Every `check_every` iterations: unscaled residuals and termination (OSQP §3.4,
eq. 23), infeasibility certificates from δy, δx of the last iteration (OSQP
§3.4, eqs. 25-27) and the rho update ρ̄ ← ρ̄ √((r_p/‖·‖)/(r_d/‖·‖)) (OSQP §5.2),
applied when it changes ρ̄ by more than `adaptive_rho_tolerance`. The chosen
linear solver makes any ρ̄ free, so each sample adapts its own ρ̄ at every
check without any factorization (see `linsys.py`).
"""

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int

from .._iterate import bounded_while
from . import linsys as _ls
from .scaling import ruiz
from .status import Status


class ADMM(eqx.Module):
    """Settings. Float fields become arrays of the operator's dtype in `prepare`
    (a sweep over them does not recompile); static fields fix the structure.

    `rho`, `sigma`, `eq_rho_scale` enter the shared factorization, so changing
    them needs a new `prepare`.
    """

    eps_abs: float = 1e-6
    eps_rel: float = 1e-6
    eps_pinf: float = 1e-5
    eps_dinf: float = 1e-5
    alpha: float = 1.6
    rho_min: float = 1e-6
    rho_max: float = 1e6
    adaptive_rho_tolerance: float = 5.0
    rho: float = eqx.field(static=True, default=0.1)
    sigma: float = eqx.field(static=True, default=1e-6)
    eq_rho_scale: float = eqx.field(static=True, default=1e3)
    max_iter: int = eqx.field(static=True, default=4000)
    check_every: int = eqx.field(static=True, default=25)
    adaptive_rho: bool = eqx.field(static=True, default=True)
    scaling_iters: int = eqx.field(static=True, default=10)
    c_format: str = eqx.field(static=True, default="auto")  # auto | dense | gather

    def __check_init__(self):
        if self.check_every < 1:
            raise ValueError(f"`ADMM(check_every=...)` must be >= 1, got {self.check_every}.")
        if self.max_iter < 0:
            raise ValueError(f"`ADMM(max_iter=...)` must be >= 0, got {self.max_iter}.")
        if self.c_format not in ("auto", "dense", "gather"):
            raise ValueError(f"`ADMM(c_format=...)` must be auto|dense|gather, got {self.c_format!r}.")


def static_settings(settings):
    """The settings with every float field set to 0.0 (None kept): what decides the compiled
    program. An operator keeps this as its static `host`, so that operators differing only in
    tolerances (traced arrays in `settings`) share one compilation."""
    return jax.tree_util.tree_map(lambda v: 0.0, settings)


class Operator(eqx.Module):
    """Everything a batch shares: scaling, split Ā, P̄, the linear solver.

    Pass it unbatched (`in_axes=None`). Build with `prepare`.
    """

    settings: ADMM
    A: _ls.SplitA  # scaled Ā, rows permuted
    lin: _ls.DenseEig
    P: Float[Array, "n n"] | Float[Array, "n"]  # scaled P̄ (diagonal stored as a vector)
    D: Float[Array, "n"]  # column scaling
    E: Float[Array, "m"]  # row scaling (permuted)
    c: Float[Array, ""]  # cost scaling
    perm: Int[Array, "m"]  # internal row i is user row perm[i]
    iperm: Int[Array, "m"]
    P_orig: Float[Array, "n n"]  # unscaled, for the jaxopt backend and KKT checks
    A_orig: Float[Array, "m n"]
    n: int = eqx.field(static=True)
    m: int = eqx.field(static=True)
    p_diagonal: bool = eqx.field(static=True)
    host: ADMM = eqx.field(static=True)  # static_settings(settings): structure, no float values
    kind: str = eqx.field(static=True, default="admm")

    @property
    def dtype(self):
        return self.D.dtype

    def Pmv(self, x):
        return self.P * x if self.p_diagonal else self.P @ x


def prepare(P, A, settings: ADMM = ADMM(), dtype=jnp.float64, lo=None, hi=None) -> Operator:
    """Build the shared operator on the host (numpy), once per (P, A).

    **Arguments:**
    - `P`: (n, n) symmetric PSD, concrete.
    - `A`: (m, n), concrete.
    - `settings`: `ADMM` settings.
    - `dtype`: float64 or float32; the dtype of every solve with this operator.
    - `lo`, `hi`: optional template bounds, (m,) or a batch (B, m). They only
      classify rows: rows with lo == hi in every template sample get
      ρ × `eq_rho_scale`. A row that is an equality in the template but not in a
      sample converges slowly, so pass a representative batch. Samples may use other
      bounds; only speed changes. (OSQP's ρ_min for free rows is not used: a
      row free in the template may be bounded in a sample, and a tiny ρ there
      would stall it.)

    **Returns:** an `Operator`.
    """
    dtype = jnp.dtype(dtype)
    if dtype not in (jnp.dtype(jnp.float32), jnp.dtype(jnp.float64)):
        raise ValueError(f"`dtype` must be float32 or float64, got {dtype}.")
    if dtype == jnp.float64 and not jax.config.jax_enable_x64:
        raise ValueError("`dtype=float64` needs `jax.config.update('jax_enable_x64', True)`.")
    P = np.asarray(P, dtype=np.float64)
    A = np.asarray(A, dtype=np.float64)
    if P.ndim != 2 or P.shape[0] != P.shape[1]:
        raise ValueError(f"`P` must be square (n, n), got shape {P.shape}.")
    n = P.shape[0]
    if A.ndim != 2 or A.shape[1] != n:
        raise ValueError(f"`A` must have shape (m, {n}), got {A.shape}.")
    if not np.allclose(P, P.T, rtol=0, atol=1e-12 * max(1.0, np.abs(P).max(initial=0))):
        raise ValueError("`P` must be symmetric.")
    m = A.shape[0]
    s = settings

    D, E, c = ruiz(P, A, s.scaling_iters)
    Pb = c * D[:, None] * P * D[None, :]
    Ab = E[:, None] * A * D[None, :]

    # row classes -> weights w (ρ = ρ̄ w)
    w = np.ones(m)
    if lo is not None or hi is not None:
        lo_t = np.full(m, -np.inf) if lo is None else np.asarray(lo, np.float64)
        hi_t = np.full(m, np.inf) if hi is None else np.asarray(hi, np.float64)
        if lo_t.shape[-1:] != (m,) or hi_t.shape[-1:] != (m,):
            raise ValueError(f"template `lo`, `hi` must have shape ({m},) or (B, {m}).")
        eq = np.isfinite(lo_t) & (lo_t == hi_t)
        eq = eq.reshape(-1, m).all(axis=0)  # equality in every template sample
        w = np.where(eq, s.eq_rho_scale, 1.0)

    perm, m_s = _ls.split_rows(Ab)
    Ab_p, w_p = Ab[perm], w[perm]
    m_c = m - m_s
    p_diagonal = bool(np.all(P == np.diag(np.diag(P))))

    fmt = s.c_format
    if fmt == "auto":
        density = (Ab_p[m_s:] != 0).mean() if m_c else 0.0
        fmt = "gather" if density < 0.1 else "dense"

    split = _ls.build_split(Ab_p, m_s, fmt, dtype)
    lin = _ls.DenseEig.build(Pb, Ab_p, w_p, s.sigma, dtype)

    # tolerances etc. become arrays (traced: changing them does not recompile)
    settings_arr = jax.tree_util.tree_map(lambda v: jnp.asarray(v, dtype), s)
    return Operator(
        settings=settings_arr,
        A=split,
        lin=lin,
        P=jnp.asarray(np.diag(Pb) if p_diagonal else Pb, dtype),
        D=jnp.asarray(D, dtype),
        E=jnp.asarray(E[perm], dtype),
        c=jnp.asarray(c, dtype),
        perm=jnp.asarray(perm.astype(np.int32)),
        iperm=jnp.asarray(np.argsort(perm).astype(np.int32)),
        P_orig=jnp.asarray(P, dtype),
        A_orig=jnp.asarray(A, dtype),
        n=n,
        m=m,
        p_diagonal=p_diagonal,
        host=static_settings(s),
    )


# --------------------------------------------------------------------------- #
class Solution(eqx.Module):
    """Result of one solve (unscaled, user row order). All fields finite."""

    x: Float[Array, "n"]
    y: Float[Array, "m"]
    z: Float[Array, "m"]
    rho: Float[Array, ""]
    status: Int[Array, ""]
    num_steps: Int[Array, ""]
    prim_res: Float[Array, ""]
    dual_res: Float[Array, ""]
    obj: Float[Array, ""]


class ADMMState(eqx.Module):
    """Scaled iterate, internal row order."""

    x: Float[Array, "n"]
    z: Float[Array, "m"]
    y: Float[Array, "m"]
    rho: Float[Array, ""]
    num_steps: Int[Array, ""]
    status: Int[Array, ""]
    prim_res: Float[Array, ""]
    dual_res: Float[Array, ""]


class _Data(eqx.Module):
    """One sample's scaled data: q̄ = cDq, lō = E lo, hī = E hi (permuted)."""

    q: Float[Array, "n"]
    lo: Float[Array, "m"]
    hi: Float[Array, "m"]


def _inf(v):
    return jnp.max(jnp.abs(v), initial=0.0)


def _admm_iter(op: Operator, data: _Data, x, z, y, rho_bar):
    """One ADMM iteration (A1)-(A5). Returns (x⁺, z⁺, y⁺)."""
    s = op.settings
    rho = op.lin.rho_vec(rho_bar)
    rhs = s.sigma * x - data.q + op.A.rmv(rho * z - y)  # (A1)
    xt = op.lin.solve(rho_bar, rhs)
    zt = op.A.mv(xt)  # (A2)
    x_new = s.alpha * xt + (1.0 - s.alpha) * x  # (A3)
    zr = s.alpha * zt + (1.0 - s.alpha) * z
    z_new = jnp.clip(zr + y / rho, data.lo, data.hi)  # (A4)
    y_new = y + rho * (zr - z_new)  # (A5)
    return x_new, z_new, y_new


class _Check(eqx.Module):
    prim: Float[Array, ""]
    dual: Float[Array, ""]
    solved: Array
    rho_est: Float[Array, ""]


def _residuals(op: Operator, data: _Data, x, z, y, rho_bar) -> _Check:
    """Unscaled residuals, OSQP termination (eq. 23) and the rho estimate."""
    s = op.settings
    eps = jnp.finfo(op.dtype).eps
    Ax = op.A.mv(x)
    Px = op.Pmv(x)
    Aty = op.A.rmv(y)
    prim = _inf((Ax - z) / op.E)
    dual = _inf((Px + data.q + Aty) / op.D) / op.c
    prim_scale = jnp.maximum(_inf(Ax / op.E), _inf(z / op.E))
    dual_scale = jnp.maximum(jnp.maximum(_inf(Px / op.D), _inf(Aty / op.D)), _inf(data.q / op.D)) / op.c
    solved = (prim <= s.eps_abs + s.eps_rel * prim_scale) & (dual <= s.eps_abs + s.eps_rel * dual_scale)
    ratio = (prim / (prim_scale + eps)) / (dual / (dual_scale + eps) + eps)
    rho_est = jnp.clip(rho_bar * jnp.sqrt(ratio), s.rho_min, s.rho_max)
    return _Check(prim=prim, dual=dual, solved=solved, rho_est=rho_est)


def _infeasible(op: Operator, data: _Data, dy, dx, Adx=None, E=None, Einv=None):
    """(primal, dual) infeasibility certificates, OSQP eqs. 26 and 27, on the unscaled
    δy = E δȳ / c and δx = D δx̄. The tests are written for δy / ‖δy‖∞ and δx / ‖δx‖∞; here
    both sides are multiplied by the norm instead, so that the norms and the tests share
    four reductions. `Adx`: Ā δx̄ where the caller has it already; `E`, `Einv`: the rows'
    scaling and unscaling, `op.E` and 1/`op.E` unless given (the IPM's merged rows have
    their own)."""
    s = op.settings
    E = op.E if E is None else E
    lo_fin, hi_fin = jnp.isfinite(data.lo), jnp.isfinite(data.hi)
    # δy projected onto the polar recession cone of [lo, hi] (OSQP does the same)
    dy = jnp.where((~hi_fin & (dy > 0)) | (~lo_fin & (dy < 0)), 0.0, dy)
    Adx = op.A.mv(dx) if Adx is None else Adx
    Adx = Adx / op.E if Einv is None else Adx * Einv
    ninf = -jnp.inf
    rows = jnp.max(jnp.stack([
        jnp.abs(E * dy),
        jnp.maximum(jnp.where(hi_fin, Adx, ninf), jnp.where(lo_fin, -Adx, ninf)),  # leaves the recession cone
    ]), axis=-1, initial=ninf)  # fmt: skip
    cols = jnp.max(jnp.stack([jnp.abs(op.A.rmv(dy) / op.D), jnp.abs(op.D * dx), jnp.abs(op.Pmv(dx) / op.D)]), axis=-1, initial=0.0)
    ny, cone = jnp.maximum(rows[0], 0.0), rows[1]
    Aty, nx, P_dx = cols[0], cols[1], cols[2]
    bound = jnp.sum(jnp.where(hi_fin, data.hi, 0.0) * jnp.maximum(dy, 0.0) + jnp.where(lo_fin, data.lo, 0.0) * jnp.minimum(dy, 0.0))
    q_dx = jnp.dot(data.q, dx)
    pinf = (ny > s.eps_pinf) & (Aty <= s.eps_pinf * ny) & (bound < -s.eps_pinf * ny)
    dx_tol = s.eps_dinf * nx
    dinf = (nx > s.eps_dinf) & (q_dx < -dx_tol * op.c) & (P_dx <= dx_tol * op.c) & (cone <= dx_tol)
    return pinf, dinf


def _all_finite(*xs):
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(v)) for v in xs]))


# --------------------------------------------------------------------------- #
# init / step / terminate
# --------------------------------------------------------------------------- #
def init(op: Operator, data: _Data, warm=None) -> ADMMState:
    """Initial (scaled) state: zeros, or a warm start (x, z, y, rho) in user units."""
    dt = op.dtype
    if warm is None:
        x = jnp.zeros(op.n, dt)
        z = jnp.clip(jnp.zeros(op.m, dt), data.lo, data.hi)
        y = jnp.zeros(op.m, dt)
        rho = jnp.asarray(op.settings.rho, dt)
    else:
        # z clipped to the new bounds and y projected onto their normal cone at z (y_r >= 0
        # only where z_r = hi_r, y_r <= 0 only where z_r = lo_r): the termination test
        # (primal and dual residuals only) relies on y ∈ N(z), which ADMM keeps after every
        # iteration but a warm start from a problem with other bounds can break. E.g. a
        # solution at an upper bound that the new problem relaxes has zero residuals there
        # with its old multiplier, but is not optimal; without the projection the solver
        # would stop at once. On a solution of the same problem the projection changes nothing.
        x = jnp.asarray(warm.x, dt) / op.D
        z = jnp.clip(op.E * jnp.asarray(warm.z, dt)[op.perm], data.lo, data.hi)
        y = op.c * jnp.asarray(warm.y, dt)[op.perm] / op.E
        y = jnp.where(z >= data.hi, jnp.maximum(y, 0.0), 0.0) + jnp.where(z <= data.lo, jnp.minimum(y, 0.0), 0.0)
        rho = jnp.asarray(op.settings.rho if warm.rho is None else warm.rho, dt)
    chk = _residuals(op, data, x, z, y, rho)
    status = jnp.where(chk.solved, int(Status.solved), int(Status.running)).astype(jnp.int32)
    return ADMMState(
        x=x, z=z, y=y, rho=rho, num_steps=jnp.asarray(0, jnp.int32), status=status,
        prim_res=chk.prim, dual_res=chk.dual,
    )  # fmt: skip


def step(op: Operator, data: _Data, state: ADMMState) -> ADMMState:
    """`check_every` ADMM iterations, then termination checks and the rho update."""
    s = op.settings
    k = op.settings.check_every
    rho = state.rho

    def body(_, c):
        return _admm_iter(op, data, *c, rho)

    x, z, y = jax.lax.fori_loop(0, k - 1, body, (state.x, state.z, state.y))
    x1, z1, y1 = _admm_iter(op, data, x, z, y, rho)
    chk = _residuals(op, data, x1, z1, y1, rho)
    pinf, dinf = _infeasible(op, data, y1 - y, x1 - x)
    finite = _all_finite(x1, z1, y1, chk.prim, chk.dual)
    status = jnp.select(
        [~finite, chk.solved, pinf, dinf],
        [int(Status.numerical_error), int(Status.solved), int(Status.primal_infeasible), int(Status.dual_infeasible)],
        int(Status.running),
    ).astype(jnp.int32)
    if s.adaptive_rho:
        tol = s.adaptive_rho_tolerance
        change = (chk.rho_est > tol * rho) | (chk.rho_est < rho / tol)
        rho = jnp.where(change & (status == int(Status.running)), chk.rho_est, rho)
    new = ADMMState(
        x=x1, z=z1, y=y1, rho=rho, num_steps=state.num_steps + k, status=status,
        prim_res=chk.prim, dual_res=chk.dual,
    )  # fmt: skip
    # never let a non-finite iterate out: keep the last finite one
    return jax.tree_util.tree_map(
        lambda a, b: jnp.where(finite, a, b), new, eqx.tree_at(lambda t: t.status, state, status)
    )


def terminate(op: Operator, data: _Data, state: ADMMState):
    """(done, status)."""
    return state.status != int(Status.running), state.status


# --------------------------------------------------------------------------- #
def _scale_data(op: Operator, q, lo, hi) -> _Data:
    dt = op.dtype
    q, lo, hi = (jnp.asarray(v, dt) for v in (q, lo, hi))
    return _Data(q=op.c * op.D * q, lo=op.E * lo[op.perm], hi=op.E * hi[op.perm])


def _check_args(op: Operator, q, lo, hi):
    if jnp.shape(q) != (op.n,):
        raise ValueError(f"`q` must have shape ({op.n},), got {jnp.shape(q)}.")
    if jnp.shape(lo) != (op.m,):
        raise ValueError(f"`lo` must have shape ({op.m},), got {jnp.shape(lo)}.")
    if jnp.shape(hi) != (op.m,):
        raise ValueError(f"`hi` must have shape ({op.m},), got {jnp.shape(hi)}.")


def _finite(v):
    return jnp.where(jnp.isfinite(v), v, 0.0)


def _solve_admm(op: Operator, q, lo, hi, warm=None) -> Solution:
    _check_args(op, q, lo, hi)
    data = _scale_data(op, q, lo, hi)
    state = init(op, data, warm)
    n_chunks = math.ceil(op.settings.max_iter / op.settings.check_every)
    state = bounded_while(
        lambda st: ~terminate(op, data, st)[0], lambda st: step(op, data, st), state, n_chunks
    )
    status = jnp.where(state.status == int(Status.running), int(Status.max_iter), state.status).astype(jnp.int32)
    x = op.D * state.x
    z = (state.z / op.E)[op.iperm]
    y = (op.E * state.y / op.c)[op.iperm]
    obj = (0.5 * jnp.dot(state.x, op.Pmv(state.x)) + jnp.dot(data.q, state.x)) / op.c
    return Solution(
        x=_finite(x), y=_finite(y), z=_finite(z), rho=state.rho, status=status,
        num_steps=state.num_steps, prim_res=state.prim_res, dual_res=state.dual_res, obj=_finite(obj),
    )  # fmt: skip
