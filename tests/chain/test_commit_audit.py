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


@pytest.mark.slow
def test_cli_commit_mode_keeps_the_records(tmp_path):
    """`ecjax audit --coordination commit` on a tiny store (about a minute: the store is written
    and its sample run again first)."""
    path, cells = write_store(tmp_path / "store")
    rc = main(audit_args(path, cells[0], "--coordination", "commit", out=tmp_path / "rep"))
    assert rc == 0
    recs, meta = read_records(records_path(path, cells[0], 0, DELTA))
    assert len(recs) == 3 and meta["kind"] == "tester" and meta["address"].startswith("0x")
    assert main(audit_args(path, cells[0], "--challenge", out=tmp_path / "rep2")) == 2  # full mode: no challenge
