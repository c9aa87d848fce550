"""ecjax: vectorized chance-constrained distributed MPC for peer-to-peer energy communities."""

__version__ = "0.1.0"  # the one place of the version (pyproject.toml reads it)

from ._platform import configure as _configure_xla

_configure_xla()
