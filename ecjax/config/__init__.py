"""Configuration at the edge: Hydra composition, typed validation, and the objects of a cell.

Every setting is declared once, as a field of the typed section of its config group
(`Config` and its sections in `groups.py`, `sources.py`: type, default and allowed range as
field metadata; choices from the code's own Literals). The flow:

1. `schema.register` derives Hydra structured configs from those sections (`schema_of`) and
   stores the whole config's schema in Hydra's ConfigStore (``ecjax_schema``), first in the
   defaults list of `conf/config.yaml`.
2. `compose` composes `conf/` with Hydra into that schema: an unknown key or a value of the
   wrong type (in a group file or an override) is refused by Hydra itself, and reported as a
   `ConfigError` in the sections' words, e.g. ``ccmpc.deltaz is not a known setting (known:
   deltas, tightening, tighten_consumers). Did you mean ccmpc.deltas?``.
3. `to_dict` resolves it into a plain dict holding what the files and overrides give (a
   setting none sets keeps its section's default and stays out: `config_hash` is unchanged).
4. `check_config` builds the typed `Config` from it: each section checks its ranges and
   cross-field rules in `__post_init__`, before anything is compiled, e.g.
   ``ccmpc.deltas[2] must be in (0, 0.5], got 0.7.``; `cell_inputs` rebuilds exactly the typed
   objects that produce a cell. Numerical code never sees a config.
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
