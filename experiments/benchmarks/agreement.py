"""FC-MPC agreement against the community size: how fast the iterates approach the centralized
optimum under the paper's uniform weight and under the optimal weights (`fcmpc.weights`,
docs/fcmpc.md).

    python experiments/benchmarks/agreement.py [--sizes 15 30 60 120] [--iters 300] [--stages 4] [--quick]

Per community size n: the community and data of the community-size experiment (conf
`experiment=community_size`: a generated community with the paper's prosumer share, real
Seville data, N = 24), `--stages` MPC steps at start hours spread over the day, at the states
the paper's closed loop reaches there (ccdmpc, uniform weight, one sample), δ = 0.05. At each stage
both rules run `--iters` FC-MPC iterations (ϰ tiny, so neither stops early) from the same
islanded iterate, and Clarabel solves the centralized problem (`ecjax.ocp.centralized_qp`,
eps 1e-9) for Φ_c. The gap after p iterations is

    g_p = (Φ_p − Φ_c) / (Φ_0 − Φ_c),

the share of the islanded iterate's excess cost still left (0: the centralized optimum; 1: no
cooperation yet). Printed per n and rule: mean and worst g_p over the stages at p = 1, 5, 10,
30, 100, 300 (those within --iters), and the iterations each rule needs for the worst stage to
reach g = 1e-2, 1e-3, 1e-4 ("-" where it does not within --iters). With --closed-loop (n = 15
only): community-days/s of the closed loop (`run_batch`, ccdmpc, T = 24) for each rule at the
p_max at which its worst stage reached g = 1e-3 (p_max = --iters where it did not), so both
end at an equal gap.

Last line: `agreement: iters_ratio_n15=<uniform/optimal at 1e-3> iters_ratio_n120=<...>
days_per_s_ratio_n15=<optimal/uniform>` (nan where a figure was not measured or a rule did
not reach the gap). Results also go to experiments/benchmarks/results/agreement.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)

import clarabel  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import scipy.sparse as sp  # noqa: E402

from ecjax import evaluate, ocp  # noqa: E402
from ecjax.config import cell_inputs, compose, to_dict  # noqa: E402
from ecjax.experiment import run_batch  # noqa: E402
from ecjax.fcmpc import FCMPCSettings, fcmpc, make_controller  # noqa: E402
from ecjax.metrics import agreement_gap  # noqa: E402
from ecjax.plan import make_stage, plan_from_vectors  # noqa: E402
from ecjax.simulate import Options  # noqa: E402

GAPS = (1e-2, 1e-3, 1e-4)
AT = (1, 5, 10, 30, 100, 300)
RULES = ("uniform", "optimal")
DELTA = 0.05
KAPPA = 1e-12  # never reached: every run does all its iterations


def inputs(n: int, seed: int):
    cfg = to_dict(compose(["experiment=community_size", f"community.n={n}", f"community.seed={seed}"]))
    return cell_inputs(cfg)


def stages(inp, k: int, seed: int):
    """k stages at start hours spread over the day, at the states that the paper's closed loop
    (ccdmpc, uniform weight, one sample of seed `seed`) reaches there: states a community is
    really in (an arbitrary state can leave an EV no feasible charge by its deadline)."""
    c, N = inp.community, inp.N
    kw = inp.run_kwargs()
    kw.update(seed=seed, options=Options(scenario="ccdmpc", T=24))
    traj = run_batch(c, inp.profiles, [DELTA], 1, keep=1, **kw).trajectories
    eb = traj["eb"].isel(risk=0, sample=0).transpose("time", "agent").values
    eev = traj["eev"].isel(risk=0, sample=0).transpose("time", "agent").values
    hours = np.linspace(0, 23, k).round().astype(int)
    out = []
    for t in hours:  # the state at the start of step t: after step t − 1
        eb0, eev0 = (np.asarray(c.eb0, float), np.zeros(c.n)) if t == 0 else (eb[t - 1], eev[t - 1])
        out.append(make_stage(c, inp.profiles, int(t), eb0, eev0, DELTA, N))
    return hours, out


def centralized_phi(inp, stage) -> float:
    """Φ at the centralized optimum, by Clarabel on ecjax's centralized QP (rows lo <= Ax <= hi)."""
    c, N, w = inp.community, inp.N, inp.weights
    st = ocp.centralized_structure(c, N, w)
    q, lo, hi = (np.asarray(v, np.float64) for v in ocp.centralized_qp(c, w, stage))
    P, A = sp.csc_matrix(st.P), sp.csc_matrix(st.A)
    eq = np.isfinite(lo) & np.isfinite(hi) & (lo == hi)
    up = np.isfinite(hi) & ~eq
    dn = np.isfinite(lo) & ~eq
    Aall = sp.vstack([A[eq], A[up], -A[dn]]).tocsc()
    b = np.concatenate([hi[eq], hi[up], -lo[dn]])
    cones = [clarabel.ZeroConeT(int(eq.sum())), clarabel.NonnegativeConeT(int(up.sum() + dn.sum()))]
    s = clarabel.DefaultSettings()
    s.verbose = False
    s.tol_gap_abs = s.tol_gap_rel = s.tol_feas = 1e-9
    sol = clarabel.DefaultSolver(sp.triu(P).tocsc(), q, Aall, b, cones, s).solve()
    if str(sol.status) not in ("Solved", "AlmostSolved"):
        raise RuntimeError(f"centralized reference not solved: {sol.status}")
    xs = jnp.asarray(np.asarray(sol.x)).reshape(len(c.prosumers), -1)
    return float(evaluate.cost(c, w, stage, plan_from_vectors(xs, c, N)))


def curves(inp, stage_list, iters: int) -> dict:
    """Φ_0..Φ_iters per rule and stage, and the wall time of the compiled runs."""
    c, N = inp.community, inp.N
    ctl = make_controller(c, inp.weights, N, inp.solver)
    out = {}
    for rule in RULES:
        fc = FCMPCSettings(kappa=KAPPA, p_max=iters, weights=rule)
        run = jax.jit(lambda st: fcmpc(ctl, fc, st).cost)
        jax.block_until_ready(run(stage_list[0]))  # compile
        t0 = time.perf_counter()
        costs = np.stack([np.asarray(run(st)) for st in stage_list])
        out[rule] = dict(cost=costs, seconds=time.perf_counter() - t0)
    return out


def reach(g: np.ndarray, gap: float):
    """First p at which every stage's gap is <= gap (None: not within the run)."""
    ok = np.all(g <= gap, axis=0)
    return int(np.argmax(ok)) if ok.any() else None


def days_per_s(inp, rule: str, p_max: int, S: int) -> float:
    fc = FCMPCSettings(kappa=inp.fc.kappa, p_max=p_max, weights=rule)
    kw = inp.run_kwargs()
    kw.update(fc=fc)
    run_batch(inp.community, inp.profiles, [DELTA], 1, **kw)  # compile
    res = run_batch(inp.community, inp.profiles, [DELTA], S, **kw)
    return S / res.seconds


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[15, 30, 60, 120])
    ap.add_argument("--iters", type=int, default=300)
    ap.add_argument("--stages", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--closed-loop", action="store_true", help="community-days/s at equal gap (n = 15)")
    ap.add_argument("--samples", type=int, default=4, help="closed-loop samples per rule")
    ap.add_argument("--quick", action="store_true", help="--sizes 15 30 --iters 100 --stages 3")
    args = ap.parse_args(argv)
    if args.quick:
        args.sizes, args.iters, args.stages = [15, 30], 100, 3
    print(f"machine: {platform.machine()} cores={os.cpu_count()} python={platform.python_version()} "
          f"jax={jax.__version__} device={jax.devices()[0].platform}; iterations {args.iters}, "
          f"{args.stages} stages per n, delta {DELTA}")  # fmt: skip
    results: dict = {"sizes": {}}
    for n in args.sizes:
        inp = inputs(n, args.seed)
        hours, sts = stages(inp, args.stages, args.seed)
        t0 = time.perf_counter()
        phi_c = np.array([centralized_phi(inp, st) for st in sts])
        t_c = time.perf_counter() - t0
        cur = curves(inp, sts, args.iters)
        row = {"prosumers": len(inp.community.prosumers), "hours": hours.tolist(), "phi_c": phi_c.tolist(),
               "centralized_s": t_c}  # fmt: skip
        print(f"\nn = {n} ({row['prosumers']} prosumers), stages at hours {hours.tolist()}, centralized by Clarabel {t_c:.1f} s")
        for rule in RULES:
            cost = cur[rule]["cost"]
            g = np.nan_to_num(agreement_gap(cost, phi_c), nan=0.0)  # a stage with nothing to agree on: reached
            at = {p: (float(g[:, p].mean()), float(g[:, p].max())) for p in AT if p <= args.iters}
            need = {gap: reach(g, gap) for gap in GAPS}
            row[rule] = dict(gap_at={str(p): v for p, v in at.items()}, iters_to={str(k): v for k, v in need.items()},
                             seconds=cur[rule]["seconds"], gap=g.tolist())  # fmt: skip
            shown = "  ".join(f"p={p}: {m:.2e}/{w:.2e}" for p, (m, w) in at.items())
            need_s = "  ".join(f"{gap:g}: {'-' if v is None else v}" for gap, v in need.items())
            per = cur[rule]["seconds"] / (len(sts) * args.iters)
            print(f"  {rule:8s} gap mean/worst {shown}")
            print(f"  {rule:8s} iterations to gap {need_s}   ({per * 1e3:.1f} ms per iteration)")
        results["sizes"][str(n)] = row

    def ratio(n):
        r = results["sizes"].get(str(n))
        if r is None:
            return float("nan")
        u, o = r["uniform"]["iters_to"]["0.001"], r["optimal"]["iters_to"]["0.001"]
        return float("nan") if u is None or o is None or o == 0 else u / o

    dps = float("nan")
    if args.closed_loop and "15" in results["sizes"]:
        inp = inputs(15, args.seed)
        r = results["sizes"]["15"]
        fig = {}
        for rule in RULES:
            p = r[rule]["iters_to"]["0.001"] or args.iters
            fig[rule] = days_per_s(inp, rule, max(p, 1), args.samples)
            print(f"closed loop n = 15, {rule}: p_max {p}, {fig[rule]:.3g} community-days/s")
        dps = fig["optimal"] / fig["uniform"]
        results["days_per_s"] = fig
    out = Path(__file__).parent / "results" / "agreement.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=1))
    print(f"agreement: iters_ratio_n15={ratio(15):.3g} iters_ratio_n120={ratio(120):.3g} days_per_s_ratio_n15={dps:.3g}")
    return results


if __name__ == "__main__":
    main()
