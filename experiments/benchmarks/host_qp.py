"""A QP solver that runs on the host (for example OSQP) behind ecjax's `solve` API.

For baselines only: `closed_loop.py` swaps the agent operator of a
`Controller` for a `HostOperator`, so that the very same FC-MPC iteration and closed loop run
with every agent QP solved by a host library, one `jax.pure_callback` per batch of solves.

A backend is any object with

    backend.solve(slot: int, q, lo, hi) -> (x, y, status: int, iterations: int)

where `slot` numbers the QPs of one batched call (0..B-1, in row-major order of the batch);
a backend may keep one solver per slot and warm-start it from that slot's previous solve.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from ecjax.qp import Solution, Status
from ecjax.qp.solution import finite


class HostOperator(eqx.Module):
    P_orig: Float[Array, "n n"]
    A_orig: Float[Array, "m n"]
    backend: object = eqx.field(static=True)
    n: int = eqx.field(static=True)
    m: int = eqx.field(static=True)
    one_device = True  # a host callback: `solve_batch` keeps the batch on one device

    @property
    def dtype(self):
        return self.P_orig.dtype

    def solve(self, q, lo, hi, warm=None) -> Solution:
        return solve_host(self, q, lo, hi, warm)


def host_operator(P, A, backend, dtype=jnp.float64) -> HostOperator:
    P = jnp.asarray(np.asarray(P), dtype)
    A = jnp.asarray(np.asarray(A), dtype)
    return HostOperator(P_orig=P, A_orig=A, backend=backend, n=P.shape[0], m=A.shape[0])


def solve_host(op: HostOperator, q, lo, hi, warm=None) -> Solution:
    dt = op.dtype
    q, lo, hi = (jnp.asarray(v, dt) for v in (q, lo, hi))

    def callback(q, lo, hi):
        shape = q.shape[:-1]
        qf, lf, hf = (np.asarray(v, np.float64).reshape(-1, v.shape[-1]) for v in (q, lo, hi))
        xs, ys, st, it = [], [], [], []
        for k in range(qf.shape[0]):
            x, y, s, i = op.backend.solve(k, qf[k], lf[k], hf[k])
            xs.append(x), ys.append(y), st.append(s), it.append(i)
        return (
            np.asarray(xs, dt).reshape(shape + (op.n,)),
            np.asarray(ys, dt).reshape(shape + (op.m,)),
            np.asarray(st, np.int32).reshape(shape),
            np.asarray(it, np.int32).reshape(shape),
        )

    out = (
        jax.ShapeDtypeStruct((op.n,), dt),
        jax.ShapeDtypeStruct((op.m,), dt),
        jax.ShapeDtypeStruct((), jnp.int32),
        jax.ShapeDtypeStruct((), jnp.int32),
    )
    x, y, status, iters = jax.pure_callback(callback, out, q, lo, hi, vmap_method="broadcast_all")
    Ax = op.A_orig @ x
    z = jnp.clip(Ax, lo, hi)
    prim = jnp.max(jnp.abs(Ax - z), initial=0.0)
    dual = jnp.max(jnp.abs(op.P_orig @ x + q + op.A_orig.T @ y), initial=0.0)
    obj = 0.5 * x @ (op.P_orig @ x) + q @ x
    return Solution(
        x=finite(x), y=finite(y), z=finite(z),
        status=jnp.where(jnp.isfinite(obj), status, int(Status.numerical_error)).astype(jnp.int32),
        num_steps=iters, prim_res=finite(prim), dual_res=finite(dual), obj=finite(obj),
    )  # fmt: skip
