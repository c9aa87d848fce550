"""The config groups of a cell's controller and run: one typed section per group of `conf/`."""

from __future__ import annotations

import dataclasses
import numbers
import re
from typing import Literal, get_args

from ..scenario import SCENARIOS, TIGHTENINGS, WEIGHT_RULES
from ._fields import (
    ConfigError, Choice, DefaultOf, Flag, Free, Int, Num, Section, Table, Text, EnvName, fail,
    object_error, setting,
)  # fmt: skip

# where `ecjax.sweep` runs cells: this process, a local dask cluster, or a batch system's
# workers through dask-jobqueue (`ecjax.cluster`)
Cluster = Literal["none", "local", "jobqueue"]
CLUSTERS: tuple[str, ...] = get_args(Cluster)
# `ecjax.chain.replay.open_chain` kinds (`ecjax.chain.replay.CHAINS`, the same names: the config
# does not import the chain's web3 stack to read them; tests/engine/test_config.py compares)
ChainKind = Literal["tester", "anvil", "rpc"]
CHAIN_KINDS: tuple[str, ...] = get_args(ChainKind)
SolverMethod = Literal["ipm"]  # the one QP method of the engine (`ecjax.qp.IPM`)
SEED = Int(0, 2**31 - 1)
_SCHEDULER = re.compile(r"^(tcp|tls|inproc|ucx)://")


@dataclasses.dataclass(frozen=True)
class ScenarioConfig(Section):
    key = "scenario"
    name: str = setting(None, Choice(SCENARIOS), required=True)


@dataclasses.dataclass(frozen=True)
class CCMPCConfig(Section):
    key = "ccmpc"
    deltas: list[float] = setting([], Free(), required=True)  # risk levels δ, checked below
    tightening: str = setting(None, Choice(TIGHTENINGS), required=True)
    tighten_consumers: bool = setting(False, Flag())

    def check(self) -> None:
        d = self.deltas
        if not isinstance(d, (list, tuple)) or len(d) == 0:
            fail("ccmpc.deltas", "a non-empty list of risk levels in (0, 0.5]", d)
        for i, x in enumerate(d):
            Num(0.0, 0.5, lo_open=True)(f"ccmpc.deltas[{i}]", x)
        if len({float(x) for x in d}) != len(d):
            fail("ccmpc.deltas", "distinct risk levels", d)


@dataclasses.dataclass(frozen=True)
class FCMPCConfig(Section):
    key = "fcmpc"
    kappa: float = setting(1e-3, Num(0.0, lo_open=True))
    p_max: int = setting(30, Int(1, 10_000))
    w: float | None = setting(None, Num(0.0, 1.0, lo_open=True, null=True))  # null: 1/|P|
    weights: str = setting("uniform", Choice(WEIGHT_RULES))  # combination rule

    def settings(self, community):
        """`ecjax.fcmpc.FCMPCSettings`, checked against `community` (w <= 1/|P|)."""
        from ..fcmpc import FCMPCSettings

        fc = FCMPCSettings(kappa=float(self.kappa), p_max=int(self.p_max),
                           w=None if self.w is None else float(self.w), weights=str(self.weights))
        try:
            fc.check(community)
        except ValueError as e:
            raise object_error(e) from None
        return fc


@dataclasses.dataclass(frozen=True)
class WeightsConfig(Section):
    """`ecjax.weights.CostWeights`; its ranges are checked by CostWeights itself."""

    key = "weights"
    gamma: float = setting(0.5, Num())
    r_c: float = setting(0.005, Num())
    r_d: float = setting(0.005, Num())
    r_t: float = setting(0.005, Num())
    r_ugb: float = setting(0.0, Num())
    r_ev: float = setting(0.0, Num())
    delta_b: float = setting(0.002, Num())
    delta_ev: float = setting(0.01, Num())
    w_T: float = setting(1.0, Num())
    rho1: float = setting(2.0, Num())
    rho2: float = setting(10.0, Num())

    def check(self) -> None:
        self.weights()

    def weights(self):
        from ..weights import CostWeights

        try:
            return CostWeights(**{k: float(v) for k, v in dataclasses.asdict(self).items()})
        except ValueError as e:
            raise object_error(e) from None


IPM_DEFAULT = DefaultOf("ecjax.qp.ipm:IPM")  # the solver's settings keep their defaults in IPM


@dataclasses.dataclass(frozen=True)
class SolverConfig(Section):
    """`ecjax.qp.IPM`'s settings (`method`: the one QP method of the engine).

    One field per field of IPM, with IPM's default; what this section adds is each setting's
    allowed range, checked when the config is read and named by its config key.
    """

    key = "solver"
    method: str = setting("ipm", Choice(get_args(SolverMethod)))
    eps_abs: float = setting(IPM_DEFAULT, Num(0.0))
    eps_rel: float = setting(IPM_DEFAULT, Num(0.0))
    eps_pinf: float = setting(IPM_DEFAULT, Num(0.0, lo_open=True))
    eps_dinf: float = setting(IPM_DEFAULT, Num(0.0, lo_open=True))
    step_fraction: float = setting(IPM_DEFAULT, Num(0.0, 1.0, lo_open=True, hi_open=True))
    reg: float | None = setting(IPM_DEFAULT, Num(0.0, lo_open=True, null=True))
    reg_eq: float | None = setting(IPM_DEFAULT, Num(0.0, lo_open=True, null=True))
    max_iter: int = setting(IPM_DEFAULT, Int(1, 10_000_000))
    certify_from: int = setting(IPM_DEFAULT, Int(0, 100_000))
    refine: int = setting(IPM_DEFAULT, Int(0, 100))
    refine_max: int = setting(IPM_DEFAULT, Int(0, 100))
    warm_margin: float | None = setting(IPM_DEFAULT, Num(0.0, lo_open=True, null=True))
    warm_scale: float = setting(IPM_DEFAULT, Num(0.0))
    weak_p: float = setting(IPM_DEFAULT, Num(0.0, lo_open=True))
    max_dense: int = setting(IPM_DEFAULT, Int(0))
    scaling_iters: int = setting(IPM_DEFAULT, Int(0, 1000))

    def check(self) -> None:
        if self.refine_max < self.refine:
            fail("solver.refine_max", f">= solver.refine = {self.refine}", self.refine_max)

    def ipm(self):
        from ..qp import IPM

        kw = dataclasses.asdict(self)
        kw.pop("method")
        return IPM(**kw)


@dataclasses.dataclass(frozen=True)
class Float64:
    """The engine's dtype (`ecjax.simulate.check_dtype` refuses float32 in numerical code too)."""

    def __call__(self, key: str, v) -> None:
        if v != "float64":
            fail(key, "float64 (in float32 the QP solvers end some agent QPs in numerical_error: "
                 "docs/engine.md)", v)


@dataclasses.dataclass(frozen=True)
class SimConfig(Section):
    key = "sim"
    S: int = setting(None, Int(1, 100_000_000), required=True)
    T: int = setting(None, Int(1, 24), required=True)
    N: int = setting(None, Int(1, 168), required=True)
    seed: int = setting(None, SEED, required=True)
    dtype: str = setting(None, Float64(), required=True)
    chunk: int | str = setting("auto", Int(1, 1_000_000, word="auto"))
    agent_batch: int | str = setting("auto", Int(1, 100_000, word="auto"))
    block: int | None = setting(None, Int(1, 100_000_000, null=True))  # null: S
    keep: int = setting(0, Int(0))
    record_plans: bool = setting(False, Flag())
    gap: bool = setting(False, Flag())

    def check(self) -> None:
        if self.block is not None and self.block > self.S:
            fail("sim.block", f"<= sim.S = {self.S} (or null)", self.block)
        if self.keep > min(self.S, self.blocks):
            fail("sim.keep", f"in [0, min(sim.S, sim.block)] = [0, {min(self.S, self.blocks)}]", self.keep)

    @property
    def blocks(self) -> int:
        """Samples per store update."""
        return self.block or self.S


@dataclasses.dataclass(frozen=True)
class SweepConfig(Section):
    key = "sweep"
    params: dict = setting({}, Table())
    cluster: str = setting("none", Choice(CLUSTERS))
    scheduler: str | None = setting(None, Text(null=True))
    workers: int = setting(1, Int(1, 4096))
    jobqueue: dict = setting({}, Table())  # cluster=jobqueue: `kind` and the class's keywords (ecjax.cluster)

    def check(self) -> None:
        for k, v in self.params.items():
            if not isinstance(k, str) or not k or k.startswith(("sweep", "out", "hydra")):
                fail(f"sweep.params key {k!r}", "a config key other than sweep.*, out.*, hydra.*", k)
            ok = isinstance(v, (str, numbers.Real)) or (
                isinstance(v, (list, tuple)) and v and all(isinstance(x, (str, numbers.Real)) for x in v))
            if not ok or isinstance(v, bool):
                fail(f"sweep.params.{k}", "a Hydra sweep string ('a,b', 'range(1,4)') or a non-empty list", v)
        # an address, or a scheduler file (checked when the run is planned: ecjax.cluster.check)
        if self.scheduler is not None and (not self.scheduler.strip() or (
                "://" in self.scheduler and not _SCHEDULER.match(self.scheduler))):
            fail("sweep.scheduler", "null, a dask scheduler address like tcp://host:8786 or a "
                 "scheduler file", self.scheduler)


@dataclasses.dataclass(frozen=True)
class ChainConfig(Section):
    key = "chain"
    kind: str = setting("tester", Choice(CHAIN_KINDS))
    url: str | None = setting(None, Text(null=True))
    key_env: str | None = setting(None, EnvName())
    keystore: str | None = setting(None, Text(null=True))
    password_env: str | None = setting(None, EnvName())
    scale: int = setting(1_000_000, Int(1, 10**18))
    period_s: int = setting(600, Int(1, 10**9))

    def check(self) -> None:
        if self.kind == "rpc":
            if not self.url:
                fail("chain.url", "the JSON-RPC URL (chain.kind=rpc)", self.url)
            if not self.key_env and not self.keystore:
                raise ConfigError("chain.key_env or chain.keystore is required with chain.kind=rpc.")


@dataclasses.dataclass(frozen=True)
class OutConfig(Section):
    key = "out"
    dir: str | None = setting(None, Text(null=True))
    store: str = setting(None, Text(), required=True)
    report: str | None = setting(None, Text(null=True))  # null: no report


@dataclasses.dataclass(frozen=True)
class ValidateConfig(Section):
    """Open-loop validation (`ecjax.validate`)."""

    key = "validate"
    open_loop: bool = setting(False, Flag())
    S: int = setting(10_000, Int(1, 10**9))
    t: int = setting(0, Int(0, 23))
    level: float = setting(0.95, Num(0.0, 1.0, lo_open=True, hi_open=True))
    chunk: int = setting(65_536, Int(1, 10**7))


@dataclasses.dataclass(frozen=True)
class ReportConfig(Section):
    key = "report"
    delta: float = setting(0.05, Num(0.0, 0.5, lo_open=True))
    figures: bool = setting(True, Flag())
