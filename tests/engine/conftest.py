"""Shared settings of the engine tests: tiny cells and the repository's conf/."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CONF = ROOT / "conf"
ECJAX = [sys.executable, "-m", "ecjax.cli"]
XLA = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"

# A tiny cell: 3 agents (2 prosumers), 2 samples, 2 closed-loop steps, horizon 4, 3 FC-MPC
# iterations, the engine's default solver (the interior-point method).
TINY = [
    "community=generated",
    "community.n=3",
    "community.prosumer_share=0.5",
    "data=synthetic",
    "sim.S=2",
    "sim.T=2",
    "sim.N=4",
    "fcmpc.p_max=3",
    "progress=false",
]


@pytest.fixture(scope="session")
def jax_cache(tmp_path_factory) -> str:
    """A persistent compilation cache shared by the engine tests' processes."""
    return str(tmp_path_factory.mktemp("jax_cache"))


def subprocess_env() -> dict:
    env = dict(os.environ)
    env.setdefault("XLA_FLAGS", XLA)
    env["ECJAX_CONFIG_DIR"] = str(CONF)
    env["PYTHONWARNINGS"] = "ignore"
    return env
