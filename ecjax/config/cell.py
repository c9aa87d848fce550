"""The whole config of a cell, its validation, and the typed objects it produces."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import numpy as np

from ..scenario import risk_levels
from ._fields import KEY_LIKE, ConfigError, Free, Section, Text, fail, setting, subsection
from .groups import (
    CCMPCConfig, ChainConfig, FCMPCConfig, OutConfig, ReportConfig, ScenarioConfig, SimConfig,
    SolverConfig, SweepConfig, ValidateConfig, WeightsConfig,
)  # fmt: skip
from .sources import CommunityConfig, DataConfig


def _walk(obj, prefix=""):
    if isinstance(obj, Mapping):
        for k, v in obj.items():
            yield from _walk(v, f"{prefix}.{k}" if prefix else str(k))
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            yield from _walk(v, f"{prefix}[{i}]")
    else:
        yield prefix, obj


@dataclasses.dataclass(frozen=True)
class Config(Section):
    """A resolved config (`conf/config.yaml` and its groups), every value checked."""

    key = ""
    community: CommunityConfig = subsection(CommunityConfig, required=True)
    data: DataConfig = subsection(DataConfig, required=True)
    scenario: ScenarioConfig = subsection(ScenarioConfig, required=True)
    ccmpc: CCMPCConfig = subsection(CCMPCConfig, required=True)
    fcmpc: FCMPCConfig = subsection(FCMPCConfig)
    weights: WeightsConfig = subsection(WeightsConfig)
    solver: SolverConfig = subsection(SolverConfig)
    sim: SimConfig = subsection(SimConfig, required=True)
    sweep: SweepConfig = subsection(SweepConfig)
    chain: ChainConfig = subsection(ChainConfig)
    out: OutConfig = subsection(OutConfig, required=True)
    validate: ValidateConfig = subsection(ValidateConfig)
    report: ReportConfig = subsection(ReportConfig)
    title: str | None = setting(None, Text(null=True))
    description: Any = setting(None, Free())
    progress: Any = setting(None, Free())
    cache_dir: Any = setting(None, Free())

    @classmethod
    def parse(cls, raw) -> Config:
        if not isinstance(raw, Mapping):
            fail("config", "a mapping", raw)
        for path, v in _walk(raw):
            if isinstance(v, str) and KEY_LIKE.match(v.strip()):
                raise ConfigError(f"{path} looks like a private key. Keys never go in configs: put it "
                                  "in an environment variable and name that variable in chain.key_env.")
        return super().parse(raw)

    def build(self):
        """The community, its profiles and the FC-MPC settings (checked against the community).

        numpy only; nothing is compiled.
        """
        community = self.community.build()
        profiles = self.data.profiles(community, int(self.community.seed))
        return community, profiles, self.fcmpc.settings(community)


TOP_KEYS = tuple(f.name for f in dataclasses.fields(Config))


def check_config(config: Mapping) -> Config:
    """Check every value of a resolved config; raise `ConfigError` naming the first bad key.

    Builds the community and its profiles (numpy) to check their own ranges, the data files and
    the FC-MPC weight against |P|; nothing is compiled. **Returns:** the typed `Config`.
    """
    cfg = Config.parse(config)
    cfg.build()
    return cfg


def build_community(c: Mapping):
    """`ecjax.community.Community` of a `community` config section."""
    return CommunityConfig.parse(c).build()


def build_profiles(d: Mapping, community, community_seed: int = 0):
    """`ecjax.disturbance.Profiles` of a `data` config section for `community`."""
    return DataConfig.parse(d).profiles(community, community_seed)


@dataclasses.dataclass(frozen=True)
class CellInputs:
    """The typed objects that produce one cell (`ecjax.experiment.run_batch` arguments)."""

    community: Any  # ecjax.community.Community
    profiles: Any  # ecjax.disturbance.Profiles
    deltas: np.ndarray
    S: int
    seed: int
    options: Any  # ecjax.simulate.Options
    N: int
    fc: Any  # ecjax.fcmpc.FCMPCSettings
    weights: Any  # ecjax.weights.CostWeights
    solver: Any  # ecjax.qp.IPM
    dtype: Any
    chain: dict
    chunk: int | None  # None: `ecjax.experiment.auto_chunk`
    keep: int
    block: int
    agent_batch: int | None = None  # None: `ecjax.experiment.auto_agent_batch`

    def run_kwargs(self) -> dict:
        """Keyword arguments of `run_batch` (all but S, keep, sample_offset, progress)."""
        return dict(seed=self.seed, options=self.options, N=self.N, fc=self.fc,
                    weights=self.weights, solver=self.solver, dtype=self.dtype, chunk=self.chunk,
                    agent_batch=self.agent_batch)


def cell_inputs(config: Mapping) -> CellInputs:
    """Rebuild exactly the typed objects that produced a cell from its resolved config.

    For the `dmpc` scenario the risk levels are [0.5] (no tightening, MODEL §8), whatever
    `ccmpc.deltas` says; the stored `risk` coordinate says the same.
    """
    import jax.numpy as jnp

    from ..simulate import Options

    cfg = Config.parse(config)
    community, profiles, fc = cfg.build()
    sim, cc, scen = cfg.sim, cfg.ccmpc, cfg.scenario.name
    options = Options(
        scenario=scen, T=int(sim.T), tightening=cc.tightening, tighten_consumers=bool(cc.tighten_consumers),
        gap=bool(sim.gap), record_plans=bool(sim.record_plans),
    )  # fmt: skip
    return CellInputs(
        community=community,
        profiles=profiles,
        deltas=risk_levels(scen, cc.deltas),
        S=int(sim.S),
        seed=int(sim.seed),
        options=options,
        N=int(sim.N),
        fc=fc,
        weights=cfg.weights.weights(),
        solver=cfg.solver.ipm(),
        dtype=jnp.dtype(sim.dtype),
        chain=dict(config.get("chain") or {}),
        chunk=None if sim.chunk == "auto" else int(sim.chunk),
        keep=int(sim.keep),
        block=int(sim.blocks),
        agent_batch=None if sim.agent_batch == "auto" else int(sim.agent_batch),
    )
