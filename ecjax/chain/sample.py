"""One stored closed-loop sample (one risk level, one sample, all T steps) as plain numpy.

The audit reads what `ecjax.experiment.run_batch(..., keep=k, options=Options(record_plans=True))`
returns as `.trajectories` (and, for E1..E8, `.summary`), selected at one risk level and one
sample. `RunInputs` names what the audit needs of the run's configuration; any object with
these attributes (e.g. `ecjax.config.CellInputs`) will do.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Protocol

import numpy as np
import xarray as xr

from ecjax.community import Community
from ecjax.disturbance import Profiles
from ecjax.fcmpc import FCMPCSettings
from ecjax.metrics import INDEX_NAMES
from ecjax.qp import IPM
from ecjax.simulate import Options
from ecjax.weights import CostWeights

AUDITABLE = ("ccdmpc", "dmpc", "islanded")


class RunInputs(Protocol):
    """The typed objects that produced a stored run (the fields of `ecjax.config.CellInputs`)."""

    community: Community
    profiles: Profiles
    options: Options
    N: int
    fc: FCMPCSettings
    weights: CostWeights
    solver: IPM
    dtype: Any


@dataclasses.dataclass(frozen=True)
class Inputs:
    """A plain `RunInputs` (for runs made without a store)."""

    community: Community
    profiles: Profiles
    options: Options
    N: int
    fc: FCMPCSettings
    weights: CostWeights = CostWeights()
    solver: IPM = IPM()
    dtype: Any = np.float64
    seed: int | None = None
    chain: dict = dataclasses.field(default_factory=dict)


class SampleError(ValueError):
    """The stored data cannot be audited (missing variables, wrong selection or shapes)."""


@dataclasses.dataclass
class StoredSample:
    """Numpy view of one stored sample; shapes use T steps, P prosumers, nu inputs, n agents."""

    risk: float  # the risk level δ of the selection
    sample: int
    u_iter: np.ndarray  # [T, p_max+1, P, nu] inputs of FC-MPC iterates 0..p_max (held after the stop)
    u_star: np.ndarray  # [T, p_max, P, nu] subproblem optima of iterations 1..p_max
    iters: np.ndarray  # [T] iterations used after the islanded iterate
    theta_trace: np.ndarray  # [T, p_max] max_i θ_i^p
    eb: np.ndarray  # [T, n] measured battery energy after each step
    eev: np.ndarray  # [T, n]
    pv: np.ndarray  # [T, n] realized PV (kW; consumers 0)
    load: np.ndarray  # [T, n] realized load (kW)
    price: np.ndarray  # [T]
    applied: dict[str, np.ndarray]  # u_bc, u_bd, u_ugb, u_ev [T, n]; u_bt [T, n, n]
    ug: np.ndarray  # [T, n] grid purchases of the stored plant
    qp_status: np.ndarray  # [T]
    prosumers: np.ndarray  # [P] community index of each prosumer
    indices: dict[str, float] | None = None  # stored E1..E8 (summary), if given
    lam_trace: np.ndarray | None = None  # [T, p_max, P] weights λ_i^p (None: a store without them)

    @property
    def T(self) -> int:
        return int(self.iters.shape[0])

    @property
    def p_max(self) -> int:
        return int(self.u_star.shape[1])

    def measured_state(self, t: int, community: Community) -> tuple[np.ndarray, np.ndarray]:
        """(eb, eev) known to the controllers at step t (MODEL §7): the plant's state after step
        t − 1, or the initial state at t = 0."""
        if t == 0:
            eb0 = np.asarray(community.eb0, dtype=np.float64)
            return eb0, np.zeros_like(eb0)
        return self.eb[t - 1], self.eev[t - 1]

    def weights(self, t: int, p: int) -> np.ndarray:
        """The weights λ^p [P] the stored run applied at iteration p >= 1 of step t: stored
        (`lam_trace`), or in a store without them read back from its iterates:
        u_i^p = λ_i·u_i^{p,*} + (1 − λ_i)·u_i^{p−1} (MODEL §6), so
        λ_i = ⟨u_i^p − u_i^{p−1}, d_i⟩ / ‖d_i‖², d_i = u_i^{p,*} − u_i^{p−1} (0 where d_i = 0),
        clipped to [0, 1] and scaled to Σ λ <= 1."""
        if self.lam_trace is not None:
            return self.lam_trace[t, p - 1]
        prev = self.u_iter[t, p - 1]
        d = self.u_star[t, p - 1] - prev
        dd = np.sum(d * d, axis=1)
        lam = np.where(dd > 0, np.sum((self.u_iter[t, p] - prev) * d, axis=1) / np.where(dd > 0, dd, 1.0), 0.0)
        lam = np.clip(lam, 0.0, 1.0)
        total = float(lam.sum())
        return lam / total if total > 1.0 else lam


def _one(ds: xr.Dataset, dim: str, value=None) -> xr.Dataset:
    if dim not in ds.dims:
        return ds
    if value is not None:
        coord = ds[dim].values
        hit = np.flatnonzero(np.isclose(coord, value, rtol=0, atol=1e-12) if dim == "risk" else coord == value)
        if hit.size != 1:
            raise SampleError(f"{dim}={value!r} is not stored; available: {coord.tolist()}.")
        return ds.isel({dim: int(hit[0])})
    if ds.sizes[dim] != 1:
        raise SampleError(f"select one {dim} first (the dataset holds {ds.sizes[dim]}: {ds[dim].values.tolist()}).")
    return ds.isel({dim: 0})


def select(ds: xr.Dataset, risk: float | None = None, sample: int | None = None) -> xr.Dataset:
    """`ds` at one risk level and one sample (a dimension of length one is taken as is)."""
    return _one(_one(ds, "risk", risk), "sample", sample)


def stored_sample(trajectories: xr.Dataset, summary: xr.Dataset | None = None) -> StoredSample:
    """Extract one sample from a trajectories Dataset (dims risk and sample of length one, or
    already selected). `summary`, when given (same selection), supplies the stored E1..E8."""
    ds = select(trajectories)
    for name in ("u_iter", "u_star"):
        if name not in ds:
            raise SampleError(
                f"the stored sample has no `{name}`: FC-MPC iterates are recorded only with "
                "`Options(record_plans=True)` (config `sim.record_plans`) for kept samples."
            )
    need = ("iters", "theta_trace", "eb", "eev", "pv", "load", "price", "ug", "qp_status", "prosumer_agent")
    missing = [k for k in need + ("u_bc", "u_bd", "u_ugb", "u_ev", "u_bt") if k not in ds]
    if missing:
        raise SampleError(f"the stored sample lacks {missing}.")
    f = lambda k: np.asarray(ds[k].values)  # noqa: E731
    indices = None
    if summary is not None:
        s = select(summary)
        indices = {k: float(np.asarray(s[k].values)) for k in INDEX_NAMES if k in s}
    u_iter = np.asarray(ds["u_iter"].transpose("time", "iterate0", "prosumer", "input").values, dtype=np.float64)
    u_star = np.asarray(ds["u_star"].transpose("time", "iteration", "prosumer", "input").values, dtype=np.float64)
    if u_iter.shape[1] != u_star.shape[1] + 1:
        raise SampleError(f"u_iter has {u_iter.shape[1]} iterates but u_star {u_star.shape[1]} iterations.")
    return StoredSample(
        risk=float(ds["risk"].values) if "risk" in ds.coords else float("nan"),
        sample=int(ds["sample"].values) if "sample" in ds.coords else -1,
        u_iter=u_iter,
        u_star=u_star,
        iters=f("iters").astype(np.int64),
        theta_trace=f("theta_trace").astype(np.float64),
        eb=f("eb"),
        eev=f("eev"),
        pv=f("pv"),
        load=f("load"),
        price=f("price"),
        applied={k: f(k) for k in ("u_bc", "u_bd", "u_ugb", "u_ev", "u_bt")},
        ug=f("ug"),
        qp_status=f("qp_status").astype(np.int64),
        prosumers=f("prosumer_agent").astype(np.int64),
        indices=indices,
        lam_trace=(np.asarray(ds["lam_trace"].transpose("time", "iteration", "prosumer").values, dtype=np.float64)
                   if "lam_trace" in ds else None),
    )


def check_compatible(s: StoredSample, inputs: RunInputs) -> None:
    """Raise `SampleError` unless the stored sample was made with these inputs' shapes."""
    c = inputs.community
    scenario = inputs.options.scenario
    if scenario not in AUDITABLE:
        raise SampleError(
            f"scenario {scenario!r} cannot be audited on chain: only {AUDITABLE} have agents "
            "that negotiate their own plans."
        )
    nu = (c.n + 3) * inputs.N
    P = len(c.prosumers)
    if s.u_iter.shape[2:] != (P, nu):
        raise SampleError(f"stored iterates have shape (P, nu) = {s.u_iter.shape[2:]}, expected {(P, nu)}.")
    if tuple(s.prosumers.tolist()) != tuple(c.prosumers):
        raise SampleError(f"stored prosumers {s.prosumers.tolist()} differ from the community's {c.prosumers}.")
    if s.p_max != inputs.fc.p_max:
        raise SampleError(f"stored iterations {s.p_max} differ from fcmpc.p_max = {inputs.fc.p_max}.")
    if s.T != inputs.options.T:
        raise SampleError(f"stored steps {s.T} differ from sim.T = {inputs.options.T}.")
