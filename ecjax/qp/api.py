"""Public entry points: `prepare` (host, once per structure), `solve` (one instance) and
`solve_batch` (jit ∘ vmap)."""

import equinox as eqx
import jax
import jax.numpy as jnp

from .ipm import IPM, Operator, prepare_ipm
from ..parallel import over_devices
from .solution import Solution
from .status import Status


def prepare(P, A, settings: IPM = IPM(), dtype=jnp.float64, lo=None, hi=None) -> Operator:
    """Build the shared operator of a batch on the host, once per (P, A).

    `settings`: the interior-point method's (`IPM(...)`; diagonal P). `lo`, `hi`: template
    bounds that mark the rows that are equalities in every instance, which lets it pick a
    faster Newton-system form (`normal.py`).
    """
    if not isinstance(settings, IPM):
        raise TypeError(f"`settings` must be IPM(...), got {type(settings).__name__}.")
    dtype = jnp.dtype(dtype)
    if dtype not in (jnp.dtype(jnp.float32), jnp.dtype(jnp.float64)):
        raise ValueError(f"`dtype` must be float32 or float64, got {dtype}.")
    if dtype == jnp.float64 and not jax.config.jax_enable_x64:
        raise ValueError("`dtype=float64` needs `jax.config.update('jax_enable_x64', True)`.")
    return prepare_ipm(P, A, settings, dtype, lo, hi)


def _screen(q, lo, hi):
    """Data no iteration can fix, flagged before solving (OSQP rejects it at setup).

    Returns (status, q, lo, hi): status `numerical_error` for a non-finite q, a NaN bound, or
    lo = +inf / hi = −inf; `primal_infeasible` for a row with lo > hi (a trivial certificate);
    `running` otherwise. Flagged samples are replaced by the trivial problem (q = 0, every row
    free), so that under vmap they finish at once instead of holding back their batch.
    """
    bad = ~jnp.all(jnp.isfinite(q)) | jnp.any(jnp.isnan(lo)) | jnp.any(jnp.isnan(hi))
    bad = bad | jnp.any(lo == jnp.inf) | jnp.any(hi == -jnp.inf)
    crossed = jnp.any(lo > hi)
    status = jnp.where(bad, int(Status.numerical_error), jnp.where(crossed, int(Status.primal_infeasible), int(Status.running)))
    flag = bad | crossed
    q = jnp.where(flag, 0.0, q)
    lo = jnp.where(flag, -jnp.inf, lo)
    hi = jnp.where(flag, jnp.inf, hi)
    return status.astype(jnp.int32), q, lo, hi


def _screened(sol: Solution, status) -> Solution:
    """The screen's status where it flagged the data; residuals never NaN or inf (a
    non-finite residual is reported as the dtype's largest finite number)."""
    big = jnp.finfo(sol.prim_res.dtype).max
    fin = lambda v: jnp.where(jnp.isfinite(v), v, big)  # noqa: E731
    flagged = status != int(Status.running)
    return eqx.tree_at(
        lambda s: (s.status, s.prim_res, s.dual_res),
        sol,
        (jnp.where(flagged, status, sol.status).astype(jnp.int32), fin(sol.prim_res), fin(sol.dual_res)),
    )


def _solve(op: Operator, q, lo, hi, warm=None) -> Solution:
    """Screen the data, then the operator's own method (`op.solve`): the IPM's, or any object
    with `dtype`, `one_device` and `solve(q, lo, hi, warm)` (a benchmark's host solver)."""
    dt = op.dtype
    q, lo, hi = (jnp.asarray(v, dt) for v in (q, lo, hi))
    status, q, lo, hi = _screen(q, lo, hi)
    return _screened(op.solve(q, lo, hi, warm), status)


@eqx.filter_jit
def solve(op: Operator, q, lo, hi, warm=None) -> Solution:
    """Solve one QP  min ½xᵀPx + qᵀx  s.t.  lo <= Ax <= hi.

    **Arguments:**
    - `op`: the `Operator` from `prepare(P, A, settings)` (shared, unbatched).
    - `q` (n,), `lo` (m,), `hi` (m,): this instance's data (±inf allowed in lo/hi).
    - `warm`: optional `Solution` (or any object with x, y) to start from.

    **Returns:** a `Solution`; check `status` (never raises on infeasibility).

    vmappable: `jax.vmap(solve, in_axes=(None, 0, 0, 0, 0))`.
    """
    return _solve(op, q, lo, hi, warm)


@eqx.filter_jit
def solve_batch(op: Operator, q, lo, hi, warm=None, chunk: int | None = None) -> Solution:
    """`solve` over a leading batch axis of q, lo, hi (and warm); `op` is shared.

    The batch is split over the local devices (`ecjax.parallel`: one per CPU core, or every
    GPU), each solving its share.

    `chunk`: each device solves its share in vmapped pieces of this many samples, one after
    another (`lax.map`). On a CPU a small piece keeps each iteration's arrays in cache and stops
    as soon as its own slowest sample does (docs/performance.md has the figures). None
    (default): one piece, what a GPU wants.
    """
    if chunk is not None and not (isinstance(chunk, int) and chunk >= 1):
        raise ValueError(f"`chunk` must be an integer >= 1 or None, got {chunk!r}.")
    one = lambda a: _solve(op, a[0], a[1], a[2], a[3])  # noqa: E731

    def share(q, lo, hi, warm):
        if chunk is None or chunk >= jnp.shape(q)[0]:
            return jax.vmap(one)((q, lo, hi, warm))
        return jax.lax.map(one, (q, lo, hi, warm), batch_size=chunk)

    if op.one_device:
        return share(q, lo, hi, warm)
    return over_devices(share, batched=(0, 1, 2, 3))(q, lo, hi, warm)
