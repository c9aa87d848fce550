"""FCMPCCoordinator on the embedded eth-tester chain: protocol, rejections, θ, termination, history."""

from __future__ import annotations

import numpy as np
import pytest
from eth_utils import keccak

from ecjax.chain import fixedpoint as fp
from ecjax.chain.client import ChainMismatch, Coordinator, CoordinatorError, decode_error, load_artifact
from ecjax.chain.mirror import Mirror

from .conftest import paper_config, random_iterate, run_initial, small_config, upper

pytestmark = pytest.mark.chain


def errname(excinfo) -> str:
    return excinfo.value.name


# ---------------------------------------------------------------- deployment


def test_deployment_parameters(small):
    coord, config = small
    q = coord.params
    assert q["config_hash"] == config.config_hash()
    assert (q["n"], q["N"], q["nu"], q["n_prosumers"]) == (4, 3, 21, 3)
    assert (q["w_num"], q["w_den"]) == (1, 3)  # w = 1/|P| by default
    assert q["kappa2"] == fp.kappa2(0.05) == 50_000**2
    assert q["ids"] == [0, 2, 3]
    assert q["agents"] == [a.address for a in coord.agents]
    assert [tuple(b) for b in q["bounds"]] == config.fixed_bounds()
    assert q["zero_hash"] == keccak(b"\x00" * 4 * 21)
    r = coord.round()
    assert (r.t, r.p, r.count, r.mask, r.max_theta2) == (0, 0, 0, 0, 0)
    assert r.head == b"\x00" * 32
    assert coord.functions.agentIndex(coord.agents[1].address).call() == 1


def test_config_hash_depends_on_everything():
    base = small_config()
    assert base.config_hash() == small_config().config_hash()
    for change in (dict(kappa=0.06), dict(p_max=7), dict(model={"test": "other"}), dict(w=1), dict(scale=1000)):
        assert small_config(**change).config_hash() != base.config_hash()


def test_invalid_deployment_rejected(chain):
    config = small_config()
    agents = chain.new_accounts(3, 10**18)
    bad = config.constructor_args([a.address for a in agents])
    cfg = list(bad[0])
    cfg[4] = 0  # wDen = 0
    art = load_artifact()
    factory = chain.w3.eth.contract(abi=art["abi"], bytecode=art["bytecode"])
    dup = [agents[0].address, agents[0].address, agents[1].address]
    for args, code in (((tuple(cfg), *bad[1:]), 3), ((bad[0], dup, *bad[2:]), 7)):
        with pytest.raises(Exception) as e:
            factory.constructor(*args).estimate_gas({"from": chain.funder_address})
        err = decode_error(e.value)
        assert err is not None and err.name == "InvalidConfig" and err.values == (code,)
    with pytest.raises(ValueError):
        small_config(prosumer_ids=(2, 0, 3))


# ---------------------------------------------------------------- rejections


def test_access_control(small, rng):
    coord, config = small
    (outsider,) = coord.chain.new_accounts(1, 10**18)
    u0 = random_iterate(rng, config, 0, 0)
    with pytest.raises(CoordinatorError) as e:
        coord.upload_state(0, 0, 1, 2, u0, sender=outsider)
    assert errname(e) == "NotAgent" and e.value.values == (outsider.address,)
    run_initial(coord, config, rng)
    with pytest.raises(CoordinatorError) as e:
        coord.upload(0, 0, 1, u0, np.zeros(config.nu, dtype=np.int64), sender=outsider)
    assert errname(e) == "NotAgent"


def test_wrong_step_or_iteration(small, rng):
    coord, config = small
    u0 = random_iterate(rng, config, 0, 0)
    with pytest.raises(CoordinatorError) as e:
        coord.upload_state(0, 1, 0, 0, u0)  # next step
    assert errname(e) == "WrongRound" and e.value.values == (1, 0, 0, 0)
    with pytest.raises(CoordinatorError) as e:
        coord.upload(0, 0, 1, u0, u0)  # iteration 1 while 0 is open
    assert errname(e) == "WrongRound"
    run_initial(coord, config, rng)  # closes p = 0
    assert coord.round().p == 1
    with pytest.raises(CoordinatorError) as e:
        coord.upload_state(0, 0, 0, 0, u0)  # p = 0 is over
    assert errname(e) == "WrongRound"
    with pytest.raises(CoordinatorError) as e:
        coord.upload(0, 0, 2, u0)
    assert errname(e) == "WrongRound" and e.value.values == (0, 2, 0, 1)
    with pytest.raises(CoordinatorError) as e:
        coord.upload(0, 0, 0, u0)
    assert errname(e) == "WrongRound"


def test_duplicate_upload(small, rng):
    coord, config = small
    u0 = random_iterate(rng, config, 1, 0)
    coord.upload_state(1, 0, 5, 6, u0)
    with pytest.raises(CoordinatorError) as e:
        coord.upload_state(1, 0, 5, 6, u0)
    assert errname(e) == "AlreadyUploaded" and e.value.values == (1,)
    coord.upload_state(0, 0, 5, 6, random_iterate(rng, config, 0, 0))
    coord.upload_state(2, 0, 5, 6, random_iterate(rng, config, 2, 0))
    us = random_iterate(rng, config, 1, 1)
    coord.upload(1, 0, 1, us)
    with pytest.raises(CoordinatorError) as e:
        coord.upload(1, 0, 1, us, u0)
    assert errname(e) == "AlreadyUploaded"


def test_bounds(small, rng):
    coord, config = small
    N = config.N
    hi0 = upper(config, 0, 0)
    u = hi0.copy()  # exactly at the bounds: accepted later
    for index, value in ((N + 1, hi0[N + 1] + 1), (3 * N, hi0[3 * N] + 1), (4 * N + 2, 1), (5, -1)):
        bad = u.copy()
        bad[index] = value
        with pytest.raises(CoordinatorError) as e:
            coord.upload_state(0, 0, 0, 0, bad)
        assert errname(e) == "OutOfBounds"
        assert e.value.values[0] == index
        assert e.value.values[2] == (hi0[index] if index < 4 * N else 0)  # trades must be 0 at p = 0
    with pytest.raises(CoordinatorError) as e:
        coord.upload_state(0, 0, 0, 0, u[:-1])
    assert errname(e) == "BadLength" and e.value.values == (4 * (config.nu - 1), 4 * config.nu)
    coord.upload_state(0, 0, 0, 0, u)
    run_initial(coord, config, rng, skip=(0,))
    hi1 = upper(config, 0, 1)
    bt_index = 4 * N + 5
    bad = hi1.copy()
    bad[bt_index] += 1
    with pytest.raises(CoordinatorError) as e:
        coord.upload(0, 0, 1, bad)
    assert errname(e) == "OutOfBounds" and e.value.values == (bt_index, hi1[bt_index] + 1, hi1[bt_index])
    res = coord.upload(0, 0, 1, hi1)  # trades up to bt_max at p >= 1
    assert res.theta2 == fp.theta2(fp.combine(hi1, u, 1, 3), u)


def test_lying_agent_rejected(small, rng):
    coord, config = small
    u0 = run_initial(coord, config, rng)
    us = random_iterate(rng, config, 0, 1)
    tampered = u0[0].copy()
    tampered[0] = (tampered[0] + 1) % (upper(config, 0, 0)[0] + 1)
    for lie in (tampered, np.zeros(config.nu, dtype=np.int64), us):
        with pytest.raises(CoordinatorError) as e:
            coord.upload(0, 0, 1, us, lie)
        assert errname(e) == "PreviousIterateMismatch"
        assert e.value.values[1] == coord.committed_hash(0)
    coord.upload(0, 0, 1, us, u0[0])  # the truth is accepted


# ---------------------------------------------------------------- deadlines


def test_deadline_and_close_after_deadline(small, rng):
    coord, config = small
    chain = coord.chain
    with pytest.raises(CoordinatorError) as e:
        coord.close_iteration()
    assert errname(e) == "DeadlineNotReached"
    # p = 0: prosumer 1 misses the deadline and gets the zero plan
    u0 = run_initial(coord, config, rng, skip=(1,))
    chain.increase_time(config.period_s + 1)
    with pytest.raises(CoordinatorError) as e:
        coord.upload_state(1, 0, 0, 0, random_iterate(rng, config, 1, 0))
    assert errname(e) == "DeadlinePassed"
    (anyone,) = chain.new_accounts(1, 10**18)
    coord.close_iteration(sender=anyone)
    r = coord.round()
    assert (r.t, r.p, r.count) == (0, 1, 0)
    assert r.deadline > chain.timestamp()
    assert coord.committed_hash(1) == coord.params["zero_hash"]
    np.testing.assert_array_equal(coord.committed_iterate(1), 0)
    # p = 1: prosumer 2 misses; it keeps u^0 and θ_2 = 0
    mirror = Mirror.from_config(config)
    for i in (0, 2):
        mirror.initial(i, 0, 0, 0, u0[i])
    mirror.close()
    us = {i: random_iterate(rng, config, i, 1) for i in range(3)}
    for i in (0, 1):
        res = coord.upload(i, 0, 1, us[i])
        th2, h = mirror.upload(i, 0, 1, us[i])
        assert (res.theta2, res.committed_hash) == (th2, h)
    before = coord.committed_hash(2)
    chain.increase_time(config.period_s + 1)
    receipt = coord.close_iteration()
    closed = coord.contract.events.IterationClosed().process_receipt(receipt)[0]["args"]
    m2, done = mirror.close()
    assert closed["maxTheta2"] == m2 and closed["terminated"] == done and closed["mask"] == 0b011
    assert coord.committed_hash(2) == before == keccak(fp.pack(u0[2]))
    np.testing.assert_array_equal(coord.committed_iterate(2), u0[2])
    h = coord.history()
    it1 = h.steps[0].iterations[1]
    assert it1.theta2[2] == 0 and max(it1.theta2.values()) == m2 and set(it1.uploads) == {0, 1}
    assert h.steps[0].states.keys() == {0, 2}


def test_nobody_uploads_terminates_step(small):
    coord, config = small
    chain = coord.chain
    chain.increase_time(config.period_s + 1)
    coord.close_iteration()  # p = 0 -> everyone gets the zero plan
    chain.increase_time(config.period_s + 1)
    coord.close_iteration()  # p = 1, max θ = 0 <= ϰ
    r = coord.round()
    assert (r.t, r.p) == (1, 0)
    coord.history()


# ---------------------------------------------------------------- θ and termination


def contracting_run(coord, config, rng, n_iter, target=None):
    """Uploads u* = target every iteration: θ_p shrinks like (1 - w)^p. Returns the mirror."""
    mirror = Mirror.from_config(config, addresses=[a.address for a in coord.agents])
    u0 = run_initial(coord, config, rng)
    for e in coord.events():
        if e["event"] != "InitialUploaded":
            continue
        a = e["args"]
        mirror.initial(a["agent"], 0, a["eb"], a["eev"], u0[a["agent"]])
    target = target or {i: random_iterate(rng, config, i, 1) for i in range(config.n_prosumers)}
    thetas = []
    for p in range(1, n_iter + 1):
        r = coord.round()
        if r.t != 0:
            break
        for i in range(config.n_prosumers):
            res = coord.upload(i, 0, p, target[i])
            th2, h = mirror.upload(i, 0, p, target[i])
            assert res.theta2 == th2 and res.committed_hash == h and res.head == mirror.head
        thetas.append(mirror.steps[0].iterations[p].max_theta2)
    return mirror, thetas


def test_theta_matches_mirror_and_terminates_at_tolerance(chain, rng):
    config = small_config(p_max=20)
    coord = Coordinator.deploy(chain, config)
    mirror, thetas = contracting_run(coord, config, rng, n_iter=config.p_max)
    its = mirror.steps[0].iterations
    done = [it for it in its if it.terminated]
    assert len(done) == 1
    last = done[0]
    assert 1 <= last.p < config.p_max  # stopped by the tolerance, not by p_max
    assert last.max_theta2 <= config.kappa2 < its[last.p - 1].max_theta2
    assert all(b < a for a, b in zip(thetas, thetas[1:]))  # contracting
    r = coord.round()
    assert (r.t, r.p) == (1, 0)
    for i in range(config.n_prosumers):
        assert coord.committed_hash(i) == mirror.committed_hash(i)
    h = coord.history()
    assert h.head == coord.head() == mirror.head
    assert [it.max_theta2 for it in h.steps[0].iterations] == [it.max_theta2 for it in its]
    np.testing.assert_array_equal(h.steps[0].final, mirror.committed)


def test_terminates_at_p_max(chain, rng):
    config = small_config(kappa=0.0, p_max=2)
    coord = Coordinator.deploy(chain, config)
    mirror, thetas = contracting_run(coord, config, rng, n_iter=5)
    assert len(thetas) == 2 and thetas[-1] > 0
    assert mirror.steps[0].iterations[2].terminated
    r = coord.round()
    assert (r.t, r.p) == (1, 0)
    # the next step runs from a fresh p = 0
    run_initial(coord, config, rng, t=1)
    assert coord.round().p == 1
    h = coord.history()
    assert [s.t for s in h.steps] == [0, 1] and len(h.steps[0].iterations) == 3


def test_history_detects_forgery(small, rng):
    coord, config = small
    run_initial(coord, config, rng)
    h = coord.history()
    assert h.head == coord.head() != b"\x00" * 32
    assert len(h.events) == 4  # 3 uploads + 1 close
    real = coord.events

    def forged():
        evs = real()
        a = dict(evs[0]["args"])
        a["eb"] = a["eb"] + 1
        return [dict(evs[0], args=a)] + evs[1:]

    coord.events = forged
    with pytest.raises(ChainMismatch):
        coord.history()


def test_paper_size_gas(chain, rng):
    """n = 15, N = 24, 7 prosumers: every upload (θ on chain, closing included) under 400k gas."""
    config = paper_config()
    coord = Coordinator.deploy(chain, config)
    gas0 = []
    u0 = {}
    for i in range(config.n_prosumers):
        u0[i] = random_iterate(rng, config, i, 0)
        gas0.append(coord.upload_state(i, 0, 3 * fp.SCALE, 2 * fp.SCALE, u0[i]).gas_used)
    gas1 = []
    for i in range(config.n_prosumers):
        res = coord.upload(i, 0, 1, random_iterate(rng, config, i, 1))
        gas1.append(res.gas_used)
    assert res.closed
    assert max(gas0) <= 400_000 and max(gas1) <= 400_000, (gas0, gas1)
    coord.history()


def test_theta_cannot_be_reported(small, rng):
    """A lying agent cannot report a wrong θ: no call takes one; the contract computes θ² from
    the uploaded optimum and the committed previous iterate, and its decision uses that."""
    for item in load_artifact()["abi"]:
        if item["type"] == "function" and item.get("stateMutability") not in ("view", "pure"):
            assert not any("theta" in x["name"].lower() for x in item["inputs"]), item["name"]
    coord, config = small
    u0 = run_initial(coord, config, rng)
    far = upper(config, 0, 1)  # as far from u^0 as the bounds allow
    res = coord.upload(0, 0, 1, far)
    assert res.theta2 == fp.theta2(fp.combine(far, u0[0], 1, 3), u0[0]) > config.kappa2
    for i in (1, 2):  # the others stay put: θ_i = 0
        coord.upload(i, 0, 1, u0[i])
    closed = coord.contract.events.IterationClosed().get_logs(from_block=coord.from_block)[-1]["args"]
    assert closed["maxTheta2"] == res.theta2 and not closed["terminated"]


# ---------------------------------------------------------------- events without a chain scan


def _key(events):
    return [(e["event"], e["blockNumber"], e["logIndex"], dict(e["args"])) for e in events]


def test_events_from_receipts_equal_the_logs(chain, rng):
    """The events decoded from the receipts of this client's transactions are the chain's logs;
    a close by an account outside this client makes them incomplete, and the logs are read."""
    config = small_config(p_max=3)
    coord = Coordinator.deploy(chain, config)
    u0 = run_initial(coord, config, rng)
    for i in range(config.n_prosumers):
        res = coord.upload(i, 0, 1, random_iterate(rng, config, i, 1))
        assert res.events and all(e["transactionHash"] == bytes.fromhex(res.tx_hash[2:]) for e in res.events)
    assert res.closed and res.events[-1]["event"] == "IterationClosed"
    own = sorted(coord._own, key=lambda x: (x["blockNumber"], x["logIndex"]))
    assert coord.own_events_complete(own)
    assert _key(coord.events()) == _key(coord.scan_events())
    assert len(coord.events()) == 2 * config.n_prosumers + 2
    coord.history()
    # p = 2 closed after its deadline by another account: the receipts this client holds lack it
    chain.increase_time(config.period_s + 1)
    (other,) = chain.new_accounts(1, 10**18)
    chain.transact(coord.functions.closeIteration(), other)
    own = sorted(coord._own, key=lambda x: (x["blockNumber"], x["logIndex"]))
    assert not coord.own_events_complete(own)
    assert _key(coord.events()) == _key(coord.scan_events())
    h = coord.history()
    assert [it.p for it in h.steps[0].iterations] == [0, 1, 2]
    assert u0  # the islanded plans were uploaded


@pytest.mark.parametrize("N", [5, 8])
def test_word_arithmetic_at_the_extremes(chain, N):
    """The contract works eight lanes per word (bounds check, combination, θ²): at bounds of
    2^31 - 1 (the largest int32), operands at 0 and at the bound (the largest |c - b|), blocks
    that straddle words and a last word of fewer than eight lanes, the committed iterate and θ²
    equal the lane-by-lane mirror bit for bit, and the first lane out of bounds is the one named."""
    top = (2**31 - 1) / fp.SCALE
    config = small_config(N=N, bounds=[(top, top / 2, top / 3, 1.0, top)] * 3, p_max=4)
    coord = Coordinator.deploy(chain, config)
    rng = np.random.default_rng(N)
    prev = {}
    for i in range(config.n_prosumers):
        hi = upper(config, i, 0)
        prev[i] = np.where(np.arange(config.nu) % 2 == 0, hi, 0)
        coord.upload_state(i, 0, 0, 0, prev[i])
    num, den = coord.params["w_num"], coord.params["w_den"]
    for p in (1, 2):
        for i in range(config.n_prosumers):
            hi = upper(config, i, p)
            u = np.where(prev[i] == 0, hi, 0) if p == 1 else rng.integers(0, hi + 1, dtype=np.int64)
            if p == 2 and i == 0:
                ev = 3 * N + 2  # an EV lane (bound 1 kW); its word straddles into the trades at N = 5
                last = config.nu - 2  # in the last word (partial at N = 5)
                for k, value, read in ((ev, hi[ev] + 1, hi[ev] + 1), (last, -1, 2**32 - 1)):
                    bad = u.copy()
                    bad[k] = value
                    bad[-1] = -1  # a later lane out of bounds too: the first is named
                    with pytest.raises(CoordinatorError) as e:
                        coord.upload(i, 0, p, bad)
                    assert errname(e) == "OutOfBounds" and e.value.values == (k, read, hi[k])
            res = coord.upload(i, 0, p, u)
            c = fp.combine(u, prev[i], num, den)
            assert res.theta2 == fp.theta2(c, prev[i])
            assert res.committed_hash == keccak(fp.pack(c))
            prev[i] = c
