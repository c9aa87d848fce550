"""Gas of the FC-MPC coordinator at the paper size (n = 15, 7 prosumers, N = 24).

Deploys on the embedded eth-tester chain (or anvil with --chain anvil), runs one MPC step with
synthetic iterates (random islanded plans, then subproblem optima that pull the iterates towards a
fixed random target, so θ contracts by (1 − w) per iteration) and prints the gas of every kind of
transaction. Last line: `gas: max_upload_gas=<x> tx_per_step=<x>`.

    python experiments/benchmarks/gas.py [--chain tester|anvil] [--iterations 4]
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


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--chain", choices=("tester", "anvil"), default="tester")
    ap.add_argument("--iterations", type=int, default=4, help="iterations p >= 1 (= p_max)")
    args = ap.parse_args(argv)
    if args.chain == "anvil":
        with Chain.anvil() as chain:
            return run(chain, args.iterations)
    return run(Chain.tester(), args.iterations)


if __name__ == "__main__":
    main()
