"""The batch runner (`ecjax.experiment.run_batch`): a vmapped batch is a loop of single runs.

Sample s draws from fold_in(key(seed), s) whatever the chunking; every risk level sees the
same draws. Small sizes: 4 agents, N = 4, T = 3 (islanded) or T = 4 (ccdmpc).
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ecjax import experiment, metrics
from ecjax.community import generate_community, paper_case
from ecjax.disturbance import sample_day, synthetic_profiles
from ecjax.fcmpc import FCMPCSettings, make_controller
from ecjax.metrics import INDEX_NAMES
from ecjax.qp import IPM
from ecjax.simulate import Options, closed_loop
from ecjax.weights import CostWeights

SOLVER = IPM()  # the engine's default
IPM_TIGHT = IPM(eps_abs=1e-9, eps_rel=1e-9)
N = 4
FC = FCMPCSettings(kappa=1e-3, p_max=5)
W = CostWeights()
DELTAS = [0.05, 0.2]


@pytest.fixture(scope="module")
def world():
    c = generate_community(4, prosumer_share=0.5, seed=1)
    return c, synthetic_profiles(4, seed=1)


def batch(world, S, scenario="islanded", T=3, **kw):
    c, prof = world
    kw.setdefault("chunk", 2)
    kw.setdefault("solver", SOLVER)
    return experiment.run_batch(
        c, prof, kw.pop("deltas", DELTAS), S, options=Options(scenario=scenario, T=T), N=N, fc=FC, weights=W, **kw,
    )  # fmt: skip


@eqx.filter_jit
def _single(ctl, opt, prof, sample_id, delta, seed):
    draw = sample_day(jax.random.fold_in(jax.random.PRNGKey(seed), sample_id), prof, opt.T)
    rec = closed_loop(ctl, FC, opt, prof, draw, delta)
    return metrics.summary(ctl.community, W.gamma, rec), rec


def single_runs(world, ids, scenario, T, seed=0):
    """The loop: one unbatched closed loop per (risk, sample)."""
    c, prof = world
    ctl = make_controller(c, W, N, SOLVER)
    prof = jax.tree_util.tree_map(jnp.asarray, prof)
    opt = Options(scenario=scenario, T=T)
    out = [[_single(ctl, opt, prof, jnp.asarray(s, jnp.int32), jnp.asarray(d), jnp.asarray(seed)) for s in ids] for d in DELTAS]
    return jax.device_get(out)


SUMMARY_KEYS = INDEX_NAMES + ("iters", "qp_status", "viol_lo", "viol_hi", "curtailed", "deficit", "spilled")


def assert_same_summary(ds, loop, ids, atol):
    """Equal up to `atol` per entry; sums over the day (E1..E8, kWh or €) up to n·T·atol."""
    nT = ds.sizes["agent"] * ds.sizes["time"]
    for r in range(len(DELTAS)):
        for j, s in enumerate(ids):
            summ, _ = loop[r][j]
            for k in SUMMARY_KEYS:
                got = ds[k].isel(risk=r).sel(sample=s).values
                tol = 0 if k in ("iters", "qp_status", "viol_lo", "viol_hi") else atol * (nT if k in INDEX_NAMES else 1)
                np.testing.assert_allclose(got, np.asarray(summ[k]), rtol=0, atol=tol, err_msg=f"{k} r={r} s={s}")


def test_islanded_batch_equals_single_runs_and_chunking(world):
    ids = [0, 1, 2]
    loop = single_runs(world, ids, "islanded", 3)
    b2 = batch(world, 3, chunk=2, keep=3)  # padded: the last chunk is [2, 2]
    b3 = batch(world, 3, chunk=3)
    # different compilations (vmapped or not, other chunk) round differently; the iterates then
    # differ within the solver's tolerance: 10·ε_p per entry (ε_p ≈ 1e-5 at eps 1e-6)
    assert_same_summary(b2.summary, loop, ids, atol=1e-4)
    assert_same_summary(b3.summary, loop, ids, atol=1e-4)
    # trajectories of kept samples are the single runs' records
    for r in range(len(DELTAS)):
        for s in ids:
            rec = loop[r][s][1]
            for k in ("eb", "ug", "u_bc", "u_bd", "load", "pv", "price"):
                np.testing.assert_allclose(b2.trajectories[k].isel(risk=r).sel(sample=s).values, getattr(rec, k), atol=1e-4)
    # common random numbers: every risk level sees the same draws
    tr = b2.trajectories
    np.testing.assert_array_equal(tr["load"].isel(risk=0).values, tr["load"].isel(risk=1).values)


def test_offset_padding_and_seeds_reuse_the_samples_and_the_compilation(world):
    full = batch(world, 3, chunk=2, seed=0)
    part = batch(world, 2, chunk=2, seed=0, sample_offset=1)  # the same executable
    assert part.compile_seconds == 0.0
    np.testing.assert_array_equal(part.summary.sample.values, [1, 2])
    for k in SUMMARY_KEYS:
        np.testing.assert_array_equal(part.summary[k].values, full.summary[k].sel(sample=[1, 2]).values, err_msg=k)
    again = batch(world, 3, chunk=2, seed=0)
    other = batch(world, 3, chunk=2, seed=1)
    for k in SUMMARY_KEYS:
        np.testing.assert_array_equal(again.summary[k].values, full.summary[k].values, err_msg=k)
    assert np.abs(other.summary.E1.values - full.summary.E1.values).min() > 1e-6
    assert other.compile_seconds == 0.0


@pytest.mark.slow
def test_fcmpc_batch_equals_single_runs(world):
    """Under vmap FC-MPC and the IPM run until the slowest sample stops; the others are held, so
    each sample's result is its single run's (iteration counts included)."""
    ids = [0, 1]
    loop = single_runs(world, ids, "ccdmpc", 4)
    b = batch(world, 2, scenario="ccdmpc", T=4, chunk=2)
    assert_same_summary(b.summary, loop, ids, atol=1e-4)
    iters = b.summary.iters.values
    assert iters.max() > iters.min()  # samples and steps stop at different iterations


def test_dataset_layout_and_violation_rates(world):
    b = batch(world, 3, chunk=2)
    ds = b.summary
    assert dict(ds.sizes) == {"risk": 2, "sample": 3, "agent": 4, "time": 3}
    np.testing.assert_array_equal(ds.risk.values, DELTAS)
    assert ds.E1.dims == ("risk", "sample") and ds.viol_lo.dims == ("risk", "sample", "time", "agent")
    assert ds.iters.dims == ("risk", "sample", "time")
    assert ds.attrs["scenario"] == "islanded" and ds.attrs["T"] == 3
    v = experiment.violation_rates(ds, level=0.95)
    assert v["rate"].dims == ("risk", "side", "time", "agent")
    np.testing.assert_array_equal(v.agent.values, [0, 1])  # prosumers only
    want = ds.viol_lo.isel(agent=[0, 1]).mean("sample").values
    np.testing.assert_allclose(v["rate"].sel(side="lo").values, want)
    lo, hi = metrics.clopper_pearson(v["count"].values, 3, 0.95)
    np.testing.assert_allclose(v["ci_low"].values, lo)
    np.testing.assert_allclose(v["ci_high"].values, hi)


def test_chunk_for_cpu_and_accelerators():
    """`sim.chunk: auto`: one (risk, sample) pair per device on a CPU; on an accelerator the
    samples whose pairs fill half of every device's memory; always in [1, S]."""
    cf = experiment.chunk_for
    assert cf(2, 100, "cpu", 2, None, 10**6) == 1
    assert cf(1, 100, "cpu", 2, None, 10**6) == 2
    assert cf(1, 1, "cpu", 16, None, 10**6) == 1  # never more than S
    assert cf(8, 100, "cpu", 2, None, 10**6) == 1  # never less than 1
    # 80 GB, 8 risk levels, 1.25 MB per pair: 0.5 * 80e9 / (8 * 1.25e6) = 4000 samples per
    # call at most; 10 000 samples -> 3 calls of 3334 (of 8000 over two GPUs -> 2 of 5000)
    assert cf(8, 12_000, "gpu", 1, 80 * 10**9, 1_250_000) == 4000
    assert cf(8, 10_000, "gpu", 1, 80 * 10**9, 1_250_000) == 3334
    assert cf(8, 16_000, "gpu", 2, 80 * 10**9, 1_250_000) == 8000  # pairs split over two GPUs
    assert cf(8, 10_000, "gpu", 2, 80 * 10**9, 1_250_000) == 5000
    assert cf(8, 100, "gpu", 1, 80 * 10**9, 1_250_000) == 100
    assert cf(8, 128, "gpu", 1, None, 1_250_000) == experiment.ACCELERATOR_CHUNK  # memory unknown
    assert cf(8, 100, "gpu", 1, None, 1_250_000) == 50  # 2 calls under that cap
    assert cf(8, 100, "gpu", 1, 10**6, 1_250_000) == 1
    # calls made equal under the cap: 10 000 under 6 400 -> 2 calls of 5 000 (not 6 400 + a
    # padded 6 400); 10 001 under 4 000 -> 3 calls of 3 334 (the last one padded by 1)
    assert cf(8, 10_000, "gpu", 1, 128 * 10**9, 1_250_000) == 5000
    assert cf(8, 10_001, "gpu", 1, 80 * 10**9, 1_250_000) == 3334
    assert cf(1, 5, "cpu", 2, None, 10**6) == 2  # 3 calls either way
    for S in range(1, 60):
        for cap_devices in (1, 2, 3, 7, 16):
            k = cf(1, S, "cpu", cap_devices, None, 10**6)
            assert 1 <= k <= min(cap_devices, S)
            assert -(-S // k) == -(-S // min(cap_devices, S))  # no more calls than the cap needs
            assert k * -(-S // k) - S < -(-S // k)  # padding below one sample per call


def test_agent_batch_for_cpu_and_accelerators():
    """`sim.agent_batch: auto`: every prosumer at once on an accelerator and, on a CPU, while the
    pairs of a device are small; one at a time beyond `AGENT_BATCH_BYTES`."""
    ab = experiment.agent_batch_for
    small, large = experiment.AGENT_BATCH_BYTES, experiment.AGENT_BATCH_BYTES + 1
    assert ab("cpu", small, 7) == 7
    assert ab("cpu", large, 28) == 1
    assert ab("gpu", large, 28) == 28
    paper = experiment.pair_bytes(paper_case(0), 24, jnp.float64)
    bigger = experiment.pair_bytes(generate_community(30, 7 / 15, seed=0), 24, jnp.float64)
    assert ab("cpu", paper, 7) == 7 and ab("cpu", bigger, 14) == 1  # n = 15 vmapped, n = 30 not
    assert ab("cpu", paper, 7, pairs_per_device=8) == 1  # 8 pairs of the paper case per core
    assert ab("gpu", paper, 7, pairs_per_device=5000) == 7


def test_prosumers_in_pieces_equal_all_at_once():
    """Solving the prosumers' subproblems in pieces (2, then a remainder of 1) is the same
    FC-MPC as one vmapped batch: 3 prosumers, ccdmpc, both δ."""
    c = generate_community(5, prosumer_share=0.6, seed=2)
    assert len(c.prosumers) == 3
    w = (c, synthetic_profiles(5, seed=2))
    ref = batch(w, 2, "ccdmpc", T=3, agent_batch=None, solver=IPM_TIGHT).summary
    got = batch(w, 2, "ccdmpc", T=3, agent_batch=2, solver=IPM_TIGHT).summary
    runner = list(experiment._RUNNERS.values())[-1]
    assert runner.ctl.agent_batch == 2
    for k in INDEX_NAMES + ("phi",):
        np.testing.assert_allclose(got[k].values, ref[k].values, rtol=1e-7, atol=1e-8, err_msg=k)
    np.testing.assert_array_equal(got["qp_status"].values, ref["qp_status"].values)


def test_pair_bytes_bounds_the_compiled_closed_loops_memory(world):
    """The estimate of a pair's device memory is at least what XLA's buffer assignment gives
    the compiled closed loop (temporaries per pair, at two chunk sizes)."""
    c, prof = world
    est = experiment.pair_bytes(c, N, jnp.float64)
    for chunk in (1, 4):
        r = experiment._Runner(c, prof, Options(scenario="ccdmpc", T=3), N, FC, W, SOLVER, jnp.float64, chunk, len(DELTAS))
        used = r.summary().memory_analysis().temp_size_in_bytes / (chunk * len(DELTAS))
        assert 0.35 * est <= used <= est, (chunk, used, est)


def test_auto_chunk_is_one_pair_per_device_on_a_cpu(world):
    """chunk=None (`sim.chunk: auto`): on a CPU at most one (risk, sample) pair per device and
    never more than S samples per call, in no more calls than that cap needs; the results are
    the same run as that explicit chunk. Holds for any device count (1, 2, 4, ...)."""
    n_dev = len(jax.devices())
    assert jax.default_backend() == "cpu"
    for R, S in [(1, 1), (1, 5), (2, 5), (3, 5), (8, 5), (1, 17)]:
        k = experiment.auto_chunk(R, S, 10**6)
        cap = max(1, min(n_dev // R, S))
        assert 1 <= k <= cap, (R, S, k, cap)
        assert -(-S // k) == -(-S // cap), (R, S, k, cap)
    auto = batch(world, 3, chunk=None)
    runner = list(experiment._RUNNERS.values())[-1]
    explicit = batch(world, 3, chunk=runner.chunk)
    for k in auto.summary.data_vars:
        np.testing.assert_array_equal(auto.summary[k].values, explicit.summary[k].values, err_msg=k)
    assert 1 <= runner.chunk <= max(1, min(n_dev // len(DELTAS), 3))


@pytest.mark.parametrize(
    "kw, name",
    [
        (dict(S=0), "sim.S"),
        (dict(chunk=0), "sim.chunk"),
        (dict(keep=5), "sim.keep"),
        (dict(deltas=[0.05, 0.7]), "ccmpc.deltas"),
        (dict(T=25), "sim.T"),
        (dict(scenario="greedy"), "scenario"),
        (dict(dtype=jnp.float32), r"sim\.dtype.*must be float64"),
        (dict(agent_batch=0), "sim.agent_batch"),
    ],
)
def test_bad_arguments_are_named_before_compiling(world, kw, name):
    kw = dict(kw)
    S = kw.pop("S", 3)
    with pytest.raises(ValueError, match=name):
        batch(world, S, **kw)
