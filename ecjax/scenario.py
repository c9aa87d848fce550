"""The scenarios of MODEL §8, the tightening modes of MODEL §5, the FC-MPC combination rules
(MODEL §6, docs/fcmpc.md), and the rule that ties the standard DMPC to its risk level. Plain
Python: the config schema (`ecjax.config.schema`) types its choices with these names without
importing JAX. Each choice is written once, as a Literal; its tuple is the Literal's arguments."""

from __future__ import annotations

from typing import Literal, get_args

import numpy as np

Scenario = Literal["islanded", "ccdmpc", "dmpc", "centralized"]
SCENARIOS: tuple[str, ...] = get_args(Scenario)
Tightening = Literal["cumulative", "per_step"]
TIGHTENINGS: tuple[str, ...] = get_args(Tightening)
# `ecjax.fcmpc.FCMPCSettings.weights`: uniform w (the paper), or a λ per prosumer minimizing Φ
WeightRule = Literal["uniform", "optimal"]
WEIGHT_RULES: tuple[str, ...] = get_args(WeightRule)

DMPC_DELTA = 0.5  # `dmpc` is the standard (deterministic) MPC: δ = 0.5, z = 0


def check_scenario(name: str) -> None:
    if name not in SCENARIOS:
        raise ValueError(f"`scenario.name` must be one of {SCENARIOS}, got {name!r}.")


def check_tightening(mode: str) -> None:
    if mode not in TIGHTENINGS:
        raise ValueError(f"`ccmpc.tightening` must be one of {TIGHTENINGS}, got {mode!r}.")


def run_delta(scenario: str, delta):
    """The risk level a scenario runs at for an asked level `delta` (a float, an array or a
    traced value): `dmpc` runs at `DMPC_DELTA` whatever was asked, the others at `delta`."""
    return delta * 0 + DMPC_DELTA if scenario == "dmpc" else delta


def risk_levels(scenario: str, deltas) -> np.ndarray:
    """The distinct risk levels a cell of this scenario runs (`dmpc`: one, `DMPC_DELTA`)."""
    d = run_delta(scenario, np.asarray(deltas, np.float64).reshape(-1))
    return d[:1] if scenario == "dmpc" else d
