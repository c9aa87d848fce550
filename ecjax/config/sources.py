"""The config groups of what a cell simulates: the community and its data (profiles, price)."""

from __future__ import annotations

import dataclasses
import functools
import inspect
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Literal, get_args

import numpy as np

from .. import data as D
from ._fields import (
    ConfigError, Choice, Flag, Free, Int, Num, Section, Table, Text, fail, is_num, setting, subsection,
)  # fmt: skip
from .groups import SEED

# What the config builds, dispatched here (CommunityConfig.build, DataConfig.profiles):
CommunityKind = Literal["paper", "generated"]  # ecjax.community.paper_case | generate_community
COMMUNITY_KINDS: tuple[str, ...] = get_args(CommunityKind)
DataKind = Literal["real", "synthetic"]  # ecjax.data tables | ecjax.disturbance.synthetic_profiles
DATA_KINDS: tuple[str, ...] = get_args(DataKind)
PriceSource = Literal["builtin", "csv", "omie", "synthetic"]
PRICE_SOURCES: tuple[str, ...] = get_args(PriceSource)
_NOT_PARAMS = ("prosumers", "ev_avail", "dt")  # what a community kind itself decides


@functools.cache
def community_params() -> tuple[str, ...]:
    """The `ecjax.community.make_community` arguments that `community.params` may replace."""
    from ..community import make_community

    return tuple(p for p in inspect.signature(make_community).parameters if p not in _NOT_PARAMS)


def _params_key(message: str) -> str:
    """A `make_community` error names the argument as `community.<name>`; in a config that
    argument is `community.params.<name>` (`community.n` and `community.prosumer_share` stay)."""
    m = re.match(r"community\.(\w+)", message)
    if m and m.group(1) in community_params():
        return "community.params." + message[len("community."):]
    return message


@dataclasses.dataclass(frozen=True)
class CommunityConfig(Section):
    key = "community"
    kind: str = setting(None, Choice(COMMUNITY_KINDS), required=True)
    seed: int = setting(0, SEED)
    params: dict = setting({}, Table())  # make_community arguments: a number, or one per agent
    n: int | None = setting(None, Free())  # generated only: checked below
    prosumer_share: float = setting(7 / 15, Num(0.0, 1.0, lo_open=True))  # generated only

    @classmethod
    def known(cls, raw):
        kind = raw.get("kind")
        Choice(COMMUNITY_KINDS)("community.kind", kind)
        names = ("kind", "params", "seed") + (("n", "prosumer_share") if kind == "generated" else ())
        return tuple(sorted(names)), f" for community.kind={kind}"

    def check(self) -> None:
        if self.kind == "generated":
            Int(2, 100_000)("community.n", self.n)
        known = community_params()
        for k, v in self.params.items():
            if k not in known:
                raise ConfigError(f"community.params.{k} is not a community parameter "
                                  f"(known: {', '.join(known)}).")
            for i, x in enumerate(v if isinstance(v, (list, tuple)) else [v]):
                if not is_num(x):
                    where = f"community.params.{k}" + (f"[{i}]" if isinstance(v, (list, tuple)) else "")
                    fail(where, "a finite number (or a list of them, one per agent)", x)

    def build(self):
        """`ecjax.community.Community` (its own ranges checked by `make_community`)."""
        from ..community import CommunityError, generate_community, paper_case

        params = {k: (np.asarray(v, np.float64) if isinstance(v, (list, tuple)) else v)
                  for k, v in self.params.items()}
        try:
            if self.kind == "paper":
                return paper_case(seed=int(self.seed), **params)
            return generate_community(int(self.n), float(self.prosumer_share), seed=int(self.seed), **params)
        except CommunityError as e:
            raise ConfigError(_params_key(str(e))) from None
        except ValueError as e:  # broadcasting a per-agent list of the wrong length
            raise ConfigError(f"community.params: {e}") from None


@dataclasses.dataclass(frozen=True)
class HouseholdTypes:
    """null or a non-empty list of `ecjax.data.household_types()`."""

    def __call__(self, key: str, v) -> None:
        if v is None:
            return
        types = D.household_types()
        if isinstance(v, str) or not isinstance(v, Sequence) or not v:
            fail(key, f"null or a non-empty list from {types}", v)
        for i, k in enumerate(v):
            Choice(tuple(types))(f"{key}[{i}]", k)


@dataclasses.dataclass(frozen=True)
class ScaleRange:
    def __call__(self, key: str, v) -> None:
        if not (isinstance(v, Sequence) and len(v) == 2 and all(is_num(x) for x in v) and 0 < v[0] <= v[1]):
            fail(key, "a pair [lo, hi] with 0 < lo <= hi", v)


@dataclasses.dataclass(frozen=True)
class IrradianceConfig(Section):
    key = "data.irradiance"
    by_month: bool = setting(False, Flag())  # statistics of the month, not its two-month group


@dataclasses.dataclass(frozen=True)
class LoadsConfig(Section):
    key = "data.loads"
    kinds: list[str] | None = setting(None, HouseholdTypes())  # null: all household types
    scale_range: tuple[float, float] = setting(D.DEFAULT_SCALE_RANGE, ScaleRange())
    shift_hours: int = setting(0, Int(-12, 12))
    seed: int | None = setting(None, Int(0, 2**31 - 1, null=True))  # null: the data's seed


@dataclasses.dataclass(frozen=True)
class PriceConfig(Section):
    key = "data.price"
    source: str | None = setting(None, Choice(PRICE_SOURCES, null=True))  # null: DataConfig.price_source
    kind: str = setting("consumer", Choice(D.PRICE_KINDS))  # builtin
    path: str | None = setting(None, Free())  # csv, omie: checked by DataConfig
    unit: str = setting("EUR/kWh", Choice(D.PRICE_UNITS))  # csv
    country: str = setting("ES", Choice(D.OMIE_COUNTRIES))  # omie
    consumer: bool | None = setting(None, Flag(null=True))  # wholesale -> consumer; null: csv no, omie yes
    mean: float = setting(0.34, Num(0.0, lo_open=True))  # synthetic: daily mean (EUR/kWh)


@dataclasses.dataclass(frozen=True)
class DataConfig(Section):
    key = "data"
    kind: str = setting(None, Choice(DATA_KINDS), required=True)
    month: int = setting(D.DEFAULT_MONTH, Int(1, 12))
    irradiance: IrradianceConfig = subsection(IrradianceConfig)
    loads: LoadsConfig = subsection(LoadsConfig)
    price: PriceConfig = subsection(PriceConfig)
    seed: int | None = setting(None, Int(0, 2**31 - 1, null=True))  # null: the community's seed

    @property
    def price_source(self) -> str:
        return self.price.source or ("builtin" if self.kind == "real" else "synthetic")

    def check(self) -> None:
        src = self.price_source
        if src == "builtin" and self.month != D.DEFAULT_MONTH:
            raise ConfigError(f"data.month must be {D.DEFAULT_MONTH} with data.price.source=builtin (the "
                              f"built-in price is September's), got {self.month!r}; use data=price_csv "
                              "or data=omie for other days.")
        if src in ("csv", "omie"):
            Text()("data.price.path", self.price.path)
            if not Path(self.price.path).is_file():
                raise ConfigError(f"data.price.path must be an existing file, got {self.price.path!r}.")

    def profiles(self, community, community_seed: int = 0):
        """`ecjax.disturbance.Profiles` for `community`."""
        from ..disturbance import ProfileError, make_profiles, synthetic_profiles

        n, month, price_cfg, src = community.n, int(self.month), self.price, self.price_source
        seed = community_seed if self.seed is None else int(self.seed)
        try:
            if self.kind == "synthetic":
                base = synthetic_profiles(n, seed=seed, price_mean=float(price_cfg.mean))
                irr_mu, irr_sd, ul_mu, ul_sd = base.irr_mu, base.irr_sd, base.ul_mu, base.ul_sd
                price = base.price
            else:
                irr_mu, irr_sd = (D.irradiance_stats(month=month, by_month=True) if self.irradiance.by_month
                                  else D.irradiance_stats(month=month))
                loads = self.loads
                ul_mu, ul_sd, _ = D.agent_loads(
                    n, month=month, seed=seed if loads.seed is None else int(loads.seed),
                    kinds=loads.kinds, scale_range=tuple(loads.scale_range),
                    shift_hours=int(loads.shift_hours),
                )  # fmt: skip
                price = None
            if src == "builtin":
                price = D.price_profile(month=month, kind=price_cfg.kind)
            elif src == "csv":
                price = D.read_price_csv(price_cfg.path, unit=price_cfg.unit)
                if price_cfg.consumer:
                    price = D.consumer_price(price)
            elif src == "omie":
                price = D.read_omie_marginalpdbc(price_cfg.path, country=price_cfg.country, as_24h=True)
                if price_cfg.consumer is not False:
                    price = D.consumer_price(price)
            elif price is None:  # synthetic price with real irradiance and loads
                price = synthetic_profiles(n, seed=seed, price_mean=float(price_cfg.mean)).price
            return make_profiles(irr_mu, irr_sd, ul_mu, ul_sd, price)
        except ProfileError as e:
            raise ConfigError(f"data: {e}") from None
        except ValueError as e:
            where = f"data.price ({src})" if src in ("csv", "omie") else "data"
            raise ConfigError(f"{where}: {e}") from None
