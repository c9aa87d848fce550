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


# ---------------------------------------------------------------- audit of an optimal-weights run


@pytest.fixture(scope="module")
def optimal_run():
    """The audit tests' tiny run (n = 4, 2 prosumers, N = 5, T = 3, p_max = 4) with
    fcmpc.weights = optimal."""
    from ecjax.experiment import run_batch
    from ecjax.fcmpc import FCMPCSettings

    from .conftest import StoredRun

    from ecjax.chain.sample import Inputs
    from ecjax.community import generate_community
    from ecjax.disturbance import synthetic_profiles
    from ecjax.qp import IPM
    from ecjax.simulate import Options
    from ecjax.weights import CostWeights

    c = generate_community(4, prosumer_share=0.5, seed=1)
    prof = synthetic_profiles(4, seed=1)
    inputs = Inputs(
        community=c, profiles=prof, options=Options(T=3, record_plans=True), N=5,
        fc=FCMPCSettings(kappa=1e-3, p_max=4, weights="optimal"), weights=CostWeights(r_ugb=1e-3, r_ev=1e-3),
        solver=IPM(eps_abs=1e-8, eps_rel=1e-8), seed=3,
    )  # fmt: skip
    res = run_batch(
        c, prof, [0.05], 1, seed=3, options=inputs.options, N=5, fc=inputs.fc, weights=inputs.weights,
        solver=inputs.solver, keep=1,
    )  # fmt: skip
    return StoredRun(inputs=inputs, trajectories=res.trajectories, summary=res.summary, delta=0.05)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["stored", "solve"])
def test_optimal_weights_run_verifies(optimal_run, mode):
    from ecjax.chain.audit import audit_run

    r = audit_run(optimal_run.trajectories, optimal_run.inputs, "tester", mode, summary=optimal_run.summary)
    assert r.verified, r.summary_line()
    assert r.run["weights"] == "optimal"
    rep = r.replay
    assert rep.weights and r.weights and r.checks["weights"].count == len(rep.weights)
    kinds = r.gas["by_kind"]
    assert "upload" not in kinds and kinds["submit"]["count"] > 0 and kinds["weights"]["count"] == len(rep.weights)
    # each proposal is the reference λ rounded down to 1e-9
    assert max(w["max_abs"] for w in r.weights) <= 2e-9
    # the weights are not all the uniform one: the optimal rule chose them
    lam = np.concatenate([w.q for w in rep.weights]) / ONE
    assert np.abs(lam - 0.5).max() > 1e-3
    for st in rep.history.steps[:3]:
        assert all(it.weighted and it.weights is not None for it in st.iterations[1:])
    data = r.to_dict()
    assert data["weights"] == r.weights
    # the store keeps the λ the run applied; stored mode proposes exactly those (rounded down)
    from ecjax.chain.sample import stored_sample

    s = stored_sample(optimal_run.trajectories)
    assert s.lam_trace is not None and s.lam_trace.shape == s.theta_trace.shape + (len(s.prosumers),)
    assert (s.lam_trace >= 0).all() and (s.lam_trace.sum(axis=-1) <= 1 + 1e-12).all()
    np.testing.assert_array_equal(s.weights(0, 1), s.lam_trace[0, 0])


@pytest.mark.slow
def test_tampered_weights_are_detected(optimal_run, monkeypatch):
    """A proposal that is not the run's λ (here: half of it) commits iterates that are not the
    stored ones: the audit fails on them."""
    from ecjax.chain.audit import audit_run
    from ecjax.chain.sample import StoredSample

    honest = StoredSample.weights
    monkeypatch.setattr(StoredSample, "weights", lambda self, t, p: 0.5 * honest(self, t, p))
    r = audit_run(optimal_run.trajectories, optimal_run.inputs, "tester", "stored", summary=optimal_run.summary)
    assert not r.verified
    assert r.first_difference.quantity in ("u_iter", "theta", "iterations")


@pytest.mark.slow
def test_tampered_store_is_detected(optimal_run):
    """A changed stored iterate changes the λ read back from the store and the committed iterate
    on chain no longer matches it."""
    from ecjax.chain.audit import audit_run

    ds = optimal_run.trajectories.copy(deep=True)
    ds["u_iter"][dict(time=0, iterate0=1, prosumer=0, input=0)] += 0.05
    r = audit_run(ds, optimal_run.inputs, "tester", "stored", summary=optimal_run.summary)
    assert not r.verified


def test_commit_mode_refuses_optimal_weights(stored_run):
    from ecjax.chain.audit import audit_run
    from ecjax.chain.sample import SampleError
    from ecjax.fcmpc import FCMPCSettings

    inputs = dataclasses.replace(stored_run.inputs, fc=FCMPCSettings(kappa=1e-3, p_max=4, weights="optimal"))
    with pytest.raises(SampleError, match="commit mode"):
        audit_run(stored_run.trajectories, inputs, "tester", "stored", coordination="commit")
