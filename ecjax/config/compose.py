"""Hydra composition of `conf/` into the typed schema (`ecjax.config.schema`), its resolved
plain-dict form, and the identity of a resolved config."""

from __future__ import annotations

import dataclasses
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
    """Make ``${ecjax.default:}`` known to OmegaConf and store the schema in Hydra's
    ConfigStore (`ecjax.config.schema.register`), before any config is composed or resolved."""
    from omegaconf import OmegaConf

    from .schema import register

    if not OmegaConf.has_resolver(DEFAULT_RESOLVER):
        OmegaConf.register_new_resolver(DEFAULT_RESOLVER, _default)
    register()


def typed_overrides(overrides: Sequence[str]) -> list[str]:
    """The overrides, with ``+key=value`` of a key the schema defines taken as ``++key=value``.

    Every setting is in the composed config now (its schema value, if no file sets it), where
    Hydra's ``+`` (add a new key) would refuse it; ``+community.params.bt_max=1`` (an entry of
    a mapping setting) adds it as before. ``+key`` of a key inside a config group's section
    that the schema does not have is refused here, worded as the sections do.
    """
    from .cell import Config
    from .schema import is_known, unknown

    groups = {f.name for f in dataclasses.fields(Config) if "section" in f.metadata}
    out = []
    for line in overrides:
        line = str(line)
        key, sep, _ = line.partition("=")
        key = key.strip()
        if not sep or not key.startswith("+") or key.startswith("++") or "@" in key or "/" in key:
            out.append(line)
            continue
        name = key[1:]
        dotted = "." in name
        if dotted and name.split(".", 1)[0] in groups and not is_known(name):
            raise unknown(name)
        if is_known(name) and (dotted or name not in groups):
            line = "+" + line.lstrip()
        out.append(line)
    return out


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

    from .schema import config_error

    register_resolvers()
    check_hydra_overrides(overrides)
    overrides = typed_overrides(overrides)
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
        raise config_error(e) from None


def _unset_paths(raw, path=()):
    """The paths of a raw (unresolved) container whose value is still ``${ecjax.unset:}``."""
    from .schema import UNSET

    if isinstance(raw, Mapping):
        for k, v in raw.items():
            yield from _unset_paths(v, (*path, k))
    elif isinstance(raw, str) and raw == UNSET:
        yield path


def _prune(d: dict, paths) -> dict:
    """Remove `paths` from the nested dict `d`, and mappings they leave empty."""
    for p in paths:
        chain = [d]
        for k in p[:-1]:
            chain.append(chain[-1][k])
        chain[-1].pop(p[-1], None)
        for i in range(len(p) - 1, 0, -1):  # a section that held only unset settings
            if chain[i] == {}:
                chain[i - 1].pop(p[i - 1], None)
    return d


def to_dict(cfg, resolve: bool = True) -> dict:
    """The plain-dict form of a composed DictConfig: resolved (`resolve`), choices as their
    names, without the settings left to their section's default (``${ecjax.unset:}``), so the
    mapping is what the YAML files and overrides give. A missing ``???`` value or a value the
    schema refuses raises ConfigError naming its key."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    from .schema import config_error

    register_resolvers()
    try:
        raw = OmegaConf.to_container(cfg, resolve=False, enum_to_str=True)
        unset = list(_unset_paths(raw))
        if not resolve:
            return _prune(raw, unset)
        return _prune(OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True, enum_to_str=True), unset)
    except OmegaConfBaseException as e:
        raise config_error(e) from None


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
