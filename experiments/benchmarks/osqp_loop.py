"""OSQP baselines of `qp_batch.py`, in a module without jax so that worker processes start fast.

`OSQPLoop`: one OSQP object, set up once; only q, l, u change; warm-started from the previous
solution; ρ back to its start value before each solve (a ρ adapted to one instance derails the
next one: without the reset most instances of the pool end at the iteration cap after the
first few dozen).

On all cores: `baselines.Pool("osqp", ...)`, this loop in one process per core.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp


class OSQPLoop:
    def __init__(self, P, A, eps):
        import osqp

        self.P, self.A = sp.csc_matrix(np.triu(P)), sp.csc_matrix(A)
        self.eps = eps
        self.solver = None
        self.osqp = osqp

    def solve(self, q, lo, hi):
        if self.solver is None:
            self.solver = self.osqp.OSQP()
            self.solver.setup(
                self.P, q, self.A, lo, hi, eps_abs=self.eps, eps_rel=self.eps, max_iter=100000, polishing=False,
                warm_starting=True, verbose=False,
            )  # fmt: skip
        else:
            self.solver.update(q=q, l=lo, u=hi)
            self.solver.update_settings(rho=0.1)
        r = self.solver.solve()
        return r.x, r.info.iter, r.info.status_val == 1

