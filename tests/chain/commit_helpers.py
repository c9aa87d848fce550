"""Synthetic off-chain negotiations for the commit-and-challenge tests, and planted frauds."""

from __future__ import annotations

import numpy as np

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


def plant(rec: StepRecord, kind: str, mirror) -> tuple[StepRecord, int, int | None]:
    """A copy of `rec` with one planted fraud of `kind`; returns (record, p, i) of the leaf or
    iteration (i None) it is in."""
    bad = rec.copy()
    p, i = min(2, rec.last_p), 1
    if kind == "combination":  # committed iterate one unit off the combination
        bad.u_iter[p, i, 3] += 1
    elif kind == "bounds":  # an optimum above the prosumer's bound, combined as if it were fine
        hi = mirror.block_bounds(i, p)
        bad.u_star[p, i, 0] = hi[0] + 1000
        bad.u_iter[p, i] = fp.combine(bad.u_star[p, i], bad.u_iter[p - 1, i], mirror.w_num, mirror.w_den)
        bad.theta2[p][i] = fp.theta2(bad.u_iter[p, i], bad.u_iter[p - 1, i])
    elif kind == "bounds0":  # a trade at p = 0
        p = 0
        hi = mirror.block_bounds(i, 1)
        bad.u_star[0, i, -1] = bad.u_iter[0, i, -1] = min(1000, int(hi[-1]))
    elif kind == "theta":
        bad.theta2[p][i] -= 1
    elif kind == "stop":  # stopped at p although max θ > κ
        assert rec.last_p > p and rec.max_theta2[p] > mirror.kappa2
        bad = StepRecord(
            t=rec.t, last_p=p, u_star=rec.u_star[: p + 1].copy(), u_iter=rec.u_iter[: p + 1].copy(),
            theta2=[list(r) for r in rec.theta2[: p + 1]], max_theta2=list(rec.max_theta2[: p + 1]),
            stop=list(rec.stop[:p]) + [True], eb=rec.eb.copy(), eev=rec.eev.copy(),
            applied=rec.u_iter[p][:, :: mirror.N].copy(),
        )  # fmt: skip
        i = None
    elif kind == "applied":
        p = rec.last_p
        bad.applied[i, 0] += 1
    else:
        raise ValueError(kind)
    return bad, p, i


def np_equal(a, b) -> bool:
    return bool(np.array_equal(np.asarray(a), np.asarray(b)))
