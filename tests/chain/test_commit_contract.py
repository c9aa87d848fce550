"""Commit-and-challenge coordination on the embedded eth-tester chain: the off-chain negotiation
is the paper's contract's, an honest day finalizes, every planted fraud is proven and slashed,
a false challenge costs the challenger."""

from __future__ import annotations

import dataclasses

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
    return coord, config, challenger, coord.negotiation()


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


SIGNATURE_FRAUDS = ["misreport", "unsigned", "forged", "replayed"]


@pytest.mark.parametrize("kind", ["combination", "bounds", "bounds0", "theta", "stop", "applied"] + SIGNATURE_FRAUDS)
def test_planted_fraud_is_proven_and_slashed(setup, rng, kind):
    """Each kind of wrong leaf, the committer's misreport of a prosumer's message among them (its
    numbers recomputed to match, so that only the signature is wrong: kept from the true
    message, removed, made with another key, or replayed from another iteration)."""
    coord, config, challenger, neg = setup
    mirror, domain = coord.mirror(), coord.domain()
    honest = negotiate(neg, config, rng, 0)
    bad, p, i = plant(honest, kind, mirror, domain, coord.agents)
    frauds = find_frauds(bad, mirror, domain)
    want = "signature" if kind in SIGNATURE_FRAUDS else kind.rstrip("0")
    assert frauds and frauds[0].kind == want and (frauds[0].p, frauds[0].i) == (p, i), frauds
    if kind in SIGNATURE_FRAUDS:  # consistent but for the signature: without it, nothing to prove
        assert len(frauds) == 1 and find_frauds(bad, mirror) == []
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


def test_prosumer_signatures(setup, rng):
    """The message digest is EIP-712 as wallets compute it and as the contract does; a prosumer's
    signature holds only for its own (chain, contract, step, iteration, index); a message not
    signed by its sender is not received; a silent prosumer's unsigned leaf is honest."""
    from eth_account.messages import encode_typed_data

    coord, config, challenger, neg = setup
    domain, f = coord.domain(), coord.functions
    rec = negotiate(neg, config, rng, 0, skip=(1,))  # prosumer 1 silent at p = 1
    assert find_frauds(rec, coord.mirror(), domain) == []
    leaf = rec.leaf(2, 0)
    typed = domain.typed_data(0, 2, 0, 0, 0, fp.pack(rec.u_star[2, 0]))
    digest = domain.digest(0, 2, 0, 0, 0, leaf.u_star_hash)
    m = encode_typed_data(full_message=typed)  # eth_account's EIP-712 encoding
    want = keccak(b"\x19" + m.version + m.header + m.body)
    assert digest == want == bytes(f.messageDigest(leaf.as_tuple()).call())
    assert bytes(f.domainSeparator().call()) == domain.separator
    assert leaf.signed_by(domain) == coord.agents[0].address and f.isSigned(leaf.as_tuple()).call()
    p0 = rec.leaf(0, 2)
    assert p0.eb == rec.eb[2] and f.isSigned(p0.as_tuple()).call()  # the state is signed with u^0
    # the same message signed for another step, iteration, prosumer, contract or chain
    a = coord.agents[0]
    u = fp.pack(rec.u_star[2, 0])
    other = [domain.sign(a, 1, 2, 0, 0, 0, u), domain.sign(a, 0, 3, 0, 0, 0, u), domain.sign(a, 0, 2, 1, 0, 0, u),
             type(domain)(domain.chain_id, challenger.address).sign(a, 0, 2, 0, 0, 0, u),
             type(domain)(domain.chain_id + 1, coord.address).sign(a, 0, 2, 0, 0, 0, u)]  # fmt: skip
    for sig in other:
        moved = dataclasses.replace(leaf, sig=sig)
        assert moved.signed_by(domain) != a.address and not f.isSigned(moved.as_tuple()).call()
    # the malleable twin (s > n/2) is not accepted, on chain or off
    sig, order = leaf.sig, 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
    twin = sig[:32] + (order - int.from_bytes(sig[32:64], "big")).to_bytes(32, "big") + bytes([55 - sig[64]])
    moved = dataclasses.replace(leaf, sig=twin)
    assert moved.signed_by(domain) is None and not f.isSigned(moved.as_tuple()).call()
    # the silent prosumer's leaf is unsigned and honest: a challenge of it proves nothing
    assert rec.leaf(1, 1).sig == bytes(65) and rec.sig[1, 0].any()
    coord.commit(rec, 0)
    assert coord.challenge(rec, Fraud(0, "signature", 1, 1), challenger).fraud == "none"
    # a message signed by someone else is not received: its sender counts as silent
    neg.send_initial(0, 1, 5, 6, rec.u_star[0, 0], account=challenger)
    neg.send_initial(1, 1, 5, 6, rec.u_star[0, 1])
    neg.send_initial(2, 1, 5, 6, rec.u_star[0, 2])
    it = neg.close(1, 0)
    assert neg.refused == [(1, 0, 0)] and sorted(it.uploads) == [1, 2] and not it.committed[0].any()


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
    neg = coord.negotiation()
    rng = np.random.default_rng(5)
    honest = negotiate(neg, config, rng, 0)
    bad, p, i = plant(honest, "combination", coord.mirror())
    coord.commit(bad, 0)
    gas = [coord.challenge(bad, Fraud(0, "stop", 1, None), challenger).gas_used,
           coord.challenge(bad, Fraud(0, "applied", bad.last_p, 0), challenger).gas_used,
           coord.challenge(bad, find_frauds(bad, coord.mirror())[0], challenger).gas_used]  # fmt: skip
    assert coord.commitment(0)["status"] == "slashed"
    assert max(gas) < 1_000_000, gas
