"""The canonical QP as a pytree, with shape checks at the Python boundary.

    minimise  ½ xᵀ P x + qᵀ x   subject to   lo <= A x <= hi

`lo` may hold -inf, `hi` +inf; an equality row has lo == hi.
"""

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Float


class QP(eqx.Module):
    P: Float[Array, "n n"]
    q: Float[Array, "n"]
    A: Float[Array, "m n"]
    lo: Float[Array, "m"]
    hi: Float[Array, "m"]

    def __check_init__(self):
        check_shapes(self.P, self.q, self.A, self.lo, self.hi)

    @property
    def n(self) -> int:
        return self.q.shape[-1]

    @property
    def m(self) -> int:
        return self.lo.shape[-1]


def check_shapes(P, q, A, lo, hi):
    """Raise a ValueError that names the argument whose shape is wrong."""
    if P.ndim != 2 or P.shape[0] != P.shape[1]:
        raise ValueError(f"`P` must be square (n, n), got shape {P.shape}.")
    n = P.shape[0]
    if A.ndim != 2 or A.shape[1] != n:
        raise ValueError(f"`A` must have shape (m, {n}), got {A.shape}.")
    m = A.shape[0]
    if q.shape != (n,):
        raise ValueError(f"`q` must have shape ({n},), got {q.shape}.")
    if lo.shape != (m,):
        raise ValueError(f"`lo` must have shape ({m},), got {lo.shape}.")
    if hi.shape != (m,):
        raise ValueError(f"`hi` must have shape ({m},), got {hi.shape}.")


def objective(P, q, x):
    """½ xᵀ P x + qᵀ x."""
    return 0.5 * jnp.dot(x, P @ x) + jnp.dot(q, x)
