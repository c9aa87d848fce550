"""Fixtures of the chain tests: small and paper-size coordinator configs, synthetic iterates, and a
real stored batch run for the audit."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import xarray as xr

from ecjax.chain import fixedpoint as fp
from ecjax.chain.client import ANVIL, Chain, Coordinator
from ecjax.chain.config import CoordinatorConfig
from ecjax.chain.sample import Inputs
from ecjax.community import generate_community
from ecjax.disturbance import synthetic_profiles
from ecjax.experiment import run_batch
from ecjax.fcmpc import FCMPCSettings
from ecjax.qp import IPM
from ecjax.simulate import Options
from ecjax.weights import CostWeights

# eth-tester / web3 warnings that are not DeprecationWarnings would fail under filterwarnings=error;
# none is known today. Narrow ignores go here if one appears.


def small_config(**kw) -> CoordinatorConfig:
    """n = 4 agents (prosumers 0, 2, 3), N = 3: nu = 21. Distinct bounds per block and agent."""
    base = dict(
        n=4,
        N=3,
        prosumer_ids=(0, 2, 3),
        bounds=[(2.0, 1.5, 1.0, 3.0, 0.5), (2.5, 2.0, 1.5, 2.0, 0.75), (1.0, 1.0, 1.0, 1.0, 1.0)],
        kappa=0.05,
        p_max=6,
        period_s=600,
        model={"test": "small"},
    )
    base.update(kw)
    return CoordinatorConfig(**base)


def paper_config(**kw) -> CoordinatorConfig:
    """n = 15 agents, 7 prosumers, N = 24 (paper case): nu = 432."""
    base = dict(
        n=15,
        N=24,
        prosumer_ids=(0, 2, 4, 6, 8, 10, 12),
        bounds=[(2.5, 2.5, 2.5, 2.5, 2.5)] * 7,
        kappa=1e-3,
        p_max=50,
        period_s=600,
        model={"test": "paper"},
    )
    base.update(kw)
    return CoordinatorConfig(**base)


def upper(config: CoordinatorConfig, i: int, p: int) -> np.ndarray:
    """Fixed-point per-lane upper bounds of prosumer i at iteration p."""
    bc, bd, ugb, ev, bt = config.fixed_bounds()[i]
    hi = np.full(config.nu, bt if p else 0, dtype=np.int64)
    for k, v in enumerate((bc, bd, ugb, ev)):
        hi[k * config.N : (k + 1) * config.N] = v
    return hi


def random_iterate(rng, config: CoordinatorConfig, i: int, p: int) -> np.ndarray:
    """Uniform random vector within prosumer i's bounds at iteration p (trades 0 at p = 0)."""
    hi = upper(config, i, p)
    return rng.integers(0, hi + 1, dtype=np.int64)


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


@pytest.fixture
def chain():
    return Chain.tester()


@pytest.fixture
def small(chain) -> tuple[Coordinator, CoordinatorConfig]:
    config = small_config()
    return Coordinator.deploy(chain, config), config


def run_initial(coord: Coordinator, config: CoordinatorConfig, rng, t: int = 0, skip=()):
    """Every prosumer (but `skip`) uploads a random state and islanded plan; returns the plans."""
    u0 = {}
    for i in range(config.n_prosumers):
        if i in skip:
            continue
        u0[i] = random_iterate(rng, config, i, 0)
        coord.upload_state(i, t, int(rng.integers(0, 4 * fp.SCALE)), int(rng.integers(0, 8 * fp.SCALE)), u0[i])
    return u0


# ---------------------------------------------------------------- a real stored run (audit tests)


@dataclasses.dataclass(frozen=True)
class StoredRun:
    """A batch run with one kept sample and its FC-MPC iterates, and the inputs that made it."""

    inputs: Inputs
    trajectories: xr.Dataset
    summary: xr.Dataset
    delta: float


def make_stored_run(T: int = 3, N: int = 5, p_max: int = 4, seed: int = 3) -> StoredRun:
    """n = 4 agents (2 prosumers), N = 5, T = 3 steps, p_max = 4, the IPM at 1e-8, δ = 0.05, and
    r_ugb = r_ev = 1e-3: every input curved, so that each subproblem has one optimum and the
    solve-mode audit (which re-solves from the chain's rounded data) compares plans, not
    points of an optimal face (`ecjax.chain.tolerance`).

    With these settings (ϰ = 1e-3) step 0 stops at the tolerance ϰ (iteration 2) and steps
    1-2 at p_max."""
    c = generate_community(4, prosumer_share=0.5, seed=1)
    prof = synthetic_profiles(4, seed=1)
    inputs = Inputs(
        community=c,
        profiles=prof,
        options=Options(T=T, record_plans=True),
        N=N,
        fc=FCMPCSettings(kappa=1e-3, p_max=p_max),
        weights=CostWeights(r_ugb=1e-3, r_ev=1e-3),
        solver=IPM(eps_abs=1e-8, eps_rel=1e-8),
        seed=seed,
    )
    res = run_batch(
        c, prof, [0.05], 1, seed=seed, options=inputs.options, N=N, fc=inputs.fc, weights=inputs.weights,
        solver=inputs.solver, keep=1,
    )
    return StoredRun(inputs=inputs, trajectories=res.trajectories, summary=res.summary, delta=0.05)


@pytest.fixture(scope="session")
def stored_run() -> StoredRun:
    return make_stored_run()


@pytest.fixture(scope="module")
def anvil():
    """An anvil node on 127.0.0.1 (npm's @foundry-rs/anvil, `npm ci` in contracts/)."""
    if not ANVIL.exists():
        pytest.skip(f"anvil not installed at {ANVIL} (run `npm ci` in contracts/).")
    with Chain.anvil() as chain:
        yield chain
