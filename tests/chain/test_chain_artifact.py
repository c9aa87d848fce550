"""The committed artifact is what the pinned solcjs compiles from contracts/FCMPCCoordinator.sol."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from ecjax.chain.client import load_artifact

pytestmark = pytest.mark.chain

ROOT = Path(__file__).resolve().parents[2]


def test_fresh_compile_matches_committed_artifact():
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed: cannot run contracts/compile.js (solcjs).")
    if not (ROOT / "contracts" / "node_modules" / "solc").exists():
        pytest.skip("contracts/node_modules/solc missing: run `npm ci` in contracts/.")
    out = subprocess.run(
        [node, str(ROOT / "contracts" / "compile.js"), "-"], capture_output=True, text=True, timeout=300, check=True
    ).stdout
    committed = (ROOT / "ecjax" / "chain" / "artifacts" / "FCMPCCoordinator.json").read_text()
    assert out == committed, "artifact is stale: run `node contracts/compile.js` and commit it."
    fresh = json.loads(out)
    assert fresh["compiler"]["version"].startswith("0.8.37+")
    assert load_artifact()["bytecode"] == fresh["bytecode"]
