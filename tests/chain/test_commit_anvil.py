"""Commit-and-challenge coordination on a local anvil node (127.0.0.1): an honest step
finalizes, each planted fraud is slashed, a false challenge pays the committer."""

from __future__ import annotations

import numpy as np
import pytest

from ecjax.chain.commit import CommitCoordinator, Fraud, find_frauds
from ecjax.chain.commit import plant_fraud as plant

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
    neg = coord.negotiation()
    honest = negotiate(neg, config, rng, 0)
    coord.commit(honest, 0)
    assert coord.challenge(honest, Fraud(0, "theta", 1, 2), challenger).fraud == "none"
    assert coord.credit(coord.agents[0].address) == coord.params["challenge_bond"]
    kinds = ["combination", "bounds", "theta", "stop", "applied"]
    for t, kind in enumerate(kinds, start=1):
        bad, p, i = plant(negotiate(neg, config, rng, t), kind, mirror, coord.domain(), coord.agents)
        fraud = find_frauds(bad, mirror, coord.domain())[0]
        coord.commit(bad, t % config.n_prosumers)
        res = coord.challenge(bad, fraud, challenger)
        assert (res.fraud, coord.commitment(t)["status"]) == (kind, "slashed")
    anvil.increase_time(config.period_s + 1)
    coord.finalize(0, len(kinds) + 1)
    assert coord.commitment(0)["status"] == "final"
    assert coord.credit(challenger.address) == len(kinds) * (coord.params["challenge_bond"] + coord.params["bond"] // 2)


def test_commitments_already_on_chain_checked_by_a_watcher(anvil, tmp_path, capsys):
    """A watcher holding only the records and the contract's address: an honest step matches,
    a misreported message (consistent but for its signature) is found and slashed, records that
    are not what was committed are reported; `ecjax audit --contract` refuses an address that
    holds no commit coordinator (exit 2, naming the setting)."""
    from ecjax.chain.audit import main
    from ecjax.chain.client import Coordinator
    from ecjax.chain.commit import CommitCoordinator as CC
    from ecjax.chain.commit import check_onchain, records_path, write_records

    from .tiny_store import audit_args

    rng = np.random.default_rng(3)
    config = small_config()
    coord = CC.deploy(anvil, config)
    neg = coord.negotiation()
    honest = negotiate(neg, config, rng, 0)
    bad = plant(negotiate(neg, config, rng, 1), "misreport", coord.mirror(), coord.domain(), coord.agents)[0]
    for rec in (honest, bad):
        coord.commit(rec, rec.t)
    watcher = CC.at(anvil, coord.address.lower())
    assert watcher.agents == [] and watcher.params["agents"] == coord.params["agents"]
    wrong = honest.copy()
    wrong.theta2[1][0] += 1
    check = check_onchain(watcher, [wrong])
    assert check.problems and "root" in check.problems[0] and not check.frauds
    (challenger,) = anvil.new_accounts(1)
    check = check_onchain(watcher, [honest, bad], challenge=True, challenger=challenger)
    assert not check.problems and [(f.kind, f.t) for f in check.frauds] == [("signature", 1)]
    assert [r.fraud for r in check.challenges] == ["signature"] and watcher.commitment(1)["status"] == "slashed"
    assert [s["matches"] for s in check.steps] == [True, True] and check.to_dict()["verdict"] == "not verified"
    # the CLI: addresses that hold no commit coordinator
    store = tmp_path / "store"
    write_records(records_path(store, "c", 0, 0.05), [honest], {"address": coord.address, "kind": "anvil"})
    url = anvil.w3.provider.endpoint_uri
    full = Coordinator.deploy(anvil, config, coord.agents, fund_wei=0)
    for address, why in ((challenger.address, "no contract"), (full.address, "not an FCMPCCommitCoordinator")):
        rc = main(audit_args(store, "c", "--coordination", "commit", "--chain", "rpc", "--url", url,
                             "--contract", address, out=tmp_path / "r"))  # fmt: skip
        err = capsys.readouterr().err
        assert rc == 2 and "--contract" in err and why in err, err
    rc = main(audit_args(store, "c", "--coordination", "commit", "--chain", "rpc", "--url", url, "--contract", "0x12"))
    assert rc == 2 and "--contract '0x12' is not an address" in capsys.readouterr().err
    rc = main(audit_args(store, "c", "--coordination", "commit", "--chain", "rpc", "--url", url, "--contract",
                         coord.address, sample=1))  # fmt: skip
    assert rc == 2 and "no committed records of sample 1" in capsys.readouterr().err
