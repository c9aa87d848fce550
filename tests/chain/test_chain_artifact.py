"""The committed artifacts are what the pinned solcjs compiles from contracts/*.sol."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from ecjax.chain.client import load_artifact

pytestmark = pytest.mark.chain

ROOT = Path(__file__).resolve().parents[2]
CONTRACTS = ("FCMPCCoordinator", "FCMPCCommitCoordinator")


def test_fresh_compile_matches_committed_artifacts(tmp_path):
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed: cannot run contracts/compile.js (solcjs).")
    if not (ROOT / "contracts" / "node_modules" / "solc").exists():
        pytest.skip("contracts/node_modules/solc missing: run `npm ci` in contracts/.")
    subprocess.run([node, str(ROOT / "contracts" / "compile.js"), str(tmp_path)], timeout=300, check=True)
    for name in CONTRACTS:
        out = (tmp_path / f"{name}.json").read_text()
        committed = (ROOT / "ecjax" / "chain" / "artifacts" / f"{name}.json").read_text()
        assert out == committed, f"{name} artifact is stale: run `node contracts/compile.js` and commit it."
        fresh = json.loads(out)
        assert fresh["compiler"]["version"].startswith("0.8.37+")
        assert load_artifact(f"{name}.json")["bytecode"] == fresh["bytecode"]
