"""Public entry points: `solve` (one instance) and `solve_batch` (jit ∘ vmap)."""

import equinox as eqx
import jax

import jax.numpy as jnp

from .admm import ADMM, Operator, Solution, _solve_admm
from .admm import prepare as _prepare_admm
from .host import HostOperator, solve_host
from .ipm import IPM, IPMOperator, prepare_ipm, solve_ipm
from .jaxopt_backend import solve_jaxopt

BACKENDS = ("admm", "jaxopt")


def prepare(P, A, settings: ADMM | IPM = ADMM(), dtype=jnp.float64, lo=None, hi=None):
    """Build the shared operator of a batch on the host, once per (P, A).

    `settings` picks the method: `ADMM(...)` (warm-startable, any PSD P; `lo`, `hi` are
    template bounds that classify equality rows) or `IPM(...)` (interior point, diagonal P,
    iteration counts nearly independent of the data; `lo`, `hi` unused).
    """
    if isinstance(settings, IPM):
        dtype = jnp.dtype(dtype)
        if dtype not in (jnp.dtype(jnp.float32), jnp.dtype(jnp.float64)):
            raise ValueError(f"`dtype` must be float32 or float64, got {dtype}.")
        import jax

        if dtype == jnp.float64 and not jax.config.jax_enable_x64:
            raise ValueError("`dtype=float64` needs `jax.config.update('jax_enable_x64', True)`.")
        return prepare_ipm(P, A, settings, dtype)
    if not isinstance(settings, ADMM):
        raise TypeError(f"`settings` must be ADMM(...) or IPM(...), got {type(settings).__name__}.")
    return _prepare_admm(P, A, settings, dtype, lo, hi)


def _solve(op: Operator | IPMOperator, q, lo, hi, warm=None, backend: str = "admm") -> Solution:
    if isinstance(op, HostOperator):
        return solve_host(op, q, lo, hi, warm)
    if isinstance(op, IPMOperator):
        if backend not in ("admm", "ipm"):
            raise ValueError("an `IPM` operator solves with its own method; `backend` must be left as is.")
        return solve_ipm(op, q, lo, hi, warm)
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
