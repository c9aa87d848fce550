"""Primal-dual interior-point method (Mehrotra predictor-corrector) for a batch of QPs that
share (P, A), P diagonal:

    minimise ½ xᵀPx + qᵀx   subject to   lo <= A x <= hi

Each finite side of a row gets a slack and a multiplier (infinite sides are masked per sample,
so a row may be free in one sample and bounded in another; lo = hi is an equality), and the
optimality conditions in slack form, perturbed by the centring target σμ, are

    A x − s_l = lo,  A x + s_u = hi,  s, λ >= 0,  P x + q + Aᵀ(λ_u − λ_l) = 0,  s∘λ = σμ.

Eliminating the slacks and multipliers leaves the Newton system

    (P + Aᵀ diag(d) A) dx = −r_d − Aᵀ g,   d = λ_l/s_l + λ_u/s_u,

solved by `normal.py` (structured, per-sample factorization of a small block-tridiagonal
matrix) with one step of iterative refinement by default (`refine`): without it, on agent QPs
whose inputs have no curvature (MODEL's cost), a few percent of warm-started solves lost
centrality on inaccurate directions and ended at the iteration cap; with it they end in 6.
More steps follow, up to `refine_max` in all, while the residual of the Newton system is
above a tenth of eps_abs (scaled units) and each step reduces it (one that does not is
discarded): late in the solve of a degenerate problem (an LP, every cost weight 0, whose
optimal face is not a point) the barrier weights span twenty orders of magnitude, one step
leaves the direction wrong by ~1e-4, and an iterate already at 1e-7 is thrown back to a
dual residual of 1e-1 and never recovers (the iteration cap). Under `vmap` these steps cost
only when a sample of the batch needs them. The iteration count of an interior-point method hardly
depends on the data (13-20 here), which is what a vmapped batch needs: under `vmap` every
sample runs until the slowest one stops. A warm start (x, y of a previous solution, e.g. the
previous FC-MPC iterate of the same prosumer) is taken as the starting point with every
slack/multiplier pair pushed to a product of at least

    μ₀ = max(τ², κ_w·r₀),   r₀ = max(‖(lo − Āx)₊, (Āx − hi)₊‖∞, ‖P̄x + q̄ + Āᵀy‖∞)

(scaled units; τ = `warm_margin`, κ_w = `warm_scale`, r₀ the warm point's residual in the new
problem): an active side keeps its multiplier λ and gets the slack μ₀/λ, an inactive side
keeps its slack s and gets the multiplier μ₀/s, so the point stays near the old optimum and
centred, and the further the new problem has moved from the old one, the further from the
boundary it starts (a point close to the boundary with the wrong active set crawls along it
in short steps). The warm y must be the previous solution's own (not projected onto the new
bounds' normal cone, as an ADMM warm start does: an IPM solution keeps Ax strictly inside
the bounds, so the projection would zero y almost everywhere). On the paper case's closed
loop this takes 5.2 iterations per QP against ~16-17 cold (docs/performance.md; τ = 5e-4,
κ_w = 0.01). `warm_margin=None` ignores warm starts.

Rows with one nonzero (variable bounds: most rows of the MPC QPs) are merged per column before
the iteration: a_r x_j ∈ [lo_r, hi_r] for every such row r of column j becomes

    lb_j = max_r lo_r/a_r,  ub_j = min_r hi_r/a_r   (sides swapped where a_r < 0),

so the method runs on x ∈ [lb, ub], lo_c <= C x <= hi_c: one bound pair per column, products
with the bound rows are the identity. The bound multipliers go back to the rows that attain
lb_j and ub_j; crossed bounds (lb_j > ub_j from two rows) are a primal infeasibility
certificate by themselves, unless the two rows' gap is within the primal tolerance
(eps_abs + eps_rel × the largest finite bound, user units: bounds computed from other
solutions, e.g. a trade cap of −1e-6 against bt >= 0 in FC-MPC, which OSQP solves too).
Such a column is fixed at the middle of the gap and the rows' residual, half the gap, is
added to every primal residual of the solve, so that `prim_res` still bounds the residual
of the user's rows.

The infeasibility certificates are tested on the Newton direction (δx, δy) of the corrector,
not on the step α(δx, δy) that OSQP's tests (below) take: a certificate is a property of the
vector alone (Āᵀδy ≈ 0 with a negative support of the bounds, or the like for δx), and the
direction keeps showing it when the iterates of an infeasible QP stall (α → 0), where the
step's shrinks below the tests' thresholds. They are skipped in the first `certify_from`
iterations (default 20): most solves end before (5 iterations on average when warm-started
in FC-MPC, 13-20 cold), and the test is a seventh of an iteration's time
(docs/performance.md); an infeasible QP is then certified at iteration `certify_from` + 1
or later.

Residuals, termination and infeasibility certificates follow OSQP's conventions (Stellato et
al. 2020, §3.4), so `Solution` means what it means there: y = λ_u − λ_l, z = clip(Ax, lo, hi).
`solved` asks one thing more: the duality gap and the primal residual weighted by the
multipliers each within eps_rel / 2 of max(1, |objective|) (`_check`), so that the objective
is within eps_rel of the optimum; OSQP's criteria alone allowed errors of 5e-6 on QPs with
weights of 1e3 (docs/performance.md). Those tests cost about 2 % more iterations. Pushing
them takes μ lower than OSQP's criteria need, and on a few QPs with weights of 1e3 beside
weights of 1e-8 the Newton directions then lose their accuracy (the dual residual jumps by
1e6): an iterate that meets OSQP's criteria is kept, and if the next one does not, or the
iteration cap comes first, the kept iterate is returned, `solved`.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float, Int

from .._iterate import bounded_while
from . import sparse as _ls
from . import normal
from .solution import Data, Solution, check_args, finite, infeasible, static_settings
from .scaling import ruiz
from .status import Status
from .take import Take


class IPM(eqx.Module):
    """Settings. Float fields become arrays of the operator's dtype in `prepare`."""

    eps_abs: float = 1e-6
    eps_rel: float = 1e-6
    eps_pinf: float = 1e-5
    eps_dinf: float = 1e-5
    step_fraction: float = 0.99  # fraction of the distance to the boundary taken per step
    reg: float | None = None  # δ_p = δ_d; None: 1e-8 (float64) or 1e-5 (float32)
    reg_eq: float | None = None  # δ_e of equality rows; None: 1e-8 (float64) or 1e-5 (float32)
    max_iter: int = eqx.field(static=True, default=80)
    certify_from: int = eqx.field(static=True, default=20)  # iterations before the first certificate test
    refine: int = eqx.field(static=True, default=1)  # iterative-refinement steps per Newton solve
    refine_max: int = eqx.field(static=True, default=8)  # ... and at most this many while inaccurate
    warm_margin: float | None = 5e-4  # warm start: slack·multiplier >= this² (scaled); None: ignore
    warm_scale: float = 0.01  # ... and >= this × the warm point's residual; 0: τ² alone
    weak_p: float = eqx.field(static=True, default=1e-3)  # 1e-4 loses digits with weights 1e3 (pivot growth)
    max_dense: int = eqx.field(static=True, default=0)
    scaling_iters: int = eqx.field(static=True, default=10)

    def __check_init__(self):
        if self.max_iter < 1:
            raise ValueError(f"`IPM(max_iter=...)` must be >= 1, got {self.max_iter}.")
        if self.certify_from < 0:
            raise ValueError(f"`IPM(certify_from=...)` must be >= 0, got {self.certify_from}.")
        if self.refine < 0:
            raise ValueError(f"`IPM(refine=...)` must be >= 0, got {self.refine}.")
        if self.refine_max < self.refine:
            raise ValueError(f"`IPM(refine_max=...)` must be >= refine = {self.refine}, got {self.refine_max}.")
        if self.warm_margin is not None and not self.warm_margin > 0:
            raise ValueError(f"`IPM(warm_margin=...)` must be > 0 or None, got {self.warm_margin}.")
        if not self.warm_scale >= 0:
            raise ValueError(f"`IPM(warm_scale=...)` must be >= 0, got {self.warm_scale}.")
        if not 0 < self.step_fraction < 1:
            raise ValueError(f"`IPM(step_fraction=...)` must be in (0, 1), got {self.step_fraction}.")


class Operator(eqx.Module):
    """What a batch shares, scaled. `A` is the merged problem's matrix [I; C] (n bound rows,
    then the coupling rows); `A_rows` the user's rows, permuted to [singleton | coupling]."""

    settings: IPM
    A: _ls.SplitA
    A_rows: _ls.SplitA
    kkt: "normal.NormalKKT | normal.schur.SchurKKT"
    P: Float[Array, " n"]
    D: Float[Array, " n"]
    E: Float[Array, " m"]  # row scaling of the user's rows (permuted)
    Einv: Float[Array, " mb"]  # unscaling of the merged rows (0: column without a bound row)
    E_m: Float[Array, " mb"]  # their scaling, 1/Einv (0 where Einv is 0: such a δy is 0 anyway)
    b_val: Float[Array, "n kb"]  # coefficient ā_r of each column's singleton rows (pad 0)
    b_src: Take  # (n, kb): those rows, as the user's rows (pad = m)
    b_lo: Float[Array, "n kb"]  # E_r / a_r: a user bound of row r as a bound of column j (pad 0)
    b_y: Float[Array, "n kb"]  # a_r / E_r: row r's multiplier (user units) as column j's (pad 0)
    c_src: Take  # (mc,): the coupling rows as the user's rows
    r_col: Take  # (ms,): singleton row -> its column
    r_slot: Int[Array, " ms"]  # ... and its place among that column's rows
    c: Float[Array, ""]
    perm: Int[Array, " m"]
    iperm: Take  # (m,)
    P_orig: Float[Array, "n n"]
    A_orig: Float[Array, "m n"]
    n: int = eqx.field(static=True)
    m: int = eqx.field(static=True)
    host: IPM = eqx.field(static=True)
    one_device = False  # `solve_batch` may split a batch over the local devices

    @property
    def dtype(self):
        return self.D.dtype

    def solve(self, q, lo, hi, warm=None) -> Solution:
        """One QP (see `solve_ipm`); `ecjax.qp.solve` screens the data first."""
        return solve_ipm(self, q, lo, hi, warm)

    @property
    def mb(self) -> int:
        """Rows of the merged problem: n bounds + the coupling rows."""
        return self.A.m_s + self.A.m_c

    def Pmv(self, x):
        return self.P * x


def prepare_ipm(P, A, settings: IPM, dtype, lo=None, hi=None) -> Operator:
    """`lo`, `hi`: template bounds (optional); rows with lo = hi there are equalities in every
    instance, which lets `normal.NormalKKT.build` take the Schur form where it is stable."""
    P = np.asarray(P, np.float64)
    A = np.asarray(A, np.float64)
    if not np.all(P == np.diag(np.diag(P))):
        raise ValueError("`IPM` needs a diagonal `P` (every QP of the community model has one).")
    n, m = P.shape[0], A.shape[0]
    D, E, c = ruiz(P, A, settings.scaling_iters)
    pd = c * D * np.diag(P) * D
    Ab = E[:, None] * A * D[None, :]
    perm, m_s = _ls.split_rows(Ab)
    Ab_p = Ab[perm]
    S, C = Ab_p[:m_s], Ab_p[m_s:]
    # merging singleton rows into column bounds: the singleton rows of each column
    r_col = np.argmax(S != 0, axis=1) if m_s else np.zeros(0, np.int64)
    r_val = S[np.arange(m_s), r_col] if m_s else np.zeros(0)
    keep = r_val != 0  # an all-zero row bounds nothing (its feasibility is 0 ∈ [lo, hi])
    rows_of = [np.nonzero((r_col == j) & keep)[0] for j in range(n)]
    kb = max(max((len(r) for r in rows_of), default=1), 1)
    b_row = np.full((n, kb), m_s, np.int64)
    b_val = np.zeros((n, kb))
    r_slot = np.zeros(m_s, np.int64)
    for j, r in enumerate(rows_of):
        b_row[j, : len(r)], b_val[j, : len(r)], r_slot[r] = r, r_val[r], np.arange(len(r))
    r_slot[~keep] = kb  # never attains a bound
    Eb_inv = np.zeros(n)
    for j, r in enumerate(rows_of):
        if len(r):  # unscaled residual of row r = |a_r| / E_r × that of the bound (conservative max)
            Eb_inv[j] = np.max(np.abs(r_val[r]) / E[perm][r])
    Av = np.vstack([np.eye(n), C])
    eq_c = None
    if lo is not None and hi is not None:
        lo_t, hi_t = np.asarray(lo, np.float64), np.asarray(hi, np.float64)
        eq_c = (np.isfinite(lo_t) & (lo_t == hi_t))[perm][m_s:]
    kkt = normal.NormalKKT.build(pd, Av, n, settings.weak_p, settings.max_dense, dtype, eq_c)
    s = settings
    f64 = dtype == jnp.float64
    if s.reg is None:
        s = eqx.tree_at(lambda t: t.reg, s, 1e-8 if f64 else 1e-5, is_leaf=lambda v: v is None)
    if s.reg_eq is None:
        s = eqx.tree_at(lambda t: t.reg_eq, s, 1e-8 if f64 else 1e-5, is_leaf=lambda v: v is None)
    Einv = np.concatenate([Eb_inv, 1.0 / E[perm][m_s:]])
    E_b = np.concatenate([E[perm][:m_s], [1.0]])[b_row]  # E_r of each column's rows (pad 1)
    b_src = np.full_like(b_row, m)  # each column's rows among the user's rows (pad m)
    b_src[b_row < m_s] = perm[b_row[b_row < m_s]]
    return Operator(
        settings=jax.tree_util.tree_map(lambda v: jnp.asarray(v, dtype), s),
        A=_ls.build_split(Av, n, "sparse", dtype, identity=True),
        A_rows=_ls.build_split(Ab_p, m_s, "sparse", dtype),
        kkt=kkt,
        P=jnp.asarray(pd, dtype),
        D=jnp.asarray(D, dtype),
        E=jnp.asarray(E[perm], dtype),
        Einv=jnp.asarray(Einv, dtype),
        E_m=jnp.asarray(np.divide(1.0, Einv, out=np.zeros_like(Einv), where=Einv > 0), dtype),
        b_val=jnp.asarray(b_val, dtype),
        b_src=Take.build(b_src),
        b_lo=jnp.asarray(np.divide(E_b, b_val, out=np.zeros_like(b_val), where=b_val != 0), dtype),
        b_y=jnp.asarray(b_val / E_b, dtype),
        c_src=Take.build(perm[m_s:]),
        r_col=Take.build(r_col),
        r_slot=jnp.asarray(r_slot.astype(np.int32)),
        c=jnp.asarray(c, dtype),
        perm=jnp.asarray(perm.astype(np.int32)),
        iperm=Take.build(np.argsort(perm)),
        P_orig=jnp.asarray(P, dtype),
        A_orig=jnp.asarray(A, dtype),
        n=n,
        m=m,
        host=static_settings(settings),
    )


class _Res(eqx.Module):
    """Residuals of the slack-form optimality conditions at an iterate: computed once by the
    termination test and reused by the next step."""

    z: Float[Array, " mb"]  # Ā x
    rd: Float[Array, " n"]  # P̄x + q̄ + Āᵀy
    rl: Float[Array, " mb"]  # Āx − s_l − lo (finite lower sides)
    ru: Float[Array, " mb"]  # Āx + s_u − hi (finite upper sides)
    re: Float[Array, " mb"]  # Āx − lo (equality rows)


class IPMState(eqx.Module):
    x: Float[Array, " n"]
    sl: Float[Array, " mb"]
    su: Float[Array, " mb"]
    ll: Float[Array, " mb"]
    lu: Float[Array, " mb"]
    ye: Float[Array, " mb"]  # multipliers of equality rows (lo = hi)
    k: Int[Array, ""]
    status: Int[Array, ""]
    prim: Float[Array, ""]
    dual: Float[Array, ""]
    res: _Res
    base: Bool[Array, ""]  # the iterate meets OSQP's criteria (residuals and complementarity)


class _Sides(eqx.Module):
    hl: Float[Array, " mb"]  # 1 where lo is finite (and the row is not an equality)
    hu: Float[Array, " mb"]
    he: Float[Array, " mb"]  # 1 on equality rows (lo = hi, up to rounding)
    lo: Float[Array, " mb"]  # infinite entries replaced by 0
    hi: Float[Array, " mb"]
    n_act: Float[Array, ""]  # number of finite inequality sides (at least 1)
    half_gap: Float[Array, ""]  # residual of tolerated crossings of merged bound rows (user units)


def _sides(data: Data, half_gap=0.0) -> _Sides:
    fl, fu = jnp.isfinite(data.lo), jnp.isfinite(data.hi)
    dt = data.q.dtype
    lo, hi = jnp.where(fl, data.lo, 0.0), jnp.where(fu, data.hi, 0.0)
    eq = fl & fu & (hi - lo <= 100 * jnp.finfo(dt).eps * (1.0 + jnp.abs(lo)))
    hl, hu = (fl & ~eq).astype(dt), (fu & ~eq).astype(dt)
    return _Sides(
        hl=hl, hu=hu, he=eq.astype(dt), lo=lo, hi=jnp.where(eq, lo, hi), n_act=jnp.maximum(jnp.sum(hl + hu), 1.0),
        half_gap=jnp.asarray(half_gap, dt),
    )  # fmt: skip


class _Bounds(eqx.Module):
    """Singleton rows merged into column bounds for one sample: the merged problem's data and
    which row attains each bound."""

    data: Data  # q̄; [lb; lō_c], [ub; hī_c]
    i_lo: Int[Array, " n"]  # slot (in b_src) of the row attaining lb_j
    i_hi: Int[Array, " n"]
    crossed: Bool[Array, ""]  # lb_j > ub_j beyond the tolerance for some j: primal infeasible
    half_gap: Float[Array, ""]  # largest half gap of the tolerated crossings (user units)


def _first_best(c, better, *carried):
    """Over the last (small, static) axis of c: the best entry (`better(a, b)`: a beats b),
    the slot of its first occurrence and, at that slot, each array of `carried`. Unrolled
    compares and selects: an argmax over a handful of entries is a slow reduction on a CPU."""
    best, slot, vals = c[..., 0], jnp.zeros(c.shape[:-1], jnp.int32), [v[..., 0] for v in carried]
    for k in range(1, c.shape[-1]):
        win = better(c[..., k], best)
        best, slot = jnp.where(win, c[..., k], best), jnp.where(win, k, slot)
        vals = [jnp.where(win, v[..., k], u) for v, u in zip(carried, vals)]
    return best, slot, vals


def _merge(op: Operator, q, lo, hi) -> _Bounds:
    dt = op.dtype
    q, lo, hi = (jnp.asarray(v, dt) for v in (q, lo, hi))
    # each column's singleton rows, straight from the user's rows: a_r x_j >= lo_r is
    # x_j >= lo_r E_r / ā_r (ā_r > 0; the sides swap for ā_r < 0)
    l_r = op.b_src(jnp.concatenate([lo, jnp.full((1,), -jnp.inf, dt)]))
    h_r = op.b_src(jnp.concatenate([hi, jnp.full((1,), jnp.inf, dt)]))
    a = op.b_val
    c_lo = jnp.where(a == 0, -jnp.inf, jnp.where(a > 0, l_r, h_r) * op.b_lo)
    c_hi = jnp.where(a == 0, jnp.inf, jnp.where(a > 0, h_r, l_r) * op.b_lo)
    f = jnp.abs(op.b_y)  # |ā_r| / E_r: a bound's residual as row r's (user units)
    lb, i_lo, (f_lo,) = _first_best(c_lo, jnp.greater, f)
    ub, i_hi, (f_hi,) = _first_best(c_hi, jnp.less, f)
    lo_c, hi_c = op.E[op.A_rows.m_s :] * op.c_src(lo), op.E[op.A_rows.m_s :] * op.c_src(hi)
    # lb > ub by rounding, or by a gap within the primal tolerance: an equality at the middle
    gap = jnp.where(lb > ub, lb - ub, 0.0)
    gap_user = gap * jnp.maximum(f_lo, f_hi)  # the two rows' gap in the user's units
    # the primal tolerance of `_check` with the bounds' part of its scale (merged rows, user units)
    bounds = jnp.stack([jnp.concatenate([lb, lo_c]), jnp.concatenate([ub, hi_c])])
    scale = jnp.max(jnp.where(jnp.isfinite(bounds), jnp.abs(bounds), 0.0) * op.Einv[None], initial=0.0)
    tol = 100 * jnp.finfo(dt).eps * (1.0 + jnp.abs(ub))
    crossed = jnp.any((gap > tol) & (gap_user > op.settings.eps_abs + op.settings.eps_rel * scale))
    mid = 0.5 * (lb + ub)  # used only where gap > 0 (both finite)
    lb = jnp.where(crossed, -jnp.inf, jnp.where(gap > 0, mid, lb))
    ub = jnp.where(crossed, jnp.inf, jnp.where(gap > 0, mid, ub))
    half_gap = jnp.where(crossed, 0.0, 0.5 * jnp.max(gap_user, initial=0.0))
    lo_c = jnp.where(crossed, -jnp.inf, lo_c)
    hi_c = jnp.where(crossed, jnp.inf, hi_c)
    data = Data(q=jnp.where(crossed, 0.0, op.c * op.D * q), lo=jnp.concatenate([lb, lo_c]), hi=jnp.concatenate([ub, hi_c]))
    return _Bounds(data, i_lo, i_hi, crossed, half_gap)


def _row_multipliers(op: Operator, b: _Bounds, st: "IPMState"):
    """ȳ of the user's rows (permuted) from the merged problem's multipliers."""
    n, m_s = op.n, op.A_rows.m_s
    j, k = op.r_col, op.r_slot  # x ↦ x[r_col]: row r -> its column's entry
    # the lb_j row takes −λ_l, the ub_j row λ_u; an equality's multiplier goes by its sign
    low = j((-st.ll + jnp.minimum(st.ye, 0.0))[:n]) * (j(b.i_lo) == k)
    up = j((st.lu + jnp.maximum(st.ye, 0.0))[:n]) * (j(b.i_hi) == k)
    a = op.A_rows.s_val
    y_s = jnp.where(a == 0, 0.0, (low + up) / jnp.where(a == 0, 1.0, a))
    y_c = (st.lu - st.ll + st.ye)[n:]
    return jnp.concatenate([y_s, y_c]) if m_s else y_c


def _Kd_mv(op: Operator, d, v):
    """(P̄ + Āₛᵀ diag(dₛ) Āₛ + δ_p I) v: the bound rows' part of the Newton system's matrix,
    regularized as factored."""
    return (op.P + d[: op.n] + op.settings.reg) * v


def _newton(op: Operator, fac, d, r, t, row_tol=None):
    """Solve [Kd Cᵀ; C −diag(1/d_c)] [dx; v] = [r; t] with iterative refinement: `refine`
    steps, then more (up to `refine_max` in all) while a residual is above its tolerance and
    each step at least halves the largest ratio of residual to tolerance (a step that does
    not is discarded). Tolerances: eps_abs / 10 on the first block; on a coupling row
    `row_tol` (a tenth of its smallest slack: C dx must be accurate to well below the
    distance to the boundary, or the step to it collapses), eps_abs / 10 where not given."""
    tol1 = 0.1 * op.settings.eps_abs
    tol2 = tol1 if row_tol is None else row_tol

    def residual(dx, v):
        e1, e2 = r - _Kd_mv(op, d, dx) - op.A.C.rmv(v), t - (op.A.C.mv(dx) - fac.dc_inv * v)
        ratio = jnp.maximum(jnp.max(jnp.abs(e1), initial=0.0) / tol1, jnp.max(jnp.abs(e2) / tol2, initial=0.0))
        return e1, e2, ratio

    def refined(dx, v, e1, e2):
        ddx, dv = normal.solve(op.kkt, fac, e1, e2)
        return dx + ddx, v + dv

    dx, v = normal.solve(op.kkt, fac, r, t)
    s = op.host
    for _ in range(s.refine):
        dx, v = refined(dx, v, *residual(dx, v)[:2])
    if s.refine_max == s.refine:
        return dx, v

    def more(c):
        dx, v, e1, e2, e, _ = c
        dx1, v1 = refined(dx, v, e1, e2)
        f1, f2, f = residual(dx1, v1)
        better = f < 0.5 * e  # converging; a creeping step (a singular direction) is not taken
        keep = lambda a, b: jnp.where(better, a, b)  # noqa: E731
        return keep(dx1, dx), keep(v1, v), keep(f1, e1), keep(f2, e2), keep(f, e), better

    c = (dx, v, *residual(dx, v), jnp.asarray(True))
    c = bounded_while(lambda c: c[5] & (c[4] > 1.0), more, c, s.refine_max - s.refine)
    return c[0], c[1]


def _step_to_boundary(pairs):
    """Largest α <= 1 with v + α dv >= 0 on the masked entries of every (v, dv, mask); one
    reduction for all of them."""
    ratio = None
    for v, dv, mask in pairs:
        neg = (mask > 0) & (dv < 0)
        r = jnp.where(neg, -v / jnp.where(neg, dv, -1.0), jnp.inf)
        ratio = r if ratio is None else jnp.minimum(ratio, r)
    return jnp.minimum(1.0, jnp.min(ratio, initial=jnp.inf))


def _residuals(op: Operator, data: Data, sd: _Sides, st: IPMState):
    z = op.A.mv(st.x)
    y = st.lu - st.ll + st.ye
    Px = op.P * st.x
    Aty = op.A.rmv(y)
    rd = Px + data.q + Aty
    rl = sd.hl * (z - st.sl - sd.lo)
    ru = sd.hu * (z + st.su - sd.hi)
    re = sd.he * (z - sd.lo)
    return Px, Aty, _Res(z=z, rd=rd, rl=rl, ru=ru, re=re)


def _check(op: Operator, data: Data, sd: _Sides, st: IPMState):
    """(prim, dual, solved, base, residuals). `base`: OSQP's criteria on the unscaled
    residuals, plus complementarity; `solved`: those and the objective's own tests (user
    units, f = ½xᵀPx + qᵀx, the dual objective g = −½xᵀPx − Σ hi λ_u + Σ lo λ_l)

        |f − g| <= ½ eps_rel max(1, |f|, |g|),   Σ λ |r_p| <= ½ eps_rel max(1, |f|, |g|),

    the duality gap and the primal residual of each side weighted by its multiplier. The gap
    bounds how far f lies above the optimum, the weighted residual how far an x that violates
    a bound by r_p lies below it (by up to λ r_p): together they keep f within eps_rel of the
    optimum, relative. OSQP's criteria alone do not: with weights of 1e3 (multipliers of
    1e4-1e5) a residual that eps_abs allows moves f by a few 1e-6 of it."""
    s = op.settings
    Px, Aty, res = _residuals(op, data, sd, st)
    z, rd, rl, ru, re = res.z, res.rd, res.rl, res.ru, res.re
    Ei, Di = op.Einv, 1.0 / op.D
    # four infinity norms and two sums in four reductions
    pr = jnp.max(jnp.stack([
        jnp.maximum(jnp.maximum(jnp.abs(rl), jnp.abs(ru)), jnp.abs(re)) * Ei,
        jnp.maximum(jnp.maximum(jnp.abs(z), jnp.abs((sd.hl + sd.he) * sd.lo)), jnp.abs(sd.hu * sd.hi)) * Ei,
    ]), axis=-1)  # fmt: skip
    du = jnp.max(jnp.stack([
        jnp.abs(rd) * Di, jnp.maximum(jnp.maximum(jnp.abs(Px), jnp.abs(Aty)), jnp.abs(data.q)) * Di,
    ]), axis=-1) / op.c  # fmt: skip
    prim, prim_scale, dual, dual_scale = pr[0] + sd.half_gap, pr[1], du[0], du[1]
    comp = jnp.sum(sd.hl * st.sl * st.ll + sd.hu * st.su * st.lu) / op.c
    pobj = jnp.sum(st.x * (0.5 * Px + data.q)) / op.c
    base = (
        (prim <= s.eps_abs + s.eps_rel * prim_scale)
        & (dual <= s.eps_abs + s.eps_rel * dual_scale)
        & (comp <= s.eps_abs + s.eps_rel * jnp.abs(pobj))
    )
    sup = jnp.sum(sd.hu * sd.hi * st.lu - sd.hl * sd.lo * st.ll + sd.he * sd.lo * st.ye) / op.c
    dobj = -0.5 * jnp.sum(st.x * Px) / op.c - sup
    tol = 0.5 * s.eps_rel * jnp.maximum(1.0, jnp.maximum(jnp.abs(pobj), jnp.abs(dobj)))
    weighted = jnp.sum(st.ll * jnp.abs(rl) + st.lu * jnp.abs(ru) + jnp.abs(st.ye * re)) / op.c
    solved = base & (jnp.abs(pobj - dobj) <= tol) & (weighted <= tol)
    return prim, dual, solved, base, res


def _pair(s, lam, tau, centred):
    """A slack and its multiplier pushed into the interior: both >= tau, or (`centred`) with
    product >= tau², neither below tau unless the other is above it: an active side keeps its
    multiplier and gets the slack tau²/λ, an inactive one keeps its slack and gets the
    multiplier tau²/s."""
    if not centred:
        return jnp.maximum(s, tau), jnp.maximum(lam, tau)
    s, lam = jnp.maximum(s, 0.0), jnp.maximum(lam, 0.0)
    s1 = jnp.maximum(s, tau * tau / jnp.maximum(lam, tau))
    return s1, jnp.maximum(lam, tau * tau / s1)


def _warm_residual(op: Operator, data: Data, sd: _Sides, x, y, z):
    """r₀ of the starting barrier parameter μ₀: the largest bound violation and dual residual
    of (x, y) (merged rows, scaled; z = Ā x)."""
    viol = jnp.maximum(jnp.maximum(sd.hl * (sd.lo - z), sd.hu * (z - sd.hi)), jnp.abs(sd.he * (z - sd.lo)))
    rd = jnp.abs(op.P * x + data.q + op.A.rmv(y))
    return jnp.maximum(jnp.max(viol), jnp.max(rd))


def _interior(op: Operator, data: Data, sd: _Sides, x, y, tau, centred=False, z=None) -> IPMState:
    """The iterate at x with multipliers from y (merged rows, scaled), every slack and
    multiplier of a finite side pushed into the interior by `_pair`; status from the
    termination test. `z`: Ā x where the caller has it already."""
    z = op.A.mv(x) if z is None else z
    sl, ll = _pair(z - sd.lo, -y, tau, centred)
    su, lu = _pair(sd.hi - z, y, tau, centred)
    return _start(op, data, sd, x, z, sl, su, ll, lu, sd.he * y)


def _start(op: Operator, data: Data, sd: _Sides, x, z, sl, su, ll, lu, ye) -> IPMState:
    """The iterate from positive slacks and multipliers (ignored on infinite sides); status
    from the termination test."""
    one = jnp.ones_like(z)
    dt = z.dtype
    zn, zm = jnp.zeros_like(x), jnp.zeros_like(z)
    st = IPMState(
        x=x, sl=jnp.where(sd.hl > 0, sl, one), su=jnp.where(sd.hu > 0, su, one),
        ll=sd.hl * ll, lu=sd.hu * lu, ye=ye, k=jnp.asarray(0, jnp.int32),
        status=jnp.asarray(int(Status.running), jnp.int32), prim=jnp.asarray(jnp.inf, dt), dual=jnp.asarray(jnp.inf, dt),
        res=_Res(z=z, rd=zn, rl=zm, ru=zm, re=zm), base=jnp.asarray(False),
    )  # fmt: skip
    prim, dual, solved, base, res = _check(op, data, sd, st)
    status = jnp.where(solved, int(Status.solved), int(Status.running)).astype(jnp.int32)
    return eqx.tree_at(lambda t: (t.status, t.prim, t.dual, t.res, t.base), st, (status, prim, dual, res, base))


def init(op: Operator, data: Data, sd: _Sides) -> IPMState:
    """Start: x from (P + Aᵀ diag(has side) A) x = −q + Aᵀ diag(has side) (bounds), the least-
    squares pull towards the bounds, and y from the same solve; slacks and multipliers from
    them by Mehrotra's shifts (every one >= 1 and all of them large against the residuals of
    that point: a start whose slacks are 1 where the residuals are in the hundreds, as with
    weights of 1e3 and columns without curvature, takes steps of 1e-3 and never recovers)."""
    d0 = sd.hl + sd.hu + sd.he
    fac = normal.factor(op.kkt, op.A, op.P, d0, op.settings.reg, op.settings.reg)
    target = (sd.hl + sd.he) * sd.lo + sd.hu * sd.hi  # d0 ∘ target: pull Ax towards the bounds
    n = op.n
    r = -data.q + target[:n]
    t = jnp.where(d0[n:] > 0, target[n:] / jnp.maximum(d0[n:], 1.0), 0.0)
    x, v = _newton(op, fac, d0, r, t)
    z = op.A.mv(x)
    # y of the least-squares point: Px + q + Āᵀy = 0 with y = d0 (Āx − target)
    y = jnp.concatenate([(d0 * z - target)[:n], v])
    # Mehrotra's start: slacks and multipliers shifted (uniformly) into the interior, then
    # by half their mean product, so that neither is small against the residuals
    fin = lambda w, h: jnp.where(h > 0, w, jnp.inf)  # noqa: E731
    sl, su, ll, lu = z - sd.lo, sd.hi - z, -y, y
    lowest = lambda a, b: jnp.minimum(jnp.min(fin(a, sd.hl)), jnp.min(fin(b, sd.hu)))  # noqa: E731
    ds = jnp.maximum(-1.5 * lowest(sl, su), 0.0)
    dl = jnp.maximum(-1.5 * lowest(ll, lu), 0.0)
    ds, dl = jnp.where(jnp.isfinite(ds), ds, 0.0), jnp.where(jnp.isfinite(dl), dl, 0.0)
    sl, su, ll, lu = sl + ds, su + ds, ll + dl, lu + dl
    prod = jnp.sum(sd.hl * sl * ll + sd.hu * su * lu)
    sum_l = jnp.maximum(jnp.sum(sd.hl * ll + sd.hu * lu), jnp.finfo(x.dtype).tiny)
    sum_s = jnp.maximum(jnp.sum(sd.hl * sl + sd.hu * su), jnp.finfo(x.dtype).tiny)
    sl, su = sl + 0.5 * prod / sum_l, su + 0.5 * prod / sum_l
    ll, lu = ll + 0.5 * prod / sum_s, lu + 0.5 * prod / sum_s
    one = jnp.ones_like(z)  # and none below 1, the start's scale where the data is small
    return _start(op, data, sd, x, z, jnp.maximum(sl, one), jnp.maximum(su, one), jnp.maximum(ll, one), jnp.maximum(lu, one), sd.he * y)


def init_warm(op: Operator, data: Data, sd: _Sides, warm, tau, scale=0.0) -> IPMState:
    """Start from a previous solution (user units): x, and multipliers from y (bound rows'
    multipliers summed per column, as the rows are merged into column bounds), every
    slack/multiplier pair pushed to a product of at least the starting barrier parameter
    μ₀ = max(tau², scale·r₀) (`_pair`, centred): an interior point near the old optimum."""
    dt = op.dtype
    m_s = op.A_rows.m_s
    y_u = jnp.concatenate([jnp.asarray(warm.y, dt), jnp.zeros((1,), dt)])
    y_b = op.c * jnp.sum(op.b_src(y_u) * op.b_y, axis=-1)  # ȳ_r = c y_r / E_r, times ā_r
    x = jnp.asarray(warm.x, dt) / op.D
    y = jnp.concatenate([y_b, op.c * op.c_src(y_u) / op.E[m_s:]])
    z = op.A.mv(x)
    tau = jnp.sqrt(jnp.maximum(tau * tau, scale * _warm_residual(op, data, sd, x, y, z)))
    return _interior(op, data, sd, x, y, tau, centred=True, z=z)


def step(op: Operator, data: Data, sd: _Sides, st: IPMState, certify: bool = True) -> IPMState:
    """One Mehrotra predictor-corrector iteration, then termination checks; the infeasibility
    certificates only where `certify` (static)."""
    s = op.settings
    rd, rl, ru, re = st.res.rd, st.res.rl, st.res.ru, st.res.re
    n_act = sd.n_act
    mu = jnp.sum(sd.hl * st.sl * st.ll + sd.hu * st.su * st.lu) / n_act
    dl = sd.hl * st.ll / st.sl
    du = sd.hu * st.lu / st.su
    de = sd.he / s.reg_eq
    d = dl + du + de
    fac = normal.factor(op.kkt, op.A, op.P, d, s.reg, s.reg)
    n = op.n
    big = jnp.finfo(st.sl.dtype).max
    gap = jnp.minimum(jnp.where(sd.hl > 0, st.sl, big), jnp.where(sd.hu > 0, st.su, big))[n:]
    row_tol = jnp.where(gap < big, jnp.maximum(0.1 * gap, jnp.finfo(gap.dtype).tiny), 0.1 * s.eps_abs)

    def direction(cl, cu):
        g = sd.hu * (cu / st.su + du * ru) + sd.hl * (-cl / st.sl + dl * rl) + de * re
        r = -rd - g[:n]
        gc, dc = g[n:], d[n:]
        t = -jnp.where(dc > 0, gc / jnp.where(dc > 0, dc, 1.0), 0.0)
        dx, v = _newton(op, fac, d, r, t, row_tol)
        Adx_true = op.A.mv(dx)
        # a coupling row with a large weight (an active side) takes its activity from the
        # solve's own second block, C dx = t + v / d_c: a slack of 1e-12 then moves by what
        # the linear system says, to rounding relative to t, where C dx recomputed from dx
        # carries the solve's absolute error and jams it at the boundary
        act = dc > 1.0
        Adx_c = jnp.where(act, t + v / jnp.where(act, dc, 1.0), Adx_true[n:])
        Adx = jnp.concatenate([Adx_true[:n], Adx_c])
        dy = jnp.concatenate([(d * Adx + g)[:n], v])  # coupling rows: v from the solve
        dsl = sd.hl * (Adx + rl)
        dsu = sd.hu * (-ru - Adx)
        dll_f = sd.hl * (cl / st.sl - dl * (Adx + rl))
        dlu_f = sd.hu * (cu / st.su + du * (ru + Adx))
        ineq = 1.0 - sd.he
        low = dl >= du  # the side with the larger weight takes the remainder of dy
        dll = ineq * jnp.where(low, sd.hl * (dlu_f - dy), dll_f)
        dlu = ineq * jnp.where(low, dlu_f, sd.hu * (dy + dll_f))
        dye = sd.he * dy
        return dx, dsl, dsu, dll, dlu, dye, Adx_true

    def steplen(dsl, dsu, dll, dlu):
        return _step_to_boundary(((st.sl, dsl, sd.hl), (st.su, dsu, sd.hu), (st.ll, dll, sd.hl), (st.lu, dlu, sd.hu)))

    # predictor (affine scaling)
    _, asl, asu, all_, alu, _, _ = direction(-st.sl * st.ll * sd.hl, -st.su * st.lu * sd.hu)
    a_aff = steplen(asl, asu, all_, alu)
    mu_aff = jnp.sum(
        sd.hl * (st.sl + a_aff * asl) * (st.ll + a_aff * all_) + sd.hu * (st.su + a_aff * asu) * (st.lu + a_aff * alu)
    ) / n_act
    sigma = jnp.clip((mu_aff / jnp.maximum(mu, jnp.finfo(mu.dtype).tiny)) ** 3, 0.0, 1.0)
    # corrector
    cl = sd.hl * (sigma * mu - st.sl * st.ll - asl * all_)
    cu = sd.hu * (sigma * mu - st.su * st.lu - asu * alu)
    dx, dsl, dsu, dll, dlu, dye, Adx = direction(cl, cu)
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
        res=st.res,
        base=st.base,
    )
    prim, dual, solved, base, res = _check(op, data, sd, new)
    # the infeasibility certificates, on the corrector's direction; Ā dx is known from it
    if certify:
        pinf, dinf = infeasible(op, data, dlu - dll + dye, dx, Adx=Adx, E=op.E_m, Einv=op.Einv)
    else:
        pinf = dinf = jnp.asarray(False)
    # a NaN or inf anywhere in the iterate reaches prim (x via A, slacks), dual (multipliers) or
    # the sum over x (columns in no row and without cost)
    finite = jnp.isfinite(prim) & jnp.isfinite(dual) & jnp.isfinite(jnp.sum(new.x))
    status = jnp.select(
        [~finite, solved, pinf, dinf],
        [int(Status.numerical_error), int(Status.solved), int(Status.primal_infeasible), int(Status.dual_infeasible)],
        int(Status.running),
    ).astype(jnp.int32)
    new = eqx.tree_at(lambda t: (t.status, t.prim, t.dual, t.res, t.base), new, (status, prim, dual, res, base))
    # an iterate that met OSQP's criteria, followed by one that does not (the objective's tests
    # pushed μ to where the Newton directions lose their accuracy): the earlier one, solved
    back = st.base & ~(finite & base) & (status != int(Status.solved))
    status = jnp.where(back, int(Status.solved), status).astype(jnp.int32)
    held = eqx.tree_at(lambda t: (t.status, t.k), st, (status, st.k + 1))
    return jax.tree_util.tree_map(lambda a_, b_: jnp.where(finite & ~back, a_, b_), new, held)


def solve_ipm(op: Operator, q, lo, hi, warm=None) -> Solution:
    """One QP with the interior-point method, from `warm` (x, y in user units) if given."""
    check_args(op, q, lo, hi)
    b = _merge(op, q, lo, hi)
    data = b.data
    sd = _sides(data, b.half_gap)
    if warm is not None and op.host.warm_margin is not None:
        st = init_warm(op, data, sd, warm, op.settings.warm_margin, op.settings.warm_scale)
    else:
        st = init(op, data, sd)
    # the first `certify_from` iterations without the infeasibility certificates
    running = lambda t: t.status == int(Status.running)  # noqa: E731
    k1 = min(op.host.certify_from, op.host.max_iter)
    if k1:
        st = bounded_while(running, lambda t: step(op, data, sd, t, certify=False), st, k1)
    st = bounded_while(running, lambda t: step(op, data, sd, t), st, op.host.max_iter - k1)
    # at the cap, an iterate that meets OSQP's criteria (not the objective's tests) is solved
    status = jnp.where(st.status == int(Status.running), jnp.where(st.base, int(Status.solved), int(Status.max_iter)), st.status)
    status = jnp.where(b.crossed, int(Status.primal_infeasible), status).astype(jnp.int32)
    x = op.D * st.x
    y = op.iperm(op.E * _row_multipliers(op, b, st) / op.c)
    z = jnp.clip(op.iperm(op.A_rows.mv(st.x) / op.E), lo, hi)
    obj = (0.5 * jnp.dot(st.x, op.P * st.x) + jnp.dot(data.q, st.x)) / op.c
    return Solution(
        x=finite(x), y=finite(y), z=finite(z), status=status,
        num_steps=st.k, prim_res=finite(st.prim), dual_res=finite(st.dual), obj=finite(obj),
    )  # fmt: skip
