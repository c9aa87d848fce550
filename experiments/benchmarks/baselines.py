"""Host QP solvers raced against ecjax in `qp_batch.py` and `closed_loop.py` (no jax here, so
that worker processes start fast; qpax, a JAX solver, lives in `qp_batch.py`).

Every solver takes the agent QP in ecjax's canonical form, min ½xᵀPx + qᵀx s.t.
lo <= A x <= hi with one (P, A) for all instances, and is set up once from P, A and a
template of the bounds (`Canon`); then `solve(q, lo, hi) -> (x, iterations, solved)` per
instance, x in the original variable order. Each keeps its factorization or workspace
between instances where its API allows, and is warm-started from the previous instance
where its method can use one:

* `PIQPLoop`: PIQP (proximal interior point), sparse, with one of its KKT backends:
  `sparse_ldlt` (a general sparse LDLᵀ) or `sparse_multistage` (a block-tridiagonal
  factorization for multistage problems; the variables are reordered by horizon step, inputs
  of step k then the states and slacks of step k+1, which PIQP detects as 24 blocks of 22
  variables, no arrow). Single-variable rows become PIQP's bounds x_l <= x <= x_u. One
  `SparseSolver`, set up once, only c, b, h, x_l, x_u updated; its relative duality-gap
  tolerance is tightened (`GAP_REL`, below).
* `DAQPLoop`: DAQP (dual active set, dense), bounds first: x_l <= x <= x_u on every
  variable, then the 144 general rows; rows with lo = hi are equalities (`sense` 5). Warm
  start: the working set of the previous instance (its active constraints) starts the next.
  P is only semidefinite here (no quadratic weight on ugb, ev, eb, eev): DAQP runs with its
  proximal-point outer iterations (`eps_prox`).
* `ProxQPBatch`: ProxQP (proxsuite, sparse): `proxqp.sparse.BatchQP` of the whole batch
  solved by `solve_in_parallel` over `threads` OpenMP threads.
* `ClarabelLoop`: Clarabel's own API (not through CVXPY): one `DefaultSolver`, set up once,
  then q and b updated in place (`solver.update`); the general equalities in a zero cone, the
  finite sides of the other general rows and of the merged bounds in a nonnegative cone.
* `OSQPLoop` (`osqp_loop.py`).

`Pool` runs any of them in one process per core, each with its own solver, every instance of
a batch solved once (the instances split in contiguous shares).
"""

from __future__ import annotations

import multiprocessing as mp
import time

import numpy as np
import scipy.sparse as sp

BIG = 1e30


class Canon:
    """The agent QP split for solvers that take bounds on x apart from general rows.

    Rows with one nonzero (a coefficient 1, checked) are merged per column into bounds
    x_l = max lo, x_u = min hi; the other ("general") rows keep lo <= G x <= hi; general rows
    with lo = hi in every instance of the template are equalities (`eq`), the rest `ineq`.
    `perm` orders the variables by horizon step (stage) when `N` is given."""

    def __init__(self, P, A, lo_all, hi_all, N=None):
        P, A = np.asarray(P, float), np.asarray(A, float)
        lo_all, hi_all = np.atleast_2d(lo_all), np.atleast_2d(hi_all)
        self.n, self.m = P.shape[0], A.shape[0]
        nz = A != 0
        single = nz.sum(axis=1) == 1
        col = np.argmax(nz, axis=1)
        assert np.all(A[single, col[single]] == 1.0), "single-variable rows have coefficient 1"
        self.bound_rows, self.bound_cols = np.flatnonzero(single), col[single]
        general = np.flatnonzero(~single)
        eq = np.all(lo_all[:, general] == hi_all[:, general], axis=0)
        self.eq_rows, self.ineq_rows = general[eq], general[~eq]
        self.has_lo = np.any(np.isfinite(lo_all[:, self.ineq_rows]), axis=0)
        self.has_hi = np.any(np.isfinite(hi_all[:, self.ineq_rows]), axis=0)
        self.perm = stage_order(A, N) if N else np.arange(self.n)
        self.inv = np.argsort(self.perm)
        self.P = P[np.ix_(self.perm, self.perm)]
        self.A_eq = A[np.ix_(self.eq_rows, self.perm)]
        self.A_in = A[np.ix_(self.ineq_rows, self.perm)]

    def bounds(self, lo, hi):
        """(x_l, x_u) in the solver's variable order (±inf where no row bounds a variable)."""
        xl = np.full(self.n, -np.inf)
        xu = np.full(self.n, np.inf)
        np.maximum.at(xl, self.bound_cols, lo[self.bound_rows])
        np.minimum.at(xu, self.bound_cols, hi[self.bound_rows])
        return xl[self.perm], xu[self.perm]

    def split(self, q, lo, hi):
        """q, b (equalities), lower and upper sides of the inequalities, x_l, x_u."""
        xl, xu = self.bounds(lo, hi)
        return q[self.perm], lo[self.eq_rows], lo[self.ineq_rows], hi[self.ineq_rows], xl, xu

    def unpermute(self, x):
        return np.asarray(x)[self.inv]


def stage_order(A, N):
    """Variables ordered by horizon step. The agent QP's variables are blocks of N (one entry
    per step, MODEL §2: inputs at k = 0..N-1, then eb, eev and the slacks at k = 1..N), so
    entry k of every block goes to stage k: (inputs of step k, states of step k+1)."""
    n = A.shape[1]
    assert n % N == 0
    return np.arange(n).reshape(n // N, N).T.reshape(-1)


# ----------------------------------------------------------------------------- PIQP
# PIQP's relative duality-gap test is relative to the largest term of the objective (not to
# the objective itself); at 1e-6 it stops with objectives up to 1.6e-4 (relative) above the
# optimum on this pool, so its gap tolerance is tightened to reach the accuracy of the other
# solvers (1-3 more iterations); `gap_rel=None` keeps it at eps.
GAP_REL = 1e-9
class PIQPLoop:
    def __init__(self, P, A, eps, lo_all, hi_all, N=24, backend="sparse_multistage", gap_rel=GAP_REL, max_iter=500):
        self.cn = Canon(P, A, lo_all, hi_all, N=N if backend.startswith("sparse_multistage") else None)
        self.eps, self.backend, self.gap_rel, self.max_iter = eps, backend, gap_rel, max_iter
        self.solver = None

    def solve(self, q, lo, hi):
        import piqp

        c, b, hl, hu, xl, xu = self.cn.split(q, lo, hi)
        if self.solver is None:
            cn = self.cn
            s = piqp.SparseSolver()
            st = s.settings
            st.eps_abs = st.eps_rel = self.eps
            st.eps_duality_gap_abs = self.eps
            st.eps_duality_gap_rel = self.gap_rel or self.eps
            st.max_iter = self.max_iter
            st.verbose = False
            st.kkt_solver = getattr(piqp, self.backend)
            s.setup(sp.csc_matrix(np.triu(cn.P)), c, sp.csc_matrix(cn.A_eq), b, sp.csc_matrix(cn.A_in), hl, hu, xl, xu)
            self.solver = s
        else:
            self.solver.update(c=c, b=b, h_l=hl, h_u=hu, x_l=xl, x_u=xu)
        status = self.solver.solve()
        r = self.solver.result
        return self.cn.unpermute(r.x), r.info.iter, status == piqp.PIQP_SOLVED


# ----------------------------------------------------------------------------- DAQP
EQUALITY = 5  # DAQP's sense flags: ACTIVE (1) | IMMUTABLE (4)
ACTIVE, LOWER = 1, 2


class DAQPLoop:
    """Dense dual active set; `warm` carries the previous instance's working set over."""

    def __init__(self, P, A, eps, lo_all, hi_all, warm=True, eps_prox=1e-6, iter_limit=20000):
        self.cn = Canon(P, A, lo_all, hi_all)
        cn = self.cn
        self.H = np.ascontiguousarray(cn.P)
        self.G = np.ascontiguousarray(np.vstack([cn.A_eq, cn.A_in]))
        self.eps, self.warm, self.eps_prox, self.iter_limit = eps, warm, eps_prox, iter_limit
        self.model = None
        self.active = None  # sense bits of the previous solution (ACTIVE, LOWER)

    def data(self, q, lo, hi):
        c, b, gl, gu, xl, xu = self.cn.split(q, lo, hi)
        bu = np.concatenate([xu, b, gu])
        bl = np.concatenate([xl, b, gl])
        bu, bl = np.minimum(bu, BIG), np.maximum(bl, -BIG)
        sense = np.where(bu == bl, EQUALITY, 0).astype(np.int32)
        if self.warm and self.active is not None:
            sense = np.where(sense == EQUALITY, sense, self.active).astype(np.int32)
        return np.ascontiguousarray(c), bu, bl, sense

    def solve(self, q, lo, hi):
        import daqp

        f, bu, bl, sense = self.data(q, lo, hi)
        if self.model is None:
            self.model = daqp.Model()
            self.model.setup(self.H, f, self.G, bu, bl, sense)
            s = self.model.settings
            s.update(primal_tol=self.eps, eps_prox=self.eps_prox, iter_limit=self.iter_limit)
            self.model.settings = s
        else:
            self.model.update(f=f, bupper=bu, blower=bl, sense=sense)
        x, _, exitflag, info = self.model.solve()
        lam = np.asarray(info["lam"])
        self.active = np.where(lam > 0, ACTIVE, np.where(lam < 0, ACTIVE | LOWER, 0)).astype(np.int32)
        return self.cn.unpermute(x), int(info["iterations"]), exitflag >= 1


# ----------------------------------------------------------------------------- ProxQP
class ProxQPBatch:
    """proxsuite's sparse ProxQP: a `proxqp.sparse.BatchQP` of the whole batch solved by
    `solve_in_parallel` over `threads` OpenMP threads. Bounds on x are rows of C (the sparse
    API has no box constraints; the dense one, with them, measured ~3x slower here)."""

    def __init__(self, P, A, eps, lo_all, hi_all, threads=1, max_iter=10000):
        cn = self.cn = Canon(P, A, lo_all, hi_all)
        xl, xu = cn.bounds(np.asarray(lo_all)[0], np.asarray(hi_all)[0])
        self.fin = np.isfinite(xl) | np.isfinite(xu)
        self.H = sp.csc_matrix(cn.P)
        self.Ae = sp.csc_matrix(cn.A_eq)
        self.C = sp.vstack([sp.csc_matrix(cn.A_in), sp.eye(cn.n, format="csc")[self.fin]]).tocsc()
        self.eps, self.threads, self.max_iter = eps, threads, max_iter

    def solve_all(self, Q, LO, HI):
        """(wall seconds, x, iterations, solved) of every instance; set-up included."""
        from proxsuite import proxqp

        cn, fin = self.cn, self.fin
        t0 = time.perf_counter()
        qps = proxqp.sparse.BatchQP(Q.shape[0])
        for k in range(Q.shape[0]):
            c, b, gl, gu, xl, xu = cn.split(Q[k], LO[k], HI[k])
            qp = qps.init_qp_in_place(cn.n, len(b), self.C.shape[0])
            qp.settings.eps_abs = qp.settings.eps_rel = self.eps
            qp.settings.max_iter = self.max_iter
            qp.settings.verbose = False
            qp.init(self.H, c, self.Ae, b, self.C, np.r_[gl, xl[fin]], np.r_[gu, xu[fin]])
        proxqp.sparse.solve_in_parallel(qps, num_threads=self.threads)
        wall = time.perf_counter() - t0
        xs, its, ok = [], [], []
        for k in range(Q.shape[0]):
            r = qps.get(k).results
            xs.append(cn.unpermute(r.x)), its.append(r.info.iter), ok.append(r.info.status == proxqp.PROXQP_SOLVED)
        return wall, np.asarray(xs), np.asarray(its), np.asarray(ok)


# ----------------------------------------------------------------------------- Clarabel
class ClarabelLoop:
    def __init__(self, P, A, eps, lo_all, hi_all, **tols):
        cn = self.cn = Canon(P, A, lo_all, hi_all)
        xl, xu = cn.bounds(np.asarray(lo_all).reshape(-1, cn.m)[0], np.asarray(hi_all).reshape(-1, cn.m)[0])
        self.up, self.dn = np.flatnonzero(np.isfinite(xu)), np.flatnonzero(np.isfinite(xl))
        eye = np.eye(cn.n)
        self.M = sp.csc_matrix(np.vstack([cn.A_eq, cn.A_in[cn.has_hi], -cn.A_in[cn.has_lo], eye[self.up], -eye[self.dn]]))
        self.P = sp.csc_matrix(np.triu(cn.P))
        self.tols = tols or dict(tol_gap_abs=eps, tol_gap_rel=eps, tol_feas=eps)
        self.solver = None

    def solve(self, q, lo, hi):
        import clarabel

        cn = self.cn
        c, b, gl, gu, xl, xu = cn.split(q, lo, hi)
        b = np.concatenate([b, gu[cn.has_hi], -gl[cn.has_lo], xu[self.up], -xl[self.dn]])
        if self.solver is None:
            st = clarabel.DefaultSettings()
            st.verbose = False
            st.presolve_enable = False  # keeps data updates allowed
            for k, v in self.tols.items():
                setattr(st, k, v)
            cones = [clarabel.ZeroConeT(len(cn.eq_rows)), clarabel.NonnegativeConeT(len(b) - len(cn.eq_rows))]
            self.solver = clarabel.DefaultSolver(self.P, c, self.M, b, cones, st)
        else:
            self.solver.update(q=c, b=b)
        s = self.solver.solve()
        return cn.unpermute(np.asarray(s.x)), s.iterations, str(s.status) == "Solved"


# ----------------------------------------------------------------------------- pool
_SOLVER = None


def make_solver(kind, P, A, eps, lo_all, hi_all, **kw):
    if kind == "osqp":
        from osqp_loop import OSQPLoop

        return OSQPLoop(P, A, eps)
    return {"piqp": PIQPLoop, "daqp": DAQPLoop, "clarabel": ClarabelLoop}[kind](P, A, eps, lo_all, hi_all, **kw)


def _init(path, kind, P, A, eps, lo_all, hi_all, kw, q, lo, hi):
    import sys

    sys.path.insert(0, path)
    global _SOLVER
    _SOLVER = make_solver(kind, P, A, eps, lo_all, hi_all, **kw)
    _SOLVER.solve(q, lo, hi)  # the setup, outside the timing


def _solve_share(args):
    q, lo, hi = args
    out = [_SOLVER.solve(q[b], lo[b], hi[b]) for b in range(q.shape[0])]
    return np.asarray([o[0] for o in out]), np.asarray([o[1] for o in out]), np.asarray([o[2] for o in out])


class Pool:
    """`processes` workers (spawned), each with its own solver of `kind`; `solve_all` splits
    the instances into one contiguous share per worker and returns (wall seconds, x, iters, ok)."""

    def __init__(self, kind, P, A, eps, lo_all, hi_all, processes, q0, lo0, hi0, **kw):
        import os

        self.processes = processes
        ctx = mp.get_context("spawn")
        path = os.path.dirname(os.path.abspath(__file__))
        init = (path, kind, P, A, eps, lo_all, hi_all, kw, q0, lo0, hi0)
        self.pool = ctx.Pool(processes, initializer=_init, initargs=init)
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


def time_loop(solver, q, lo, hi):
    """(wall seconds, x, iterations, solved) of `solver.solve` over the instances in order."""
    xs, its, ok = [], [], []
    t0 = time.perf_counter()
    for b in range(q.shape[0]):
        x, it, good = solver.solve(q[b], lo[b], hi[b])
        xs.append(x if x is not None else np.full(q.shape[1], np.nan)), its.append(it), ok.append(good)
    return time.perf_counter() - t0, np.asarray(xs), np.asarray(its), np.asarray(ok)
