"""OSQP baselines of `qp_batch.py`, in a module without jax so that worker processes start fast.

`OSQPLoop`: one OSQP object, set up once; only q, l, u change; warm-started from the previous
solution; ρ back to its start value before each solve (a ρ adapted to one instance derails the
next one: without the reset most instances of the pool end at the iteration cap after the
first few dozen).

`OSQPPool`: the same loop in one process per core, each with its own OSQP object, every
instance of a batch solved once: OSQP on all the machine's cores (what a batch of
independent QPs costs with OSQP when every core works).
"""

from __future__ import annotations

import multiprocessing as mp
import time

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


_LOOP: OSQPLoop | None = None


def _init(P, A, eps, q, lo, hi):
    global _LOOP
    _LOOP = OSQPLoop(P, A, eps)
    _LOOP.solve(q, lo, hi)  # the setup, outside the timing


def _solve_share(args):
    q, lo, hi = args
    out = [_LOOP.solve(q[b], lo[b], hi[b]) for b in range(q.shape[0])]
    return np.asarray([o[0] for o in out]), np.asarray([o[1] for o in out]), np.asarray([o[2] for o in out])


class OSQPPool:
    """`processes` workers (spawned), each with its own `OSQPLoop`; `solve_all` splits the
    instances into one contiguous share per worker and returns (wall seconds, x, iters, ok)."""

    def __init__(self, P, A, eps, processes, q0, lo0, hi0):
        self.processes = processes
        ctx = mp.get_context("spawn")
        self.pool = ctx.Pool(processes, initializer=_init, initargs=(P, A, eps, q0, lo0, hi0))
        self.pool.map(_solve_share, [(q0[None], lo0[None], hi0[None])] * processes)  # workers up

    def solve_all(self, q, lo, hi):
        shares = np.array_split(np.arange(q.shape[0]), self.processes)
        t0 = time.perf_counter()
        outs = self.pool.map(_solve_share, [(q[s], lo[s], hi[s]) for s in shares])
        wall = time.perf_counter() - t0
        return wall, *(np.concatenate(v) for v in zip(*outs))

    def close(self):
        self.pool.close()
        self.pool.join()
