"""Gas of the FC-MPC coordinator: per upload and transactions per MPC step (reported, not asserted).

Default: the paper size (n = 15, 7 prosumers, N = 24) on the embedded eth-tester chain (or anvil
with --chain anvil), one MPC step with synthetic iterates (random islanded plans, then subproblem
optima that pull the iterates towards a fixed random target, so θ contracts by (1 − w) per
iteration); prints the gas of every kind of transaction. Last line:
`gas: max_upload_gas=<x> tx_per_step=<x>`.

`--replay`: a real negotiation instead. A closed-loop batch run (`run_batch`, one kept sample
with its FC-MPC iterates) of a generated community of --n agents, then its replay through the
coordinator (`ecjax.chain.audit.audit_run`, stored mode) and the gas and transactions of the
audit report. Last line: `gas_replay: max_upload_gas=<x> mean_upload_gas=<x> tx_per_step=<x>`.

    python experiments/benchmarks/gas.py [--chain tester|anvil] [--iterations 4]
    python experiments/benchmarks/gas.py --replay [--n 6] [--N 6] [--T 2] [--iterations 4]
"""

from __future__ import annotations

import argparse

import numpy as np

from ecjax.chain import fixedpoint as fp
from ecjax.chain.client import Chain, Coordinator
from ecjax.chain.config import CoordinatorConfig


def paper_config(p_max: int) -> CoordinatorConfig:
    return CoordinatorConfig(
        n=15,
        N=24,
        prosumer_ids=(0, 2, 4, 6, 8, 10, 12),
        bounds=[(2.5, 2.5, 2.5, 2.5, 2.5)] * 7,
        kappa=1e-3,
        p_max=p_max,
        period_s=600,
        model={"benchmark": "gas"},
    )


def upper(config: CoordinatorConfig, i: int, p: int) -> np.ndarray:
    bc, bd, ugb, ev, bt = config.fixed_bounds()[i]
    hi = np.full(config.nu, bt if p else 0, dtype=np.int64)
    for k, v in enumerate((bc, bd, ugb, ev)):
        hi[k * config.N : (k + 1) * config.N] = v
    return hi


def run(chain: Chain, iterations: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    config = paper_config(p_max=iterations)
    coord = Coordinator.deploy(chain, config)
    n_p = config.n_prosumers
    print(f"n={config.n} prosumers={n_p} N={config.N} nu={config.nu} bytes/vector={4 * config.nu}")
    print(f"deploy: {coord.deploy_receipt['gasUsed']} gas")
    gas0, gas1, closing, txs = [], [], [], 0
    for i in range(n_p):
        u0 = rng.integers(0, upper(config, i, 0) + 1)
        res = coord.upload_state(i, 0, int(rng.integers(0, 4 * fp.SCALE)), int(rng.integers(0, 8 * fp.SCALE)), u0)
        gas0.append(res.gas_used)
        txs += 1
    target = [rng.integers(0, upper(config, i, 1) + 1) for i in range(n_p)]
    for p in range(1, iterations + 1):
        for i in range(n_p):
            res = coord.upload(i, 0, p, target[i])
            (closing if res.closed else gas1).append(res.gas_used)
            txs += 1
        print(f"iteration p={p}: max theta={fp.theta(coord.history().steps[0].iterations[p].max_theta2):.4f} kW")
        if res.terminated:
            break
    assert coord.round().t == 1, "the step did not terminate"
    coord.history()  # rebuild and check the whole negotiation from the events
    print(f"upload p=0:           min {min(gas0)}  max {max(gas0)}  (last one closes the iteration)")
    print(f"upload p>=1:          min {min(gas1)}  max {max(gas1)}  mean {np.mean(gas1):.0f}")
    print(f"upload p>=1, closing: min {min(closing)}  max {max(closing)}")
    print(f"transactions per MPC step ({p + 1} iterations x {n_p} prosumers): {txs}")
    out = dict(max_upload_gas=max(gas0 + gas1 + closing), tx_per_step=txs)
    print(f"gas: max_upload_gas={out['max_upload_gas']} tx_per_step={out['tx_per_step']}")
    return out


def replay_run(chain: Chain, n: int, N: int, T: int, p_max: int, seed: int = 0) -> dict:
    import jax

    jax.config.update("jax_enable_x64", True)
    from ecjax.chain.audit import audit_run
    from ecjax.chain.sample import Inputs
    from ecjax.community import generate_community
    from ecjax.disturbance import synthetic_profiles
    from ecjax.experiment import run_batch
    from ecjax.fcmpc import FCMPCSettings
    from ecjax.qp import IPM
    from ecjax.simulate import Options

    c = generate_community(n, seed=seed)
    prof = synthetic_profiles(n, seed=seed)
    inputs = Inputs(
        community=c, profiles=prof, options=Options(T=T, record_plans=True), N=N,
        fc=FCMPCSettings(kappa=1e-3, p_max=p_max), solver=IPM(), seed=seed,
    )  # fmt: skip
    res = run_batch(c, prof, [0.05], 1, seed=seed, options=inputs.options, N=N, fc=inputs.fc, solver=inputs.solver, keep=1)
    r = audit_run(res.trajectories, inputs, chain, "stored", summary=res.summary)
    P = len(c.prosumers)
    nu = (n + 3) * N
    print(f"replay: n={n} prosumers={P} N={N} nu={nu} bytes/vector={4 * nu} T={T} p_max={p_max}: {r.verdict}")
    print(f"iterations per step: {[it['chain'] for it in r.iterations]}")
    for kind, v in r.gas["by_kind"].items():
        print(f"{kind:8s} count {v['count']:4d}  gas min {v['min']}  mean {v['mean']:.0f}  max {v['max']}")
    ups = [t["gas_used"] for t in r.transactions if t["kind"] in ("initial", "upload")]
    out = dict(
        max_upload_gas=max(ups),
        mean_upload_gas=float(np.mean(ups)),
        tx_per_step=r.tx_count["uploads_per_step_mean"],
        tx_total=r.tx_count["total"],
        seconds=r.seconds["replay"],
    )
    print(f"transactions: {out['tx_total']} in all, {out['tx_per_step']:.1f} per MPC step; replay {out['seconds']:.1f} s")
    print(
        f"gas_replay: max_upload_gas={out['max_upload_gas']} mean_upload_gas={out['mean_upload_gas']:.0f} "
        f"tx_per_step={out['tx_per_step']:.1f}"
    )
    return out


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--chain", choices=("tester", "anvil"), default="tester")
    ap.add_argument("--iterations", type=int, default=4, help="iterations p >= 1 (= p_max)")
    ap.add_argument("--replay", action="store_true", help="a real negotiation (stored run replayed)")
    ap.add_argument("--n", type=int, default=6, help="--replay: agents")
    ap.add_argument("--N", type=int, default=6, help="--replay: horizon")
    ap.add_argument("--T", type=int, default=2, help="--replay: closed-loop steps")
    args = ap.parse_args(argv)

    def go(chain):
        if args.replay:
            return replay_run(chain, args.n, args.N, args.T, args.iterations)
        return run(chain, args.iterations)

    if args.chain == "anvil":
        with Chain.anvil() as chain:
            return go(chain)
    return go(Chain.tester())


if __name__ == "__main__":
    main()
