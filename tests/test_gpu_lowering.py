"""The compiled programs lower for CUDA, checked on a machine without a GPU (`jax.export`
lowers for any platform): every primitive of the closed loop, the open-loop validation and
the batched QP solvers has a GPU lowering, with no host callback and no CPU-only library
call (LAPACK) in it. So the same code runs on a GPU; the GPU figures themselves come from
`experiments/benchmarks/gpu_check.sh` on a GPU host.

The program lowered for (cpu, cuda) at once, run here, gives `run_batch`'s results: the
module a GPU would compile is the engine's own computation, not a look-alike.

Small sizes: 4 agents, N = 4, T = 4.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import export

from ecjax import experiment, parallel, validate
from ecjax.community import generate_community
from ecjax.disturbance import synthetic_profiles
from ecjax.fcmpc import FCMPCSettings
from ecjax.layout import AgentLayout
from ecjax.plan import make_stage, plan_from_vectors
from ecjax.qp import IPM, prepare, solve_batch
from ecjax.simulate import Options
from ecjax.weights import CostWeights

N, T = 4, 4
FC = FCMPCSettings(kappa=1e-3, p_max=5)
W = CostWeights()
DELTAS = np.array([0.05, 0.2])
KEY = jax.eval_shape(lambda: jax.random.PRNGKey(0))


@pytest.fixture(scope="module")
def world():
    return generate_community(4, prosumer_share=0.5, seed=1), synthetic_profiles(4, seed=1)


@pytest.fixture
def one_device(monkeypatch):
    """One device, as on a host with one GPU (the program then holds no sharding)."""
    monkeypatch.setattr(parallel, "device_count", lambda: 1)


def _runner(world, scenario="ccdmpc", solver=IPM(), chunk=2, gap=False):
    c, prof = world
    opt = Options(scenario=scenario, T=T, gap=gap)
    return experiment._Runner(c, prof, opt, N, FC, W, solver, jnp.float64, chunk, len(DELTAS))


def _export(fn, platforms, *args):
    return export.export(jax.jit(fn), platforms=platforms)(*args)


def _shapes(chunk):
    return jax.ShapeDtypeStruct((chunk,), jnp.int32), jax.ShapeDtypeStruct((len(DELTAS),), jnp.float64), KEY


@pytest.mark.parametrize(
    "scenario, solver, record, gap",
    [
        ("ccdmpc", IPM(), False, False),  # the engine's default cell
        ("ccdmpc", IPM(), True, True),  # full records, the centralized gap solve
        ("centralized", IPM(), False, False),
        ("islanded", IPM(), False, False),
        ("islanded", IPM(), True, False),
    ],
)
def test_closed_loop_lowers_for_cuda(world, one_device, scenario, solver, record, gap):
    r = _runner(world, scenario, solver, gap=gap)
    exp = _export(lambda i, d, k: r._batched(i, d, k, record), ["cuda"], *_shapes(2))
    assert exp.platforms == ("cuda",)
    assert exp.nr_devices == 1
    # the outputs a GPU run returns are those of the CPU program
    cpu = jax.eval_shape(lambda i, d, k: r._batched(i, d, k, record), *_shapes(2))
    assert [(a.shape, a.dtype) for a in exp.out_avals] == [(a.shape, a.dtype) for a in jax.tree_util.tree_leaves(cpu)]


def test_the_cuda_program_run_here_gives_run_batchs_results(world, one_device):
    c, prof = world
    r = _runner(world)
    exp = _export(lambda i, d, k: r._batched(i, d, k, False)[0], ["cpu", "cuda"], *_shapes(2))
    assert exp.platforms == ("cpu", "cuda")
    got = jax.device_get(exp.call(jnp.arange(2, dtype=jnp.int32), jnp.asarray(DELTAS), jax.random.PRNGKey(3)))
    res = experiment.run_batch(
        c, prof, DELTAS, 2, seed=3, options=Options(scenario="ccdmpc", T=T), N=N, fc=FC, weights=W,
        solver=IPM(), chunk=2,
    )  # fmt: skip
    assert set(got) <= set(res.summary.data_vars)
    assert len(got) >= 8
    for k, v in got.items():
        ref = res.summary[k].values
        assert v.shape == ref.shape, k
        np.testing.assert_allclose(v, ref, rtol=1e-9, atol=1e-9, err_msg=k)
    assert np.all(res.summary["E1"].values != 0.0)


def test_open_loop_validation_lowers_for_cuda(world, one_device):
    c, prof = world
    stage = make_stage(c, prof, 10, 0.5 * jnp.asarray(c.capacity), jnp.zeros(c.n), 0.05, N, "cumulative")
    plan = plan_from_vectors(jnp.zeros((len(c.prosumers), AgentLayout(c.n, N).nx)), c, N)
    ids = jax.ShapeDtypeStruct((64,), jnp.int32)
    valid = jax.ShapeDtypeStruct((64,), jnp.bool_)
    base = jax.random.PRNGKey(0)
    exp = _export(lambda i, v: validate._count_chunk(c, prof, stage, plan, base, i, v), ["cuda"], ids, valid)
    assert exp.platforms == ("cuda",)
    assert [a.shape for a in exp.out_avals] == [(c.n, N)] * 3


@pytest.mark.parametrize("dtype", [jnp.float64, jnp.float32])
def test_batched_qp_solver_lowers_for_cuda(one_device, dtype):
    rng = np.random.default_rng(0)
    n, m = 6, 9
    A = np.vstack([np.eye(n), rng.normal(size=(m - n, n))])
    P = np.diag(rng.uniform(0.5, 2.0, n))
    lo, hi = -np.ones(m), np.ones(m)
    op = prepare(P, A, IPM(), dtype=dtype, lo=lo, hi=hi)
    B = 16
    q = jax.ShapeDtypeStruct((B, n), dtype)
    b = jax.ShapeDtypeStruct((B, m), dtype)
    exp = _export(lambda q, lo, hi: solve_batch(op, q, lo, hi), ["cuda"], q, b, b)
    assert exp.platforms == ("cuda",)
    assert exp.out_avals[0].shape[0] == B
