"""The audit in commit-and-challenge mode: a stored run negotiated off chain and committed step
by step verifies; a dishonest committer is found and, on request, proven and slashed; the
committed records are kept in the store."""

from __future__ import annotations

import pytest

from ecjax.chain.audit import audit_run, main
from ecjax.chain.client import Chain
from ecjax.chain.commit import plant_fraud as plant
from ecjax.chain.commit import read_records, records_path

from .tiny_store import DELTA, audit_args, write_store

pytestmark = pytest.mark.chain


def test_commit_mode_audit_of_a_stored_run(stored_run):
    rep = audit_run(
        stored_run.trajectories, stored_run.inputs, Chain.tester(), "stored", summary=stored_run.summary,
        coordination="commit",
    )  # fmt: skip
    assert rep.verified, rep.first_difference and rep.first_difference.describe()
    assert rep.run["coordination"] == "commit"
    assert rep.gas["by_kind"]["commit"]["count"] == 3 and "upload" not in rep.gas["by_kind"]
    assert rep.checks["commitment_leaves"].failed == 0 and rep.checks["commitment_leaves"].count > 0
    coord = rep.replay.coordinator
    assert [coord.commitment(t)["root"] for t in range(3)] == [r.root for r in rep.replay.records]
    # the iterations are the full mode's: same stops as the stored run
    assert [it["chain"] for it in rep.iterations] == [it["stored"] for it in rep.iterations]


def test_commit_mode_audit_challenges_a_dishonest_committer(stored_run):
    def committer(rec, mirror):  # lies about one θ of step 1
        return plant(rec, "theta", mirror)[0] if rec.t == 1 else rec

    rep = audit_run(
        stored_run.trajectories, stored_run.inputs, Chain.tester(), "stored", summary=stored_run.summary,
        coordination="commit", challenge=True, committer=committer,
    )  # fmt: skip
    assert not rep.verified
    bad = [d for d in rep.differences if d.quantity == "commitment"]
    assert len(bad) == 1 and bad[0].step == 1 and "theta" in bad[0].note
    assert any("slashed (theta)" in n for n in rep.notes)
    assert rep.replay.coordinator.commitment(1)["status"] == "slashed"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny store written by the sweep (the slow part of the CLI tests, shared by them)."""
    return write_store(tmp_path_factory.mktemp("commit-store"))


@pytest.mark.slow
def test_cli_commit_mode_keeps_the_records(tiny, tmp_path):
    """`ecjax audit --coordination commit` on a tiny store (about a minute: the store is written
    and its sample run again first)."""
    path, cells = tiny
    rc = main(audit_args(path, cells[0], "--coordination", "commit", out=tmp_path / "rep"))
    assert rc == 0
    recs, meta = read_records(records_path(path, cells[0], 0, DELTA))
    assert len(recs) == 3 and meta["kind"] == "tester" and meta["address"].startswith("0x")
    assert main(audit_args(path, cells[0], "--challenge", out=tmp_path / "rep2")) == 2  # full mode: no challenge


@pytest.mark.slow
def test_cli_checks_commitments_already_on_chain(tiny, tmp_path, anvil, monkeypatch, capsys):
    """`ecjax audit --coordination commit --contract ADDRESS --chain rpc`: a stored run committed
    on anvil by a dishonest committer, its records kept in the store; a watcher without a key
    finds the wrong leaf (exit 1); with a key from the environment it proves it on chain."""
    import json

    from eth_account import Account

    from ecjax.chain.audit import audit_run, keep_records, load_cell_sample

    path, cells = tiny
    traj, summ, inputs, _ = load_cell_sample(path, cells[0], 0, DELTA)

    def committer(rec, mirror):
        return plant(rec, "theta", mirror)[0] if rec.t == 1 else rec

    report = audit_run(traj, inputs, anvil, "stored", summary=summ, coordination="commit", committer=committer,
                       label=cells[0])  # fmt: skip
    keep_records(path, cells[0], report)
    address = report.chain["address"]
    url = anvil.w3.provider.endpoint_uri
    base = audit_args(path, cells[0], "--coordination", "commit", "--chain", "rpc", "--url", url, "--contract", address)
    monkeypatch.delenv("ECJAX_CHAIN_KEY", raising=False)
    assert main(base + ["--out", str(tmp_path / "r1")]) == 1
    assert "wrong leaf: step 1" in capsys.readouterr().out
    data = json.loads((tmp_path / "r1" / "commitments.json").read_text())
    assert [s["matches"] for s in data["steps"]] == [True] * 3 and data["problems"] == []
    watcher = Account.create()  # its key only in this process's environment
    anvil.send_value(watcher.address, 10**18)
    monkeypatch.setenv("ECJAX_WATCHER_KEY", watcher.key.hex())
    assert main(base + ["--challenge", "--key-env", "ECJAX_WATCHER_KEY", "--out", str(tmp_path / "r2")]) == 1
    data = json.loads((tmp_path / "r2" / "commitments.json").read_text())
    assert [c["fraud"] for c in data["challenges"]] == ["theta"]
    assert report.replay.coordinator.commitment(1)["status"] == "slashed"
    assert watcher.key.hex() not in (tmp_path / "r2" / "commitments.json").read_text()
