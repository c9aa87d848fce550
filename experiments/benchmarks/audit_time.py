"""Wall time of an on-chain audit (`ecjax audit`, solve mode by default), split into chain and solve time.

Default: the paper case (n = 15, 7 prosumers, N = 24, Seville in September, ccdmpc, p_max = 30),
one closed-loop day (T = 24) run by the batch engine (`run_batch`, one kept sample with its
FC-MPC iterates), then the audit of that sample on the embedded eth-tester chain, and on anvil
when contracts/node_modules/.bin/anvil (or `anvil` on PATH) is there. `--steps K` audits the
first K MPC steps only (a run of T = K), for a quick figure; `--store DIR --cell ID` audits a
stored sample instead of running one.

Printed per chain: transactions, the replay's wall time split into chain (transactions, event
reads, history rebuild) and solve (the prosumers' batched QP solves, compilation included:
`--warm` audits twice and reports the second), and the comparison with the stored run. Last
line: `audit_time: chain=<kind> total_s=<x> chain_s=<x> solve_s=<x> tx=<n>` per chain.

    python experiments/benchmarks/audit_time.py [--steps 24] [--chain tester|anvil|both] [--mode solve|stored] [--warm]
    python experiments/benchmarks/audit_time.py --store outputs/.../results.zarr --cell scenario=ccdmpc
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import time

import jax

jax.config.update("jax_enable_x64", True)


def paper_run(T: int, p_max: int, seed: int = 0):
    """A batch run of the paper case (ccdmpc, δ = 0.05, one kept sample) and its inputs."""
    from ecjax import data
    from ecjax.chain.sample import Inputs
    from ecjax.community import paper_case
    from ecjax.disturbance import make_profiles
    from ecjax.experiment import run_batch
    from ecjax.fcmpc import FCMPCSettings
    from ecjax.qp import IPM
    from ecjax.simulate import Options

    c = paper_case(0)
    mu, sd = data.irradiance_stats(month=9)
    lmu, lsd, _ = data.agent_loads(c.n, month=9)
    prof = make_profiles(mu, sd, lmu, lsd, data.price_profile(9))
    inputs = Inputs(
        community=c, profiles=prof, options=Options(T=T, scenario="ccdmpc", record_plans=True), N=24,
        fc=FCMPCSettings(kappa=1e-3, p_max=p_max), solver=IPM(), seed=seed,
    )  # fmt: skip
    res = run_batch(
        c, prof, [0.05], 1, seed=seed, options=inputs.options, N=24, fc=inputs.fc, solver=inputs.solver, keep=1
    )
    return res.trajectories, res.summary, inputs, "paper"


def anvil_available() -> bool:
    from ecjax.chain.client import ANVIL

    return ANVIL.exists() or shutil.which("anvil") is not None


def audit_once(traj, summ, inputs, kind: str, mode: str, label):
    from ecjax.chain.audit import audit_run
    from ecjax.chain.replay import open_chain

    t0 = time.perf_counter()
    with open_chain(kind) as chain:
        r = audit_run(traj, inputs, chain, mode, summary=summ, label=label)
    return r, time.perf_counter() - t0


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=24, help="closed-loop steps T of the run (paper case)")
    ap.add_argument("--p-max", type=int, default=30)
    ap.add_argument("--chain", choices=("tester", "anvil", "both"), default="both")
    ap.add_argument("--mode", choices=("solve", "stored"), default="solve")
    ap.add_argument("--warm", action="store_true", help="audit twice on each chain, report the second (compiled)")
    ap.add_argument("--store", help="audit a stored sample instead (with --cell, --sample, --risk)")
    ap.add_argument("--cell", default="scenario=ccdmpc")
    ap.add_argument("--sample", type=int, default=0)
    ap.add_argument("--risk", type=float, default=0.05)
    args = ap.parse_args(argv)

    print(f"machine: {platform.machine()} {platform.processor() or ''} cores={os.cpu_count()} "
          f"python={platform.python_version()} jax={jax.__version__} device={jax.devices()[0].platform}")  # fmt: skip
    t0 = time.perf_counter()
    if args.store:
        from ecjax.chain.audit import load_sample

        traj, summ, inputs = load_sample(args.store, args.cell, args.sample, args.risk)
        label = args.cell
    else:
        traj, summ, inputs, label = paper_run(args.steps, args.p_max)
    c = inputs.community
    print(f"run: n={c.n} prosumers={len(c.prosumers)} N={inputs.N} T={inputs.options.T} p_max={inputs.fc.p_max} "
          f"scenario={inputs.options.scenario} ({time.perf_counter() - t0:.1f} s)")  # fmt: skip
    kinds = ["tester", "anvil"] if args.chain == "both" else [args.chain]
    if "anvil" in kinds and not anvil_available():
        print("anvil: not found (npm ci in contracts/); skipped")
        kinds.remove("anvil")
    out = {}
    for kind in kinds:
        r, wall = audit_once(traj, summ, inputs, kind, args.mode, label)
        if args.warm:
            r, wall = audit_once(traj, summ, inputs, kind, args.mode, label)
        s = r.seconds
        chain_s = s["chain"] + s["history"]
        print(f"{kind}: {r.verdict}; {r.tx_count['total']} transactions, iterations per step "
              f"{[it['chain'] for it in r.iterations]}")  # fmt: skip
        print(f"{kind}: wall {wall:.1f} s = chain {chain_s:.1f} s (transactions and reads {s['chain']:.1f}, history "
              f"{s['history']:.1f}) + solve {s['solve']:.1f} s + compare {s['audit']:.1f} s + set-up "
              f"{wall - s['total']:.1f} s")  # fmt: skip
        out[kind] = dict(total_s=wall, chain_s=chain_s, solve_s=s["solve"], tx=r.tx_count["total"], verified=r.verified)
    for kind, v in out.items():
        print(f"audit_time: chain={kind} total_s={v['total_s']:.1f} chain_s={v['chain_s']:.1f} "
              f"solve_s={v['solve_s']:.1f} tx={v['tx']}")  # fmt: skip
    return out


if __name__ == "__main__":
    main()
