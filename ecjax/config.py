"""Configuration at the edge: Hydra composition, validation, and the typed objects of a cell.

The `ecjax` command composes `conf/` with Hydra. A resolved configuration is a plain dict; this
module checks every value before anything is compiled (errors name the key and the allowed
range, e.g. ``ccmpc.deltas[2] must be in (0, 0.5], got 0.7``) and rebuilds from it exactly the
typed objects that produce a cell (`cell_inputs`). Numerical code never sees a config.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import numbers
import os
import re
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

CONFIG_NAME = "config"
TOP_KEYS = (
    "community", "data", "scenario", "ccmpc", "fcmpc", "weights", "solver", "sim", "sweep",
    "chain", "out", "report", "progress", "title", "description", "cache_dir", "validate",
)  # fmt: skip
# Keys that do not change a cell's numbers: excluded from its identity (config_hash).
EXECUTION_KEYS = ("sweep", "chain", "out", "report", "progress", "title", "description", "cache_dir")
from .scenario import SCENARIOS, TIGHTENINGS, risk_levels
DTYPES = ("float64",)  # float32: see simulate.check_dtype
CHAIN_KINDS = ("tester", "anvil", "rpc")
CLUSTERS = ("none", "local")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_KEY_LIKE = re.compile(r"^(0x)?[0-9a-fA-F]{64}$")


class ConfigError(ValueError):
    """A configuration value is missing, unknown or out of its allowed range."""


# ------------------------------------------------------------------------ composition
def default_config_dir() -> Path:
    """`$ECJAX_CONFIG_DIR`, else `./conf` if it holds config.yaml, else the repository's `conf/`."""
    env = os.environ.get("ECJAX_CONFIG_DIR")
    if env:
        return Path(env).resolve()
    here = Path.cwd() / "conf"
    if (here / f"{CONFIG_NAME}.yaml").is_file():
        return here.resolve()
    return (Path(__file__).resolve().parent.parent / "conf").resolve()


def compose(overrides: Sequence[str] = (), config_dir: str | os.PathLike | None = None,
            config_name: str = CONFIG_NAME):
    """Compose the Hydra config (an OmegaConf DictConfig) with command-line style overrides.

    Inside a running `@hydra.main` application the already initialized search path is used;
    otherwise `config_dir` (default: `default_config_dir()`).
    """
    from hydra import compose as _compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    try:
        if GlobalHydra.instance().is_initialized() and config_dir is None:
            return _compose(config_name, overrides=list(overrides))
        cdir = Path(config_dir) if config_dir is not None else default_config_dir()
        if not (cdir / f"{config_name}.yaml").is_file():
            raise ConfigError(f"no {config_name}.yaml in the config directory {cdir} "
                              "(pass --config-dir or set ECJAX_CONFIG_DIR).")
        if GlobalHydra.instance().is_initialized():
            GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=str(cdir.resolve()), version_base=None):
            return _compose(config_name, overrides=list(overrides))
    except (HydraException, OmegaConfBaseException) as e:
        raise ConfigError(str(e).strip()) from None


def to_dict(cfg) -> dict:
    """The resolved plain-dict form of a DictConfig (missing `???` values raise ConfigError)."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    try:
        return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    except OmegaConfBaseException as e:
        key = getattr(e, "full_key", None)
        raise ConfigError(f"{key}: {e.msg if hasattr(e, 'msg') else e}" if key else str(e)) from None


def config_hash(config: Mapping) -> str:
    """sha256 of the canonical JSON of the keys that determine a cell's numbers."""
    core = {k: v for k, v in config.items() if k not in EXECUTION_KEYS}
    text = json.dumps(core, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


# ------------------------------------------------------------------------- validation
def _fail(key: str, allowed: str, got) -> None:
    raise ConfigError(f"{key} must be {allowed}, got {got!r}.")


def _is_int(v) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _is_num(v) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(float(v))


def _int(lo: int | None = None, hi: int | None = None, null: bool = False, word: str | None = None) -> Callable:
    """An integer in [lo, hi]; also null where `null`, and the string `word` where given."""
    def check(key, v):
        if (v is None and null) or (word is not None and v == word):
            return
        rng = f"[{lo}, {hi}]" if hi is not None else (f">= {lo}" if lo is not None else "")
        alt = (" or null" if null else "") + (f" or {word!r}" if word is not None else "")
        if not _is_int(v) or (lo is not None and v < lo) or (hi is not None and v > hi):
            _fail(key, f"an integer {rng}".strip() + alt, v)
    return check


def _num(lo: float | None = None, hi: float | None = None, lo_open=False, hi_open=False,
         null: bool = False) -> Callable:
    def check(key, v):
        if v is None and null:
            return
        left = "(" if lo_open else "["
        right = ")" if hi_open else "]"
        rng = f"in {left}{'-inf' if lo is None else f'{lo:g}'}, {'inf' if hi is None else f'{hi:g}'}{right}"
        ok = _is_num(v)
        if ok and lo is not None:
            ok = v > lo if lo_open else v >= lo
        if ok and hi is not None:
            ok = v < hi if hi_open else v <= hi
        if not ok:
            _fail(key, rng + (" or null" if null else ""), v)
    return check


def _bool(key, v):
    if not isinstance(v, bool):
        _fail(key, "true or false", v)


def _choice(options: Sequence, null: bool = False) -> Callable:
    def check(key, v):
        if v is None and null:
            return
        if v not in options:
            _fail(key, f"one of {list(options)}" + (" or null" if null else ""), v)
    return check


def _dtype(key, v):
    if v not in DTYPES:
        _fail(key, "float64 (in float32 the QP solvers end some agent QPs in numerical_error: docs/engine.md)", v)


def _str(null: bool = False) -> Callable:
    def check(key, v):
        if v is None and null:
            return
        if not isinstance(v, str) or not v:
            _fail(key, "a non-empty string" + (" or null" if null else ""), v)
    return check


def _env_name(null: bool = True) -> Callable:
    def check(key, v):
        if v is None and null:
            return
        if not isinstance(v, str) or not _ENV_NAME.match(v):
            _fail(key, "the NAME of an environment variable (letters, digits, _), never a key itself",
                  "<hidden>" if isinstance(v, str) and _KEY_LIKE.match(v) else v)
    return check


def _mapping(key, v):
    if not isinstance(v, Mapping):
        _fail(key, "a mapping", v)


def _any(key, v):
    return None


_COMMUNITY_PARAMS = (
    "capacity", "eb_lo_frac", "eb_hi_frac", "bc_max", "bd_max", "bt_max", "ugb_max", "pv_area",
    "ev_daily", "ev_max", "eb0_frac", "eta_c", "eta_d", "eta_t", "eta_ev", "eta_pv",
)  # fmt: skip

SCHEMA: dict[str, dict[str, Callable]] = {
    "scenario": {"name": _choice(SCENARIOS)},
    "ccmpc": {
        "deltas": _any,  # checked below (a list)
        "tightening": _choice(TIGHTENINGS),
        "tighten_consumers": _bool,
    },
    "fcmpc": {
        "kappa": _num(0.0, lo_open=True),
        "p_max": _int(1, 10_000),
        "w": _num(0.0, 1.0, lo_open=True, null=True),
    },
    "weights": {
        "gamma": _num(0.0, 1.0, hi_open=True),
        **{k: _num(0.0) for k in ("r_c", "r_d", "r_t", "r_ugb", "r_ev", "rho2", "delta_b", "delta_ev", "w_T", "rho1")},
    },
    "sim": {
        "S": _int(1, 100_000_000),
        "T": _int(1, 24),
        "N": _int(1, 168),
        "seed": _int(0, 2**31 - 1),
        "dtype": _dtype,
        "chunk": _int(1, 1_000_000, word="auto"),
        "agent_batch": _int(1, 100_000, word="auto"),
        "block": _int(1, 100_000_000, null=True),
        "keep": _int(0),
        "record_plans": _bool,
        "gap": _bool,
    },
    "sweep": {
        "params": _mapping,
        "cluster": _choice(CLUSTERS),
        "scheduler": _str(null=True),
        "workers": _int(1, 4096),
    },
    "chain": {
        "kind": _choice(CHAIN_KINDS),
        "url": _str(null=True),
        "key_env": _env_name(),
        "keystore": _str(null=True),
        "password_env": _env_name(),
        "scale": _int(1, 10**18),
        "period_s": _int(1, 10**9),
    },
    "out": {"dir": _str(), "store": _str(), "report": _str(null=True)},
    "validate": {
        "open_loop": _bool,
        "S": _int(1, 10**9),
        "t": _int(0, 23),
        "level": _num(0.0, 1.0, lo_open=True, hi_open=True),
        "chunk": _int(1, 10**7),
    },
    "report": {"delta": _num(0.0, 0.5, lo_open=True), "figures": _bool},
}
SOLVER_SCHEMA = {  # ecjax.qp.IPM's settings
    "method": _choice(("ipm",)),
    "eps_abs": _num(0.0),
    "eps_rel": _num(0.0),
    "eps_pinf": _num(0.0, lo_open=True),
    "eps_dinf": _num(0.0, lo_open=True),
    "max_iter": _int(1, 10_000_000),
    "scaling_iters": _int(0, 1000),
    "step_fraction": _num(0.0, 1.0, lo_open=True, hi_open=True),
    "reg": _num(0.0, lo_open=True, null=True),
    "reg_eq": _num(0.0, lo_open=True, null=True),
    "refine": _int(0, 100),
    "refine_max": _int(0, 100),
    "certify_from": _int(0, 100_000),
    "weak_p": _num(0.0, lo_open=True),
    "max_dense": _int(0),
    "warm_margin": _num(0.0, lo_open=True, null=True),
    "warm_scale": _num(0.0),
}
REQUIRED = {
    "scenario": ("name",),
    "ccmpc": ("deltas", "tightening"),
    "sim": ("S", "T", "N", "seed", "dtype"),
    "community": ("kind",),
    "data": ("kind",),
    "out": ("store",),
}


def _walk(obj, prefix=""):
    if isinstance(obj, Mapping):
        for k, v in obj.items():
            yield from _walk(v, f"{prefix}.{k}" if prefix else str(k))
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            yield from _walk(v, f"{prefix}[{i}]")
    else:
        yield prefix, obj


def _check_section(cfg: Mapping, name: str, schema: Mapping[str, Callable], where: str = "") -> None:
    sec = cfg.get(name, {})
    if sec is None:
        sec = {}
    _mapping(name, sec)
    for k in sec:
        if k not in schema:
            raise ConfigError(f"{name}.{k} is not a known setting{where} (known: {', '.join(schema)}).")
    for k in REQUIRED.get(name, ()):
        if k not in sec:
            raise ConfigError(f"{name}.{k} is required.")
    for k, v in sec.items():
        schema[k](f"{name}.{k}", v)


def _check_community(c: Mapping) -> None:
    _mapping("community", c)
    kind = c.get("kind")
    _choice(("paper", "generated"))("community.kind", kind)
    known = {"kind", "seed", "params"} | ({"n", "prosumer_share"} if kind == "generated" else set())
    for k in c:
        if k not in known:
            raise ConfigError(f"community.{k} is not a known setting for community.kind={kind} "
                              f"(known: {', '.join(sorted(known))}).")
    _int(0, 2**31 - 1)("community.seed", c.get("seed", 0))
    if kind == "generated":
        _int(2, 100_000)("community.n", c.get("n"))
        _num(0.0, 1.0, lo_open=True)("community.prosumer_share", c.get("prosumer_share", 7 / 15))
    params = c.get("params") or {}
    _mapping("community.params", params)
    for k, v in params.items():
        if k not in _COMMUNITY_PARAMS:
            raise ConfigError(f"community.params.{k} is not a community parameter "
                              f"(known: {', '.join(_COMMUNITY_PARAMS)}).")
        vals = v if isinstance(v, (list, tuple)) else [v]
        for i, x in enumerate(vals):
            if not _is_num(x):
                where = f"community.params.{k}" + (f"[{i}]" if isinstance(v, (list, tuple)) else "")
                _fail(where, "a finite number (or a list of them, one per agent)", x)


def _check_data(d: Mapping) -> None:
    _mapping("data", d)
    known = {"kind", "month", "irradiance", "loads", "price", "seed"}
    for k in d:
        if k not in known:
            raise ConfigError(f"data.{k} is not a known setting (known: {', '.join(sorted(known))}).")
    _choice(("real", "synthetic"))("data.kind", d.get("kind"))
    _int(1, 12)("data.month", d.get("month", 9))
    _int(0, 2**31 - 1, null=True)("data.seed", d.get("seed"))
    irr = d.get("irradiance") or {}
    _mapping("data.irradiance", irr)
    for k in irr:
        if k != "by_month":
            raise ConfigError(f"data.irradiance.{k} is not a known setting (known: by_month).")
    if "by_month" in irr:
        _bool("data.irradiance.by_month", irr["by_month"])
    loads = d.get("loads") or {}
    _mapping("data.loads", loads)
    for k in loads:
        if k not in ("kinds", "scale_range", "shift_hours", "seed"):
            raise ConfigError(f"data.loads.{k} is not a known setting "
                              "(known: kinds, scale_range, shift_hours, seed).")
    kinds = loads.get("kinds")
    if kinds is not None:
        from . import data as D

        types = D.household_types()
        if isinstance(kinds, str) or not isinstance(kinds, Sequence) or not kinds:
            _fail("data.loads.kinds", f"null or a non-empty list from {types}", kinds)
        for i, k in enumerate(kinds):
            _choice(types)(f"data.loads.kinds[{i}]", k)
    sr = loads.get("scale_range", [0.8, 1.2])
    if not (isinstance(sr, Sequence) and len(sr) == 2 and all(_is_num(x) for x in sr)
            and 0 < sr[0] <= sr[1]):
        _fail("data.loads.scale_range", "a pair [lo, hi] with 0 < lo <= hi", sr)
    _int(-12, 12)("data.loads.shift_hours", loads.get("shift_hours", 0))
    _int(0, 2**31 - 1, null=True)("data.loads.seed", loads.get("seed"))
    price = d.get("price") or {}
    _mapping("data.price", price)
    pknown = ("source", "kind", "path", "unit", "country", "consumer", "mean")
    for k in price:
        if k not in pknown:
            raise ConfigError(f"data.price.{k} is not a known setting (known: {', '.join(pknown)}).")
    src = price.get("source", "builtin" if d.get("kind") == "real" else "synthetic")
    _choice(("builtin", "csv", "omie", "synthetic"))("data.price.source", src)
    _choice(("consumer", "wholesale"))("data.price.kind", price.get("kind", "consumer"))
    _choice(("EUR/kWh", "EUR/MWh"))("data.price.unit", price.get("unit", "EUR/kWh"))
    _choice(("ES", "PT"))("data.price.country", price.get("country", "ES"))
    _bool("data.price.consumer", price.get("consumer", True))
    _num(0.0, lo_open=True)("data.price.mean", price.get("mean", 0.34))
    if src == "builtin" and d.get("month", 9) != 9:
        raise ConfigError(f"data.month must be 9 with data.price.source=builtin (the built-in "
                          f"price is September's), got {d.get('month')!r}; use data=price_csv "
                          "or data=omie for other days.")
    if src in ("csv", "omie"):
        path = price.get("path")
        _str()("data.price.path", path)
        if not Path(path).is_file():
            raise ConfigError(f"data.price.path must be an existing file, got {path!r}.")


def _check_sweep_params(params: Mapping) -> None:
    for k, v in params.items():
        if not isinstance(k, str) or not k or k.startswith(("sweep", "out", "hydra")):
            _fail(f"sweep.params key {k!r}", "a config key other than sweep.*, out.*, hydra.*", k)
        ok = isinstance(v, (str, numbers.Real)) or (
            isinstance(v, (list, tuple)) and v and all(isinstance(x, (str, numbers.Real)) for x in v))
        if not ok or isinstance(v, bool):
            _fail(f"sweep.params.{k}", "a Hydra sweep string ('a,b', 'range(1,4)') or a non-empty list",
                  v)


def validate(config: Mapping) -> None:
    """Check every value of a resolved config; raise `ConfigError` naming the first bad key.

    Pure Python and numpy (it builds the community to check the FC-MPC weight against |P|);
    nothing is compiled.
    """
    _mapping("config", config)
    for k in config:
        if k not in TOP_KEYS:
            raise ConfigError(f"{k} is not a known setting (known: {', '.join(TOP_KEYS)}).")
    for path, v in _walk(config):
        if isinstance(v, str) and _KEY_LIKE.match(v.strip()):
            raise ConfigError(f"{path} looks like a private key. Keys never go in configs: put it "
                              "in an environment variable and name that variable in chain.key_env.")
    for name in ("community", "data", "sim", "out"):
        if name not in config:
            raise ConfigError(f"{name} is required.")
    _check_community(config["community"])
    _check_data(config["data"])
    for name, schema in SCHEMA.items():
        if name in config or name in REQUIRED:
            _check_section(config, name, schema)
    solver = config.get("solver") or {}
    _mapping("solver", solver)
    _check_section(config, "solver", SOLVER_SCHEMA)
    if solver.get("refine_max", 4) < solver.get("refine", 1):
        _fail("solver.refine_max", f">= solver.refine = {solver.get('refine', 1)}", solver.get("refine_max"))
    deltas = config["ccmpc"]["deltas"]
    if not isinstance(deltas, (list, tuple)) or len(deltas) == 0:
        _fail("ccmpc.deltas", "a non-empty list of risk levels in (0, 0.5]", deltas)
    for i, d in enumerate(deltas):
        _num(0.0, 0.5, lo_open=True)(f"ccmpc.deltas[{i}]", d)
    if len(set(float(d) for d in deltas)) != len(deltas):
        _fail("ccmpc.deltas", "distinct risk levels", deltas)
    sim = config["sim"]
    S = sim["S"]
    block = sim.get("block") or S
    if block > S:
        _fail("sim.block", f"<= sim.S = {S} (or null)", block)
    keep = sim.get("keep", 0)
    if keep > min(S, block):
        _fail("sim.keep", f"in [0, min(sim.S, sim.block)] = [0, {min(S, block)}]", keep)
    if sim.get("N", 1) < 1:
        _fail("sim.N", ">= 1", sim.get("N"))
    if "sweep" in config:
        _check_sweep_params(config["sweep"].get("params") or {})
        sch = config["sweep"].get("scheduler")
        if sch is not None and not re.match(r"^(tcp|tls|inproc|ucx)://", sch):
            _fail("sweep.scheduler", "null or a dask scheduler address like tcp://host:8786", sch)
    chain = config.get("chain") or {}
    if chain.get("kind") == "rpc":
        if not chain.get("url"):
            _fail("chain.url", "the JSON-RPC URL (chain.kind=rpc)", chain.get("url"))
        if not chain.get("key_env") and not chain.get("keystore"):
            raise ConfigError("chain.key_env or chain.keystore is required with chain.kind=rpc.")
    title = config.get("title")
    if title is not None:
        _str()("title", title)
    # community and profiles are numpy only: build them to check their own ranges, the data
    # files and the FC-MPC weight against |P|
    community = build_community(config["community"])
    build_profiles(config["data"], community, int(config["community"].get("seed", 0)))
    w = (config.get("fcmpc") or {}).get("w")
    wmax = 1.0 / len(community.prosumers)
    if w is not None and w > wmax + 1e-12:
        _fail("fcmpc.w", f"in (0, 1/|P|] = (0, {wmax:.6g}] so that every FC-MPC iterate is feasible", w)


# ------------------------------------------------------------------ typed cell inputs
def build_community(c: Mapping):
    """`ecjax.community.Community` of a `community` config section."""
    from .community import CommunityError, generate_community, paper_case

    params = dict(c.get("params") or {})
    params = {k: (np.asarray(v, np.float64) if isinstance(v, (list, tuple)) else v)
              for k, v in params.items()}
    try:
        if c["kind"] == "paper":
            return paper_case(seed=int(c.get("seed", 0)), **params)
        return generate_community(int(c["n"]), float(c.get("prosumer_share", 7 / 15)),
                                  seed=int(c.get("seed", 0)), **params)
    except CommunityError as e:
        raise ConfigError(str(e)) from None
    except ValueError as e:  # broadcasting a per-agent list of the wrong length
        raise ConfigError(f"community.params: {e}") from None


def build_profiles(d: Mapping, community, community_seed: int = 0):
    """`ecjax.disturbance.Profiles` of a `data` config section for `community`."""
    from . import data as D
    from .disturbance import ProfileError, make_profiles, synthetic_profiles

    n = community.n
    month = int(d.get("month", 9))
    seed = d.get("seed")
    seed = community_seed if seed is None else int(seed)
    price_cfg = d.get("price") or {}
    src = price_cfg.get("source", "builtin" if d["kind"] == "real" else "synthetic")
    try:
        if d["kind"] == "synthetic":
            base = synthetic_profiles(n, seed=seed, price_mean=float(price_cfg.get("mean", 0.34)))
            irr_mu, irr_sd, ul_mu, ul_sd = base.irr_mu, base.irr_sd, base.ul_mu, base.ul_sd
            price = base.price
        else:
            by_month = bool((d.get("irradiance") or {}).get("by_month", False))
            irr_mu, irr_sd = (D.irradiance_stats(month=month, by_month=True) if by_month
                              else D.irradiance_stats(month=month))
            loads = d.get("loads") or {}
            lseed = loads.get("seed")
            ul_mu, ul_sd, _ = D.agent_loads(
                n, month=month, seed=seed if lseed is None else int(lseed),
                kinds=loads.get("kinds"), scale_range=tuple(loads.get("scale_range", (0.8, 1.2))),
                shift_hours=int(loads.get("shift_hours", 0)),
            )
            price = None
        if src == "builtin":
            price = D.price_profile(month=month, kind=price_cfg.get("kind", "consumer"))
        elif src == "csv":
            price = D.read_price_csv(price_cfg["path"], unit=price_cfg.get("unit", "EUR/kWh"))
            if price_cfg.get("consumer", False):
                price = D.consumer_price(price)
        elif src == "omie":
            price = D.read_omie_marginalpdbc(price_cfg["path"], country=price_cfg.get("country", "ES"),
                                             as_24h=True)
            if price_cfg.get("consumer", True):
                price = D.consumer_price(price)
        elif price is None:  # synthetic price with real irradiance and loads
            price = synthetic_profiles(n, seed=seed, price_mean=float(price_cfg.get("mean", 0.34))).price
        return make_profiles(irr_mu, irr_sd, ul_mu, ul_sd, price)
    except ProfileError as e:
        raise ConfigError(f"data: {e}") from None
    except ValueError as e:
        raise ConfigError(f"data.price ({src}): {e}" if src in ("csv", "omie") else f"data: {e}") from None


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

    from .fcmpc import FCMPCSettings
    from .qp import IPM
    from .simulate import Options
    from .weights import CostWeights

    validate(config)
    community = build_community(config["community"])
    profiles = build_profiles(config["data"], community, int(config["community"].get("seed", 0)))
    sim = config["sim"]
    scen = config["scenario"]["name"]
    cc = config["ccmpc"]
    deltas = risk_levels(scen, cc["deltas"])
    options = Options(
        scenario=scen, T=int(sim["T"]), tightening=cc["tightening"],
        tighten_consumers=bool(cc.get("tighten_consumers", False)), gap=bool(sim.get("gap", False)),
        record_plans=bool(sim.get("record_plans", False)),
    )  # fmt: skip
    fcfg = config.get("fcmpc") or {}
    fc = FCMPCSettings(**{k: (int(v) if k == "p_max" else (None if v is None else float(v)))
                          for k, v in fcfg.items()})
    weights = CostWeights(**{k: float(v) for k, v in (config.get("weights") or {}).items()})
    scfg = dict(config.get("solver") or {})
    scfg.pop("method", None)
    solver = IPM(**scfg)
    S = int(sim["S"])
    return CellInputs(
        community=community,
        profiles=profiles,
        deltas=deltas,
        S=S,
        seed=int(sim["seed"]),
        options=options,
        N=int(sim["N"]),
        fc=fc,
        weights=weights,
        solver=solver,
        dtype=jnp.dtype(sim["dtype"]),
        chain=dict(config.get("chain") or {}),
        chunk=None if sim.get("chunk", "auto") == "auto" else int(sim["chunk"]),
        keep=int(sim.get("keep", 0)),
        block=int(sim.get("block") or S),
        agent_batch=None if sim.get("agent_batch", "auto") == "auto" else int(sim["agent_batch"]),
    )
