"""The run bound to its origin: a stored sample recomputed from the stored config.

For one finished cell, one kept sample and one risk level:

1. the config hash is recomputed from the stored config (`ecjax.config.config_hash`) and
   compared with the hash the store recorded when the run started (cell attr `config_hash`),
   and the recorded seed with the config's `sim.seed`;
2. the cell's inputs (community, profiles, FC-MPC and solver settings, seed) are rebuilt from
   the stored config (`ecjax.config.cell_inputs`), and that one sample is run again at that
   risk level by the batch code itself (`ecjax.experiment.run_batch` with the sample kept, its
   full record and, as the run had it, `sim.record_plans`; the same sample id, so the same
   disturbance draw `fold_in(key(sim.seed), sample)`);
3. every array the store holds for that (risk, sample) is compared with the re-run: the
   trajectories (states, draws, the price profile, applied controls, FC-MPC iterates and
   optima, θ, iterations, QP statuses, everything present) and the summary row (E1..E8, Φ,
   counts, violation indicators). The store holds no forecast arrays: forecasts and profiles
   come from the config, which steps 1 and 2 bind.

**Tolerance.** The re-run executes the same program on the same inputs; what differs is the
shape of the batch around the sample (the stored run vmapped it with its other kept samples
and risk levels, the re-run runs it alone), which XLA may vectorize differently, so single
operations may round differently in the last bit. Measured on the development machine (CPU,
float64, re-run in a fresh process, every kept sample of each test cell; n = 4, T = 3, N = 5):

    kept samples of the cell, one call              re-runs   max |re-run − stored|   integers
    1 sample × 1 risk level (the re-run's shape)    1         0 (bit for bit)         equal
    2 samples × 2 risk levels, IPM at 1e-6, chunk 1 4         4.5e-15 kW (u_star)     equal
    3 samples × 2 risk levels, IPM at 1e-8, chunk 2 6         3.9e-15 kW (u_star)     equal

The float tolerance is

    |re-run − stored| <= ATOL + RTOL·max(|re-run|, |stored|),   RTOL = ATOL = 1e-9 (kW, kWh, €)

about 2·10⁵ times the largest deviation measured (4.4e-6 of the tolerance), to leave room for
last-bit differences amplified through the interior-point iterations on other cells, and 1000
times below the solver's own tolerance (ε = 1e-6 by default): a value changed by more than the
solver could resolve is a difference.

Integer data (FC-MPC and interior-point iteration counts, QP statuses, violation indicators,
counts) compare exactly: in every measured re-run they were equal. The bound assumes what the
measurements show, that round-off does not flip a discrete decision of the re-run (an
interior-point stop at ε, an FC-MPC stop at θ <= ϰ). A decision within round-off of its
threshold could flip on another shape or machine; the re-run then differs from that step on by
up to the solver's tolerance (an interior-point step more or less) or by θ of an iteration
more or less (an FC-MPC stop), the first difference names the step and the count (`iters`,
`qp_steps`), and an FC-MPC stop whose deciding θ lies within the float tolerance of ϰ is called
borderline in its note. The audit does not verify then: the run is not reproduced. The
comparison is meant for the machine and build that made the run (the store records both, cell attrs
`device` and `versions`); on another one a difference names the first quantity that moved.
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

__all__ = ["ATOL", "RTOL", "OriginCheck", "check_origin", "rerun_sample"]

RTOL = 1e-9
ATOL = 1e-9
SIDES = ("re-run", "stored")


@dataclasses.dataclass
class OriginCheck:
    """What the check of a stored sample against its config found."""

    config_hash: str  # recomputed from the stored config
    recorded_hash: str | None  # recorded by the store when the run started
    checks: dict[str, CheckStats]
    differences: list[Difference]
    seconds: float
    tolerance: dict = dataclasses.field(default_factory=lambda: {"rtol": RTOL, "atol": ATOL, "integers": "exact"})

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
    """Run sample `sample` of a cell made with `inputs` (`ecjax.config.CellInputs`) again at risk
    level `risk`, kept with its full record. **Returns:** the `BatchResult` of one (risk, sample)."""
    import jax

    from ecjax.experiment import run_batch

    jax.config.update("jax_enable_x64", True)  # as the sweep that made the cell (float64 only)
    kw = inputs.run_kwargs()
    kw.pop("chunk")  # the kept sample runs in its own call
    return run_batch(inputs.community, inputs.profiles, [risk], 1, keep=1, sample_offset=int(sample), **kw)


def _one(ds: xr.Dataset, risk: float, sample: int) -> xr.Dataset:
    from ecjax.chain.sample import select

    return select(ds, risk, sample)


class _Compare:
    def __init__(self, community, N: int):
        self.c = community
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
            tol = ATOL + RTOL * np.maximum(np.abs(a64), np.abs(b64))
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


def compare(rerun: xr.Dataset, stored: xr.Dataset, part: str, cmp: _Compare, prosumers, names=None) -> None:
    """Compare every variable of the stored selection (and any the re-run adds) with the re-run."""
    names = sorted(set(stored.data_vars) | set(rerun.data_vars)) if names is None else names
    for k in names:
        q = k if part == "trajectories" or k in INDEX_NAMES else f"summary.{k}"
        if k not in stored.data_vars or k not in rerun.data_vars:
            side = "the store lacks it" if k not in stored.data_vars else "the re-run does not produce it"
            cmp.stats.setdefault(q, CheckStats()).failed += 1
            cmp.diffs.append(Difference(q, note=f"{part}: {side}"))
            continue
        cmp.array(q, rerun[k], stored[k], prosumers, note=f"stored {part}: not what the stored config computes")


def _borderline(diffs: list[Difference], stored: xr.Dataset, kappa: float) -> None:
    """Name, in its note, an FC-MPC stop that differs between the re-run and the stored run while
    the deciding θ lies within the float tolerance of ϰ (a decision round-off can flip)."""
    if "theta_trace" not in stored:
        return
    th = np.asarray(stored["theta_trace"].values, dtype=np.float64)  # [T, p_max]
    for k, d in enumerate(diffs):
        if d.quantity not in ("iters", "summary.iters") or d.step is None or d.chain is None:
            continue
        q = int(min(d.chain, d.stored))
        if 1 <= q <= th.shape[1] and abs(th[d.step, q - 1] - kappa) <= ATOL + RTOL * kappa:
            diffs[k] = dataclasses.replace(d, note=(
                f"borderline stop: θ = {th[d.step, q - 1]:.17g} at iteration {q} lies within the float tolerance "
                f"of ϰ = {kappa:.17g}, a decision that round-off can flip"))  # fmt: skip


def check_origin(cell, sample: int, risk: float) -> OriginCheck:
    """Check sample `sample` at risk level `risk` of a finished store cell (`ecjax.store.Cell`)
    against the config stored with it (see the module docstring). Raises
    `ecjax.config.ConfigError` if the stored config is no longer a valid config."""
    from ecjax.config import cell_inputs, config_hash

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
    res = rerun_sample(inputs, sample, risk)
    cmp = _Compare(inputs.community, inputs.N)
    stored_t = _one(cell.trajectories, risk, sample).load()
    rerun_t = _one(res.trajectories, risk, sample)
    prosumers = np.asarray(stored_t["prosumer_agent"].values) if "prosumer_agent" in stored_t else np.asarray(
        inputs.community.prosumers)  # fmt: skip
    compare(rerun_t, stored_t, "trajectories", cmp, prosumers)
    stored_s = _one(cell.summary, risk, sample).load()
    rerun_s = _one(res.summary, risk, sample)
    # the summary's per-sample variables (is_prosumer is the community's, compared with it)
    compare(rerun_s, stored_s, "summary", cmp, prosumers)
    stats.update(cmp.stats)
    _borderline(cmp.diffs, stored_t, float(inputs.fc.kappa))
    return OriginCheck(config_hash=recomputed, recorded_hash=recorded, checks=stats, differences=diffs + cmp.diffs,
                       seconds=time.perf_counter() - t0)  # fmt: skip
