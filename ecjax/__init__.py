"""ecjax: vectorized chance-constrained distributed MPC for peer-to-peer energy communities."""

from ._platform import configure as _configure_xla

_configure_xla()
