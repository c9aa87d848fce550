"""`ecjax audit` on a real results store (made by the sweep): exit status 0 when verified, 1 with
the first difference named when a stored value was changed, 2 on bad input, 3 when the chain
cannot be used; chains tester, anvil (started and stopped) and rpc (key from the environment
or from an encrypted keystore)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import zarr

from ecjax import store
from ecjax.chain.audit import main
from ecjax.chain.client import ANVIL

from .tiny_store import audit_args, write_store

pytestmark = [pytest.mark.chain, pytest.mark.slow]



@pytest.fixture(scope="module")
def cell(tmp_path_factory) -> tuple[str, str]:
    path, (cid,) = write_store(tmp_path_factory.mktemp("store"))
    return str(path), cid


args = audit_args


def changed_copy(path: str, cid: str, dest: Path, group: str, var: str, index: tuple, delta: float) -> Path:
    """A copy of the store with one stored value changed (written through zarr) and the cell
    sealed again: a stored run with other numbers, not a damaged store (which the audit refuses
    before replaying, exit 2)."""
    copy = dest / "changed.zarr"
    shutil.copytree(path, copy)
    arr = zarr.open_array(store=str(copy), path=f"cells/{cid}/{group}/{var}", mode="r+", zarr_format=3)
    a = np.asarray(arr[...])
    a[index] += delta
    arr[...] = a
    store.seal_cell(copy, cid)
    return copy


def test_verified_store_exits_0(cell, tmp_path, capsys):
    path, cid = cell
    assert main(args(path, cid, "--mode", "stored", out=tmp_path / "r")) == 0
    out = capsys.readouterr().out
    assert out.startswith("verified:")
    data = json.loads((tmp_path / "r" / "audit.json").read_text())
    assert data["verdict"] == "verified" and data["run"]["cell"] == cid and data["chain"]["kind"] == "tester"
    assert (tmp_path / "r" / "audit.md").read_text().startswith("# On-chain audit: verified")


def test_ecjax_audit_command_solve_mode(cell, tmp_path, capsys):
    from ecjax.cli import main as ecjax_main

    path, cid = cell
    assert ecjax_main(["audit", *args(path, cid, "--mode", "solve", out=tmp_path / "r")]) == 0
    data = json.loads((tmp_path / "r" / "audit.json").read_text())
    assert data["verified"] and data["mode"] == "solve"
    assert data["tx_count"]["by_kind"]["upload"] > 0


@pytest.mark.parametrize(
    "group, var, index, delta, quantity",
    [
        ("trajectories", "u_iter", (0, 0, 1, 2, 0, 7), 0.05, "u_iter"),  # risk, sample, time, iterate0, prosumer, input
        ("trajectories", "u_ugb", (0, 0, 2, 1), 0.05, "applied_u_ugb"),  # risk, sample, time, agent
        ("summary", "E1", (0, 0), 0.01, "E1"),
    ],
)
def test_changed_store_exits_1_and_names_it(cell, tmp_path, capsys, group, var, index, delta, quantity):
    """The re-run from the stored config names the changed array first (its differences come
    first), the chain's comparison names it too (`quantity`)."""
    path, cid = cell
    copy = changed_copy(path, cid, tmp_path, group, var, index, delta)
    assert main(args(copy, cid, "--mode", "stored", out=tmp_path / "r")) == 1
    out = capsys.readouterr().out
    assert out.startswith(f"not verified: first difference: {var}")
    data = json.loads((tmp_path / "r" / "audit.json").read_text())
    first = data["first_difference"]
    assert first["quantity"] == var and first["sides"] == ["re-run", "stored"]
    assert quantity in {d["quantity"] for d in data["differences"] if d["sides"] != ["re-run", "stored"]}
    if var == "u_iter":
        assert (first["step"], first["iteration"], first["agent"], first["where"]) == (1, 2, 0, "bd[2]")


def test_anvil_is_started_and_stopped(cell, tmp_path):
    if not ANVIL.exists():
        pytest.skip(f"anvil not installed at {ANVIL} (run `npm ci` in contracts/).")
    path, cid = cell
    assert main(args(path, cid, "--chain", "anvil", "--mode", "stored", out=tmp_path / "r")) == 0
    data = json.loads((tmp_path / "r" / "audit.json").read_text())
    assert data["chain"]["kind"] == "anvil" and data["chain"]["chain_id"] == 31337


def test_bad_input_exits_2(cell, tmp_path, capsys):
    path, cid = cell
    assert main([str(path), "--sample", "0", "--risk", "0.05"]) == 2  # --cell missing
    assert main(args(path, cid)[:-1] + ["--risk", "0.7"]) == 2
    assert "--risk must be in (0, 0.5]" in capsys.readouterr().err
    assert main(args(tmp_path / "nowhere.zarr", cid)) == 2
    assert main(args(path, "scenario=islanded")) == 2
    assert "not a finished cell" in capsys.readouterr().err
    assert main([str(path), "--cell", cid, "--sample", "5", "--risk", "0.05"]) == 2
    assert "was not kept" in capsys.readouterr().err
    assert main([str(path), "--cell", cid, "--sample", "0", "--risk", "0.1"]) == 2
    assert "risk=0.1 is not stored" in capsys.readouterr().err
    assert main(args(path, cid, "--chain", "rpc")) == 2
    assert "--url is required" in capsys.readouterr().err
    assert main(args(path, cid, "--chain", "tester", "--url", "http://127.0.0.1:1")) == 2
    assert main(["--help"]) == 0


# ---------------------------------------------------------------- rpc: key from env or keystore


def funded_account(anvil):
    from eth_account import Account

    acct = Account.create()
    anvil.w3.provider.make_request("anvil_setBalance", [acct.address, hex(10**21)])
    return acct


def test_rpc_with_encrypted_keystore(cell, anvil, tmp_path, monkeypatch, capsys):
    from eth_account import Account

    path, cid = cell
    url = anvil.w3.provider.endpoint_uri
    acct = funded_account(anvil)
    keystore = tmp_path / "deployer.json"
    keystore.write_text(json.dumps(Account.encrypt(acct.key, "correct horse")))
    monkeypatch.setenv("AUDIT_KEYSTORE_PASSWORD", "wrong")
    rpc = ["--chain", "rpc", "--url", url, "--keystore", str(keystore), "--password-env", "AUDIT_KEYSTORE_PASSWORD"]
    assert main(args(path, cid, *rpc, "--mode", "stored", out=tmp_path / "bad")) == 3
    assert "chain error" in capsys.readouterr().err
    monkeypatch.setenv("AUDIT_KEYSTORE_PASSWORD", "correct horse")
    assert main(args(path, cid, *rpc, "--mode", "stored", out=tmp_path / "r")) == 0
    data = json.loads((tmp_path / "r" / "audit.json").read_text())
    assert data["verified"] and data["chain"]["kind"] == "rpc"
    deploy = next(t for t in data["transactions"] if t["kind"] == "deploy")
    tx = anvil.w3.eth.get_transaction(deploy["tx_hash"])
    assert tx["from"] == acct.address  # deployed with the keystore's key
    text = (tmp_path / "r" / "audit.json").read_text() + (tmp_path / "r" / "audit.md").read_text()
    assert acct.key.hex().removeprefix("0x") not in text


def test_rpc_with_key_from_environment(cell, anvil, tmp_path, monkeypatch, capsys):
    path, cid = cell
    url = anvil.w3.provider.endpoint_uri
    rpc = ["--chain", "rpc", "--url", url, "--key-env", "AUDIT_DEPLOYER_KEY", "--mode", "stored"]
    monkeypatch.delenv("AUDIT_DEPLOYER_KEY", raising=False)
    assert main(args(path, cid, *rpc, out=tmp_path / "none")) == 3
    assert "AUDIT_DEPLOYER_KEY" in capsys.readouterr().err
    acct = funded_account(anvil)
    monkeypatch.setenv("AUDIT_DEPLOYER_KEY", acct.key.hex())
    assert main(args(path, cid, *rpc, out=tmp_path / "r")) == 0
    data = json.loads((tmp_path / "r" / "audit.json").read_text())
    assert data["verified"] and data["chain"]["kind"] == "rpc"
    assert acct.key.hex().removeprefix("0x") not in (tmp_path / "r" / "audit.json").read_text()
    # what the agents did not spend went back to the deployer
    assert data["tx_count"]["by_kind"]["refund"] == data["tx_count"]["by_kind"]["fund"]
    for a in data["chain"]["agents"]:
        assert anvil.w3.eth.get_balance(a) < 10**15
