"""Gas of the FC-MPC coordinators: the paper's (every upload on chain) against commit-and-challenge.

Default: both coordination modes on the embedded eth-tester chain (or anvil with --chain anvil)
at the paper size (n = 15, 7 prosumers, N = 24) and at n = 30 and 60 (prosumer share 7/15), one
synthetic negotiation of --iterations iterations per MPC step (random islanded plans, then
subproblem optima that pull the iterates towards a random target; p_max = --iterations, so
every step runs them all), T = 24 steps per community-day:

- full mode: gas per MPC step measured exactly on chain, every transaction of one step (at
  n > 15 the first --probe iterations, the rest scaled by their mean gas per iteration), times
  T for a day (every step of a day costs the same: the same vector sizes and iterations);
- commit mode: the whole day on chain, exactly: T commitments, then one `finalize` after the
  challenge window (bonds released);
- one challenge of each kind (update re-execution, iteration stop rule, applied inputs) against
  a planted fraud of the paper-size day, and the dearest of them; and the challenge of a
  misreported message (a leaf consistent but for its prosumer's signature).

Last line: `gas: full_per_day=<x> commit_per_day=<x> ratio=<full/commit> challenge=<x>` (paper size).

`--upload`: the gas of every kind of full-mode upload at the paper size, one step of
--iterations (default here 4), then a second step of weighted iterations (optimal convex
weights: every prosumer submits its optimum, then one proposes the weights, here λ_i = 1/|P|
minus a little, and the contract combines): the gas per iteration of both kinds. Lines:
`gas_weights: uniform_per_iteration=<x> weighted_per_iteration=<x> submit=<x> propose=<x>`
(means over the iterations p >= 1), then `gas: max_upload_gas=<x> tx_per_step=<x>`.

`--replay`: a real negotiation instead. A closed-loop batch run (`run_batch`, one kept sample
with its FC-MPC iterates) of a generated community of --n agents, then its replay through the
coordinator (`ecjax.chain.audit.audit_run`, stored mode) and the gas and transactions of the
audit report. Last line: `gas_replay: max_upload_gas=<x> mean_upload_gas=<x> tx_per_step=<x>`.

    python experiments/benchmarks/gas.py [--chain tester|anvil] [--iterations 28] [--sizes 15 30 60]
    python experiments/benchmarks/gas.py --upload [--iterations 4]
    python experiments/benchmarks/gas.py --replay [--n 6] [--N 6] [--T 2] [--iterations 4]
"""

from __future__ import annotations

import argparse

import numpy as np

from ecjax.chain import fixedpoint as fp
from ecjax.chain.client import Chain, Coordinator
from ecjax.chain.commit import CommitCoordinator, find_frauds, plant_fraud
from ecjax.chain.config import CoordinatorConfig

T_DAY = 24  # MPC steps of a community-day


def paper_config(p_max: int, n: int = 15) -> CoordinatorConfig:
    """n agents, round(7n/15) prosumers at the even indices (the paper case at n = 15), N = 24."""
    P = round(7 * n / 15)
    return CoordinatorConfig(
        n=n,
        N=24,
        prosumer_ids=tuple(range(0, 2 * P, 2)),
        bounds=[(2.5, 2.5, 2.5, 2.5, 2.5)] * P,
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
    uniform_iter = (sum(gas1) + sum(closing)) / p
    weighted = weighted_step(coord, config, rng, target, p)
    print(f"gas_weights: uniform_per_iteration={uniform_iter:.0f} weighted_per_iteration={weighted['per_iteration']:.0f} "
          f"submit={weighted['submit']:.0f} propose={weighted['propose']:.0f}")  # fmt: skip
    out = dict(max_upload_gas=max(gas0 + gas1 + closing), tx_per_step=txs, uniform_per_iteration=uniform_iter,
               weighted=weighted)  # fmt: skip
    print(f"gas: max_upload_gas={out['max_upload_gas']} tx_per_step={out['tx_per_step']}")
    return out


def weighted_step(coord: Coordinator, config: CoordinatorConfig, rng, target, iterations: int) -> dict:
    """Step t = 1 with weighted iterations p = 1..iterations: every prosumer submits the same
    optima as the uniform step, prosumer p mod P proposes λ_i = (1/|P|)·(1 − 10⁻³·i)."""
    n_p = config.n_prosumers
    for i in range(n_p):
        coord.upload_state(i, 1, int(rng.integers(0, 4 * fp.SCALE)), int(rng.integers(0, 8 * fp.SCALE)),
                           rng.integers(0, upper(config, i, 0) + 1))  # fmt: skip
    lam = fp.weights_to_fixed([(1 - 1e-3 * i) / n_p for i in range(n_p)])
    sub, prop, per_iter = [], [], []
    for p in range(1, iterations + 1):
        g = [coord.submit(i, 1, p, target[i]).gas_used for i in range(n_p)]
        res = coord.propose_weights(p % n_p, 1, p, lam)
        sub += g
        prop.append(res.gas_used)
        per_iter.append(sum(g) + res.gas_used)
        if res.terminated:
            break
    coord.history()
    print(f"weighted p>=1: submit min {min(sub)} max {max(sub)} mean {np.mean(sub):.0f}; "
          f"proposeWeights (P combinations, closing) min {min(prop)} max {max(prop)}")  # fmt: skip
    return dict(submit=float(np.mean(sub)), propose=float(np.mean(prop)), per_iteration=float(np.mean(per_iter)))


def synthetic(config: CoordinatorConfig, seed: int):
    """Measured states, islanded plans and the target the optima pull towards (fixed point)."""
    rng = np.random.default_rng(seed)
    P = config.n_prosumers
    states = [(int(rng.integers(0, 4 * fp.SCALE)), int(rng.integers(0, 8 * fp.SCALE))) for _ in range(P)]
    u0 = [rng.integers(0, upper(config, i, 0) + 1) for i in range(P)]
    target = [rng.integers(0, upper(config, i, 1) + 1) for i in range(P)]
    return states, u0, target


def full_step(chain: Chain, config: CoordinatorConfig, iterations: int, probe: int | None, seed: int = 0) -> dict:
    """Gas of one MPC step in the paper's mode: every transaction of iterations 0..probe on
    chain (probe None: all `iterations`), the iterations past `probe` at the mean gas per
    iteration measured."""
    coord = Coordinator.deploy(chain, config)
    states, u0, target = synthetic(config, seed)
    P = config.n_prosumers
    per_it, ups = [], []
    gas = [coord.upload_state(i, 0, *states[i], u0[i]).gas_used for i in range(P)]
    per_it.append(sum(gas))
    ups += gas
    last = iterations if probe is None else min(probe, iterations)
    for p in range(1, last + 1):
        gas = [coord.upload(i, 0, p, target[i]).gas_used for i in range(P)]
        per_it.append(sum(gas))
        ups += gas
    step = per_it[0] + float(np.mean(per_it[1:])) * iterations if iterations else per_it[0]
    exact = last == iterations
    return dict(step_gas=int(round(step)), exact=exact, measured=last, tx_per_step=(iterations + 1) * P,
                max_upload=max(ups), mean_upload=float(np.mean(ups)), deploy=coord.deploy_receipt["gasUsed"])  # fmt: skip


def negotiated(coord: CommitCoordinator, config: CoordinatorConfig, iterations: int, seed: int = 0):
    """The same synthetic step negotiated off chain (`OffChainNegotiation`, every message signed
    by its prosumer): its record."""
    neg = coord.negotiation()
    states, u0, target = synthetic(config, seed)
    P = config.n_prosumers
    for i in range(P):
        neg.send_initial(i, 0, *states[i], u0[i])
    it, p = neg.close(0, 0), 0
    while not it.terminated:
        p += 1
        for i in range(P):
            neg.send(i, 0, p, target[i])
        it = neg.close(0, p)
    assert p == iterations, f"the synthetic step stopped at {p}, not {iterations}"
    return neg.record(0)


def at_step(rec, t: int, coord: CommitCoordinator):
    """The record of a step with the same negotiation at step t (its leaves carry t, and every
    message is signed again by its prosumer for step t)."""
    out = rec.copy()
    out.t = t
    domain = coord.domain()
    for p in range(out.last_p + 1):
        for i in range(out.n_prosumers):
            out.sign(p, i, coord.agents[i], domain)
    return out


def commit_day(chain: Chain, config: CoordinatorConfig, iterations: int, seed: int = 0) -> dict:
    """A whole community-day in commit mode, on chain: T_DAY commitments (prosumer t mod P),
    then one `finalize` after the challenge window. Then one challenge of each kind against a
    planted fraud (steps T_DAY .. T_DAY + 3; the last a misreported message, its signature)."""
    coord = CommitCoordinator.deploy(chain, config)
    rec = negotiated(coord, config, iterations, seed)
    P = config.n_prosumers
    commits = [coord.commit(at_step(rec, t, coord), t % P)["gasUsed"] for t in range(T_DAY)]
    chain.increase_time(config.period_s + 1)
    fin = coord.finalize(0, T_DAY)["gasUsed"]
    assert all(coord.commitment(t)["status"] == "final" for t in range(T_DAY))
    (challenger,) = chain.new_accounts(1)
    mirror, domain = coord.mirror(), coord.domain()
    challenge = {}
    for t, kind in enumerate(("combination", "stop", "applied", "misreport"), start=T_DAY):
        bad = plant_fraud(at_step(rec, t, coord), kind, mirror, domain, coord.agents)[0]
        coord.commit(bad, t % P)
        res = coord.challenge(bad, find_frauds(bad, mirror, domain)[0], challenger)
        kind = "signature" if kind == "misreport" else kind
        assert res.slashed and res.fraud == kind, res
        challenge[res.challenge if kind != "signature" else "signature"] = res.gas_used
    return dict(day_gas=sum(commits) + fin, commit_mean=float(np.mean(commits)), commit_max=max(commits),
                finalize=fin, leaves=(rec.last_p + 2) * P, depth=len(rec.proof(0, 0)), challenge=challenge,
                deploy=coord.deploy_receipt["gasUsed"])  # fmt: skip


def compare(make_chain, sizes, iterations: int, probe: int, seed: int = 0) -> dict:
    """Both modes at every size; prints a table and returns the paper size's figures."""
    rows = {}
    for n in sizes:
        config = paper_config(iterations, n)
        full = full_step(make_chain(), config, iterations, None if n == 15 else probe, seed)
        com = commit_day(make_chain(), config, iterations, seed)
        full_day = T_DAY * full["step_gas"]
        rows[n] = dict(full=full, commit=com, full_day=full_day, ratio=full_day / com["day_gas"])
        how = "all measured" if full["exact"] else f"p = 0..{full['measured']} measured, the rest scaled"
        print(f"n={n} prosumers={config.n_prosumers} nu={config.nu} iterations/step={iterations}")
        print(f"  full:   {full['tx_per_step']} tx/step, upload mean {full['mean_upload']:.0f} max {full['max_upload']}, "
              f"step {full['step_gas']} gas ({how}), day {full_day} gas (x{T_DAY} steps), deploy {full['deploy']}")
        print(f"  commit: 1 tx/step, commit mean {com['commit_mean']:.0f} max {com['commit_max']}, finalize "
              f"{com['finalize']} (once a day), day {com['day_gas']} gas (all on chain), deploy {com['deploy']}; "
              f"{com['leaves']} leaves/step, depth {com['depth']}")
        print(f"  challenge gas: " + ", ".join(f"{k} {v}" for k, v in com["challenge"].items()))
        print(f"  ratio full/commit per day: {rows[n]['ratio']:.0f}")
    paper = rows[sizes[0]]
    out = dict(full_per_day=paper["full_day"], commit_per_day=paper["commit"]["day_gas"], ratio=paper["ratio"],
               challenge=max(paper["commit"]["challenge"].values()), rows=rows)  # fmt: skip
    print(f"gas: full_per_day={out['full_per_day']} commit_per_day={out['commit_per_day']} "
          f"ratio={out['ratio']:.0f} challenge={out['challenge']}")
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
    ap.add_argument("--iterations", type=int, default=None,
                    help="iterations p >= 1 per step (= p_max); default 28 (4 with --upload or --replay)")  # fmt: skip
    ap.add_argument("--sizes", type=int, nargs="+", default=[15, 30, 60], help="community sizes n (first: paper size)")
    ap.add_argument("--probe", type=int, default=3, help="full mode at n > 15: iterations measured before scaling")
    ap.add_argument("--upload", action="store_true", help="the full mode's uploads at the paper size, one step")
    ap.add_argument("--replay", action="store_true", help="a real negotiation (stored run replayed)")
    ap.add_argument("--n", type=int, default=6, help="--replay: agents")
    ap.add_argument("--N", type=int, default=6, help="--replay: horizon")
    ap.add_argument("--T", type=int, default=2, help="--replay: closed-loop steps")
    args = ap.parse_args(argv)
    iterations = args.iterations if args.iterations is not None else (4 if args.upload or args.replay else 28)
    anvils = []

    def make_chain():
        if args.chain == "anvil":
            anvils.append(Chain.anvil())
            return anvils[-1]
        return Chain.tester()

    try:
        if args.replay:
            return replay_run(make_chain(), args.n, args.N, args.T, iterations)
        if args.upload:
            return run(make_chain(), iterations)
        return compare(make_chain, args.sizes, iterations, args.probe)
    finally:
        for a in anvils:
            a.close()


if __name__ == "__main__":
    main()
