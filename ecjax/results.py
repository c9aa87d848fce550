"""A whole store as one xarray Dataset: every finished cell along a `cell` dimension.

    ds = ecjax.open_results("outputs/.../results.zarr")          # the summaries
    ds.sel(scenario="dmpc", risk=0.05)["E3"].mean("sample")
    ds["E3"].sel(risk=0.05).mean("sample").to_series()           # one value per cell

The cells' settings are coordinates along `cell`: `scenario`, `tightening`, `n_agents`,
`n_prosumers`, `S` and every swept key (as written on the command line, e.g. `community.n`),
each with an index, so `ds.sel(scenario=...)` and `ds.sel({"community.n": 10})` select cells.

Risk levels: the `risk` dimension holds the levels the cells were ASKED for (`ccmpc.deltas`,
the union over the cells), and the coordinate `run_risk` (cell, risk) the level each cell's
controller ran at. The standard DMPC (`dmpc`) has no tightening: it runs once, at δ = 0.5,
whatever δ is asked, and its store holds that one level. Here its one result stands at every
level it was asked for (run_risk = 0.5 there), so `ds.sel(risk=0.05)` puts it beside the
chance-constrained cells, as the paper's Table 1 does, with no NaN. A cell lacks a level only
where it was not asked for it: those entries are padded (NaN; False for indicators and roles).
Cells of different sizes (agents, samples, steps) are padded the same way; `n_agents` and `S`
tell the real sizes.
"""

from __future__ import annotations

import json

import numpy as np
import xarray as xr

from . import cf
from . import store as _store
from .config import lookup
from .scenario import run_delta

SETTINGS = {  # coordinate -> (config path, long name); always present
    "scenario": ("scenario.name", "scenario of the cell (islanded, ccdmpc, dmpc, centralized)"),
    "tightening": ("ccmpc.tightening", "tightening of the chance constraints (cumulative, per_step)"),
}


def _setting(config: dict, key: str, given) -> object:
    """The value of swept key `key` in a cell's resolved config: a config group by its name
    (or kind), a list as JSON text, else the value as the config holds it."""
    v = lookup(config, key)
    if isinstance(v, dict):
        v = v.get("name", v.get("kind", given))
    if isinstance(v, (list, tuple, dict)) or v is None:
        v = json.dumps(v) if v is not None else str(given)
    return v


def _order(path, ids) -> list[str]:
    done = _store.list_cells(path)
    if ids is not None:
        missing = [c for c in ids if c not in done]
        if missing:
            raise _store.StoreError(f"{path} has no finished cell {missing[0]!r} (finished: {done}).")
        return list(ids)
    planned = ((_store.store_attrs(path).get("sweep") or {}).get("cells")) or []
    return [c for c in planned if c in done] + [c for c in done if c not in planned]


def _asked(cell: _store.Cell, ds: xr.Dataset) -> xr.Dataset:
    """`ds` on the risk levels the cell was asked for, with `run_risk` the level each ran at."""
    if "risk" not in ds.dims:
        return ds
    asked = np.asarray(cell.config["ccmpc"]["deltas"], np.float64).reshape(-1)
    ran = np.asarray(run_delta(cell.config["scenario"]["name"], asked), np.float64)
    stored = np.asarray(ds["risk"].values, np.float64)
    idx = []
    for d in ran:
        hit = np.flatnonzero(np.isclose(stored, d, rtol=0, atol=1e-12))
        if hit.size != 1:
            raise _store.StoreError(f"cell {cell.id!r}: risk level {d:g} is not stored (stored: {stored.tolist()}).")
        idx.append(int(hit[0]))
    return ds.isel(risk=idx).assign_coords(risk=("risk", asked), run_risk=("risk", ran))


def _fill(parts: list[xr.Dataset]) -> dict:
    """Padding per variable: False for booleans, NaN (the default) for the rest."""
    out = {}
    for ds in parts:
        for name, v in ds.variables.items():
            if v.dtype == bool:
                out[name] = False
    return out


def open_results(store, dataset: str = "summary", cells=None, verify: str | bool = "quick") -> xr.Dataset:
    """Every finished cell of `store` as one lazily read (dask) Dataset along a `cell` dimension.

    **Arguments:** `dataset` `summary` (every sample), `trajectories` (the kept samples) or
    `open_loop` (the open-loop validation), taken from the cells that have it; `cells` ids to
    take (default: every finished cell, in the order the run planned them); `verify` as
    `ecjax.store.open_cell` (default "quick": manifest, metadata and chunk sizes; every chunk
    read later is still checked by its crc32c).

    **Returns:** an `xr.Dataset`, dims (cell, risk, ...), with the cells' settings as indexed
    coordinates along `cell` and `run_risk` (cell, risk); see the module docstring for the risk
    levels of the standard DMPC and the padding of cells of different sizes. Raises
    `ecjax.store.StoreError` if no cell has `dataset`.
    """
    if dataset not in cf.VARIABLES:
        raise ValueError(f"`dataset` must be one of {tuple(cf.VARIABLES)}, got {dataset!r}.")
    ids = _order(store, cells)
    parts, rows = [], []
    for cid in ids:
        cell = _store.open_cell(store, cid, verify=verify)
        ds = getattr(cell, dataset)
        if ds is None:
            continue
        ds = _asked(cell, ds)
        roles = np.asarray(cell.summary["is_prosumer"].values, bool)
        row = {
            "scenario": _setting(cell.config, SETTINGS["scenario"][0], None),
            "tightening": _setting(cell.config, SETTINGS["tightening"][0], None),
            "n_agents": int(roles.size),
            "n_prosumers": int(roles.sum()),
            "S": int(cell.config["sim"]["S"]),
        }
        for key, given in (cell.attrs.get("params") or {}).items():
            if key not in ("scenario", "ccmpc.tightening"):  # those are `scenario`, `tightening`
                row[key] = _setting(cell.config, key, given)
        parts.append(ds)
        rows.append((cid, row, cell.config))
    if not parts:
        raise _store.StoreError(f"no finished cell of {store} has a {dataset!r} dataset.")
    # a swept key that some cells lack (cells added by another run) is read from every config
    keys = list(dict.fromkeys(k for _, r, _ in rows for k in r))
    for _, r, config in rows:
        for k in keys:
            if k not in r:
                r[k] = _setting(config, k, None)
    out = xr.concat(parts, dim="cell", data_vars="all", coords="different", compat="equals", join="outer",
                    fill_value=_fill(parts), combine_attrs="drop_conflicts")
    settings = {"cell": ("cell", np.asarray([c for c, _, _ in rows]))}
    for k in keys:
        settings[k] = ("cell", np.asarray([r[k] for _, r, _ in rows]))
    out = out.assign_coords(settings)
    for k in keys:
        doc = SETTINGS[k][1] if k in SETTINGS else _DOCS.get(k, f"setting `{k}` of the cell's config")
        out[k].attrs.update(units="1", long_name=doc)
        out = out.set_xindex(k)
    out = cf.describe(out, dataset)
    out.attrs.update(store=str(store), dataset=dataset, format=_store.FORMAT)
    return out


_DOCS = {
    "n_agents": "agents of the cell's community",
    "n_prosumers": "prosumers of the cell's community",
    "S": "Monte Carlo samples of the cell (sim.S)",
}
