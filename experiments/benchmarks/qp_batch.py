"""Batched agent QPs of the paper case: ecjax against OSQP, CVXPY + OSQP, jaxopt and the
strongest structured QP solvers (PIQP, DAQP, ProxQP, qpax, Clarabel).

    python experiments/benchmarks/qp_batch.py [--quick] [--sizes 1,16,256,4096] [--baselines ...]

The instances are real FC-MPC subproblems (MODEL §6) of the paper case (15 agents, 7
prosumers, N = 24, September data): at a random start hour, battery and EV state, risk level
δ and tightening mode, every prosumer's problem of iteration p = 1, with the other agents
fixed at their islanded plans (iterate 0). One structure (P, A) for all of them; q, lo, hi
differ per instance. Batch size B takes the first B instances of the pool.

Solvers, all at the same accuracy target (eps_abs = eps_rel = 1e-6, in each solver's own
criteria):

* (a) ecjax: `solve_batch` (jit ∘ vmap), the engine's interior-point method (IPM); on a CPU
  split over one XLA device per core (`ecjax.parallel`), each in pieces of `--chunk` QPs
  (`solve_batch(..., chunk=8)`), on a GPU in one piece; the
  shared structure is prepared once, outside the timing;
* (b) OSQP (pinned in pyproject.toml) in a loop: one OSQP object, set up once, then only
  q, l, u updated for each instance, warm-started from the previous solution (ρ reset);
  also the same loop in one process per core (`osqp_<k>cores`: OSQP with every core busy,
  the instances split evenly; `osqp_loop.py`);
* (c) CVXPY + OSQP: a parameterized problem (q, lo, hi as Parameters), re-solved per
  instance, as a user would write it;
* (d) jaxopt's BoxOSQP under vmap over all devices (`JaxoptBatch`), capped at
  `--jaxopt-iters` iterations;
* (e) the `bench` extra's solvers (`baselines.py`), each on one core and on all cores: PIQP
  (`piqp`: sparse LDLᵀ KKT backend; `piqp_ms`: its `sparse_multistage` backend on the
  variables reordered by horizon step), DAQP (`daqp`, dense dual active set, warm-started
  from the previous instance's working set), Clarabel's own API (`clarabel`), all three in a
  loop and in one process per core (`<name>_<k>cores`); ProxQP (`proxqp`, sparse, its batch
  API `proxqp.sparse.solve_in_parallel` on 1 and k threads); qpax (`qpax`, a dense JAX
  interior point, `qpax.solve_qp` under vmap on one device and over all devices, capped at
  `--qpax-iters` iterations; lo <= Ax <= hi as A_eq x = b and G x <= h).

(b)–(e) share no work between the QPs of a batch (loops, vmapped loops that run until the
slowest sample stops, or independent solves on threads), so their time per QP does not fall
with the batch size: they are timed on the first `--loop-max` (loops and processes),
min(64, `--loop-max`) (CVXPY), `--jaxopt-n` (jaxopt), `--prox-n` (ProxQP) and `--qpax-n`
(qpax) instances (best of `--reps` runs, jaxopt and qpax once), and that per-QP time stands
for every batch size. Where jaxopt or qpax
stops at its cap before the target, its time is a lower bound of its time to the target.

Accuracy: every solver's objective on the first `--ref` instances (or those it was timed on)
against Clarabel (via CVXPY, tolerances 1e-10) on the same canonical QP, relative to
max(1, |f*|), and the largest constraint violation. A competitor *meets the accuracy* when it
solved every instance, its relative objective error is at most 10·eps and its violation at
most 10·eps·max(1, largest finite |bound|) (OSQP's residual test at eps, with margin).

Prints the machine, the sizes and three tables (ecjax per B; the competitors; speedups per
B); last line, for the largest batch:
`qp_batch: speedup_vs_best=<x> best=<name> speedup_vs_osqp=<x> speedup_vs_jaxopt=<x> max_rel_obj_err=<x>`
(per-QP time of the fastest competitor that meets the accuracy, over its best core
configuration, resp. of the OSQP loop and of jaxopt, over ecjax's; error of ecjax). Results
also go to experiments/benchmarks/results/qp_batch_<quick|full>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import scipy.sparse as sp  # noqa: E402

from ecjax import ocp  # noqa: E402
from ecjax.community import paper_case  # noqa: E402
from ecjax.fcmpc import islanded, make_controller  # noqa: E402
from ecjax.plan import make_stage, plan_from_vectors  # noqa: E402
from ecjax.qp import IPM, Status, solve_batch  # noqa: E402
from ecjax.weights import CostWeights  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from closed_loop import machine, profiles_for  # noqa: E402
import baselines  # noqa: E402
from osqp_loop import OSQPLoop  # noqa: E402

EPS = 1e-6
N = 24
BASELINES = ("osqp", "cvxpy", "jaxopt", "piqp", "daqp", "proxqp", "qpax", "clarabel")


# ----------------------------------------------------------------------------- instances
def random_states(c, rng, count):
    """Start hour, battery and EV energy, δ and tightening mode of `count` stages.

    The EV energy is drawn so that its daily energy can still be delivered in the rest of its
    availability window (otherwise the hard deadline (9) makes the QP infeasible)."""
    cap = np.asarray(c.capacity)
    lo, hi = np.asarray(c.eb_lo), np.asarray(c.eb_hi)
    avail = np.asarray(c.ev_avail)
    t = rng.integers(0, 24, count)
    eb0 = lo + rng.uniform(0.05, 0.95, (count, c.n)) * (hi - lo)
    eb0 = np.where(cap > 0, eb0, 0.0)
    reach = np.stack([c.eta_ev * c.dt * np.asarray(c.ev_max) * avail[:, h:].sum(axis=1) for h in t])
    need = np.maximum(0.0, np.asarray(c.ev_daily) - 0.9 * reach)
    eev0 = need + rng.uniform(0, 1, (count, c.n)) * (np.asarray(c.ev_daily) - need) * (t[:, None] / 24)
    delta = rng.uniform(0.01, 0.3, count)
    mode = rng.integers(0, 2, count)  # 0 cumulative, 1 per_step
    return t, eb0, eev0, delta, mode


def make_instances(c, prof, w, ctl, count, seed=0):
    """(q, lo, hi) of `count` agent QPs (iteration 1 of FC-MPC), numpy float64."""
    rng = np.random.default_rng(seed)
    nP = len(c.prosumers)
    stages = -(-count // nP)
    t, eb0, eev0, delta, mode = random_states(c, rng, stages)

    def stage_qps(t, eb0, eev0, delta, tightening):
        stage = make_stage(c, prof, t, eb0, eev0, delta, N, tightening)
        others = plan_from_vectors(islanded(ctl, stage).x, c, N)
        ids = jnp.asarray(c.prosumers)
        return jax.vmap(lambda i: ocp.agent_qp(c, w, stage, i, others, True))(ids)

    out = []
    for m, name in enumerate(("cumulative", "per_step")):
        sel = np.flatnonzero(mode == m)
        if sel.size:
            f = jax.jit(jax.vmap(lambda *a, _n=name: stage_qps(*a, _n)))
            out.append((sel, f(t[sel], eb0[sel], eev0[sel], delta[sel])))
    q = np.zeros((stages, nP, ctl.agent_op.n))
    lo = np.zeros((stages, nP, ctl.agent_op.m))
    hi = np.zeros_like(lo)
    for sel, (qs, ls, hs) in out:
        q[sel], lo[sel], hi[sel] = np.asarray(qs), np.asarray(ls), np.asarray(hs)
    flat = lambda v: v.reshape(stages * nP, -1)[:count]  # noqa: E731
    return flat(q), flat(lo), flat(hi)


# ----------------------------------------------------------------------------- solvers
class CVXPYModel:
    """(c): min ½xᵀPx + qᵀx s.t. lo <= Ax <= hi with q, lo, hi as CVXPY Parameters."""

    BIG = 1e30  # OSQP's infinity: a row side that is infinite in one instance and not in another

    def __init__(self, P, A, lo_all, hi_all, solver="OSQP", **opts):
        import cvxpy as cp

        self.cp = cp
        n = P.shape[0]
        self.x = cp.Variable(n)
        self.q = cp.Parameter(n)
        self.eq = np.all(lo_all == hi_all, axis=0)
        self.has_lo = np.any(np.isfinite(lo_all), axis=0) & ~self.eq
        self.has_hi = np.any(np.isfinite(hi_all), axis=0) & ~self.eq
        As = sp.csr_matrix(A)
        self.b_eq = cp.Parameter(int(self.eq.sum()))
        self.b_lo = cp.Parameter(int(self.has_lo.sum()))
        self.b_hi = cp.Parameter(int(self.has_hi.sum()))
        d = np.diag(P)
        assert np.allclose(P, np.diag(d)), "the agent QP's P is diagonal"
        obj = 0.5 * cp.sum(cp.multiply(d, cp.square(self.x))) + self.q @ self.x
        cons = [As[self.eq] @ self.x == self.b_eq, As[self.has_lo] @ self.x >= self.b_lo,
                As[self.has_hi] @ self.x <= self.b_hi]  # fmt: skip
        self.problem = cp.Problem(cp.Minimize(obj), cons)
        self.solver, self.opts = solver, opts

    def solve(self, q, lo, hi):
        self.q.value = q
        self.b_eq.value = lo[self.eq]
        self.b_lo.value = np.maximum(lo[self.has_lo], -self.BIG)
        self.b_hi.value = np.minimum(hi[self.has_hi], self.BIG)
        self.problem.solve(solver=self.solver, **self.opts)
        st = self.problem.solver_stats
        return self.x.value, st.num_iters, self.problem.status == "optimal"


# ----------------------------------------------------------------------------- measures
def objective(P, q, x):
    return 0.5 * x @ (P @ x) + q @ x


def violation(A, lo, hi, x):
    Ax = A @ x
    return float(np.max(np.maximum(np.maximum(lo - Ax, Ax - hi), 0.0)))


def time_jax(fn, reps):
    jax.block_until_ready(fn())  # compile
    best = np.inf
    for _ in range(reps):
        t0 = time.perf_counter()
        out = jax.block_until_ready(fn())
        best = min(best, time.perf_counter() - t0)
    return best, out


def errors(P, A, q, lo, hi, xs, f_ref):
    k = min(len(f_ref), xs.shape[0])
    rel = [abs(objective(P, q[b], xs[b]) - f_ref[b]) / max(1.0, abs(f_ref[b])) for b in range(k)]
    vio = [violation(A, lo[b], hi[b], xs[b]) for b in range(k)]
    return float(np.max(rel)), float(np.max(vio))


def ecjax_rows(b, qb, lb, hb, ops, chunk, reps, P, A, Q, LO, HI, f_ref):
    res = {}
    for name, op in ops.items():
        s, sol = time_jax(lambda: solve_batch(op, qb, lb, hb, chunk=chunk), reps)
        res[name] = dict(per_qp_s=s / b, iters=float(np.asarray(sol.num_steps).mean()),
                         solved=float(np.mean(np.asarray(sol.status) == int(Status.solved))), timed_on=b,
                         err=errors(P, A, Q, LO, HI, np.asarray(sol.x), f_ref))  # fmt: skip
    return res


# ----------------------------------------------------------------------------- competitors
class JaxoptBatch:
    """jaxopt's BoxOSQP (OSQP's ADMM in JAX, its linear systems by CG with a Jacobi
    preconditioner) under vmap, split over all devices (`ecjax.parallel`), at tolerance `eps`
    and at most `iters` iterations."""

    def __init__(self, P, A, eps, iters):
        from jaxopt import BoxOSQP
        from ecjax.parallel import over_devices

        solver = BoxOSQP(tol=eps, maxiter=iters, termination_check_frequency=10, eq_qp_solve="cg+jacobi",
                         implicit_diff=False, jit=True)  # fmt: skip
        Pj, Aj = jnp.asarray(P), jnp.asarray(A)

        def one(q, lo, hi):
            sol, state = solver.run(None, params_obj=(Pj, q), params_eq=Aj, params_ineq=(lo, hi))
            return sol.primal[0], state.iter_num, state.status == BoxOSQP.SOLVED

        self.run = jax.jit(over_devices(lambda q, lo, hi: jax.vmap(one)(q, lo, hi), batched=(0, 1, 2)))

    def solve_all(self, Q, LO, HI):
        """(wall seconds, x, iterations, solved) of every instance, compilation excluded."""
        args = [jnp.asarray(v) for v in (Q, LO, HI)]
        jax.block_until_ready(self.run(*args))
        t0 = time.perf_counter()
        x, its, ok = jax.block_until_ready(self.run(*args))
        return time.perf_counter() - t0, np.asarray(x), np.asarray(its), np.asarray(ok)


class QpaxBatch:
    """qpax.solve_qp under vmap, on one device or split over all (`ecjax.parallel`): lo <= Ax <= hi
    as the general equalities A_eq x = b and G x <= h with G = [A_in; -A_in; I; -I] (the finite
    sides of the other general rows, then of the merged bounds; a bound with x_l = x_u is two
    opposite rows), all dense."""

    def __init__(self, P, A, eps, lo_all, hi_all, iters):
        import qpax
        from ecjax.parallel import over_devices

        cn = baselines.Canon(P, A, lo_all, hi_all)
        xl, xu = cn.bounds(lo_all[0], hi_all[0])
        up, dn = np.isfinite(xu), np.isfinite(xl)
        eye = np.eye(cn.n)
        G = jnp.asarray(np.vstack([cn.A_in[cn.has_hi], -cn.A_in[cn.has_lo], eye[up], -eye[dn]]))
        Aeq, Pj = jnp.asarray(cn.A_eq), jnp.asarray(cn.P)
        eqr, inr = jnp.asarray(cn.eq_rows), jnp.asarray(cn.ineq_rows)
        bc, br = jnp.asarray(cn.bound_cols), jnp.asarray(cn.bound_rows)

        def one(q, lo, hi):
            xl = jnp.full(cn.n, -jnp.inf).at[bc].max(lo[br])
            xu = jnp.full(cn.n, jnp.inf).at[bc].min(hi[br])
            h = jnp.concatenate([hi[inr][cn.has_hi], -lo[inr][cn.has_lo], xu[up], -xl[dn]])
            x, _, _, _, conv, it = qpax.solve_qp(Pj, q, Aeq, lo[eqr], G, h, solver_tol=eps, max_iter=iters)
            return x, it, conv

        self.one_device = jax.jit(jax.vmap(one))
        self.all_devices = jax.jit(over_devices(jax.vmap(one), (0, 1, 2)))

    def run(self, fn, Q, LO, HI):
        args = [jnp.asarray(v) for v in (Q, LO, HI)]
        s, (x, it, conv) = time_jax(lambda: fn(*args), 1)
        return s, np.asarray(x), np.asarray(it), np.asarray(conv) == 1


def row(s, x, it, ok, k, cores, P, A, Q, LO, HI, f_ref):
    return dict(per_qp_s=s / k, iters=float(np.mean(it)), solved=float(np.mean(ok)), timed_on=k, cores=cores,
                err=errors(P, A, Q, LO, HI, x, f_ref))  # fmt: skip


def best_of(fn, reps):
    """The run of `fn() -> (seconds, ...)` with the least seconds out of `reps`."""
    return min((fn() for _ in range(max(reps, 1))), key=lambda res: res[0])


def competitors(which, P, A, Q, LO, HI, f_ref, k, cores, a):
    """Per-QP rows of every competitor in `which` (names of BASELINES; a missing package skips
    its rows with a note). The per-QP time of each stands for every batch size: loops,
    processes and ProxQP's batches are timed `a["reps"]` times (best taken, like ecjax's
    batches); jaxopt and qpax once (their runs take seconds per QP)."""
    out = {}
    reps = a["reps"]
    fit = lambda n: (Q[:n], LO[:n], HI[:n])  # noqa: E731
    r = lambda res, n, c: row(*res, n, c, P, A, Q, LO, HI, f_ref)  # noqa: E731

    def have(mod):
        try:
            __import__(mod)
            return True
        except ImportError:
            print(f"({mod} not installed: its rows are skipped; `pip install -e '.[bench]'`)")
            return False

    def loop_and_pool(name, kind, **kw):
        solver = baselines.make_solver(kind, P, A, EPS, LO, HI, **kw)
        solver.solve(Q[0], LO[0], HI[0])  # setup outside the timing
        out[name] = r(best_of(lambda: baselines.time_loop(solver, *fit(k)), reps), k, 1)
        if cores > 1:
            pool = baselines.Pool(kind, P, A, EPS, LO, HI, cores, Q[0], LO[0], HI[0], **kw)
            out[f"{name}_{cores}cores"] = r(best_of(lambda: pool.solve_all(*fit(k)), reps), k, cores)
            pool.close()

    if "osqp" in which:
        loop = OSQPLoop(P, A, EPS)
        out["osqp"] = r(best_of(lambda: baselines.time_loop(loop, *fit(k)), reps), k, 1)
        if cores > 1:
            pool = baselines.Pool("osqp", P, A, EPS, LO, HI, cores, Q[0], LO[0], HI[0])
            out[f"osqp_{cores}cores"] = r(best_of(lambda: pool.solve_all(*fit(k)), reps), k, cores)
            pool.close()
    if "cvxpy" in which:
        cvx = CVXPYModel(P, A, LO, HI, solver="OSQP", eps_abs=EPS, eps_rel=EPS, max_iter=100000, polish=False, warm_start=True)
        k_c = min(k, 64)
        cvx.solve(Q[0], LO[0], HI[0])  # first solve compiles the parameterized problem
        out["cvxpy_osqp"] = r(baselines.time_loop(cvx, *fit(k_c)), k_c, 1)
    if "jaxopt" in which:
        n = a["jaxopt_n"]
        jo = JaxoptBatch(P, A, EPS, a["jaxopt_iters"])
        out["jaxopt"] = r(jo.solve_all(Q[:n], LO[:n], HI[:n]), n, jax.device_count())
    if "piqp" in which and have("piqp"):
        loop_and_pool("piqp", "piqp", backend="sparse_ldlt")
        loop_and_pool("piqp_ms", "piqp", backend="sparse_multistage")
        solver = baselines.make_solver("piqp", P, A, EPS, LO, HI, backend="sparse_ldlt", gap_rel=None)
        solver.solve(Q[0], LO[0], HI[0])
        out["piqp_gap1e-6"] = r(best_of(lambda: baselines.time_loop(solver, *fit(k)), reps), k, 1)
    if "daqp" in which and have("daqp"):
        loop_and_pool("daqp", "daqp")
    if "clarabel" in which and have("clarabel"):
        loop_and_pool("clarabel", "clarabel")
    if "proxqp" in which and have("proxsuite"):
        n = a["prox_n"]
        for t in sorted({1, cores}):
            pb = baselines.ProxQPBatch(P, A, EPS, LO, HI, threads=t)
            out["proxqp" if t == 1 else f"proxqp_{t}threads"] = r(best_of(lambda: pb.solve_all(*fit(n)), reps), n, t)
    if "qpax" in which and have("qpax"):
        n = a["qpax_n"]
        qx = QpaxBatch(P, A, EPS, LO, HI, a["qpax_iters"])
        out["qpax"] = r(qx.run(qx.one_device, *fit(n)), n, 1)
        if jax.device_count() > 1:
            out[f"qpax_{jax.device_count()}dev"] = r(qx.run(qx.all_devices, *fit(n)), n, jax.device_count())
    return out


def meets(r, obj_tol, viol_tol):
    return r["solved"] == 1.0 and r["err"][0] <= obj_tol and r["err"][1] <= viol_tol


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes (a few minutes on 2 cores)")
    ap.add_argument("--sizes", help="comma-separated batch sizes (default 1,16,256,1024,4096; quick 1,16,256)")
    ap.add_argument("--baselines", default=",".join(BASELINES), help=f"competitors to run (default all: {','.join(BASELINES)})")
    ap.add_argument("--loop-max", type=int, help="instances timed for the loops and process pools (default 256; quick 64)")
    ap.add_argument("--jaxopt-n", type=int, help="instances timed with jaxopt (default 8; quick 4)")
    ap.add_argument("--jaxopt-iters", type=int, help="jaxopt's iteration cap (default 4000; quick 1000)")
    ap.add_argument("--prox-n", type=int, help="instances timed with ProxQP (default 16; quick 8)")
    ap.add_argument("--qpax-n", type=int, help="instances timed with qpax (default 4; quick 2)")
    ap.add_argument("--qpax-iters", type=int, default=50, help="qpax's iteration cap (default 50)")
    ap.add_argument("--chunk", type=int, default=None, help="IPM piece size per device (default 8 on a CPU, one piece on a GPU)")
    ap.add_argument("--ref", type=int, help="instances checked against Clarabel (default 64; quick 32)")
    ap.add_argument("--reps", type=int, default=3, help="timed repeats of each jitted batch, loop and pool (best taken)")
    args = ap.parse_args(argv)
    q_ = args.quick
    sizes = [int(s) for s in args.sizes.split(",")] if args.sizes else ([1, 16, 256] if q_ else [1, 16, 256, 1024, 4096])
    which = set(args.baselines.split(",")) - {""}
    unknown = which - set(BASELINES)
    if unknown:
        ap.error(f"unknown baselines {sorted(unknown)}; choose from {','.join(BASELINES)}")
    loop_max = args.loop_max or (64 if q_ else 256)
    jaxopt_n = args.jaxopt_n or (4 if q_ else 8)
    jaxopt_iters = args.jaxopt_iters or (1000 if q_ else 4000)
    chunk = args.chunk or (8 if jax.default_backend() == "cpu" else None)
    n_ref = args.ref or (32 if q_ else 64)
    B = max(sizes)
    cores = os.cpu_count() or 1

    c = paper_case(0)
    prof = profiles_for(c.n)
    w = CostWeights()
    ctl = make_controller(c, w, N, IPM(eps_abs=EPS, eps_rel=EPS))
    P, A = np.asarray(ctl.agent_op.P_orig), np.asarray(ctl.agent_op.A_orig)
    t0 = time.perf_counter()
    Q, LO, HI = make_instances(c, prof, w, ctl, max(B, n_ref, loop_max))
    gen_s = time.perf_counter() - t0
    out = {"machine": machine(), "eps": EPS, "sizes": sizes}
    out["machine"]["packages"] = packages()
    out["qp"] = {"n": int(P.shape[0]), "m": int(A.shape[0]), "nnz_A": int(np.count_nonzero(A)), "instances": int(Q.shape[0])}
    print("machine:", json.dumps(out["machine"]), flush=True)
    print(f"paper case agent QP: n={P.shape[0]} variables, m={A.shape[0]} rows, nnz(A)={np.count_nonzero(A)}; "
          f"{Q.shape[0]} instances made in {gen_s:.1f}s; eps_abs=eps_rel={EPS}")  # fmt: skip

    # Clarabel reference (tight)
    ref = CVXPYModel(P, A, LO, HI, solver="CLARABEL", tol_gap_abs=1e-10, tol_gap_rel=1e-10, tol_feas=1e-10)
    f_ref = []
    for b in range(n_ref):
        x, _, ok = ref.solve(Q[b], LO[b], HI[b])
        assert ok, f"Clarabel did not solve instance {b}"
        f_ref.append(objective(P, Q[b], x))
    f_ref = np.asarray(f_ref)
    bmax = max(np.max(np.abs(v[np.isfinite(v)])) for v in (LO, HI))
    obj_tol, viol_tol = 10 * EPS, 10 * EPS * max(1.0, bmax)
    out["accuracy"] = {"rel_obj_err_max": obj_tol, "violation_max": viol_tol}

    # (b)-(e): timed once on up to loop_max (prox_n, qpax_n, ...) instances; the same per QP at every B
    k = min(loop_max, Q.shape[0])
    a = dict(jaxopt_n=jaxopt_n, jaxopt_iters=jaxopt_iters, prox_n=args.prox_n or (8 if q_ else 16),
             qpax_n=args.qpax_n or (2 if q_ else 4), qpax_iters=args.qpax_iters, reps=args.reps)  # fmt: skip
    loops = competitors(which, P, A, Q, LO, HI, f_ref, k, cores, a)
    for r in loops.values():
        r["meets"] = meets(r, obj_tol, viol_tol)

    ops = {"ecjax-ipm": ctl.agent_op}
    out["chunk"] = chunk
    rows = []
    hdr = f"{'B':>5} {'solver':<12} {'per QP [ms]':>11} {'iters':>8} {'solved':>7} {'rel obj err':>11} {'max viol':>9} {'timed on':>9}"
    print(f"ecjax IPM in pieces of {chunk} QPs" if chunk else "ecjax IPM in one piece")
    print(hdr)
    print("-" * len(hdr))
    for b in sizes:
        qb, lb, hb = (jnp.asarray(v[:b]) for v in (Q, LO, HI))
        res = ecjax_rows(b, qb, lb, hb, ops, chunk, args.reps, P, A, Q, LO, HI, f_ref)
        for name, r in res.items():
            e, v = r["err"]
            print(f"{b:5d} {name:<12} {1e3 * r['per_qp_s']:11.4f} {r['iters']:8.1f} {r['solved']:7.2f} {e:11.2e} {v:9.1e} {r['timed_on']:>9}", flush=True)
        rows.append({"B": b, **res, **loops})
    out["rows"] = rows
    out["competitors"] = loops

    print(f"\ncompetitors (time per QP stands for every B; accuracy met: solved all, rel obj err <= {obj_tol:.0e}, "
          f"max viol <= {viol_tol:.1e})")  # fmt: skip
    hdr = f"{'solver':<18} {'cores':>5} {'per QP [ms]':>11} {'iters':>8} {'solved':>7} {'rel obj err':>11} {'max viol':>9} {'timed on':>9} {'meets':>6}"
    print(hdr)
    print("-" * len(hdr))
    for name, r in loops.items():
        e, v = r["err"]
        print(f"{name:<18} {r['cores']:5d} {1e3 * r['per_qp_s']:11.4f} {r['iters']:8.1f} {r['solved']:7.2f} {e:11.2e} {v:9.1e} "
              f"{r['timed_on']:>9} {'yes' if r['meets'] else 'no':>6}")  # fmt: skip

    good = {n: r for n, r in loops.items() if r["meets"]}
    best = min(good, key=lambda n: good[n]["per_qp_s"]) if good else None
    print(f"\nfastest competitor meeting the accuracy: {best}" + (f" ({1e3 * good[best]['per_qp_s']:.4f} ms/QP)" if best else ""))
    pool = f"osqp_{cores}cores"
    hdr = f"{'B':>5} {'ecjax [ms/QP]':>13} {'vs best':>8} {'vs osqp':>8} {'vs ' + pool:>14} {'vs jaxopt':>10}"
    print(hdr)
    print("-" * len(hdr))
    sp_ = lambda name, e: loops[name]["per_qp_s"] / e if name in loops else float("nan")  # noqa: E731
    for rw in rows:
        e = rw["ecjax-ipm"]["per_qp_s"]
        rw["speedups"] = {"best": sp_(best, e) if best else float("nan"), "osqp": sp_("osqp", e), pool: sp_(pool, e), "jaxopt": sp_("jaxopt", e)}
        s_ = rw["speedups"]
        print(f"{rw['B']:5d} {1e3 * e:13.4f} {s_['best']:8.3g} {s_['osqp']:8.3g} {s_[pool]:14.3g} {s_['jaxopt']:10.3g}")
    last = rows[-1]
    e = last["ecjax-ipm"]
    max_err = max(r["ecjax-ipm"]["err"][0] for r in rows)
    s_ = last["speedups"]
    out["headline"] = dict(B=last["B"], best=best, speedup_vs_best=s_["best"], speedup_vs_osqp=s_["osqp"],
                           speedup_vs_osqp_all_cores=s_[pool], speedup_vs_jaxopt=s_["jaxopt"], max_rel_obj_err=max_err)  # fmt: skip
    jo = " (lower bound)" if "jaxopt" in loops and loops["jaxopt"]["solved"] < 1 else ""
    print(f"B={last['B']}: ecjax {1e3 * e['per_qp_s']:.4f} ms/QP; {best} x{s_['best']:.2f}, OSQP loop x{s_['osqp']:.2f}, "
          f"OSQP on {cores} cores x{s_[pool]:.2f}, jaxopt x{s_['jaxopt']:.0f}{jo} the time of ecjax")  # fmt: skip
    out["loadavg_end"] = [round(v, 2) for v in os.getloadavg()]
    print(f"load average at the end (1, 5, 15 min): {out['loadavg_end']}")
    res_dir = Path(__file__).parent / "results"
    res_dir.mkdir(exist_ok=True)
    (res_dir / f"qp_batch_{'quick' if q_ else 'full'}.json").write_text(json.dumps(out, indent=2, default=str))
    print(f"qp_batch: speedup_vs_best={s_['best']:.3g} best={best} speedup_vs_osqp={s_['osqp']:.3g} "
          f"speedup_vs_jaxopt={s_['jaxopt']:.3g} max_rel_obj_err={max_err:.2e}")  # fmt: skip
    return 0


def packages() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("osqp", "cvxpy", "clarabel", "jaxopt", "piqp", "daqp", "proxsuite", "qpax"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            pass
    return out


if __name__ == "__main__":
    sys.exit(main())
