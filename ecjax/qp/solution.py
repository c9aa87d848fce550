"""What every solve shares: the `Solution`, one sample's scaled data, the infeasibility
certificates and the argument checks.

    minimise ½ xᵀPx + qᵀx   subject to   lo <= A x <= hi
"""

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int


class Solution(eqx.Module):
    """Result of one solve (user units, user row order). All fields finite.

    x: the primal solution; y: the row multipliers (y > 0 on an active upper bound, y < 0 on
    an active lower one); z = Ax projected onto [lo, hi]; status: a `Status` code;
    num_steps: iterations; prim_res, dual_res: the unscaled KKT residuals (∞-norm);
    obj: ½xᵀPx + qᵀx of x."""

    x: Float[Array, "n"]
    y: Float[Array, "m"]
    z: Float[Array, "m"]
    status: Int[Array, ""]
    num_steps: Int[Array, ""]
    prim_res: Float[Array, ""]
    dual_res: Float[Array, ""]
    obj: Float[Array, ""]


class Data(eqx.Module):
    """One sample's scaled data: q̄ = cDq and the scaled row bounds."""

    q: Float[Array, "n"]
    lo: Float[Array, "m"]
    hi: Float[Array, "m"]


def static_settings(settings):
    """The settings with every float field set to 0.0 (None kept): what decides the compiled
    program. An operator keeps this as its static `host`, so that operators differing only in
    tolerances (traced arrays in `settings`) share one compilation."""
    return jax.tree_util.tree_map(lambda v: 0.0, settings)


def infeasible(op, data: Data, dy, dx, Adx, E, Einv):
    """(primal, dual) infeasibility certificates (Stellato et al. 2020, OSQP, eqs. 26 and 27)
    on the unscaled δy = E δȳ / c and δx = D δx̄. The tests are written for δy / ‖δy‖∞ and
    δx / ‖δx‖∞; here both sides are multiplied by the norm instead, so that the norms and the
    tests share four reductions. `Adx`: Ā δx̄; `E`, `Einv`: the rows' scaling and unscaling."""
    s = op.settings
    lo_fin, hi_fin = jnp.isfinite(data.lo), jnp.isfinite(data.hi)
    # δy projected onto the polar recession cone of [lo, hi]
    dy = jnp.where((~hi_fin & (dy > 0)) | (~lo_fin & (dy < 0)), 0.0, dy)
    Adx = Adx * Einv
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


def check_args(op, q, lo, hi):
    """Shapes of one instance against the operator's (n, m)."""
    if jnp.shape(q) != (op.n,):
        raise ValueError(f"`q` must have shape ({op.n},), got {jnp.shape(q)}.")
    if jnp.shape(lo) != (op.m,):
        raise ValueError(f"`lo` must have shape ({op.m},), got {jnp.shape(lo)}.")
    if jnp.shape(hi) != (op.m,):
        raise ValueError(f"`hi` must have shape ({op.m},), got {jnp.shape(hi)}.")


def finite(v):
    """`v` with every non-finite entry set to 0."""
    return jnp.where(jnp.isfinite(v), v, 0.0)
