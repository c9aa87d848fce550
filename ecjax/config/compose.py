"""Hydra composition of `conf/` and the identity of a resolved config."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from ._fields import ConfigError

CONFIG_NAME = "config"
DEFAULT_RESOLVER = "ecjax.default"  # `key: ${ecjax.default:}` in conf/: the typed config's default of key
# Keys that do not change a cell's numbers: excluded from its identity (config_hash).
EXECUTION_KEYS = ("sweep", "chain", "out", "report", "progress", "title", "description", "cache_dir")


def default_config_dir() -> Path:
    """`$ECJAX_CONFIG_DIR`, else `./conf` if it holds config.yaml, else the repository's `conf/`."""
    env = os.environ.get("ECJAX_CONFIG_DIR")
    if env:
        return Path(env).resolve()
    here = Path.cwd() / "conf"
    if (here / f"{CONFIG_NAME}.yaml").is_file():
        return here.resolve()
    return (Path(__file__).resolve().parents[2] / "conf").resolve()


def _default(*, _node_):
    """The value of ``${ecjax.default:}``: the default of the setting at this node's key."""
    from .cell import Config

    return Config.default_of(_node_._get_full_key(None))


def register_resolvers() -> None:
    """Make ``${ecjax.default:}`` known to OmegaConf (before any config is resolved)."""
    from omegaconf import OmegaConf

    if not OmegaConf.has_resolver(DEFAULT_RESOLVER):
        OmegaConf.register_new_resolver(DEFAULT_RESOLVER, _default)


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

    register_resolvers()
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

    register_resolvers()
    try:
        return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    except OmegaConfBaseException as e:
        key = getattr(e, "full_key", None)
        raise ConfigError(f"{key}: {e.msg if hasattr(e, 'msg') else e}" if key else str(e)) from None


def config_hash(config: Mapping) -> str:
    """sha256 of the canonical JSON of the keys that determine a cell's numbers.

    It is computed from the resolved mapping as composed (not from the typed sections, whose
    defaults would add keys), so the same YAML and overrides always give the same hash.
    """
    core = {k: v for k, v in config.items() if k not in EXECUTION_KEYS}
    text = json.dumps(core, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()
