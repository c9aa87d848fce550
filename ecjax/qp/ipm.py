"""Primal-dual interior-point method (Mehrotra predictor-corrector) for a batch of QPs that
share (P, A), P diagonal:

    minimise ½ xᵀPx + qᵀx   subject to   lo <= A x <= hi

Each finite side of a row gets a slack and a multiplier (infinite sides are masked per sample,
so a row may be free in one sample and bounded in another; lo = hi is an equality):

    A x − s_l = lo,  A x + s_u = hi,  s, λ >= 0,  P x + q + Aᵀ(λ_u − λ_l) = 0,  s∘λ = σμ.   (I1)

Eliminating the slacks and multipliers leaves the Newton system

    (P + Aᵀ diag(d) A) dx = −r_d − Aᵀ g,   d = λ_l/s_l + λ_u/s_u,                      (I2)

solved by `normal.py` (structured, per-sample factorization of a small block-tridiagonal
matrix) with iterative refinement. The iteration count of an interior-point method hardly
depends on the data (20-30 here), which is what a vmapped batch needs: under `vmap` every
sample runs until the slowest one stops. Warm starts are accepted and ignored (an interior
point cannot use them); ADMM (`admm.py`) is the warm-startable alternative.

Residuals, termination and infeasibility certificates follow the ADMM conventions (OSQP §3.4),
so `Solution` means the same for both: y = λ_u − λ_l, z = clip(Ax, lo, hi).
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int

from .._iterate import bounded_while
from . import linsys as _ls
from . import normal, schur  # noqa: F401  (schur: the two-level form of the Newton system)
from .admm import Solution, _Data, _dual_infeasible, _finite, _inf, _primal_infeasible, _scale_data
from .scaling import ruiz
from .status import Status


class IPM(eqx.Module):
    """Settings. Float fields become arrays of the operator's dtype in `prepare`."""

    eps_abs: float = 1e-6
    eps_rel: float = 1e-6
    eps_pinf: float = 1e-5
    eps_dinf: float = 1e-5
    step_fraction: float = 0.99  # fraction of the distance to the boundary taken per step
    reg: float | None = None  # δ_p = δ_d; None: 1e-10 (float64) or 1e-7 (float32)
    reg_eq: float | None = None  # δ_e of equality rows; None: 1e-8 (float64) or 1e-5 (float32)
    max_iter: int = eqx.field(static=True, default=80)
    refine: int = eqx.field(static=True, default=0)  # iterative-refinement steps per solve
    weak_p: float = eqx.field(static=True, default=1e-4)
    max_dense: int = eqx.field(static=True, default=0)
    scaling_iters: int = eqx.field(static=True, default=10)
    rho: float = eqx.field(static=True, default=0.0)  # unused: keeps Solution.rho meaningful

    def __check_init__(self):
        if self.max_iter < 1:
            raise ValueError(f"`IPM(max_iter=...)` must be >= 1, got {self.max_iter}.")
        if self.refine < 0:
            raise ValueError(f"`IPM(refine=...)` must be >= 0, got {self.refine}.")
        if not 0 < self.step_fraction < 1:
            raise ValueError(f"`IPM(step_fraction=...)` must be in (0, 1), got {self.step_fraction}.")


class IPMOperator(eqx.Module):
    """What a batch shares (scaled, rows permuted to [singleton | coupling])."""

    settings: IPM
    A: _ls.SplitA
    kkt: "normal.NormalKKT | schur.SchurKKT"
    P: Float[Array, " n"]
    D: Float[Array, " n"]
    E: Float[Array, " m"]
    c: Float[Array, ""]
    perm: Int[Array, " m"]
    iperm: Int[Array, " m"]
    P_orig: Float[Array, "n n"]
    A_orig: Float[Array, "m n"]
    n: int = eqx.field(static=True)
    m: int = eqx.field(static=True)
    host: IPM = eqx.field(static=True)
    kind: str = eqx.field(static=True, default="ipm")
    p_diagonal: bool = eqx.field(static=True, default=True)

    @property
    def dtype(self):
        return self.D.dtype

    def Pmv(self, x):
        return self.P * x


def prepare_ipm(P, A, settings: IPM, dtype) -> IPMOperator:
    P = np.asarray(P, np.float64)
    A = np.asarray(A, np.float64)
    if not np.all(P == np.diag(np.diag(P))):
        raise ValueError("`IPM` needs a diagonal `P`; use `ADMM` settings for a general P.")
    n, m = P.shape[0], A.shape[0]
    D, E, c = ruiz(P, A, settings.scaling_iters)
    pd = c * D * np.diag(P) * D
    Ab = E[:, None] * A * D[None, :]
    perm, m_s = _ls.split_rows(Ab)
    Ab_p = Ab[perm]
    kkt = normal.NormalKKT.build(pd, Ab_p, m_s, settings.weak_p, settings.max_dense, dtype)
    s = settings
    f64 = dtype == jnp.float64
    if s.reg is None:
        s = eqx.tree_at(lambda t: t.reg, s, 1e-10 if f64 else 1e-7, is_leaf=lambda v: v is None)
    if s.reg_eq is None:
        s = eqx.tree_at(lambda t: t.reg_eq, s, 1e-8 if f64 else 1e-5, is_leaf=lambda v: v is None)
    return IPMOperator(
        settings=jax.tree_util.tree_map(lambda v: jnp.asarray(v, dtype), s),
        A=_ls.build_split(Ab_p, m_s, "gather", dtype),
        kkt=kkt,
        P=jnp.asarray(pd, dtype),
        D=jnp.asarray(D, dtype),
        E=jnp.asarray(E[perm], dtype),
        c=jnp.asarray(c, dtype),
        perm=jnp.asarray(perm.astype(np.int32)),
        iperm=jnp.asarray(np.argsort(perm).astype(np.int32)),
        P_orig=jnp.asarray(P, dtype),
        A_orig=jnp.asarray(A, dtype),
        n=n,
        m=m,
        host=settings,
    )


class IPMState(eqx.Module):
    x: Float[Array, " n"]
    sl: Float[Array, " m"]
    su: Float[Array, " m"]
    ll: Float[Array, " m"]
    lu: Float[Array, " m"]
    ye: Float[Array, " m"]  # multipliers of equality rows (lo = hi)
    k: Int[Array, ""]
    status: Int[Array, ""]
    prim: Float[Array, ""]
    dual: Float[Array, ""]


class _Sides(eqx.Module):
    hl: Float[Array, " m"]  # 1 where lo is finite (and the row is not an equality)
    hu: Float[Array, " m"]
    he: Float[Array, " m"]  # 1 on equality rows (lo = hi, up to rounding)
    lo: Float[Array, " m"]  # infinite entries replaced by 0
    hi: Float[Array, " m"]


def _sides(data: _Data) -> _Sides:
    fl, fu = jnp.isfinite(data.lo), jnp.isfinite(data.hi)
    dt = data.q.dtype
    lo, hi = jnp.where(fl, data.lo, 0.0), jnp.where(fu, data.hi, 0.0)
    eq = fl & fu & (hi - lo <= 100 * jnp.finfo(dt).eps * (1.0 + jnp.abs(lo)))
    return _Sides(
        hl=(fl & ~eq).astype(dt), hu=(fu & ~eq).astype(dt), he=eq.astype(dt), lo=lo, hi=jnp.where(eq, lo, hi)
    )


def _Kd_mv(op: IPMOperator, d, v):
    """(P̄ + Āₛᵀ diag(dₛ) Āₛ) v: the singleton rows' part of (I2), unregularized."""
    Av = op.A.mv(v)
    ds = jnp.where(jnp.arange(op.m) < op.A.m_s, d, 0.0)
    return op.P * v + op.A.rmv(ds * Av)


def _newton(op: IPMOperator, fac, d, r, t):
    """Solve [Kd Cᵀ; C −diag(1/d_c)] [dx; v] = [r; t] with iterative refinement."""
    dx, v = normal.solve(op.kkt, fac, r, t)
    m_s = op.A.m_s
    for _ in range(op.host.refine):
        Cdx = op.A.mv(dx)[m_s:]
        Ctv = op.A.rmv(jnp.concatenate([jnp.zeros((m_s,), v.dtype), v]))
        e1 = r - _Kd_mv(op, d, dx) - Ctv
        e2 = t - (Cdx - fac.dc_inv * v)
        ddx, dv = normal.solve(op.kkt, fac, e1, e2)
        dx, v = dx + ddx, v + dv
    return dx, v


def _max_step(v, dv, mask):
    """Largest α <= 1 with v + α dv >= 0 on the masked entries."""
    neg = (mask > 0) & (dv < 0)
    ratios = jnp.where(neg, -v / jnp.where(neg, dv, -1.0), jnp.inf)
    return jnp.minimum(1.0, jnp.min(ratios, initial=jnp.inf))


def _residuals(op: IPMOperator, data: _Data, sd: _Sides, st: IPMState):
    z = op.A.mv(st.x)
    y = st.lu - st.ll + st.ye
    Px = op.P * st.x
    Aty = op.A.rmv(y)
    rd = Px + data.q + Aty
    rl = sd.hl * (z - st.sl - sd.lo)
    ru = sd.hu * (z + st.su - sd.hi)
    re = sd.he * (z - sd.lo)
    return z, y, Px, Aty, rd, rl, ru, re


def _check(op: IPMOperator, data: _Data, sd: _Sides, st: IPMState):
    s = op.settings
    z, y, Px, Aty, rd, rl, ru, re = _residuals(op, data, sd, st)
    prim = jnp.maximum(jnp.maximum(_inf(rl / op.E), _inf(ru / op.E)), _inf(re / op.E))
    dual = _inf(rd / op.D) / op.c
    prim_scale = jnp.maximum(_inf(z / op.E), _inf((sd.hl + sd.he) * sd.lo / op.E))
    prim_scale = jnp.maximum(prim_scale, _inf(sd.hu * sd.hi / op.E))
    dual_scale = jnp.maximum(jnp.maximum(_inf(Px / op.D), _inf(Aty / op.D)), _inf(data.q / op.D)) / op.c
    comp = (jnp.dot(sd.hl * st.sl, st.ll) + jnp.dot(sd.hu * st.su, st.lu)) / op.c
    pobj = (0.5 * jnp.dot(st.x, Px) + jnp.dot(data.q, st.x)) / op.c
    solved = (
        (prim <= s.eps_abs + s.eps_rel * prim_scale)
        & (dual <= s.eps_abs + s.eps_rel * dual_scale)
        & (comp <= s.eps_abs + s.eps_rel * jnp.abs(pobj))
    )
    return prim, dual, solved


def init(op: IPMOperator, data: _Data) -> IPMState:
    """Start: x from (P + Aᵀ diag(has side) A) x = −q, slacks pushed to >= 1, multipliers 1."""
    sd = _sides(data)
    d0 = sd.hl + sd.hu + sd.he
    fac = normal.factor(op.kkt, op.A, op.P, d0, op.settings.reg, op.settings.reg)
    target = (sd.hl + sd.he) * sd.lo + sd.hu * sd.hi  # d0 ∘ target: pull Ax towards the bounds
    m_s = op.A.m_s
    r = -data.q + op.A.rmv(jnp.where(jnp.arange(op.m) < m_s, target, 0.0))
    t = jnp.where(d0[m_s:] > 0, target[m_s:] / jnp.maximum(d0[m_s:], 1.0), 0.0)
    x, _ = _newton(op, fac, d0, r, t)
    z = op.A.mv(x)
    one = jnp.ones_like(z)
    sl = jnp.where(sd.hl > 0, jnp.maximum(z - sd.lo, 1.0), one)
    su = jnp.where(sd.hu > 0, jnp.maximum(sd.hi - z, 1.0), one)
    st = IPMState(
        x=x, sl=sl, su=su, ll=sd.hl * one, lu=sd.hu * one, ye=jnp.zeros_like(z), k=jnp.asarray(0, jnp.int32),
        status=jnp.asarray(int(Status.running), jnp.int32), prim=jnp.asarray(jnp.inf, z.dtype),
        dual=jnp.asarray(jnp.inf, z.dtype),
    )  # fmt: skip
    prim, dual, solved = _check(op, data, sd, st)
    status = jnp.where(solved, int(Status.solved), int(Status.running)).astype(jnp.int32)
    return eqx.tree_at(lambda t: (t.status, t.prim, t.dual), st, (status, prim, dual))


def step(op: IPMOperator, data: _Data, st: IPMState) -> IPMState:
    """One Mehrotra predictor-corrector iteration, then termination checks."""
    s = op.settings
    sd = _sides(data)
    _, _, _, _, rd, rl, ru, re = _residuals(op, data, sd, st)
    n_act = jnp.maximum(jnp.sum(sd.hl) + jnp.sum(sd.hu), 1.0)
    mu = (jnp.dot(sd.hl * st.sl, st.ll) + jnp.dot(sd.hu * st.su, st.lu)) / n_act
    dl = sd.hl * st.ll / st.sl
    du = sd.hu * st.lu / st.su
    de = sd.he / s.reg_eq
    d = dl + du + de
    fac = normal.factor(op.kkt, op.A, op.P, d, s.reg, s.reg)

    m_s = op.A.m_s
    is_s = jnp.arange(op.m) < m_s

    def direction(cl, cu):
        g = sd.hu * (cu / st.su + du * ru) + sd.hl * (-cl / st.sl + dl * rl) + de * re
        r = -rd - op.A.rmv(jnp.where(is_s, g, 0.0))
        gc, dc = g[m_s:], d[m_s:]
        t = -jnp.where(dc > 0, gc / jnp.where(dc > 0, dc, 1.0), 0.0)
        dx, v = _newton(op, fac, d, r, t)
        Adx = op.A.mv(dx)
        dy = jnp.concatenate([(d * Adx + g)[:m_s], v])  # coupling rows: v from the solve
        dsl = sd.hl * (Adx + rl)
        dsu = sd.hu * (-ru - Adx)
        dll_f = sd.hl * (cl / st.sl - dl * (Adx + rl))
        dlu_f = sd.hu * (cu / st.su + du * (ru + Adx))
        ineq = 1.0 - sd.he
        low = dl >= du  # the side with the larger weight takes the remainder of dy
        dll = ineq * jnp.where(low, sd.hl * (dlu_f - dy), dll_f)
        dlu = ineq * jnp.where(low, dlu_f, sd.hu * (dy + dll_f))
        dye = sd.he * dy
        return dx, dsl, dsu, dll, dlu, dye

    def steplen(dsl, dsu, dll, dlu):
        ap = jnp.minimum(_max_step(st.sl, dsl, sd.hl), _max_step(st.su, dsu, sd.hu))
        ad = jnp.minimum(_max_step(st.ll, dll, sd.hl), _max_step(st.lu, dlu, sd.hu))
        return jnp.minimum(ap, ad)

    # predictor (affine scaling)
    _, asl, asu, all_, alu, _ = direction(-st.sl * st.ll * sd.hl, -st.su * st.lu * sd.hu)
    a_aff = steplen(asl, asu, all_, alu)
    mu_aff = (
        jnp.dot(sd.hl * (st.sl + a_aff * asl), st.ll + a_aff * all_)
        + jnp.dot(sd.hu * (st.su + a_aff * asu), st.lu + a_aff * alu)
    ) / n_act
    sigma = jnp.clip((mu_aff / jnp.maximum(mu, jnp.finfo(mu.dtype).tiny)) ** 3, 0.0, 1.0)
    # corrector
    cl = sd.hl * (sigma * mu - st.sl * st.ll - asl * all_)
    cu = sd.hu * (sigma * mu - st.su * st.lu - asu * alu)
    dx, dsl, dsu, dll, dlu, dye = direction(cl, cu)
    a = s.step_fraction * steplen(dsl, dsu, dll, dlu)
    one = jnp.ones_like(st.sl)
    new = IPMState(
        x=st.x + a * dx,
        sl=jnp.where(sd.hl > 0, st.sl + a * dsl, one),
        su=jnp.where(sd.hu > 0, st.su + a * dsu, one),
        ll=sd.hl * (st.ll + a * dll),
        lu=sd.hu * (st.lu + a * dlu),
        ye=sd.he * (st.ye + a * dye),
        k=st.k + 1,
        status=st.status,
        prim=st.prim,
        dual=st.dual,
    )
    prim, dual, solved = _check(op, data, sd, new)
    pinf = _primal_infeasible(op, data, a * (dlu - dll + dye))
    dinf = _dual_infeasible(op, data, a * dx)
    finite = jnp.all(jnp.stack([jnp.all(jnp.isfinite(v)) for v in (new.x, new.sl, new.su, new.ll, new.lu, new.ye)]))
    finite = finite & jnp.isfinite(prim) & jnp.isfinite(dual)
    status = jnp.select(
        [~finite, solved, pinf, dinf],
        [int(Status.numerical_error), int(Status.solved), int(Status.primal_infeasible), int(Status.dual_infeasible)],
        int(Status.running),
    ).astype(jnp.int32)
    new = eqx.tree_at(lambda t: (t.status, t.prim, t.dual), new, (status, prim, dual))
    held = eqx.tree_at(lambda t: (t.status, t.k), st, (status, st.k + 1))
    return jax.tree_util.tree_map(lambda a_, b_: jnp.where(finite, a_, b_), new, held)


def solve_ipm(op: IPMOperator, q, lo, hi, warm=None) -> Solution:
    """One QP with the interior-point method (`warm` is ignored)."""
    from .admm import _check_args

    _check_args(op, q, lo, hi)
    data = _scale_data(op, q, lo, hi)
    st = init(op, data)
    st = bounded_while(lambda t: t.status == int(Status.running), lambda t: step(op, data, t), st, op.host.max_iter)
    status = jnp.where(st.status == int(Status.running), int(Status.max_iter), st.status).astype(jnp.int32)
    Ax = op.A.mv(st.x)
    x = op.D * st.x
    y = (op.E * (st.lu - st.ll + st.ye) / op.c)[op.iperm]
    z = (jnp.clip(Ax, data.lo, data.hi) / op.E)[op.iperm]
    obj = (0.5 * jnp.dot(st.x, op.P * st.x) + jnp.dot(data.q, st.x)) / op.c
    return Solution(
        x=_finite(x), y=_finite(y), z=_finite(z), rho=jnp.zeros((), x.dtype), status=status,
        num_steps=st.k, prim_res=_finite(st.prim), dual_res=_finite(st.dual), obj=_finite(obj),
    )  # fmt: skip
