"""Commit-and-challenge coordination on the embedded eth-tester chain: the off-chain negotiation
is the paper's contract's, an honest day finalizes, every planted fraud is proven and slashed,
a false challenge costs the challenger."""

from __future__ import annotations

import numpy as np
import pytest
from eth_utils import keccak

from ecjax.chain import fixedpoint as fp
from ecjax.chain.client import Chain, Coordinator, CoordinatorError
from ecjax.chain.commit import plant_fraud as plant
from ecjax.chain.commit import (
    CommitCoordinator,
    Fraud,
    OffChainNegotiation,
    StepRecord,
    applied_hash,
    find_frauds,
    read_records,
    write_records,
)
from ecjax.chain.mirror import Mirror

from .commit_helpers import negotiate
from .conftest import paper_config, small_config

pytestmark = pytest.mark.chain

BOND, STAKE = 10**17, 10**16


@pytest.fixture
def setup(chain):
    config = small_config()
    coord = CommitCoordinator.deploy(chain, config, bond=BOND, challenge_bond=STAKE)
    (challenger,) = chain.new_accounts(1)
    return coord, config, challenger, OffChainNegotiation(Mirror.from_config(config))


def test_offchain_negotiation_is_the_full_contracts(chain, rng):
    """The same uploads through the paper's contract and off chain: every committed iterate,
    θ², max θ² and stop decision agree (a prosumer missing at p = 1 included)."""
    config = small_config()
    full = Coordinator.deploy(chain, config)
    neg = OffChainNegotiation(Mirror.from_config(config))
    rec = negotiate(neg, config, rng, 0, full=full, skip=(1,))
    step = full.history().steps[0]
    assert rec.last_p == step.iterations[-1].p and rec.stop[-1]
    for p, it in enumerate(step.iterations):
        assert np.array_equal(rec.u_iter[p], it.committed)
        assert rec.max_theta2[p] == it.max_theta2 and rec.stop[p] == it.terminated
        assert rec.theta2[p] == [it.theta2[i] for i in range(config.n_prosumers)]
    assert rec.theta2[1][1] == 0 and np.array_equal(rec.u_star[1, 1], rec.u_iter[0, 1])  # the one missing
    for i in range(config.n_prosumers):
        assert rec.leaf(rec.last_p, i).iterate_hash == full.committed_hash(i)
    assert find_frauds(rec, full.mirror()) == []


def test_leaves_and_tree_as_the_contract_hashes_them(setup, rng):
    coord, config, _, neg = setup
    rec = negotiate(neg, config, rng, 0)
    f = coord.functions
    for p, i in ((0, 0), (1, 2), (rec.last_p, 1)):
        leaf = rec.leaf(p, i)
        assert bytes(f.leafHash(leaf.as_tuple()).call()) == leaf.hash()
    assert bytes(f.appliedLeaf(0, 2, rec.applied_bytes(2)).call()) == applied_hash(0, 2, rec.applied_bytes(2))
    assert f.depth(rec.last_p).call() == len(rec.proof(0, 0)) == 5  # (6 + 2) * 3 = 24 leaves
    assert np.array_equal(rec.applied[1], rec.u_iter[rec.last_p, 1][:: config.N])
    assert rec.leaf(0, 1).eb == rec.eb[1] and rec.leaf(1, 1).eb == 0


def test_honest_day_finalizes_and_false_challenges_cost_the_challenger(setup, rng, tmp_path):
    coord, config, challenger, neg = setup
    chain = coord.chain
    mirror = coord.mirror()
    recs = [negotiate(neg, config, rng, t) for t in range(3)]
    for rec in recs:
        assert find_frauds(rec, mirror) == []
        coord.commit(rec, rec.t % config.n_prosumers)
    assert coord.next_step() == 3 and coord.head() == recs[-1].root
    # every kind of challenge against honest data proves nothing and pays the committer
    committer = coord.agents[1].address
    before = chain.w3.eth.get_balance(challenger.address)
    results = [
        coord.challenge(recs[1], Fraud(1, "combination", 2, 0), challenger),
        coord.challenge(recs[1], Fraud(1, "bounds", 0, 2), challenger),
        coord.challenge(recs[1], Fraud(1, "stop", 1, None), challenger),
        coord.challenge(recs[1], Fraud(1, "stop", recs[1].last_p, None), challenger),
        coord.challenge(recs[1], Fraud(1, "applied", recs[1].last_p, 1), challenger),
    ]
    assert [r.fraud for r in results] == ["none"] * 5
    assert coord.credit(committer) == 5 * STAKE and coord.credit(challenger.address) == 0
    assert before - chain.w3.eth.get_balance(challenger.address) >= 5 * STAKE
    assert coord.commitment(1)["status"] == "pending"
    assert not coord.functions.isFinal(0).call()
    # a challenge whose leaf is not in the root is refused (costs only gas)
    wrong = recs[1].copy()
    wrong.theta2[2][0] += 1
    with pytest.raises(CoordinatorError) as e:
        coord.challenge(wrong, Fraud(1, "theta", 2, 0), challenger)
    assert e.value.name == "BadProof"
    # after the window: final, bonds released
    chain.increase_time(config.period_s + 1)
    with pytest.raises(CoordinatorError) as e:
        coord.challenge(recs[0], Fraud(0, "theta", 1, 0), challenger)
    assert e.value.name == "WindowClosed"
    assert coord.functions.isFinal(0).call()
    coord.finalize(0, 3)
    assert [coord.commitment(t)["status"] for t in range(3)] == ["final"] * 3
    assert coord.credit(coord.agents[0].address) == BOND and coord.credit(committer) == 5 * STAKE + BOND
    coord.withdraw(coord.agents[0])
    assert coord.credit(coord.agents[0].address) == 0
    # the data a challenger needs, kept and read back
    back, meta = read_records(write_records(tmp_path / "s0.npz", recs, {"address": coord.address}))
    assert meta["address"] == coord.address and [r.root for r in back] == [r.root for r in recs]


@pytest.mark.parametrize("kind", ["combination", "bounds", "bounds0", "theta", "stop", "applied"])
def test_planted_fraud_is_proven_and_slashed(setup, rng, kind):
    coord, config, challenger, neg = setup
    mirror = coord.mirror()
    honest = negotiate(neg, config, rng, 0)
    bad, p, i = plant(honest, kind, mirror)
    frauds = find_frauds(bad, mirror)
    want = kind.rstrip("0")
    assert frauds and frauds[0].kind == want and (frauds[0].p, frauds[0].i) == (p, i), frauds
    coord.commit(bad, 0)
    res = coord.challenge(bad, frauds[0], challenger)
    assert res.slashed and res.fraud == want
    assert res.gas_used < 1_000_000
    assert coord.commitment(0)["status"] == "slashed"
    assert coord.credit(challenger.address) == STAKE + BOND // 2
    assert coord.functions.burned().call() == BOND - BOND // 2
    with pytest.raises(CoordinatorError) as e:  # slashed once is enough
        coord.challenge(bad, frauds[0], challenger)
    assert e.value.name == "NotPending"
    # the step is committed again, honestly, by another prosumer
    coord.commit(honest, 1)
    assert coord.commitment(0)["status"] == "pending" and coord.next_step() == 1


def test_commit_rejections(setup, rng):
    coord, config, challenger, neg = setup
    rec = negotiate(neg, config, rng, 0)
    with pytest.raises(CoordinatorError) as e:
        coord.commit(rec, 0, sender=challenger)
    assert e.value.name == "NotAgent"
    with pytest.raises(CoordinatorError) as e:
        coord.chain.transact(coord.functions.commit(0, rec.root, rec.last_p), coord.agents[0], value=BOND - 1)
    assert e.value.name == "WrongBond"
    with pytest.raises(CoordinatorError) as e:
        coord.chain.transact(coord.functions.commit(0, rec.root, config.p_max + 1), coord.agents[0], value=BOND)
    assert e.value.name == "BadIteration"
    later = StepRecord.from_negotiation(neg.mirror.steps[0], config.N)
    later.t = 1
    with pytest.raises(CoordinatorError) as e:
        coord.commit(later, 0)
    assert e.value.name == "WrongStep"
    coord.commit(rec, 0)
    with pytest.raises(CoordinatorError) as e:  # only a slashed step is committed again
        coord.commit(rec, 1)
    assert e.value.name == "WrongStep"
    with pytest.raises(CoordinatorError) as e:
        coord.chain.transact(coord.functions.withdraw(), challenger)
    assert e.value.name == "WithdrawFailed"


def test_reexecute_is_the_full_contracts_arithmetic(setup, rng):
    coord, config, _, neg = setup
    rec = negotiate(neg, config, rng, 0)
    f = coord.functions
    th2, h = f.reexecute(1, 2, fp.pack(rec.u_star[2, 1]), fp.pack(rec.u_iter[1, 1])).call()
    assert (th2, bytes(h)) == (rec.theta2[2][1], keccak(fp.pack(rec.u_iter[2, 1])))
    assert f.reexecute(0, 0, fp.pack(rec.u_star[0, 0]), b"").call()[0] == 0


def test_challenge_gas_at_paper_size():
    """n = 15 (7 prosumers, N = 24, nu = 432): the dearest challenge stays under 1 M gas."""
    chain = Chain.tester()
    config = paper_config(p_max=4)
    coord = CommitCoordinator.deploy(chain, config)
    (challenger,) = chain.new_accounts(1)
    neg = OffChainNegotiation(Mirror.from_config(config))
    rng = np.random.default_rng(5)
    honest = negotiate(neg, config, rng, 0)
    bad, p, i = plant(honest, "combination", coord.mirror())
    coord.commit(bad, 0)
    gas = [coord.challenge(bad, Fraud(0, "stop", 1, None), challenger).gas_used,
           coord.challenge(bad, Fraud(0, "applied", bad.last_p, 0), challenger).gas_used,
           coord.challenge(bad, find_frauds(bad, coord.mirror())[0], challenger).gas_used]  # fmt: skip
    assert coord.commitment(0)["status"] == "slashed"
    assert max(gas) < 1_000_000, gas
