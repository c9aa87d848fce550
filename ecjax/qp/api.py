"""Public entry points: `solve` (one instance) and `solve_batch` (jit ∘ vmap)."""

import equinox as eqx
import jax

from .admm import Operator, Solution, _solve_admm
from .jaxopt_backend import solve_jaxopt

BACKENDS = ("admm", "jaxopt")


def _solve(op: Operator, q, lo, hi, warm=None, backend: str = "admm") -> Solution:
    if backend == "admm":
        return _solve_admm(op, q, lo, hi, warm)
    if backend == "jaxopt":
        return solve_jaxopt(op, q, lo, hi, warm)
    raise ValueError(f"`backend` must be one of {BACKENDS}, got {backend!r}.")


@eqx.filter_jit
def solve(op: Operator, q, lo, hi, warm=None, backend: str = "admm") -> Solution:
    """Solve one QP  min ½xᵀPx + qᵀx  s.t.  lo <= Ax <= hi.

    **Arguments:**
    - `op`: the `Operator` from `prepare(P, A, settings)` (shared, unbatched).
    - `q` (n,), `lo` (m,), `hi` (m,): this instance's data (±inf allowed in lo/hi).
    - `warm`: optional `Solution` (or any object with x, z, y, rho) to start from.
    - `backend`: "admm" (ecjax) or "jaxopt" (BoxOSQP, for comparison).

    **Returns:** a `Solution`; check `status` (never raises on infeasibility).

    vmappable: `jax.vmap(solve, in_axes=(None, 0, 0, 0, 0))`.
    """
    return _solve(op, q, lo, hi, warm, backend)


@eqx.filter_jit
def solve_batch(op: Operator, q, lo, hi, warm=None, backend: str = "admm") -> Solution:
    """`solve` over a leading batch axis of q, lo, hi (and warm); `op` is shared."""
    return jax.vmap(lambda q_, lo_, hi_, w_: _solve(op, q_, lo_, hi_, w_, backend))(q, lo, hi, warm)
