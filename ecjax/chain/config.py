"""What a coordinator deployment commits to: the numbers the contract needs, and a hash of the rest.

`CoordinatorConfig` holds the deployment parameters in real units; `config_hash` is keccak256 of
its canonical JSON (sorted keys, no spaces, floats as `repr`), including a free-form `model`
mapping (community parameters, cost weights, chance-constraint settings: whatever the run used).
Anyone holding the same configuration recomputes the same bytes32 and compares it with the
contract's `configHash`.
"""

from __future__ import annotations

import dataclasses
import json
from fractions import Fraction
from typing import Any, Mapping, Sequence

import numpy as np
from eth_utils import keccak

from ecjax.chain import fixedpoint as fp
from ecjax.layout import AgentLayout

BOUND_NAMES = ("bc", "bd", "ugb", "ev", "bt")


@dataclasses.dataclass(frozen=True)
class CoordinatorConfig:
    """Deployment parameters of `FCMPCCoordinator`.

    **Arguments:**
    - `n`: agents in the community (prosumers and consumers).
    - `N`: horizon.
    - `prosumer_ids`: community indices of the prosumers (strictly increasing); prosumer k of the
      contract is agent `prosumer_ids[k]` of ecjax/layout.py.
    - `bounds`: per prosumer, the upper bounds (bc, bd, ugb, ev, bt) in kW (lower bounds are 0).
    - `w`: combination weight (a `Fraction`, or anything `Fraction` accepts); MODEL §6 default 1/|P|.
    - `kappa`: tolerance ϰ on θ (kW).
    - `p_max`: last iteration of a step.
    - `period_s`: seconds each iteration stays open.
    - `scale`: fixed-point scale (fixedpoint.SCALE).
    - `model`: JSON-serializable description of the rest of the run (hashed, not used on chain).
    """

    n: int
    N: int
    prosumer_ids: tuple[int, ...]
    bounds: tuple[tuple[float, float, float, float, float], ...]
    w: Fraction | None = None
    kappa: float = 1e-3
    p_max: int = 50
    period_s: int = 600
    scale: int = fp.SCALE
    model: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        ids = tuple(int(i) for i in self.prosumer_ids)
        object.__setattr__(self, "prosumer_ids", ids)
        object.__setattr__(self, "bounds", tuple(tuple(float(v) for v in b) for b in self.bounds))
        w = Fraction(1, len(ids)) if self.w is None and ids else Fraction(self.w if self.w is not None else 1)
        object.__setattr__(self, "w", w)
        if not 1 <= len(ids) <= 64:
            raise ValueError(f"`prosumer_ids` must hold 1..64 agents, got {len(ids)}.")
        if any(b <= a for a, b in zip(ids, ids[1:])) or ids[0] < 0 or ids[-1] >= self.n:
            raise ValueError(f"`prosumer_ids` must be strictly increasing in [0, n), got {ids}.")
        if self.N < 1:
            raise ValueError(f"`N` must be >= 1, got {self.N}.")
        if len(self.bounds) != len(ids) or any(len(b) != 5 for b in self.bounds):
            raise ValueError("`bounds` must hold one (bc, bd, ugb, ev, bt) tuple per prosumer.")
        if any(v < 0 for b in self.bounds for v in b):
            raise ValueError("`bounds` must be >= 0.")
        if not 0 < w <= 1 or w.denominator >= 2**32:
            raise ValueError(f"`w` must be in (0, 1] with a denominator < 2^32, got {w}.")
        if self.p_max < 0 or self.period_s <= 0 or self.kappa < 0:
            raise ValueError("`p_max` and `kappa` must be >= 0 and `period_s` > 0.")

    @property
    def layout(self) -> AgentLayout:
        return AgentLayout(n=self.n, N=self.N)

    @property
    def nu(self) -> int:
        return self.layout.nu

    @property
    def n_prosumers(self) -> int:
        return len(self.prosumer_ids)

    @property
    def kappa2(self) -> int:
        """ϰ² in fixed-point units squared."""
        return fp.kappa2(self.kappa, self.scale)

    def fixed_bounds(self) -> list[tuple[int, ...]]:
        """Bounds in fixed point, rounded down (a value within the real bound stays accepted)."""
        return [tuple(int(np.floor(v * self.scale)) for v in b) for b in self.bounds]

    def canonical(self) -> dict[str, Any]:
        return {
            "contract": "FCMPCCoordinator",
            "n": self.n,
            "N": self.N,
            "prosumer_ids": list(self.prosumer_ids),
            "bounds": {name: [b[k] for b in self.bounds] for k, name in enumerate(BOUND_NAMES)},
            "w": [self.w.numerator, self.w.denominator],
            "kappa": self.kappa,
            "p_max": self.p_max,
            "period_s": self.period_s,
            "scale": self.scale,
            "fixed_point": f"int{fp.LANE_BITS} big-endian",
            "model": _jsonable(self.model),
        }

    def config_hash(self) -> bytes:
        """keccak256 of the canonical JSON of this configuration (32 bytes)."""
        text = json.dumps(self.canonical(), sort_keys=True, separators=(",", ":"), allow_nan=False)
        return keccak(text.encode())

    def constructor_args(self, agent_addresses: Sequence[str]) -> tuple:
        """Arguments of the contract's constructor: (Config, agents, ids, Bounds[])."""
        if len(agent_addresses) != self.n_prosumers:
            raise ValueError(f"need {self.n_prosumers} agent addresses, got {len(agent_addresses)}.")
        cfg = (
            self.config_hash(),
            self.n,
            self.N,
            self.w.numerator,
            self.w.denominator,
            self.p_max,
            self.period_s,
            self.kappa2,
        )
        return cfg, list(agent_addresses), list(self.prosumer_ids), self.fixed_bounds()


def _jsonable(x):
    if isinstance(x, Mapping):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return _jsonable(x.tolist())
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, Fraction):
        return [x.numerator, x.denominator]
    if x is None or isinstance(x, (bool, int, float, str)):
        return x
    raise TypeError(f"`model` must be JSON-serializable, got {type(x).__name__}.")
