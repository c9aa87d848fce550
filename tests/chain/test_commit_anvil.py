"""Commit-and-challenge coordination on a local anvil node (127.0.0.1): an honest step
finalizes, each planted fraud is slashed, a false challenge pays the committer."""

from __future__ import annotations

import numpy as np
import pytest

from ecjax.chain.commit import CommitCoordinator, Fraud, OffChainNegotiation, find_frauds
from ecjax.chain.commit import plant_fraud as plant
from ecjax.chain.mirror import Mirror

from .commit_helpers import negotiate
from .conftest import small_config

pytestmark = pytest.mark.chain


def test_commit_mode_on_anvil(anvil):
    assert anvil.w3.provider.endpoint_uri.startswith("http://127.0.0.1:")
    rng = np.random.default_rng(11)
    config = small_config()
    coord = CommitCoordinator.deploy(anvil, config)
    mirror = coord.mirror()
    (challenger,) = anvil.new_accounts(1)
    neg = OffChainNegotiation(Mirror.from_config(config))
    honest = negotiate(neg, config, rng, 0)
    coord.commit(honest, 0)
    assert coord.challenge(honest, Fraud(0, "theta", 1, 2), challenger).fraud == "none"
    assert coord.credit(coord.agents[0].address) == coord.params["challenge_bond"]
    kinds = ["combination", "bounds", "theta", "stop", "applied"]
    for t, kind in enumerate(kinds, start=1):
        bad, p, i = plant(negotiate(neg, config, rng, t), kind, mirror)
        fraud = find_frauds(bad, mirror)[0]
        coord.commit(bad, t % config.n_prosumers)
        res = coord.challenge(bad, fraud, challenger)
        assert (res.fraud, coord.commitment(t)["status"]) == (kind, "slashed")
    anvil.increase_time(config.period_s + 1)
    coord.finalize(0, len(kinds) + 1)
    assert coord.commitment(0)["status"] == "final"
    assert coord.credit(challenger.address) == len(kinds) * (coord.params["challenge_bond"] + coord.params["bond"] // 2)
