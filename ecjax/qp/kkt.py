"""KKT residuals of the canonical QP, shared by the solver's tests and callers.

For  min ½xᵀPx + qᵀx  s.t. lo <= Ax <= hi  with multiplier y (y > 0 at an
active upper bound, y < 0 at an active lower bound; OSQP's sign convention)
the KKT conditions are

    primal feasibility   lo <= A x <= hi
    stationarity         P x + q + Aᵀ y = 0
    dual cone            y_i >= 0 if lo_i = -inf,  y_i <= 0 if hi_i = +inf
    complementarity      y⁺ ⊙ (hi − A x) = 0,   y⁻ ⊙ (A x − lo) = 0

All residuals are infinity norms (unscaled), finite even with infinite bounds.
"""

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Float


class KKTResiduals(eqx.Module):
    prim: Float[Array, ""]
    dual: Float[Array, ""]
    cone: Float[Array, ""]
    compl: Float[Array, ""]

    @property
    def max(self):
        return jnp.maximum(jnp.maximum(self.prim, self.dual), jnp.maximum(self.cone, self.compl))


def _inf_norm(v):
    return jnp.max(jnp.abs(v), initial=0.0)


def primal_residual(A, lo, hi, x):
    """Primal feasibility residual: ||A x − Π_[lo,hi](A x)||∞."""
    Ax = A @ x
    return _inf_norm(Ax - jnp.clip(Ax, lo, hi))


def dual_residual(P, q, A, x, y):
    """Stationarity (dual) residual: ||P x + q + Aᵀ y||∞."""
    return _inf_norm(P @ x + q + A.T @ y)


def residuals(P, q, A, lo, hi, x, y) -> KKTResiduals:
    """All four KKT residuals (primal feasibility, stationarity, dual cone, complementarity) at
    (x, y)."""
    Ax = A @ x
    yp = jnp.maximum(y, 0.0)
    yn = jnp.maximum(-y, 0.0)
    hi_fin = jnp.isfinite(hi)
    lo_fin = jnp.isfinite(lo)
    cone = jnp.maximum(_inf_norm(jnp.where(hi_fin, 0.0, yp)), _inf_norm(jnp.where(lo_fin, 0.0, yn)))
    gap_hi = jnp.where(hi_fin, hi - Ax, 0.0)
    gap_lo = jnp.where(lo_fin, Ax - lo, 0.0)
    compl = jnp.maximum(_inf_norm(yp * gap_hi), _inf_norm(yn * gap_lo))
    return KKTResiduals(
        prim=_inf_norm(Ax - jnp.clip(Ax, lo, hi)),
        dual=_inf_norm(P @ x + q + A.T @ y),
        cone=cone,
        compl=compl,
    )


def optimality_error(P, q, A, lo, hi, x, y):
    """max of the four KKT residuals; 0 exactly at a primal-dual solution."""
    return residuals(P, q, A, lo, hi, x, y).max
