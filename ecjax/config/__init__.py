"""Configuration at the edge: Hydra composition, typed validation, and the objects of a cell.

The `ecjax` command composes `conf/` with Hydra (`compose`, `to_dict`). A resolved config is
a plain dict; `check_config` builds from it one typed section per config group (`Config`), each
checking its own fields when built, before anything is compiled: errors name the key and the
allowed range, e.g. ``ccmpc.deltas[2] must be in (0, 0.5], got 0.7``. `cell_inputs` rebuilds
from it exactly the typed objects that produce a cell. Numerical code never sees a config.
"""

from ._fields import ConfigError as ConfigError
from .cell import TOP_KEYS as TOP_KEYS
from .cell import CellInputs as CellInputs
from .cell import Config as Config
from .cell import build_community as build_community
from .cell import build_profiles as build_profiles
from .cell import cell_inputs as cell_inputs
from .cell import check_config as check_config
from .compose import CONFIG_NAME as CONFIG_NAME
from .compose import EXECUTION_KEYS as EXECUTION_KEYS
from .compose import compose as compose
from .compose import config_hash as config_hash
from .compose import default_config_dir as default_config_dir
from .compose import lookup as lookup
from .compose import to_dict as to_dict
