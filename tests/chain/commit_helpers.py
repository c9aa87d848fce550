"""Synthetic off-chain negotiations for the commit-and-challenge tests."""

from __future__ import annotations

from ecjax.chain import fixedpoint as fp
from ecjax.chain.commit import OffChainNegotiation, StepRecord

from .conftest import random_iterate


def negotiate(neg: OffChainNegotiation, config, rng, t: int, *, full=None, skip=()) -> StepRecord:
    """One step negotiated off chain: random islanded plans, then subproblem optima pulling the
    iterates towards a random target (θ contracts by 1 − w per iteration). `full`: a
    `Coordinator` of the paper's mode that receives the same uploads. `skip`: prosumers that
    send nothing at p = 1."""
    P = config.n_prosumers
    for i in range(P):
        eb, eev = int(rng.integers(0, 4 * fp.SCALE)), int(rng.integers(0, 8 * fp.SCALE))
        u0 = random_iterate(rng, config, i, 0)
        neg.send_initial(i, t, eb, eev, u0)
        if full is not None:
            full.upload_state(i, t, eb, eev, u0)
    it = neg.close(t, 0)
    target = [random_iterate(rng, config, i, 1) for i in range(P)]
    p = 0
    while not it.terminated:
        p += 1
        for i in range(P):
            if p == 1 and i in skip:
                continue
            neg.send(i, t, p, target[i])
            if full is not None:
                full.upload(i, t, p, target[i])
        if full is not None and skip and p == 1:
            full.chain.increase_time(config.period_s + 1)
            full.close_iteration()
        it = neg.close(t, p)
    return neg.record(t)
