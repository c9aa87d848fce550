"""The batch boundary: typed objects in, labelled arrays out (STYLE habit 1, 11).

`run_batch` runs the closed loop of one community for S disturbance samples × R risk levels in
one compiled call per chunk of samples (memory-bounded: chunks have a fixed size, so one
compilation serves them all), vmapped over samples and risk levels. Sample s always draws
its disturbances from `fold_in(key(seed), s)`, whatever the chunking, and every risk level
sees the same draws (common random numbers). Returns xarray Datasets built after
`jax.device_get`.
"""

from __future__ import annotations

import dataclasses
import time

import jax
import jax.numpy as jnp
import numpy as np
import xarray as xr

from . import ccmpc, metrics
from .community import Community
from .disturbance import Profiles, check_profiles, sample_day
from .fcmpc import FCMPCSettings, make_controller
from .metrics import INDEX_NAMES
from .qp import ADMM
from .simulate import Options, closed_loop
from .weights import CostWeights


@dataclasses.dataclass
class BatchResult:
    summary: xr.Dataset  # every (risk, sample)
    trajectories: xr.Dataset | None  # full records of the first `keep` samples
    seconds: float  # wall time of the solves (compilation excluded)
    compile_seconds: float


def _check(deltas, S, chunk, keep, opt: Options, N, fc: FCMPCSettings, c: Community):
    ccmpc.check_delta(deltas)
    if not (isinstance(S, (int, np.integer)) and S >= 1):
        raise ValueError(f"`sim.S` must be an integer >= 1, got {S}.")
    if not (isinstance(chunk, (int, np.integer)) and chunk >= 1):
        raise ValueError(f"`sim.chunk` must be an integer >= 1, got {chunk}.")
    if not (isinstance(keep, (int, np.integer)) and 0 <= keep <= S):
        raise ValueError(f"`sim.keep` must be in [0, S={S}], got {keep}.")
    opt.check(N)
    fc.check(c)


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
    solver: ADMM = ADMM(),
    dtype=jnp.float64,
    chunk: int = 64,
    keep: int = 0,
    sample_offset: int = 0,
    progress=None,
) -> BatchResult:
    """Closed loop of `community` for samples `sample_offset .. sample_offset+S-1` at every δ.

    **Arguments:** `deltas` risk levels (R,), each in (0, 0.5]; `S` samples; `chunk` samples
    per compiled call; `keep` samples whose full trajectories (and, with
    `options.record_plans`, every FC-MPC iterate) are returned; `progress` an optional
    callable(done, total).

    **Returns:** a `BatchResult` with `summary` dims (risk, sample[, agent, time]).
    """
    deltas = np.atleast_1d(np.asarray(deltas, dtype=np.float64))
    _check(deltas, S, chunk, keep, options, N, fc, community)
    check_profiles(profiles, community)
    chunk = min(chunk, S)
    ctl = make_controller(
        community, weights, N, solver, dtype,
        centralized=options.scenario == "centralized" or options.gap,
    )  # fmt: skip
    base = jax.random.PRNGKey(seed)
    d_arr = jnp.asarray(deltas, dtype)
    prof = jax.tree_util.tree_map(lambda a: jnp.asarray(a, dtype), profiles)

    def one(sample_id, delta, record):
        key = jax.random.fold_in(base, sample_id)
        draw = sample_day(key, prof, options.T)
        opt = dataclasses.replace(options) if False else options
        rec = closed_loop(ctl, fc, opt if record else _no_record(opt), prof, draw, delta)
        return metrics.summary(community, weights.gamma, rec), (rec if record else None)

    def batched(ids, record):
        f = jax.vmap(jax.vmap(lambda i, d: one(i, d, record), in_axes=(0, None)), in_axes=(None, 0))
        return f(ids, d_arr)

    run_sum = jax.jit(lambda ids: batched(ids, False)[0])
    ids_all = sample_offset + np.arange(S)
    t_compile = time.perf_counter()
    pad = (-S) % chunk
    ids_pad = np.concatenate([ids_all, np.full(pad, ids_all[-1])]).astype(np.int32)
    compiled = run_sum.lower(jnp.asarray(ids_pad[:chunk])).compile()
    compile_s = time.perf_counter() - t_compile
    t0 = time.perf_counter()
    parts = []
    for start in range(0, S + pad, chunk):
        out = compiled(jnp.asarray(ids_pad[start : start + chunk]))
        parts.append(jax.device_get(out))
        if progress is not None:
            progress(min(start + chunk, S), S)
    seconds = time.perf_counter() - t0
    summ = {k: np.concatenate([p[k] for p in parts], axis=1)[:, :S] for k in parts[0]}
    summary = _summary_dataset(community, deltas, ids_all, summ, options)
    traj = None
    if keep:
        rec = jax.device_get(jax.jit(lambda ids: batched(ids, True)[1])(jnp.asarray(ids_all[:keep], jnp.int32)))
        traj = _trajectory_dataset(community, deltas, ids_all[:keep], rec, options)
    return BatchResult(summary=summary, trajectories=traj, seconds=seconds, compile_seconds=compile_s)


def _no_record(opt: Options) -> Options:
    return Options(
        scenario=opt.scenario, T=opt.T, tightening=opt.tightening,
        tighten_consumers=opt.tighten_consumers, gap=opt.gap, record_plans=False,
    )  # fmt: skip


def _summary_dataset(c: Community, deltas, ids, summ: dict, opt: Options) -> xr.Dataset:
    coords = {
        "risk": ("risk", deltas),
        "sample": ("sample", ids.astype(np.int64)),
        "agent": ("agent", np.arange(c.n)),
        "time": ("time", np.arange(opt.T)),
    }
    data = {}
    for k, v in summ.items():
        v = np.asarray(v)
        if k in INDEX_NAMES or v.ndim == 2:
            data[k] = (("risk", "sample"), v)
        elif k in ("viol_lo", "viol_hi"):
            data[k] = (("risk", "sample", "agent", "time"), v)
        else:
            data[k] = (("risk", "sample", "time"), v)
    ds = xr.Dataset(data, coords=coords)
    ds["is_prosumer"] = ("agent", c.is_prosumer)
    for k, doc in metrics.INDEX_DOC.items():
        ds[k].attrs["long_name"] = doc
    ds.attrs.update(scenario=opt.scenario, tightening=opt.tightening, T=opt.T)
    return ds


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
        elif f.name == "u_iter":
            data[f.name] = (("risk", "sample", "time", "iterate0", "prosumer", "input"), v)
        elif f.name == "u_star":
            data[f.name] = (("risk", "sample", "time", "iteration", "prosumer", "input"), v)
        else:
            data[f.name] = (dims[extra + 1], v)
    coords = {"risk": deltas, "sample": ids.astype(np.int64), "time": np.arange(opt.T), "agent": np.arange(c.n)}
    ds = xr.Dataset(data, coords=coords)
    ds["prosumer_agent"] = ("prosumer", np.asarray(c.prosumers))
    return ds
