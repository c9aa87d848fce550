"""Batched QP solver: OSQP-style ADMM that shares one factorization per batch.

    minimise ½ xᵀPx + qᵀx   subject to   lo <= A x <= hi

P (n×n, PSD) and A (m×n) are shared by a batch; q, lo, hi vary per sample.

Usage::

    from ecjax.qp import ADMM, prepare, solve, solve_batch, Status, Solution

    settings = ADMM(eps_abs=1e-6, eps_rel=1e-6, max_iter=4000, check_every=25)
    op = prepare(P, A, settings, dtype=jnp.float64, lo=lo0, hi=hi0)  # host, once
    sol = solve(op, q, lo, hi)                        # one instance (jitted)
    sols = solve_batch(op, Q, LO, HI)                 # leading batch axis, op shared
    sols = solve_batch(op, Q, LO, HI, warm=sols)      # warm start (x, z, y, rho)
    sols.status == Status.solved                      # per-sample int32 status
    sol = solve(op, q, lo, hi, backend="jaxopt")      # jaxopt BoxOSQP, same Solution

`Solution` fields: x, y, z, rho, status, num_steps, prim_res, dual_res, obj.
Status codes: solved, max_iter, primal_infeasible, dual_infeasible,
numerical_error (`Status(code).message` explains each). Nothing is ever NaN.

Design (see `linsys.py` and `admm.py`): Ruiz scaling and a split of A into
singleton rows (bounds on one variable) and coupling rows are done once on the
host. With diagonal P the x-update uses a Woodbury identity whose small
(m_c × m_c) part is eigendecomposed once, so every sample adapts its own ρ on
the coupling rows at no cost (no per-sample factorization, only shared
matrix products); ρ on singleton rows stays at its initial value. With a
general P, a generalized eigendecomposition gives K(ρ)⁻¹ for any ρ with two
n×n products. Both keep the whole solve free of per-sample factorizations and
host synchronisation.
"""

from .admm import ADMM as ADMM, ADMMState as ADMMState, Operator as Operator
from .admm import Solution as Solution, init as init, step as step, terminate as terminate
from .api import prepare as prepare, solve as solve, solve_batch as solve_batch
from .ipm import IPM as IPM, IPMOperator as IPMOperator
from .problem import QP as QP
from .status import Status as Status
from . import kkt as kkt
