"""ecjax: vectorized chance-constrained distributed MPC for peer-to-peer energy communities."""

__version__ = "0.1.0"  # the one place of the version (pyproject.toml reads it)

from ._platform import configure as _configure_xla

_configure_xla()

__all__ = ["open_results"]


def __getattr__(name: str):
    # imported on first use: `import ecjax` (the CLI's start) stays free of xarray, zarr and jax
    if name == "open_results":
        from .results import open_results

        return open_results
    raise AttributeError(f"module 'ecjax' has no attribute {name!r}")
