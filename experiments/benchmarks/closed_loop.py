"""Closed-loop throughput: ecjax's batched FC-MPC against the same loop with OSQP and with
the fastest structured QP solver of `qp_batch.py`.

    python experiments/benchmarks/closed_loop.py [--quick] [--scaling] [--baseline auto|piqp|...]

Both sides run the very same code (`ecjax.experiment.run_batch`: FC-MPC iteration, plant,
metrics) on the paper case, `ccdmpc`, T = 24, default FC-MPC settings, real September data:

* ecjax: every agent QP by ecjax's interior-point solver, vmapped over prosumers, samples and
  risk levels, compiled once; the samples go through in calls of `--chunk` samples, each
  call's (risk level, sample) pairs split over the devices (by default `sim.chunk: auto`,
  `ecjax.experiment.chunk_for`: on a CPU as many samples as give one pair per core, which
  measured fastest per community-day, as small batches stay in cache and a vmapped batch waits
  for its slowest QP less often; on a GPU as many as fill half its memory);
* OSQP: every agent QP by OSQP (pinned version) through a host callback, one persistent OSQP
  object per prosumer that keeps its factorization and is warm-started from its previous
  solve (only q, l, u change) — the fastest fair CPU baseline. Same FC-MPC iterations and the
  same QP tolerance, so both do the same work;
* best: the same loop with every agent QP by the fastest competitor of `qp_batch.py` that met
  its accuracy (`--baseline auto`: the `best` of results/qp_batch_<quick|full>.json, PIQP if
  there is none; or named: piqp, piqp_ms, daqp, clarabel, osqp), one persistent solver per
  prosumer (warm-started from that prosumer's previous solve where the method can: DAQP's
  working set, OSQP's iterates; PIQP and Clarabel are interior-point methods and keep only
  their set-up), on all cores: one process per core, each running its share of the samples
  (`sample_offset`), community-days over the slowest process's run time (compilation
  excluded).

Prints the machine, the sizes and a table; the last line is
`closed_loop: days_per_s=<x> speedup_vs_best=<x> best=<name> speedup_vs_osqp=<x>`
(community-days per second: one sample, one risk level, T steps; ecjax's over the baselines').
`--scaling` adds how time grows with S, R and the community size n.
Results also go to experiments/benchmarks/results/closed_loop_<quick|full>.json.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import sys
import time
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)

import equinox as eqx  # noqa: E402
import numpy as np  # noqa: E402
import scipy.sparse as sp  # noqa: E402

from ecjax import data  # noqa: E402
from ecjax.community import generate_community, paper_case  # noqa: E402
from ecjax.disturbance import make_profiles  # noqa: E402
from ecjax.experiment import run_batch  # noqa: E402
from ecjax.fcmpc import FCMPCSettings  # noqa: E402
from ecjax.qp import IPM  # noqa: E402
from host_qp import host_operator  # noqa: E402
from ecjax.simulate import Options  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))

EPS = 1e-6  # QP tolerance of both solvers (absolute and relative)


def machine() -> dict:
    info = {"python": platform.python_version(), "platform": platform.platform(), "jax": jax.__version__}
    info["cpu_count"] = os.cpu_count()
    info["loadavg_1_5_15min"] = [round(v, 2) for v in os.getloadavg()]  # other jobs on a shared machine
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info["devices"] = [d.device_kind for d in jax.devices()]
    info["xla_flags"] = os.environ.get("XLA_FLAGS", "")
    return info


def profiles_for(n: int, seed: int = 0):
    mu, sd = data.irradiance_stats(month=9)
    lmu, lsd, _ = data.agent_loads(n, month=9, seed=seed)
    return make_profiles(mu, sd, lmu, lsd, data.price_profile(9))


class OSQPBackend:
    """One OSQP object per batch slot; set up once, then only q, l, u change (warm start)."""

    def __init__(self, P, A):
        import osqp

        self._osqp = osqp
        self.P = sp.csc_matrix(np.triu(P))
        self.A = sp.csc_matrix(A)
        self.solvers: dict[int, object] = {}
        self.iterations = 0
        self.solves = 0

    def solve(self, slot, q, lo, hi):
        lo = np.where(np.isfinite(lo), lo, -np.inf)
        hi = np.where(np.isfinite(hi), hi, np.inf)
        s = self.solvers.get(slot)
        if s is None:
            s = self._osqp.OSQP()
            s.setup(
                self.P, q, self.A, lo, hi, eps_abs=EPS, eps_rel=EPS, max_iter=20000, polishing=False,
                verbose=False, warm_starting=True,
            )  # fmt: skip
            self.solvers[slot] = s
        else:
            s.update(q=q, l=lo, u=hi)
        r = s.solve()
        self.iterations += r.info.iter
        self.solves += 1
        ok = r.info.status_val in (1, 2)  # solved, solved inaccurate
        x = r.x if ok else np.zeros(self.P.shape[0])
        y = r.y if ok else np.zeros(self.A.shape[0])
        return x, y, 0 if r.info.status_val == 1 else 1, r.info.iter


class HostBackend:
    """One solver of `kind` (`baselines.make_solver`) per batch slot, set up at the slot's first
    QP (which also serves as the template of the bounds: which rows are equalities, which sides
    finite), then only updated. The multipliers are not returned (zeros): a host operator
    ignores its warm start, and nothing else reads them."""

    def __init__(self, kind, P, A, **kw):
        self.kind, self.kw = kind, kw
        self.P, self.A = np.asarray(P), np.asarray(A)
        self.solvers: dict[int, object] = {}
        self.iterations = 0
        self.solves = 0

    def solve(self, slot, q, lo, hi):
        import baselines

        lo = np.where(np.isfinite(lo), lo, -np.inf)
        hi = np.where(np.isfinite(hi), hi, np.inf)
        s = self.solvers.get(slot)
        if s is None:
            s = self.solvers[slot] = baselines.make_solver(self.kind, self.P, self.A, EPS, lo[None], hi[None], **self.kw)
        x, it, ok = s.solve(q, lo, hi)
        self.iterations += int(it)
        self.solves += 1
        good = x is not None and np.all(np.isfinite(x))
        x = np.asarray(x) if good else np.zeros(self.P.shape[0])
        return x, np.zeros(self.A.shape[0]), 0 if ok and good else 1, int(it)


# name in qp_batch.py -> (kind, options) of `baselines.make_solver`
HOST_SOLVERS = {
    "osqp": ("osqp", {}),
    "piqp": ("piqp", {"backend": "sparse_ldlt"}),
    "piqp_ms": ("piqp", {"backend": "sparse_multistage"}),
    "daqp": ("daqp", {}),
    "clarabel": ("clarabel", {}),
}


def progress_printer(every_s: float = 10.0):
    """run_batch's `progress`: a line at most every `every_s` seconds (and the first and last),
    flushed, so a run stopped by a time limit still tells how far it got and how fast."""
    t0 = time.perf_counter()
    last = [None]

    def report(done, total):
        now = time.perf_counter()
        if last[0] is None or now - last[0] >= every_s or done == total:
            print(f"  progress: {done}/{total} samples after {now - t0:.1f}s (compilation included)", flush=True)
            last[0] = now

    return report


def ecjax_run(c, prof, deltas, S, chunk, fc, seed=0, progress=None):
    res = run_batch(
        c, prof, deltas, S, seed=seed, options=Options(scenario="ccdmpc"), fc=fc,
        solver=IPM(eps_abs=EPS, eps_rel=EPS), chunk=chunk, progress=progress,
    )  # fmt: skip
    return res


def host_run(c, prof, delta, S, fc, make_backend, seed=0, sample_offset=0):
    """The same closed loop with a host solver behind every agent QP (one sample at a time)."""
    import ecjax.experiment as ex
    from ecjax import fcmpc as fcm

    made = {}
    orig = fcm.make_controller

    def make_with_host(*args, **kw):
        ctl = orig(*args, **kw)
        A = np.asarray(ctl.agent_op.A_orig)
        P = np.asarray(ctl.agent_op.P_orig)
        backend = make_backend(P, A)
        made["backend"] = backend
        return eqx.tree_at(lambda t: t.agent_op, ctl, host_operator(P, A, backend))

    ex.make_controller = make_with_host
    try:
        res = run_batch(
            c, prof, [delta], S, seed=seed, options=Options(scenario="ccdmpc"), fc=fc,
            solver=IPM(eps_abs=EPS, eps_rel=EPS), chunk=1, sample_offset=sample_offset,
            agent_batch=len(c.prosumers),  # one batch: its slots are the prosumers' solvers
        )  # fmt: skip
    finally:
        ex.make_controller = orig
    return res, made["backend"]


def osqp_run(c, prof, delta, S, fc, seed=0):
    """The same closed loop with OSQP behind every agent QP (one sample at a time)."""
    return host_run(c, prof, delta, S, fc, OSQPBackend, seed=seed)


def _host_worker(args):
    """One process's share of the baseline's closed loop (paper case, samples offset..offset+S-1)."""
    name, delta, S, offset = args
    kind, kw = HOST_SOLVERS[name]
    c = paper_case(0)
    res, backend = host_run(c, profiles_for(c.n), delta, S, FCMPCSettings(),
                            lambda P, A: HostBackend(kind, P, A, **kw), sample_offset=offset)  # fmt: skip
    return {"S": S, "offset": offset, "run_s": res.seconds, "compile_s": res.compile_seconds, "qps": backend.solves,
            "iters_per_qp": backend.iterations / max(backend.solves, 1), "E1": [float(v) for v in res.summary["E1"].values[0]],
            "fcmpc_iters": float(res.summary["iters"].values.mean())}  # fmt: skip


def host_all_cores(name, delta, S_per_core, cores):
    """The baseline's closed loop in one process per core, S_per_core samples each (samples
    0..cores·S_per_core-1 in contiguous shares), run at the same time; community-days per
    second = all the days over the slowest process's run time (compilation excluded)."""
    import multiprocessing as mp

    jobs = [(name, delta, S_per_core, k * S_per_core) for k in range(cores)]
    platforms = os.environ.get("JAX_PLATFORMS")
    os.environ["JAX_PLATFORMS"] = "cpu"  # the workers' JAX parts stay on the host (no GPU per process)
    try:
        with mp.get_context("spawn").Pool(cores) as pool:
            parts = pool.map(_host_worker, jobs)
    finally:
        if platforms is None:
            os.environ.pop("JAX_PLATFORMS", None)
        else:
            os.environ["JAX_PLATFORMS"] = platforms
    days = sum(p["S"] for p in parts)
    wall = max(p["run_s"] for p in parts)
    return {"name": name, "processes": cores, "S": days, "R": 1, "run_s": wall, "days_per_s": days / wall,
            "qps": sum(p["qps"] for p in parts), "iters_per_qp": float(np.mean([p["iters_per_qp"] for p in parts])),
            "fcmpc_iters": float(np.mean([p["fcmpc_iters"] for p in parts])),
            "E1": [e for p in parts for e in p["E1"]], "parts": parts}  # fmt: skip


def best_of_qp_batch(quick: bool) -> str:
    """The fastest accurate competitor of qp_batch.py's last run (its one-core name), else PIQP."""
    path = Path(__file__).parent / "results" / f"qp_batch_{'quick' if quick else 'full'}.json"
    try:
        best = json.loads(path.read_text())["headline"]["best"] or ""
    except (OSError, KeyError, ValueError):
        best = ""
    best = best.split("_")[0] if best.split("_")[-1].endswith(("cores", "threads", "dev")) else best
    return best if best in HOST_SOLVERS else "piqp"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes (under three minutes on 2 cores)")
    ap.add_argument("--S", type=int, help="samples of the ecjax run (default 16; quick 4)")
    ap.add_argument("--R", type=int, choices=range(1, 9), metavar="1..8", help="risk levels (default 2; quick 2)")
    ap.add_argument("--chunk", type=int, help="samples per compiled call (default: as `sim.chunk: auto`, one "
                    "(risk, sample) pair per device on a CPU, half the memory of a GPU)")
    ap.add_argument("--scaling", action="store_true", help="also time S, R and n scaling")
    ap.add_argument("--baseline", default="auto", help="host solver of the best-baseline loop: auto (the best of "
                    f"qp_batch.py's last run) or one of {','.join(HOST_SOLVERS)}; 'none' skips it")
    ap.add_argument("--sizes", default="15,30,60,120", help="community sizes n of --scaling")
    args = ap.parse_args(argv)
    name = best_of_qp_batch(args.quick) if args.baseline == "auto" else args.baseline
    if name != "none" and name not in HOST_SOLVERS:
        ap.error(f"--baseline {name}: choose auto, none or one of {','.join(HOST_SOLVERS)}")
    if name != "none" and importlib.util.find_spec(HOST_SOLVERS[name][0]) is None:
        print(f"({HOST_SOLVERS[name][0]} not installed: no best-baseline loop; `pip install -e '.[bench]'`)")
        name = "none"
    fc = FCMPCSettings()
    c = paper_case(0)
    prof = profiles_for(c.n)
    S, R = (4, 2) if args.quick else (16, 2)
    S, R = args.S or S, args.R or R
    chunk = args.chunk  # None: run_batch's `sim.chunk: auto`
    deltas = [0.01, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4][:R] if R > 4 else [0.05, 0.1, 0.2, 0.3][:R]
    S_osqp = 1 if args.quick else 2
    out = {"machine": machine(), "sizes": {"n": c.n, "prosumers": len(c.prosumers), "N": 24, "T": 24}}
    print("machine:", json.dumps(out["machine"]))
    print(f"paper case n={c.n} ({len(c.prosumers)} prosumers), ccdmpc, N=T=24, kappa={fc.kappa}, "
          f"p_max={fc.p_max}, QP eps={EPS}", flush=True)  # fmt: skip

    t0 = time.perf_counter()
    res = ecjax_run(c, prof, deltas, S, chunk, fc, progress=progress_printer())
    total = time.perf_counter() - t0
    days = S * R
    e_dps = days / res.seconds
    it = res.summary["iters"].values
    st = int(res.summary["qp_status"].max())
    print(f"ecjax : S={S} R={R} ({days} days) compile {res.compile_seconds:.1f}s run {res.seconds:.1f}s "
          f"-> {e_dps:.3f} days/s; FC-MPC iterations/step mean {it.mean():.1f}; worst QP status {st}")  # fmt: skip

    t0 = time.perf_counter()
    ro, backend = osqp_run(c, prof, deltas[0], S_osqp, fc)
    o_sec = time.perf_counter() - t0 - ro.compile_seconds  # wall time of the solves
    o_dps = S_osqp / o_sec
    ito = ro.summary["iters"].values
    print(f"OSQP  : S={S_osqp} R=1 wall {o_sec:.1f}s -> {o_dps:.4f} days/s; FC-MPC iterations/step mean "
          f"{ito.mean():.1f}; {backend.solves} QPs, {backend.iterations / max(backend.solves, 1):.0f} OSQP iterations/QP")  # fmt: skip
    # the same samples at the same δ must give the same closed loop (up to the QP tolerance)
    e1_e = res.summary["E1"].sel(risk=deltas[0]).values[:S_osqp]
    e1_o = ro.summary["E1"].values[0]
    diff = float(np.max(np.abs(e1_e - e1_o) / np.maximum(np.abs(e1_o), 1.0)))
    print(f"agreement: max relative E1 difference ecjax vs OSQP on the shared samples = {diff:.2e}")
    out["ecjax"] = {"S": S, "R": R, "compile_s": res.compile_seconds, "run_s": res.seconds, "days_per_s": e_dps, "total_s": total}
    out["osqp"] = {"S": S_osqp, "R": 1, "wall_s": o_sec, "days_per_s": o_dps, "qps": backend.solves,
                   "osqp_iters_per_qp": backend.iterations / max(backend.solves, 1)}  # fmt: skip
    out["e1_rel_diff"] = diff

    b_dps = float("nan")
    if name != "none":
        cores = os.cpu_count() or 1
        rb = host_all_cores(name, deltas[0], S_osqp, cores)
        b_dps = rb["days_per_s"]
        k = min(S, len(rb["E1"]))
        e1_b = np.asarray(rb["E1"][:k])
        diff_b = float(np.max(np.abs(res.summary["E1"].sel(risk=deltas[0]).values[:k] - e1_b) / np.maximum(np.abs(e1_b), 1.0)))
        print(f"{name:6s}: {cores} processes x S={S_osqp} R=1, slowest run {rb['run_s']:.1f}s -> {b_dps:.4f} days/s; FC-MPC "
              f"iterations/step mean {rb['fcmpc_iters']:.1f}; {rb['qps']} QPs, {rb['iters_per_qp']:.1f} iterations/QP; "
              f"max relative E1 difference to ecjax {diff_b:.2e}")  # fmt: skip
        rb["e1_rel_diff"] = diff_b
        out["best"] = rb

    if args.scaling:
        rows = []
        grid = [(15, 4, 1), (15, 16, 1), (15, 4, 4)] + [(n, 2, 1) for n in map(int, args.sizes.split(",")) if n != 15]
        for n, S_, R_ in grid:
            cc = paper_case(0) if n == 15 else generate_community(n, 7 / 15, seed=0)
            r = ecjax_run(cc, profiles_for(n), [0.05, 0.1, 0.2, 0.3][:R_], S_, S_, fc)
            rows.append({"n": n, "S": S_, "R": R_, "compile_s": r.compile_seconds, "run_s": r.seconds,
                         "days_per_s": S_ * R_ / r.seconds})  # fmt: skip
            print(f"scaling n={n:4d} S={S_:4d} R={R_}: compile {r.compile_seconds:6.1f}s run {r.seconds:7.1f}s "
                  f"{S_ * R_ / r.seconds:8.3f} days/s")  # fmt: skip
        out["scaling"] = rows

    out["loadavg_end"] = [round(v, 2) for v in os.getloadavg()]
    print(f"load average at the end (1, 5, 15 min): {out['loadavg_end']}")
    res_dir = Path(__file__).parent / "results"
    res_dir.mkdir(exist_ok=True)
    (res_dir / f"closed_loop_{'quick' if args.quick else 'full'}.json").write_text(json.dumps(out, indent=2))
    print(f"closed_loop: days_per_s={e_dps:.4g} speedup_vs_best={e_dps / b_dps:.3g} best={name} speedup_vs_osqp={e_dps / o_dps:.3g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
