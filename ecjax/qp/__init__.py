"""Batched QP solvers that share one structure per batch.

    minimise ½ xᵀPx + qᵀx   subject to   lo <= A x <= hi

P (n×n, PSD) and A (m×n) are shared by a batch; q, lo, hi vary per sample.

Usage::

    from ecjax.qp import IPM, prepare, solve, solve_batch, Status, Solution

    op = prepare(P, A, IPM(eps_abs=1e-6, eps_rel=1e-6), lo=lo0, hi=hi0)  # host, once
    sol = solve(op, q, lo, hi)                        # one instance (jitted)
    sols = solve_batch(op, Q, LO, HI)                 # leading batch axis, op shared
    sols = solve_batch(op, Q, LO, HI, warm=sols)      # warm start
    sols = solve_batch(op, Q, LO, HI, chunk=8)        # pieces of 8 per device (CPU: one per core)
    sols.status == Status.solved                      # per-sample int32 status

`Solution` fields: x, y, z, status, num_steps, prim_res, dual_res, obj.
Status codes: solved, max_iter, primal_infeasible, dual_infeasible,
numerical_error (`Status(code).message` explains each). Nothing is ever NaN.

The method, `IPM` (`ipm.py`): Mehrotra predictor-corrector. Bound rows are merged into one
bound pair per variable; the Newton system is reduced once, on the host, to a quasi-definite
matrix over the weak columns and coupling rows (`normal.py`): when the coupling rows fall
into small groups (one per time step in the agent QP) they are eliminated first and only the
states' Schur complement is factored (`schur.py`), otherwise the whole matrix,
block-tridiagonal after reverse Cuthill-McKee (`blocktri.py`); each sample factors its own
small blocks at every iteration. 10-20 iterations to 1e-8 on the community QPs, nearly the
same for every sample, which is what a vmapped batch needs (it runs until its slowest sample
stops). `tests/qp/test_fuzz.py` checks it against Clarabel on the whole problem family.
"""

from .api import prepare as prepare, solve as solve, solve_batch as solve_batch
from .ipm import IPM as IPM, Operator as Operator
from .solution import Solution as Solution
from .status import Status as Status
from . import kkt as kkt
