"""The audit binds a stored sample to its origin: the sample run again from the stored config by
the batch code reproduces every stored array, and a stored value or config changed after the
run is found and named, in every mode; each audit leaves a receipt in the store that the
store's integrity checks ignore, and a later audit on the same persistent chain checks the
contract an earlier receipt names."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import zarr

from ecjax import store
from ecjax.chain.audit import main
from ecjax.chain.origin import check_origin
from ecjax.config import config_hash

from .tiny_store import DELTA, audit_args, write_store

pytestmark = [pytest.mark.chain, pytest.mark.slow]



@pytest.fixture(scope="module")
def cell(tmp_path_factory) -> tuple[Path, str]:
    path, (cid,) = write_store(tmp_path_factory.mktemp("origin"))
    return path, cid


def copy_of(path: Path, dest: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    copy = dest / "copy.zarr"
    shutil.copytree(path, copy)
    return copy


def changed_value(path: Path, cid: str, dest: Path, group: str, var: str, index: tuple, *, rel=None, add=None):
    """A copy of the store with one stored value changed (through zarr) and the cell sealed again:
    consistent checksums, other numbers. Returns (copy, old value, new value)."""
    copy = copy_of(path, dest)
    arr = zarr.open_array(store=str(copy), path=f"cells/{cid}/{group}/{var}", mode="r+", zarr_format=3)
    a = np.asarray(arr[...])
    old = float(a[index])
    a[index] = old * (1 + rel) if rel is not None else old + add
    arr[...] = a
    store.seal_cell(copy, cid)
    return copy, old, float(a[index])


def largest_lane(path: Path, cid: str) -> tuple[int, str]:
    """The input lane of prosumer 0's iterate 2 at step 1 with the largest magnitude, and its name."""
    from ecjax.chain.audit import lane_name
    from ecjax.layout import AgentLayout

    arr = zarr.open_array(store=str(path), path=f"cells/{cid}/trajectories/u_iter", mode="r", zarr_format=3)
    lane = int(np.argmax(np.abs(np.asarray(arr[0, 0, 1, 2, 0]))))
    cfg = json.loads(store.cell_attrs(path, cid)["config"])
    return lane, lane_name(AgentLayout(int(cfg["community"]["n"]), int(cfg["sim"]["N"])), 0, lane)


def changed_config(path: Path, cid: str, dest: Path, key: str, value, *, rewrite_hash: bool) -> Path:
    """A copy of the store whose cell config has `key` (dotted) set to `value`; with
    `rewrite_hash`, the recorded config hash and seed are rewritten to match it."""
    copy = copy_of(path, dest)
    group = zarr.open_group(store=str(copy), path=f"cells/{cid}", mode="r+", zarr_format=3)
    cfg = json.loads(group.attrs["config"])
    sec, name = key.split(".")
    cfg[sec][name] = value
    new = {"config": json.dumps(cfg, sort_keys=True, default=str)}
    if rewrite_hash:
        new.update(config_hash=config_hash(cfg), seed=int(cfg["sim"]["seed"]))
    group.update_attributes(new)
    return copy


def origin(path, cid):
    return check_origin(store.open_cell(path, cid), 0, DELTA)


def quantities(check) -> set[str]:
    return {d.quantity for d in check.differences}


args = audit_args


# ---------------------------------------------------------------- a clean store


def test_clean_store_reruns_to_the_bit(cell):
    path, cid = cell
    o = origin(path, cid)
    assert o.verified, [d.describe() for d in o.differences[:5]]
    assert o.config_hash == o.recorded_hash
    for q in ("u_iter", "u_star", "theta_trace", "iters", "qp_status", "qp_steps", "load", "pv", "price", "eb",
              "u_bt", "E1", "E8", "summary.phi", "summary.qp_steps"):  # fmt: skip
        assert o.checks[q].count > 0 and o.checks[q].failed == 0, q
    # the same machine and build reproduce the run exactly (module docstring of ecjax.chain.origin)
    assert max(s.max_abs for s in o.checks.values()) == 0.0


def test_audit_default_mode_verifies_and_leaves_a_receipt(cell, tmp_path, capsys):
    path, cid = cell
    copy = copy_of(path, tmp_path)
    assert main(args(copy, cid, out=tmp_path / "r")) == 0
    out = capsys.readouterr().out
    assert out.startswith("verified:") and "stored mode" in out
    data = json.loads((tmp_path / "r" / "audit.json").read_text())
    assert data["mode"] == "stored" and data["origin"]["verified"] and data["origin"]["n_differences"] == 0
    (receipt,) = store.audits(copy, cid)
    assert receipt["verdict"] == "verified" and receipt["mode"] == "stored"
    assert receipt["config_hash"] == receipt["recorded_config_hash"] == store.cell_attrs(copy, cid)["config_hash"]
    ch = receipt["chain"]
    assert ch["kind"] == "tester" and ch["address"] == data["chain"]["address"]
    assert ch["config_hash_on_chain"] == data["chain"]["config_hash"]
    assert 0 <= ch["deploy_block"] < ch["last_block"]
    # the receipt is no part of the cell's data: the integrity checks still pass, in full
    assert store.verify_cell(copy, cid).state == "verified"
    assert store.verify_cell(copy, cid, full=False).state == "verified"
    assert main(args(copy, cid, "--mode", "solve", out=tmp_path / "s")) == 0
    assert [r["mode"] for r in store.audits(copy, cid)] == ["stored", "solve"]
    assert store.verify_cell(copy, cid).state == "verified"


# ---------------------------------------------------------------- changed stored values


def test_iterate_changed_by_1e3_relative_is_named(cell, tmp_path):
    path, cid = cell
    lane, where = largest_lane(path, cid)
    # (risk, sample, time, iterate0, prosumer, input): step 1, iterate 2, prosumer 0
    copy, old, new = changed_value(path, cid, tmp_path, "trajectories", "u_iter", (0, 0, 1, 2, 0, lane), rel=1e-3)
    assert abs(new - old) > 1e-4
    o = origin(copy, cid)
    (d,) = o.differences
    assert (d.quantity, d.step, d.iteration, d.agent, d.where) == ("u_iter", 1, 2, 0, where)
    assert (d.chain, d.stored) == (old, new) and d.sides == ("re-run", "stored")


def test_iterate_changed_fails_the_default_audit(cell, tmp_path, capsys):
    path, cid = cell
    lane, where = largest_lane(path, cid)
    copy, _, _ = changed_value(path, cid, tmp_path, "trajectories", "u_iter", (0, 0, 1, 2, 0, lane), rel=1e-3)
    assert main(args(copy, cid, out=tmp_path / "r")) == 1
    assert capsys.readouterr().out.startswith(f"not verified: first difference: u_iter {where} (step 1, iteration 2, agent 0)")
    first = json.loads((tmp_path / "r" / "audit.json").read_text())["first_difference"]
    assert first["sides"] == ["re-run", "stored"]  # found by the re-run, before the chain
    (receipt,) = store.audits(copy, cid)
    assert receipt["verdict"] == "not verified" and receipt["first_difference"].startswith("u_iter")


def test_load_draw_changed_is_named(cell, tmp_path):
    path, cid = cell
    copy, _, _ = changed_value(path, cid, tmp_path, "trajectories", "load", (0, 0, 2, 3), rel=1e-3)
    o = origin(copy, cid)
    (d,) = o.differences
    assert (d.quantity, d.step, d.agent) == ("load", 2, 3)


def test_price_forecast_changed_is_named(cell, tmp_path):
    """The store holds no forecast arrays of its own (forecasts and profiles are rebuilt from the
    config); the stored `price` is the price profile the plans were priced with."""
    path, cid = cell
    copy, _, _ = changed_value(path, cid, tmp_path, "trajectories", "price", (0, 0, 1), rel=1e-3)
    o = origin(copy, cid)
    (d,) = o.differences
    assert (d.quantity, d.step) == ("price", 1)


def test_stored_index_changed_is_named(cell, tmp_path):
    path, cid = cell
    copy, old, new = changed_value(path, cid, tmp_path, "summary", "E1", (0, 0), add=1e-6)  # € 1e-6
    o = origin(copy, cid)
    (d,) = o.differences
    assert d.quantity == "E1" and (d.chain, d.stored) == (old, new)
    assert d.tolerance == pytest.approx(1e-8 * (1 + max(abs(old), abs(new))))  # 1e-2 of the solver's 1e-6


def test_integer_count_changed_is_named(cell, tmp_path):
    path, cid = cell
    copy, _, _ = changed_value(path, cid, tmp_path, "summary", "qp_steps", (0, 0, 2), add=1)
    o = origin(copy, cid)
    (d,) = o.differences
    assert (d.quantity, d.step, d.tolerance) == ("summary.qp_steps", 2, None)


# ---------------------------------------------------------------- changed stored config


def test_seed_changed_without_the_hash_is_named(cell, tmp_path):
    path, cid = cell
    copy = changed_config(path, cid, tmp_path, "sim.seed", 1, rewrite_hash=False)
    o = origin(copy, cid)
    q = quantities(o)
    assert o.differences[0].quantity == "config_hash"
    assert {"config_hash", "seed", "load"} <= q  # the first three hours: PV 0 in both draws


def test_seed_changed_with_the_hash_is_named(cell, tmp_path, capsys):
    path, cid = cell
    copy = changed_config(path, cid, tmp_path, "sim.seed", 1, rewrite_hash=True)
    o = origin(copy, cid)
    q = quantities(o)
    assert "config_hash" not in q and "seed" not in q
    assert {"load", "E1"} <= q  # other draws, another day
    # and the audit (default mode) fails on it, though the chain agrees with the stored data
    assert main(args(copy, cid, out=tmp_path / "r")) == 1
    assert capsys.readouterr().out.startswith("not verified: first difference: ")
    data = json.loads((tmp_path / "r" / "audit.json").read_text())
    assert data["chain"]["config_hash"] == data["chain"]["config_hash_on_chain"]
    assert not data["origin"]["verified"]


def test_kappa_changed_is_named(cell, tmp_path, capsys):
    """fcmpc.kappa x1.001 in the stored config: the recorded hash no longer matches. With the
    recorded hash rewritten too, the stored data may well be what the changed config computes
    (no θ of the run lies between ϰ and 1.001·ϰ); the receipt of an earlier audit, which
    recorded the config's hash, then names the change."""
    path, cid = cell
    kappa = json.loads(store.cell_attrs(path, cid)["config"])["fcmpc"]["kappa"]
    copy = changed_config(path, cid, tmp_path / "a", "fcmpc.kappa", kappa * 1.001, rewrite_hash=False)
    o = origin(copy, cid)
    assert o.differences[0].quantity == "config_hash" and o.recorded_hash != o.config_hash

    audited = copy_of(path, tmp_path / "b")
    assert main(args(audited, cid, out=tmp_path / "r0")) == 0
    group = zarr.open_group(store=str(audited), path=f"cells/{cid}", mode="r+", zarr_format=3)
    cfg = json.loads(group.attrs["config"])
    cfg["fcmpc"]["kappa"] = kappa * 1.001
    group.update_attributes({"config": json.dumps(cfg, sort_keys=True), "config_hash": config_hash(cfg)})
    capsys.readouterr()
    assert main(args(audited, cid, out=tmp_path / "r1")) == 1
    data = json.loads((tmp_path / "r1" / "audit.json").read_text())
    assert "receipt_config_hash" in {d["quantity"] for d in data["differences"]}
    assert data["run"]["kappa"] == kappa * 1.001  # the chain was deployed with the changed ϰ


# ---------------------------------------------------------------- receipts on a persistent chain


def test_earlier_receipt_checked_on_the_same_rpc_chain(cell, anvil, tmp_path, monkeypatch, capsys):
    from eth_account import Account

    path, cid = cell
    copy = copy_of(path, tmp_path)
    acct = Account.create()
    anvil.w3.provider.make_request("anvil_setBalance", [acct.address, hex(10**21)])
    monkeypatch.setenv("AUDIT_DEPLOYER_KEY", acct.key.hex())
    rpc = ["--chain", "rpc", "--url", anvil.w3.provider.endpoint_uri, "--key-env", "AUDIT_DEPLOYER_KEY"]
    assert main(args(copy, cid, *rpc, out=tmp_path / "a")) == 0
    (first,) = store.audits(copy, cid)
    assert first["chain"]["kind"] == "rpc" and first["chain"]["chain_id"] == 31337
    assert main(args(copy, cid, *rpc, out=tmp_path / "b")) == 0
    notes = json.loads((tmp_path / "b" / "audit.json").read_text())["notes"]
    assert any(first["chain"]["address"] in n and "commits to the stored config's hash" in n for n in notes), notes
    # a receipt whose contract commits to another configuration (here: another iteration period)
    f = copy / "cells" / cid / store.AUDITS
    data = json.loads(f.read_text())
    data["receipts"][0]["chain"]["period_s"] += 1
    f.write_text(json.dumps(data))
    capsys.readouterr()
    assert main(args(copy, cid, *rpc, out=tmp_path / "c")) == 1
    assert capsys.readouterr().out.startswith("not verified: first difference: receipt_contract")
    assert acct.key.hex().removeprefix("0x") not in f.read_text()
