"""The same basic flow on a local anvil node (127.0.0.1, started and stopped by the test)."""

from __future__ import annotations

import numpy as np
import pytest

from ecjax.chain.client import ANVIL, Chain, Coordinator, CoordinatorError
from ecjax.chain.mirror import Mirror

from .conftest import random_iterate, run_initial, small_config

pytestmark = pytest.mark.chain


@pytest.fixture(scope="module")
def anvil():
    if not ANVIL.exists():
        pytest.skip(f"anvil not installed at {ANVIL} (run `npm ci` in contracts/).")
    with Chain.anvil() as chain:
        assert chain.w3.provider.endpoint_uri.startswith("http://127.0.0.1:")
        yield chain
    assert chain._process is None


def test_basic_flow_on_anvil(anvil):
    rng = np.random.default_rng(7)
    config = small_config(p_max=3)
    coord = Coordinator.deploy(anvil, config)
    assert coord.params["config_hash"] == config.config_hash()
    mirror = Mirror.from_config(config, addresses=[a.address for a in coord.agents])
    # p = 0 with prosumer 2 missing -> close after the deadline
    for i in (0, 1):
        u0 = random_iterate(rng, config, i, 0)
        coord.upload_state(i, 0, 1000 + i, 2000 + i, u0)
        mirror.initial(i, 0, 1000 + i, 2000 + i, u0)
    with pytest.raises(CoordinatorError) as e:
        coord.close_iteration()
    assert e.value.name == "DeadlineNotReached"
    anvil.increase_time(config.period_s + 5)
    with pytest.raises(CoordinatorError) as e:
        coord.upload_state(2, 0, 0, 0, random_iterate(rng, config, 2, 0))
    assert e.value.name == "DeadlinePassed"
    coord.close_iteration()
    mirror.close()
    # p >= 1 until p_max, everyone uploading
    for p in range(1, config.p_max + 1):
        for i in range(config.n_prosumers):
            us = random_iterate(rng, config, i, 1)
            res = coord.upload(i, 0, p, us)
            assert (res.theta2, res.committed_hash) == mirror.upload(i, 0, p, us)
    r = coord.round()
    assert (r.t, r.p) == (mirror.t, mirror.p) == (1, 0)
    with pytest.raises(CoordinatorError) as e:
        coord.upload(0, 1, 1, random_iterate(rng, config, 0, 1))
    assert e.value.name == "WrongRound"
    h = coord.history()
    assert h.head == coord.head() == mirror.head
    run_initial(coord, config, rng, t=1)
    assert coord.round().p == 1


def test_rpc_chain_with_key_from_environment(anvil, monkeypatch):
    """`Chain.rpc`: deployer key from ECJAX_CHAIN_KEY (a fresh in-memory key), gas estimated and
    reverts decoded before sending."""
    from eth_account import Account

    deployer = Account.create()
    anvil.w3.provider.make_request("anvil_setBalance", [deployer.address, hex(10**21)])
    monkeypatch.setenv("ECJAX_CHAIN_KEY", deployer.key.hex())
    chain = Chain.rpc(anvil.w3.provider.endpoint_uri)
    assert chain.funder_address == deployer.address and chain.gas is None
    config = small_config()
    coord = Coordinator.deploy(chain, config)
    rng = np.random.default_rng(3)
    u0 = random_iterate(rng, config, 0, 0)
    coord.upload_state(0, 0, 1, 2, u0)
    with pytest.raises(CoordinatorError) as e:
        coord.upload_state(0, 0, 1, 2, u0)
    assert e.value.name == "AlreadyUploaded"
    monkeypatch.delenv("ECJAX_CHAIN_KEY")
    with pytest.raises(KeyError):
        Chain.rpc(anvil.w3.provider.endpoint_uri)
