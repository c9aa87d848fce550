"""The run bound to its origin: a stored sample recomputed from the stored config.

For one finished cell, one kept sample and one risk level:

1. the config hash is recomputed from the stored config (`ecjax.config.config_hash`) and
   compared with the hash the store recorded when the run started (cell attr `config_hash`),
   and the recorded seed with the config's `sim.seed`;
2. the cell's inputs (community, profiles, FC-MPC and solver settings, seed) are rebuilt from
   the stored config (`ecjax.config.cell_inputs`), and the kept samples are run again by the
   batch code itself, as the run computed them (`ecjax.experiment.run_batch` over the first
   `sim.keep` samples at every risk level of the cell, in one call, with their full records,
   `sim.record_plans` and the agent batching as the run had them; the same sample ids, so the
   same disturbance draws `fold_in(key(sim.seed), sample)`);
3. every array the store holds for that (risk, sample) is compared with the re-run: the
   trajectories (states, draws, the price profile, applied controls, FC-MPC iterates and
   optima, θ, iterations, QP statuses, everything present) and the summary row (E1..E8, Φ,
   counts, violation indicators). The store holds no forecast arrays: forecasts and profiles
   come from the config, which steps 1 and 2 bind.

**Tolerance.** The re-run repeats the run's own call: the same program on the same inputs,
with the same batch around the sample (the cell's kept samples × risk levels), the same agent
batching and the same devices. Measured on the development machine (CPU, float64, the re-run
in a fresh process, every build the same):

    cell (kept samples × risk levels), re-run                      max |re-run − stored|
    paper case (n = 15, N = 24), T = 24, 2 × 2, IPM at 1e-6, as run   0 (bit for bit), integers equal
    n = 4, T = 3, N = 5, 2 × 2, IPM at 1e-6, as run                   0 (bit for bit), integers equal
    the same cells, one sample re-run alone (another batch shape):
    n = 4, T = 3, N = 5, 2 × 2 and 3 × 2 (IPM at 1e-6, 1e-8)          4.5e-15 kW (u_star), integers equal
    paper case, T = 6                                                 1.6e-10 kW (u_star)
    paper case, T = 24                                                1.3e-6 kW (u_star)

Another batch shape makes XLA vectorize differently, and single operations round differently
in the last bit; the paper case's subproblems have optimal faces (MODEL's cost has no
curvature in the sale and EV inputs), on which such a difference moves an interior-point
solution by up to the solver's tolerance, and the FC-MPC iterations and 24 steps carry it on.
Hence the re-run of the whole kept batch rather than of the sample alone. The float tolerance

    |re-run − stored| <= τ·(1 + max(|re-run|, |stored|)),   τ = max(1e-9, 1e-2·max(eps_abs, eps_rel))

(kW, kWh, €; 1e-8 at the default ε = 1e-6) lies a hundred times below what the solver
resolves, so that a value changed by the solver's tolerance or more is a difference; it
absorbs last-bit differences of the quantities computed outside the solver, not a solver that
took another path.

Integer data (FC-MPC and interior-point iteration counts, QP statuses, violation indicators,
counts) compare exactly. The bound assumes what the measurements show, that the re-run of the
run's own batch takes every discrete decision as the run did (an interior-point stop at ε, an
FC-MPC stop at θ <= ϰ). A decision within round-off of its threshold could flip on another
machine or build; the re-run then differs from that step on by up to the solver's tolerance (an
interior-point step more or less) or by θ of an iteration more or less (an FC-MPC stop), the
first difference names the step and the count (`iters`, `qp_steps`), and an FC-MPC stop whose
deciding θ lies within the float tolerance of ϰ is called borderline in its note. The audit
does not verify then: the run is not reproduced. The comparison is meant for the machine and
build that made the run (the store records both, cell attrs `device` and `versions`); on
another one a difference names the first quantity that moved. `versions` records package
versions, not the source: a re-run by an edited solver differs (seen while measuring:
interior-point step counts from the first step on, plans by 1e-3 kW), and the audit says so.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import numpy as np
import xarray as xr

from ecjax.chain.report import CheckStats, Difference
from ecjax.layout import AgentLayout
from ecjax.metrics import INDEX_NAMES

__all__ = ["FLOOR", "SHARE", "OriginCheck", "check_origin", "float_tolerance", "rerun_sample"]

SHARE = 1e-2  # of the solver's tolerance
FLOOR = 1e-9


def float_tolerance(solver) -> float:
    """τ of the module docstring: `SHARE` of the solver's tolerance, at least `FLOOR`."""
    return max(FLOOR, SHARE * max(float(solver.eps_abs), float(solver.eps_rel)))
SIDES = ("re-run", "stored")


@dataclasses.dataclass
class OriginCheck:
    """What the check of a stored sample against its config found."""

    config_hash: str  # recomputed from the stored config
    recorded_hash: str | None  # recorded by the store when the run started
    checks: dict[str, CheckStats]
    differences: list[Difference]
    seconds: float
    tolerance: dict  # {"rtol": τ, "atol": τ, "integers": "exact"}

    @property
    def verified(self) -> bool:
        return not self.differences

    def to_dict(self) -> dict[str, Any]:
        return {
            "verified": self.verified,
            "config_hash": self.config_hash,
            "recorded_hash": self.recorded_hash,
            "tolerance": self.tolerance,
            "checks": {k: dataclasses.asdict(v) for k, v in self.checks.items()},
            "n_differences": len(self.differences),
            "seconds": self.seconds,
        }


def rerun_sample(inputs, sample: int, risk: float):
    """Run the kept samples of a cell made with `inputs` (`ecjax.config.CellInputs`) again, as
    the run computed them: the first `sim.keep` samples at every risk level of the cell, in one
    call of the batch code (`run_batch`), with the agent batching the run chose. The batch
    shape matters: the paper case's subproblems have optimal faces (no curvature in the sale
    and EV inputs), on which a last-bit difference of another vectorization moves an
    interior-point solution by up to the solver's tolerance and more after the FC-MPC
    iterations. **Returns:** the `BatchResult` (`sample` and `risk` must be among them)."""
    import jax

    from ecjax.experiment import batch_shape, run_batch

    jax.config.update("jax_enable_x64", True)  # as the sweep that made the cell (float64 only)
    c, N, dtype = inputs.community, int(inputs.N), inputs.dtype
    R = len(np.atleast_1d(inputs.deltas))
    first = min(int(inputs.block), int(inputs.S))  # the block that holds the kept samples
    keep = min(int(inputs.keep), first)
    _, agent_batch = batch_shape(c, N, dtype, R, first, keep, inputs.chunk, inputs.agent_batch)
    kw = inputs.run_kwargs()
    kw.update(chunk=None, agent_batch=agent_batch)
    return run_batch(c, inputs.profiles, inputs.deltas, max(keep, 1), keep=max(keep, 1), **kw)


def _one(ds: xr.Dataset, risk: float, sample: int) -> xr.Dataset:
    from ecjax.chain.sample import select

    return select(ds, risk, sample)


class _Compare:
    def __init__(self, community, N: int, tol: float):
        self.c = community
        self.tol = tol
        self.lay = AgentLayout(community.n, N)
        self.stats: dict[str, CheckStats] = {}
        self.diffs: list[Difference] = []

    def where(self, dims, idx, prosumers) -> dict:
        loc: dict[str, Any] = {}
        extra, agent = [], None
        for d, i in zip(dims, idx):
            if d == "time":
                loc["step"] = i
            elif d == "iterate0":
                loc["iteration"] = i
            elif d == "iteration":
                loc["iteration"] = i + 1  # u_star and θ of iteration p are stored at p − 1
            elif d == "agent":
                agent = i
            elif d == "prosumer":
                agent = int(prosumers[i])
            elif d == "to_agent":
                extra.append(f"to agent {i}")
            elif d != "input":
                extra.append(f"{d} {i}")
        if agent is not None:
            loc["agent"] = agent
        if "input" in dims and agent is not None:
            from ecjax.chain.audit import lane_name

            extra.insert(0, lane_name(self.lay, agent, idx[dims.index("input")]))
        if extra:
            loc["where"] = ", ".join(extra)
        return loc

    def array(self, quantity: str, rerun: xr.DataArray, stored: xr.DataArray, prosumers, note: str) -> None:
        s = self.stats.setdefault(quantity, CheckStats())
        if rerun.dims != stored.dims or rerun.shape != stored.shape:
            s.failed += 1
            self.diffs.append(Difference(quantity, note=f"{note}: stored with dims {dict(stored.sizes)}, the re-run "
                                                        f"gives {dict(rerun.sizes)}"))  # fmt: skip
            return
        a, b = np.asarray(rerun.values), np.asarray(stored.values)
        s.count += int(a.size)
        exact = a.dtype.kind in "biu" and b.dtype.kind in "biu"
        if exact:
            bad = a != b
            tol = None
            d = np.abs(a.astype(np.float64) - b.astype(np.float64))
        else:
            a64, b64 = a.astype(np.float64), b.astype(np.float64)
            d = np.abs(a64 - b64)
            tol = self.tol * (1.0 + np.maximum(np.abs(a64), np.abs(b64)))
            same_nan = np.isnan(a64) & np.isnan(b64)
            bad = ~((d <= tol) | same_nan)
            if a.size:
                ratio = np.where(same_nan, 0.0, np.where(np.isfinite(d), d / tol, np.inf))
                s.max_ratio = max(s.max_ratio, float(np.max(ratio)))
        if a.size:
            s.max_abs = max(s.max_abs, float(np.max(np.where(np.isnan(d), 0.0 if exact else np.inf, d))))
        s.failed += int(np.sum(bad))
        for idx in zip(*np.nonzero(bad)) if a.ndim else ([()] if bad else []):
            idx = tuple(int(i) for i in idx)
            self.diffs.append(Difference(
                quantity, chain=a[idx].item(), stored=b[idx].item(),
                tolerance=None if tol is None else float(tol[idx]), note=note, sides=SIDES,
                **self.where(rerun.dims, idx, prosumers),
            ))  # fmt: skip


def _compared(ds: xr.Dataset) -> set:
    """The data variables and the coordinates that hold data (the agents' roles), not the labels."""
    return set(ds.data_vars) | {k for k, v in ds.coords.items() if k not in ds.indexes and v.ndim > 0}


def compare(rerun: xr.Dataset, stored: xr.Dataset, part: str, cmp: _Compare, prosumers, names=None) -> None:
    """Compare every variable of the stored selection (and any the re-run adds) with the re-run."""
    have, made = _compared(stored), _compared(rerun)
    names = sorted(have | made) if names is None else names
    for k in names:
        q = k if part == "trajectories" or k in INDEX_NAMES else f"summary.{k}"
        if k not in have or k not in made:
            side = "the store lacks it" if k not in have else "the re-run does not produce it"
            cmp.stats.setdefault(q, CheckStats()).failed += 1
            cmp.diffs.append(Difference(q, note=f"{part}: {side}"))
            continue
        cmp.array(q, rerun[k], stored[k], prosumers, note=f"stored {part}: not what the stored config computes")


def _borderline(diffs: list[Difference], stored: xr.Dataset, kappa: float, tol: float) -> None:
    """Name, in its note, an FC-MPC stop that differs between the re-run and the stored run while
    the deciding θ lies within the float tolerance of ϰ (a decision round-off can flip)."""
    if "theta_trace" not in stored:
        return
    th = np.asarray(stored["theta_trace"].values, dtype=np.float64)  # [T, p_max]
    for k, d in enumerate(diffs):
        if d.quantity not in ("iters", "summary.iters") or d.step is None or d.chain is None:
            continue
        q = int(min(d.chain, d.stored))
        if 1 <= q <= th.shape[1] and abs(th[d.step, q - 1] - kappa) <= tol * (1.0 + kappa):
            diffs[k] = dataclasses.replace(d, note=(
                f"borderline stop: θ = {th[d.step, q - 1]:.17g} at iteration {q} lies within the float tolerance "
                f"of ϰ = {kappa:.17g}, a decision that round-off can flip"))  # fmt: skip


def check_origin(cell, sample: int, risk: float) -> OriginCheck:
    """Check sample `sample` at risk level `risk` of a finished store cell (`ecjax.store.Cell`)
    against the config stored with it (see the module docstring). Raises
    `ecjax.config.ConfigError` if the stored config is no longer a valid config."""
    from ecjax.config import cell_inputs, config_hash
    from ecjax.sweep import jax_setup

    t0 = time.perf_counter()
    diffs: list[Difference] = []
    recorded = cell.attrs.get("config_hash")
    recomputed = config_hash(cell.config)
    stats = {"config_hash": CheckStats(count=1)}
    if recorded != recomputed:
        stats["config_hash"].failed = 1
        diffs.append(Difference("config_hash", note=(
            f"the stored config hashes to {recomputed[:16]}…, the store recorded {str(recorded)[:16]}… when the run "
            "started: the config was changed after the run")))  # fmt: skip
    inputs = cell_inputs(cell.config)
    jax_setup(cell.config)  # the run's compilation cache: the re-run loads what the run compiled
    if "seed" in cell.attrs:
        stats["seed"] = CheckStats(count=1)
        if int(cell.attrs["seed"]) != inputs.seed:
            stats["seed"].failed = 1
            diffs.append(Difference("seed", chain=inputs.seed, stored=int(cell.attrs["seed"]), sides=("config", "recorded"),
                                    note="sim.seed of the stored config differs from the seed recorded at run time"))  # fmt: skip
    if not np.any(np.isclose(np.asarray(inputs.deltas, dtype=np.float64), risk, rtol=0, atol=1e-12)):
        diffs.append(Difference("risk", note=f"risk level {risk:g} is not one of the config's ccmpc.deltas "
                                             f"{np.asarray(inputs.deltas).tolist()}"))  # fmt: skip
    if not 0 <= sample < inputs.keep:
        diffs.append(Difference("sample", note=f"sample {sample} is not kept by the config (sim.keep = {inputs.keep})"))
    if any(d.quantity in ("risk", "sample") for d in diffs):  # nothing of the config's run to compare
        return OriginCheck(config_hash=recomputed, recorded_hash=recorded, checks=stats, differences=diffs,
                           seconds=time.perf_counter() - t0, tolerance={})  # fmt: skip
    res = rerun_sample(inputs, sample, risk)
    tol = float_tolerance(inputs.solver)
    cmp = _Compare(inputs.community, inputs.N, tol)
    stored_t = _one(cell.trajectories, risk, sample).load()
    rerun_t = _one(res.trajectories, risk, sample)
    prosumers = np.asarray(stored_t["prosumer_agent"].values) if "prosumer_agent" in stored_t else np.asarray(
        inputs.community.prosumers)  # fmt: skip
    compare(rerun_t, stored_t, "trajectories", cmp, prosumers)
    stored_s = _one(cell.summary, risk, sample).load()
    rerun_s = _one(res.summary, risk, sample)
    # the summary's per-sample variables and the agents' roles (the community's, compared with it)
    compare(rerun_s, stored_s, "summary", cmp, prosumers)
    stats.update(cmp.stats)
    _borderline(cmp.diffs, stored_t, float(inputs.fc.kappa), tol)
    return OriginCheck(config_hash=recomputed, recorded_hash=recorded, checks=stats, differences=diffs + cmp.diffs,
                       seconds=time.perf_counter() - t0, tolerance={"rtol": tol, "atol": tol, "integers": "exact"})  # fmt: skip
