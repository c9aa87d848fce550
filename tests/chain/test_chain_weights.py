"""Optimal convex weights on chain (docs/fcmpc.md, contracts/README.md): weighted iterations of
`FCMPCCoordinator` (optima submitted, then the weights proposed and applied), every refusal,
the fixed-point combination mirrored exactly, and the audit of an optimal-weights run."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from ecjax.chain import fixedpoint as fp
from ecjax.chain.client import CoordinatorError
from ecjax.chain.mirror import Mirror, ProtocolError

from .conftest import random_iterate, run_initial

pytestmark = pytest.mark.chain

ONE = fp.WEIGHT_ONE


def errname(excinfo) -> str:
    return excinfo.value.name


def submit_all(coord, config, rng, t=0, p=1, skip=()):
    stars = {}
    for i in range(config.n_prosumers):
        if i in skip:
            continue
        stars[i] = random_iterate(rng, config, i, p)
        coord.submit(i, t, p, stars[i])
    return stars


# ---------------------------------------------------------------- fixed point


def test_weights_to_fixed_rounds_down_onto_the_simplex():
    q = fp.weights_to_fixed([0.5, 0.25, 0.25])
    assert q.tolist() == [ONE // 2, ONE // 4, ONE // 4]
    q = fp.weights_to_fixed([1 / 3] * 3)
    assert q.sum() <= ONE and (q == 333_333_333).all()
    q = fp.weights_to_fixed([-0.1, 0.6, 0.4 + 1e-12])  # negative to 0, float sum above 1
    assert q[0] == 0 and q.sum() <= ONE
    fp.check_weights(q, 3)
    for bad, name in (([1, 2], "BadLength"), ([-1, 0, 0], "NegativeWeight"), ([ONE, 1, 0], "WeightsAboveOne")):
        with pytest.raises(ValueError, match=name):
            fp.check_weights(np.array(bad), 3)


def test_combine_weight_rounds_like_the_uniform_rule():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 2**31, 500)
    b = rng.integers(0, 2**31, 500)
    for q in (0, 1, ONE // 3, ONE // 2, ONE - 1, ONE):
        c = fp.combine_weight(a, b, q)
        exact = (q * a.astype(object) + (ONE - q) * b.astype(object)) / ONE
        assert np.all(np.abs(c - exact.astype(float)) <= 0.5 + 1e-9)
        assert np.all((c >= np.minimum(a, b)) & (c <= np.maximum(a, b)))
    assert np.array_equal(fp.combine_weight(a, b, 0), b)
    assert np.array_equal(fp.combine_weight(a, b, ONE), a)
    # the uniform weight 1/2 written as q = ONE/2 gives the same integers as num/den = 1/2
    assert np.array_equal(fp.combine_weight(a, b, ONE // 2), fp.combine(a, b, 1, 2))


# ---------------------------------------------------------------- contract


def test_weighted_iteration_combines_as_the_mirror(small, rng):
    coord, config = small
    run_initial(coord, config, rng)
    stars = submit_all(coord, config, rng)
    assert coord.round().count == 3 and coord.round().p == 1  # submissions do not close it
    q = np.array([ONE // 2, 0, ONE // 4 + 7])
    prev = {i: coord.committed_iterate(i) for i in range(3)}
    res = coord.propose_weights(1, 0, 1, q)
    assert res.closed and coord.round().p == 2
    ev = next(e for e in res.events if e["event"] == "WeightsApplied")["args"]
    assert ev["agent"] == 1 and fp.unpack(ev["lam"]).tolist() == q.tolist()
    for i in range(3):
        want = fp.combine_weight(stars[i], prev[i], int(q[i]))
        assert np.array_equal(coord.committed_iterate(i), want)
        assert ev["theta2"][i] == fp.theta2(want, prev[i])
        assert bytes(ev["committedHash"][i]) == coord.committed_hash(i)
    assert np.array_equal(coord.committed_iterate(1), prev[1])  # λ = 0 keeps the iterate
    # the history rebuilds through the mirror, hash chain included
    h = coord.history()
    it = h.steps[0].iterations[1]
    assert it.weighted and it.weights.tolist() == q.tolist() and it.proposer == 1
    assert h.head == coord.head()


def test_partial_submission_and_uniform_iterations_mix_across_iterations(small, rng):
    coord, config = small
    run_initial(coord, config, rng)
    submit_all(coord, config, rng, skip=(2,))
    prev2 = coord.committed_iterate(2)
    coord.propose_weights(0, 0, 1, np.array([ONE // 3, ONE // 3, ONE // 3]))
    assert np.array_equal(coord.committed_iterate(2), prev2)  # did not submit: keeps its iterate
    # iteration 2 uniform, as the paper's
    for i in range(3):
        coord.upload(i, 0, 2, random_iterate(rng, config, i, 2))
    assert coord.round().p == 3
    coord.history()


def test_refusals(small, rng):
    coord, config = small
    run_initial(coord, config, rng)
    q = np.array([ONE // 3] * 3)
    with pytest.raises(CoordinatorError) as e:  # nothing submitted yet
        coord.propose_weights(0, 0, 1, q, [None] * 3, [None] * 3)
    assert errname(e) == "NoSubmissions"
    stars = submit_all(coord, config, rng)
    prevs = [coord.committed_iterate(i) for i in range(3)]
    bad = [
        (np.array([ONE // 2, -1, 0]), "NegativeWeight", (1, -1)),
        (np.array([ONE // 2, ONE // 2, 1]), "WeightsAboveOne", (ONE + 1, ONE)),
        (np.array([ONE // 3] * 2), "BadLength", (8, 12)),
    ]
    for w, name, values in bad:
        with pytest.raises(CoordinatorError) as e:
            coord.propose_weights(0, 0, 1, w, [stars[i] for i in range(3)], prevs)
        assert errname(e) == name and e.value.values == values
    with pytest.raises(CoordinatorError) as e:  # wrong round
        coord.propose_weights(0, 0, 2, q)
    assert errname(e) == "WrongRound"
    with pytest.raises(CoordinatorError) as e:  # not a prosumer
        coord.propose_weights(0, 0, 1, q, sender=coord.chain._funder)
    assert errname(e) == "NotAgent"
    with pytest.raises(CoordinatorError) as e:  # an optimum other than the submitted one
        coord.propose_weights(0, 0, 1, q, [stars[0], stars[0], stars[2]], prevs)
    assert errname(e) == "SubmissionMismatch" and e.value.values[0] == 1
    with pytest.raises(CoordinatorError) as e:  # uniform upload in a weighted iteration
        coord.upload(0, 0, 1, stars[0])
    assert errname(e) in ("MixedIteration", "AlreadyUploaded")
    coord.propose_weights(2, 0, 1, q)
    with pytest.raises(CoordinatorError) as e:  # second proposal for the same iteration
        coord.propose_weights(0, 0, 1, q, [stars[i] for i in range(3)], prevs)
    assert errname(e) == "WeightsAlreadyProposed" and e.value.values == (0, 1)
    # a uniform iteration refuses submissions
    coord.upload(0, 0, 2, random_iterate(rng, config, 0, 2))
    with pytest.raises(CoordinatorError) as e:
        coord.submit(1, 0, 2, random_iterate(rng, config, 1, 2))
    assert errname(e) == "MixedIteration"
    with pytest.raises(CoordinatorError) as e:  # p = 0 has no weights
        coord.submit(1, 0, 0, random_iterate(rng, config, 1, 2))
    assert errname(e) == "WrongRound"


def test_weighted_iteration_without_proposal_keeps_every_iterate(small, rng):
    coord, config = small
    run_initial(coord, config, rng)
    submit_all(coord, config, rng, skip=(1,))
    prev = [coord.committed_iterate(i) for i in range(3)]
    coord.chain.increase_time(config.period_s + 1)
    with pytest.raises(CoordinatorError) as e:
        coord.propose_weights(0, 0, 1, np.array([ONE // 3] * 3))
    assert errname(e) == "DeadlinePassed"
    coord.close_iteration()
    assert (coord.round().t, coord.round().p) == (1, 0)  # θ = 0 everywhere: the step ends
    for i in range(3):
        assert np.array_equal(coord.committed_iterate(i), prev[i])
    coord.history()


def test_mirror_refuses_as_the_contract(rng):
    from .conftest import small_config

    config = small_config()
    m = Mirror.from_config(config, addresses=["0x" + "11" * 20] * 3)
    for i in range(3):
        m.initial(i, 0, 0, 0, random_iterate(rng, config, i, 0))
    with pytest.raises(ProtocolError, match="NoSubmissions"):
        m.propose(0, 0, 1, [0, 0, 0])
    m.submit(0, 0, 1, random_iterate(rng, config, 0, 1))
    with pytest.raises(ProtocolError, match="MixedIteration"):
        m.upload(1, 0, 1, random_iterate(rng, config, 1, 1))
    for q, name in (([-1, 0, 0], "NegativeWeight"), ([ONE, 1, 0], "WeightsAboveOne"), ([0, 0], "BadLength")):
        with pytest.raises(ProtocolError, match=name):
            m.propose(0, 0, 1, q)
    m.propose(0, 0, 1, [ONE, 0, 0])
    with pytest.raises(ProtocolError, match="WeightsAlreadyProposed"):
        m.propose(0, 0, 1, [ONE, 0, 0])
