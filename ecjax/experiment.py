"""The batch boundary: typed objects in, labelled arrays out (STYLE habit 1, 11).

`run_batch` runs the closed loop of one community for S disturbance samples × R risk levels in
one compiled call per chunk of samples (memory-bounded: chunks have a fixed size, so one
compilation serves them all), vmapped over the chunk's (risk level, sample) pairs, which are
split over the local devices (`ecjax.parallel`). Sample s always draws its disturbances from
`fold_in(key(seed), s)`, whatever the chunking, and every risk level sees the same draws
(common random numbers). Returns xarray Datasets built after `jax.device_get`.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import time

import jax
import jax.numpy as jnp
import numpy as np
import xarray as xr

from . import ccmpc, cf, metrics, ocp
from .community import Community
from .disturbance import Profiles, check_profiles, sample_day
from .fcmpc import FCMPCSettings, check_agent_batch, make_controller
from .layout import AgentLayout
from .metrics import INDEX_NAMES
from .parallel import over_devices
from .qp import IPM
from .scenario import run_delta
from .simulate import Options, check_dtype, closed_loop
from .weights import CostWeights


@dataclasses.dataclass
class BatchResult:
    summary: xr.Dataset  # every (risk, sample)
    trajectories: xr.Dataset | None  # full records of the first `keep` samples
    seconds: float  # wall time of the solves (compilation excluded)
    compile_seconds: float


AGENT_BATCH_BYTES = 8 * 2**20  # estimated bytes (`pair_bytes`) of the pairs a CPU core runs at once beyond which it solves prosumers one at a time
ACCELERATOR_CHUNK = 64  # samples per call on an accelerator that does not report its memory
ACCELERATOR_MEMORY_SHARE = 0.5  # of each accelerator's memory given to one call's pairs


def pair_bytes(c: Community, N: int, dtype) -> int:
    """Estimated device memory of one (risk, sample) pair of the closed loop: 64 vectors of the
    agent QP's size (variables + rows) per prosumer. XLA's buffer assignment on a CPU gives 24
    to 56 such vectors per prosumer (`compiled.memory_analysis()`; a generated community of 15
    agents with N = 24 the most: the Newton system's weak columns and the refinement's
    iterates); 64 leaves a margin."""
    lay = AgentLayout(c.n, N)
    return 64 * len(c.prosumers) * (lay.nx + ocp.AgentRows(lay).m) * jnp.dtype(dtype).itemsize


def chunk_for(R: int, S: int, backend: str, n_devices: int, bytes_limit: int | None, per_pair: int) -> int:
    """Samples per compiled call for `sim.chunk: auto`. On a CPU as many as give one (risk,
    sample) pair per device (one device per core): per community-day the fastest there, as
    small batches stay in cache and a vmapped batch waits less for its slowest QP (at n = 15,
    calls of 1 sample × 2 δ on two cores 0.95 days/s, of 16 × 2 0.50; docs/performance.md). On
    an accelerator as many as fill `ACCELERATOR_MEMORY_SHARE` of each device's memory
    (`bytes_limit`, estimated `per_pair` bytes per pair): few calls, each a large batch;
    `ACCELERATOR_CHUNK` where the device does not report its memory. Always in [1, S].

    That is the largest call; the calls are then made equal (the fewest calls of that size at
    most, S split evenly over them), since the last call is padded to the chunk size with
    repeated samples: 10 000 samples under a cap of 6 400 run as 2 calls of 5 000, not 2 of
    6 400 (2 800 of the second call's samples padding)."""
    if backend == "cpu":
        cap = n_devices // max(R, 1)
    elif bytes_limit:
        cap = int(ACCELERATOR_MEMORY_SHARE * bytes_limit * n_devices // (max(R, 1) * max(per_pair, 1)))
    else:
        cap = ACCELERATOR_CHUNK
    calls = -(-S // max(1, min(cap, S)))
    return -(-S // calls)


def auto_chunk(R: int, S: int, per_pair: int) -> int:
    """`chunk_for` on this machine's devices."""
    devices = jax.devices()
    stats = devices[0].memory_stats() if jax.default_backend() != "cpu" else None
    return chunk_for(R, S, jax.default_backend(), len(devices), (stats or {}).get("bytes_limit"), per_pair)


def agent_batch_for(backend: str, per_pair: int, prosumers: int, pairs_per_device: int = 1) -> int:
    """Prosumer subproblems solved at once within a (risk, sample) pair for
    `sim.agent_batch: auto` (`fcmpc.Controller.agent_batch`). On an accelerator all of them
    (one vmapped batch over the pairs and prosumers, as large as it gets). On a CPU all of them
    while the pairs a device runs at once are small (`pairs_per_device` × `per_pair` <=
    `AGENT_BATCH_BYTES`), else one at a time: a vmapped batch of many large agent QPs is
    slower than the same QPs one prosumer after another. Measured on cpu-2b (ccdmpc, run
    time all at once / one at a time), one pair per core: n = 15 1.13 / 1.25 s, n = 20
    1.03 / 1.01 s, n = 30 1.75 / 1.52 s, n = 60 4.4 / 3.2 s, n = 120 16.6 / 6.5 s; n = 15 with
    8 pairs per core 1.45 / 1.90 days/s (docs/performance.md); pieces of 2, 4 or 7 were never
    faster than 1."""
    if backend != "cpu" or max(pairs_per_device, 1) * per_pair <= AGENT_BATCH_BYTES:
        return prosumers
    return 1


def auto_agent_batch(c: Community, N: int, dtype, pairs: int) -> int:
    """`agent_batch_for` on this machine's backend, for calls of `pairs` (risk, sample) pairs."""
    per_device = -(-pairs // len(jax.devices()))
    return agent_batch_for(jax.default_backend(), pair_bytes(c, N, dtype), len(c.prosumers), per_device)


def _check(deltas, S, chunk, keep, opt: Options, N, fc: FCMPCSettings, c: Community, dtype, agent_batch):
    ccmpc.check_delta(deltas)
    check_dtype(dtype)
    if not (isinstance(S, (int, np.integer)) and S >= 1):
        raise ValueError(f"`sim.S` must be an integer >= 1, got {S}.")
    if chunk is not None and not (isinstance(chunk, (int, np.integer)) and chunk >= 1):
        raise ValueError(f"`sim.chunk` must be an integer >= 1 or None (auto), got {chunk}.")
    if not (isinstance(keep, (int, np.integer)) and 0 <= keep <= S):
        raise ValueError(f"`sim.keep` must be in [0, S={S}], got {keep}.")
    check_agent_batch(agent_batch)
    opt.check(N)
    fc.check(c)


def batch_shape(community, N: int, dtype, R: int, S: int, keep: int, chunk: int | None = None,
                agent_batch: int | None = None) -> tuple[int, int]:
    """The shape `run_batch` gives a batch of S samples at R risk levels whose first `keep` run
    with full records: (samples per compiled call, prosumer subproblems solved at once), each
    its automatic choice where None. The audit's re-run of a cell takes the same shape: on an
    optimal face, another vectorization moves an interior-point solution by up to its
    tolerance."""
    rest = S - keep
    if chunk is None:
        chunk = auto_chunk(R, max(rest, 1), pair_bytes(community, N, dtype))
    chunk = min(chunk, max(rest, 1))
    if agent_batch is None:
        agent_batch = auto_agent_batch(community, N, dtype, max(chunk, keep) * R)
    return chunk, agent_batch


def run_batch(
    community: Community,
    profiles: Profiles,
    deltas,
    S: int,
    *,
    seed: int = 0,
    options: Options = Options(),
    N: int = 24,
    fc: FCMPCSettings = FCMPCSettings(),
    weights: CostWeights = CostWeights(),
    solver: IPM = IPM(),
    dtype=jnp.float64,
    chunk: int | None = None,
    keep: int = 0,
    sample_offset: int = 0,
    progress=None,
    agent_batch: int | None = None,
) -> BatchResult:
    """Closed loop of `community` for samples `sample_offset .. sample_offset+S-1` at every δ.

    **Arguments:** `deltas` risk levels (R,), each in (0, 0.5]; `S` samples; `chunk` samples
    per compiled call (None: `auto_chunk`); `keep` samples whose full trajectories (and, with
    `options.record_plans`, every FC-MPC iterate) are returned; `progress` an optional
    callable(done, total); `agent_batch` prosumer subproblems solved at once within a pair
    (None: `auto_agent_batch`; >= |P|: all of them).

    **Returns:** a `BatchResult` with `summary` dims (risk, sample[, time][, agent]) and, with
    `keep`, `trajectories`; both carry the CF attributes of `ecjax.cf`.
    """
    deltas = np.atleast_1d(np.asarray(deltas, dtype=np.float64))
    _check(deltas, S, chunk, keep, options, N, fc, community, dtype, agent_batch)
    check_profiles(profiles, community)
    # The first `keep` samples run once, with their full records, and their summaries come
    # from that run; the summary-only program runs the other S - keep samples.
    rest = S - keep
    chunk, agent_batch = batch_shape(community, N, dtype, len(deltas), S, keep, chunk, agent_batch)
    run_opts, run_deltas = _as_run(options, deltas)
    runner = _runner(community, profiles, run_opts, N, fc, weights, solver, dtype, chunk, len(deltas), agent_batch)
    base = jax.random.PRNGKey(seed)
    d_arr = jnp.asarray(run_deltas, runner.dtype)
    ids_all = sample_offset + np.arange(S)
    record = runner.trajectories(keep, d_arr, base) if keep else None
    summary_run = runner.summary() if rest else None
    compile_s = runner.take_compile_seconds()
    t0 = time.perf_counter()
    parts, traj = [], None
    if keep:
        summ_k, rec = jax.device_get(record(jnp.asarray(ids_all[:keep], jnp.int32), d_arr, base))
        parts.append(summ_k)
        traj = _trajectory_dataset(community, deltas, ids_all[:keep], rec, options)
        if progress is not None:
            progress(keep, S)
    ids_rest = ids_all[keep:]
    pad = (-rest) % chunk
    ids_pad = np.concatenate([ids_rest, np.full(pad, ids_all[-1])]).astype(np.int32)
    for start in range(0, rest + pad, chunk):
        out = summary_run(jnp.asarray(ids_pad[start : start + chunk]), d_arr, base)
        parts.append(jax.device_get(out))
        if progress is not None:
            progress(keep + min(start + chunk, rest), S)
    seconds = time.perf_counter() - t0
    summ = {k: np.concatenate([p[k] for p in parts], axis=1)[:, :S] for k in parts[0]}
    summary = _summary_dataset(community, deltas, ids_all, summ, options)
    return BatchResult(summary=summary, trajectories=traj, seconds=seconds, compile_seconds=compile_s)


class _Runner:
    """The compiled closed loops of one configuration: the summary over a chunk of samples and,
    per `keep`, the full records. Arguments (ids, deltas, key) are traced, so other samples,
    risk levels (same count) and seeds reuse the compilation."""

    def __init__(self, community, profiles, options, N, fc, weights, solver, dtype, chunk, R, agent_batch=None):
        self.ctl = make_controller(
            community, weights, N, solver, dtype,
            centralized=options.scenario == "centralized" or options.gap, agent_batch=agent_batch,
        )  # fmt: skip
        self.dtype = jnp.dtype(dtype)
        self.chunk = chunk
        self.R = R
        prof = jax.tree_util.tree_map(lambda a: jnp.asarray(a, dtype), profiles)
        ctl = self.ctl

        def one(sample_id, delta, base, record):
            draw = sample_day(jax.random.fold_in(base, sample_id), prof, options.T)
            rec = closed_loop(ctl, fc, options if record else _no_record(options), prof, draw, delta)
            return metrics.summary(community, weights.gamma, rec), (rec if record else None)

        def batched(ids, deltas, base, record):
            # the chunk's (risk level, sample) pairs, flat, split over the local devices (one
            # per CPU core, or the GPUs); results back in (risk, sample, ...)
            R, C = deltas.shape[0], ids.shape[0]
            d_flat, i_flat = jnp.repeat(deltas, C), jnp.tile(ids, R)

            def share(i, d, base):
                return jax.vmap(lambda i_, d_: one(i_, d_, base, record))(i, d)

            out = over_devices(share, batched=(0, 1))(i_flat, d_flat, base)
            return jax.tree_util.tree_map(lambda v: v.reshape((R, C) + v.shape[1:]), out)

        self._batched = batched
        self._records: dict[int, object] = {}
        self._compile_s = 0.0
        self._summary = None

    def summary(self):
        """The compiled summary-only run of `chunk` samples (compiled on first use)."""
        if self._summary is None:
            ids = jax.ShapeDtypeStruct((self.chunk,), jnp.int32)
            self._summary = self._compile(lambda i, d, k: self._batched(i, d, k, False)[0], ids)
        return self._summary

    def _compile(self, fn, ids):
        t = time.perf_counter()
        d = jax.ShapeDtypeStruct((self.R,), self.dtype)
        key = jax.eval_shape(lambda: jax.random.PRNGKey(0))
        out = jax.jit(fn).lower(ids, d, key).compile()
        self._compile_s += time.perf_counter() - t
        return out

    def trajectories(self, keep: int, deltas, base):
        """The compiled run of `keep` samples that returns (summary, full records)."""
        if keep not in self._records:
            ids = jax.ShapeDtypeStruct((keep,), jnp.int32)
            self._records[keep] = self._compile(lambda i, d, k: self._batched(i, d, k, True), ids)
        return self._records[keep]

    def take_compile_seconds(self) -> float:
        s, self._compile_s = self._compile_s, 0.0
        return s


_RUNNERS: collections.OrderedDict = collections.OrderedDict()
_RUNNERS_KEPT = 4  # compiled configurations kept (a sweep calls run_batch once per block)


def _frozen(x):
    """A hashable stand-in for a configuration value (arrays by content)."""
    if dataclasses.is_dataclass(x) and not isinstance(x, type):
        return (type(x).__name__,) + tuple((f.name, _frozen(getattr(x, f.name))) for f in dataclasses.fields(x))
    if isinstance(x, (np.ndarray, jax.Array)) or hasattr(x, "__array__"):
        a = np.asarray(x)
        return (a.shape, a.dtype.str, hashlib.sha1(np.ascontiguousarray(a).tobytes()).hexdigest())
    if isinstance(x, (list, tuple)):
        return tuple(_frozen(v) for v in x)
    return x


def _runner(community, profiles, options, N, fc, weights, solver, dtype, chunk, R, agent_batch) -> _Runner:
    key = _frozen((community, profiles, options, N, fc, weights, solver, jnp.dtype(dtype).name, chunk, R, agent_batch))
    if key in _RUNNERS:
        _RUNNERS.move_to_end(key)
        return _RUNNERS[key]
    r = _Runner(community, profiles, options, N, fc, weights, solver, dtype, chunk, R, agent_batch)
    _RUNNERS[key] = r
    while len(_RUNNERS) > _RUNNERS_KEPT:
        _RUNNERS.popitem(last=False)
    return r


def _as_run(opt: Options, deltas: np.ndarray) -> tuple[Options, np.ndarray]:
    """The standard DMPC is the cooperative scenario at δ = 0.5 (MODEL §8, z = 0): it runs
    through the compiled closed loop of `ccdmpc` (one compilation serves both scenarios; the
    results keep the labels of the run asked for)."""
    if opt.scenario != "dmpc":
        return opt, deltas
    return dataclasses.replace(opt, scenario="ccdmpc"), run_delta(opt.scenario, deltas)


def _no_record(opt: Options) -> Options:
    return dataclasses.replace(opt, record_plans=False)


def _summary_dataset(c: Community, deltas, ids, summ: dict, opt: Options) -> xr.Dataset:
    coords = {
        "risk": ("risk", deltas),
        "sample": ("sample", ids.astype(np.int64)),
        "time": ("time", np.arange(opt.T)),
        "agent": ("agent", np.arange(c.n)),
        "is_prosumer": ("agent", np.asarray(c.is_prosumer, bool)),
    }
    data = {}
    for k, v in summ.items():
        v = np.asarray(v)
        if k in INDEX_NAMES or v.ndim == 2:
            data[k] = (("risk", "sample"), v)
        elif k in ("viol_lo", "viol_hi"):
            data[k] = (("risk", "sample", "time", "agent"), v)
        else:
            data[k] = (("risk", "sample", "time"), v)
    ds = xr.Dataset(data, coords=coords)
    ds.attrs.update(scenario=opt.scenario, tightening=opt.tightening, T=opt.T)
    return cf.describe(ds, "summary")


def _trajectory_dataset(c: Community, deltas, ids, rec, opt: Options) -> xr.Dataset:
    dims = {
        1: ("risk", "sample", "time"),
        2: ("risk", "sample", "time", "agent"),
        3: ("risk", "sample", "time", "agent", "to_agent"),
    }
    data = {}
    for f in dataclasses.fields(rec) if dataclasses.is_dataclass(rec) else rec.__dataclass_fields__.values():
        v = np.asarray(getattr(rec, f.name))
        if v.size == 0:  # iterates not recorded
            continue
        extra = v.ndim - 3
        if f.name == "cost_trace":
            data[f.name] = (("risk", "sample", "time", "iterate0"), v)
        elif f.name == "theta_trace":
            data[f.name] = (("risk", "sample", "time", "iteration"), v)
        elif f.name == "lam_trace":
            data[f.name] = (("risk", "sample", "time", "iteration", "prosumer"), v)
        elif f.name == "u_iter":
            data[f.name] = (("risk", "sample", "time", "iterate0", "prosumer", "input"), v)
        elif f.name == "u_star":
            data[f.name] = (("risk", "sample", "time", "iteration", "prosumer", "input"), v)
        else:
            data[f.name] = (dims[extra + 1], v)
    ds = xr.Dataset(data)
    coords = {"risk": deltas, "sample": ids.astype(np.int64), "time": np.arange(opt.T), "agent": np.arange(c.n),
              "is_prosumer": ("agent", np.asarray(c.is_prosumer, bool)),
              "prosumer": np.arange(len(c.prosumers)),
              "prosumer_agent": ("prosumer", np.asarray(c.prosumers, np.int64))}
    for d in ("to_agent", "iterate0", "iteration", "input"):  # every dimension has its coordinate
        if d in ds.dims:
            coords[d] = np.arange(ds.sizes[d]) + (1 if d == "iteration" else 0)
    return cf.describe(ds.assign_coords(coords), "trajectories")


def violation_rates(summary: xr.Dataset, level: float = 0.99) -> xr.Dataset:
    """Closed-loop violation rates of each chance-constrained bound over the samples, per
    (risk, time, agent), with Clopper–Pearson intervals at `level` (prosumers only).

    **Returns:** dims (risk, side, time, agent), `side` = lo, hi: `count`, `rate`, `ci_low`,
    `ci_high`; and `n` (the number of samples).
    """
    if not 0.0 < level < 1.0:
        raise ValueError(f"`level` must be in (0, 1), got {level}.")
    pro = summary["is_prosumer"].values
    viol = xr.concat([summary["viol_lo"], summary["viol_hi"]], dim="side").isel(agent=np.flatnonzero(pro))
    viol = cf.conform(viol.assign_coords(side=["lo", "hi"]).to_dataset(name="v"))["v"]
    n = summary.sizes["sample"]
    count = viol.sum("sample").astype(np.int64)
    lo, hi = metrics.clopper_pearson(count.values, n, level)
    out = xr.Dataset({"count": count, "rate": count / n})
    out["ci_low"] = (count.dims, lo)
    out["ci_high"] = (count.dims, hi)
    out["n"] = n
    out.attrs["level"] = float(level)
    return out
