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


def packaged_config_dir() -> Path:
    """The configs that come with ecjax: the checkout's top-level `conf/` when ecjax runs from
    its checkout (or an editable install of it), else the copy inside an installed wheel
    (the package `ecjax.conf`, built from that same folder)."""
    pkg = Path(__file__).resolve().parents[1]
    checkout = pkg.parent / "conf"
    if (checkout / f"{CONFIG_NAME}.yaml").is_file() and (pkg.parent / "pyproject.toml").is_file():
        return checkout
    return pkg / "conf"


def default_config_dir() -> Path:
    """`$ECJAX_CONFIG_DIR`, else `./conf` if it holds config.yaml, else `packaged_config_dir()`.

    To add configs of one's own without copying these, put them in a directory of the same
    layout (e.g. `mine/experiment/x.yaml`) and add it to Hydra's search path:
    ``ecjax hydra.searchpath=[file:///abs/mine] experiment=x``.
    """
    env = os.environ.get("ECJAX_CONFIG_DIR")
    if env:
        return Path(env).resolve()
    here = Path.cwd() / "conf"
    if (here / f"{CONFIG_NAME}.yaml").is_file():
        return here.resolve()
    return packaged_config_dir()


# `hydra.*` overrides: Hydra's own job runner (output directories, launchers, logging) is not
# what runs ecjax's cells, so such an override would do nothing. Each is refused, naming what
# to use instead; `hydra.searchpath` is honoured (it is part of composing the config), and
# the `ecjax` command takes `hydra.run.dir` / `hydra.sweep.dir` as `out.dir` (see cli.py).
HYDRA_INSTEAD = {
    "hydra.run.dir": "out.dir (the directory of the store and the report)",
    "hydra.sweep.dir": "out.dir (every cell of a sweep goes to the one store out.store)",
    "hydra.sweep.subdir": "none needed: the cells of a sweep are groups cells/<id> of the one store out.store",
    "hydra.job.chdir": "none needed: ecjax never changes directory; relative paths are taken "
                       "from the directory it is started in",
    "hydra.mode": "-m (or nothing: sweep overrides always expand into cells)",
    "hydra/launcher": "sweep.cluster, sweep.workers, sweep.scheduler",
    "hydra/sweeper": "sweep overrides (community.n=5,10) or sweep.params",
    "hydra.launcher": "sweep.cluster, sweep.workers, sweep.scheduler",
    "hydra.sweeper": "sweep overrides (community.n=5,10) or sweep.params",
    "hydra.verbose": "progress (progress bars on stderr)",
}
HONOURED_HYDRA = ("hydra.searchpath",)


def check_hydra_overrides(overrides: Sequence[str]) -> None:
    """Refuse every `hydra.*` (or `hydra/...`) override that ecjax would not honour.

    Raises `ConfigError` naming the key and the ecjax key to use instead.
    """
    for line in overrides:
        key = str(line).lstrip("~+").split("=", 1)[0].split("@", 1)[0].strip()
        if not (key == "hydra" or key.startswith(("hydra.", "hydra/"))) or key in HONOURED_HYDRA:
            continue
        hint = next((v for k, v in HYDRA_INSTEAD.items() if key == k or key.startswith(k + ".")), None)
        raise ConfigError(
            f"{key} is a setting of Hydra's own job runner, which ecjax does not use: it would be "
            f"ignored. Instead: {hint or 'an ecjax key (ecjax --cfg job lists them)'}. "
            f"Of the hydra.* keys ecjax honours {', '.join(HONOURED_HYDRA)}, and the ecjax command "
            "takes hydra.run.dir / hydra.sweep.dir as out.dir."
        )


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
    check_hydra_overrides(overrides)
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


def lookup(config: Mapping, key: str):
    """The value at dotted `key` ("sim.S") of a nested config mapping; None where a part of
    the path is missing."""
    node = config
    for part in key.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def config_hash(config: Mapping) -> str:
    """sha256 of the canonical JSON of the keys that determine a cell's numbers.

    It is computed from the resolved mapping as composed (not from the typed sections, whose
    defaults would add keys), so the same YAML and overrides always give the same hash.
    """
    core = {k: v for k, v in config.items() if k not in EXECUTION_KEYS}
    text = json.dumps(core, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()
