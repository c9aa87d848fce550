"""The results store: one zarr v3 directory per run or sweep, one group per cell.

    <store>/                                root group; attrs: format, ecjax version, created, sweep
    <store>/cells/<cell_id>/                cell group; attrs below
    <store>/cells/<cell_id>/summary         xarray Dataset, dims (risk, sample[, agent, time])
    <store>/cells/<cell_id>/trajectories    xarray Dataset of the kept samples (if any)
    <store>/cells/<cell_id>/open_loop       open-loop validation of the first plan (if asked)

A cell is one (scenario, community, tightening, ...) combination; its risk levels and samples
are vectorized inside it (`ecjax.experiment.run_batch`). Samples are written in blocks of
`sim.block` into a summary whose arrays are allocated on the first block (zarr chunks = one
block along `sample`, so block writes never share a chunk). Cell attrs: `config` (JSON string
of the resolved config), `config_hash`, `seed`, `params` (the swept keys), `versions`,
`device`, `S`, `block`, `blocks_done`, `log` (start, block and complete events with pid and
host), timings, and `complete`, written last. A cell without `complete` is unfinished: it is
never listed or opened, and a resumed sweep continues it from its last finished block (or
rewrites it if its config changed). Every metadata write of zarr's local store is atomic
(temporary file, then rename).

Readers open cells lazily (dask-backed xarray) with `list_cells` and `open_cell`.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import os
import socket
import time
import warnings
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import xarray as xr
import zarr

from .config import config_hash

FORMAT = "ecjax-store/1"


class StoreError(RuntimeError):
    """The store cannot be used as asked (unfinished cell, conflicting config, not a store)."""


@dataclasses.dataclass
class Cell:
    """One finished cell, opened lazily."""

    id: str
    summary: xr.Dataset  # dims (risk, sample[, agent, time]); dask-backed
    trajectories: xr.Dataset | None  # kept samples: (risk, sample, time, agent, ...); dask-backed
    config: dict  # the resolved config of the cell
    attrs: dict  # seed, versions, device, params, timings, log, ...
    open_loop: xr.Dataset | None = None  # open-loop validation of the first plan (validate.open_loop)


# ------------------------------------------------------------------------- metadata
def versions() -> dict:
    """Versions of the packages that shape the numbers and the files."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("ecjax", "jax", "jaxlib", "numpy", "xarray", "zarr", "dask", "distributed",
                 "hydra-core", "equinox"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    import platform

    out["python"] = platform.python_version()
    return out


def device() -> str:
    """The JAX device that computes (first device): platform, kind and name."""
    import jax

    d = jax.devices()[0]
    return f"{d.platform}:{getattr(d, 'device_kind', '?')} {d} (x{jax.device_count()})"


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _event(kind: str, **kw) -> dict:
    return {"event": kind, "time": _now(), "pid": os.getpid(), "host": socket.gethostname(), **kw}


# ----------------------------------------------------------------------------- root
def _root(path, mode="r"):
    try:
        return zarr.open_group(store=str(path), mode=mode, zarr_format=3)
    except (FileNotFoundError, zarr.errors.GroupNotFoundError) as e:
        raise StoreError(f"{path} is not an ecjax store (no zarr group there).") from e


def init_store(path, description: Mapping | None = None) -> None:
    """Create the store (or reopen it) and record the sweep description in its root attrs."""
    root = zarr.open_group(store=str(path), mode="a", zarr_format=3)
    attrs = dict(root.attrs)
    if attrs and attrs.get("format") not in (None, FORMAT):
        raise StoreError(f"{path} holds format {attrs.get('format')!r}, not {FORMAT!r}.")
    new = {}
    if "format" not in attrs:
        new.update(format=FORMAT, created=_now(), ecjax_version=versions()["ecjax"])
    if description is not None:
        new["sweep"] = json.loads(json.dumps(dict(description), default=str))
    if new:
        root.update_attributes(new)
    if "cells" not in root:
        root.create_group("cells")


def store_attrs(path) -> dict:
    """Root attributes (format, created, ecjax_version, sweep)."""
    return dict(_root(path).attrs)


def _cells_group(path):
    root = _root(path)
    if root.attrs.get("format") != FORMAT:
        raise StoreError(f"{path} is not an ecjax store (root attr format != {FORMAT!r}).")
    if "cells" not in root:
        return None
    return root["cells"]


def cell_attrs(path, cell_id: str) -> dict | None:
    """Attributes of a cell (finished or not), or None if the store has no such cell."""
    cells = _cells_group(path)
    if cells is None or cell_id not in cells:
        return None
    try:
        return dict(cells[cell_id].attrs)
    except Exception:  # a cell directory without readable metadata: not a cell
        return None


def cell_state(path, cell_id: str) -> str:
    """'missing', 'partial' (started, unfinished) or 'complete'."""
    a = cell_attrs(path, cell_id)
    if a is None:
        return "missing"
    return "complete" if a.get("complete") is True else "partial"


def all_cells(path, attempts: int = 20) -> list[str]:
    """Ids of every cell group of the store, finished or not, sorted.

    Safe while another process writes the store: zarr writes metadata atomically through a
    temporary file next to it (`cells/zarr.<hex>.partial`), which a listing may see for an
    instant. Such an entry is not a cell: its warning is silenced, and a listing that loses
    an entry while it reads is taken again (up to `attempts` times).
    """
    cells = _cells_group(path)
    if cells is None:
        return []
    for attempt in range(attempts):
        try:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=".*not recognized as a component of a Zarr hierarchy")
                return sorted(name for name, _ in cells.groups() if not name.endswith(".partial"))
        except FileNotFoundError:
            if attempt == attempts - 1:
                raise
            time.sleep(0.05)
    raise AssertionError("unreachable")  # the last attempt returns or raises


def list_cells(path) -> list[str]:
    """Ids of the FINISHED cells of a store, sorted."""
    return [c for c in all_cells(path) if cell_state(path, c) == "complete"]


def _open_ds(path, group: str) -> xr.Dataset:
    return xr.open_zarr(str(path), group=group, consolidated=False, chunks={}, zarr_format=3)


def open_cell(path, cell_id: str) -> Cell:
    """Open a finished cell lazily (dask-backed Datasets). Unfinished cells raise StoreError."""
    a = cell_attrs(path, cell_id)
    if a is None:
        raise StoreError(f"{path} has no cell {cell_id!r} (finished cells: {list_cells(path)}).")
    if a.get("complete") is not True:
        raise StoreError(f"cell {cell_id!r} of {path} is not finished; resume the sweep to finish it.")
    base = f"cells/{cell_id}"
    summary = _open_ds(path, f"{base}/summary")
    traj = _open_ds(path, f"{base}/trajectories") if a.get("trajectories") else None
    ol = _open_ds(path, f"{base}/open_loop") if a.get("open_loop") else None
    config = json.loads(a.pop("config"))
    return Cell(id=cell_id, summary=summary, trajectories=traj, config=config, attrs=a, open_loop=ol)


# --------------------------------------------------------------------------- writer
class CellWriter:
    """Writes one cell block by block; `finish` marks it complete.

    On construction: a finished cell with the same config is left alone (`finished` is True);
    an unfinished one with the same config, S and block size is continued (`blocks_done`);
    anything else unfinished is removed and started afresh. A finished cell computed with a
    different config raises StoreError (results are never overwritten silently).
    """

    def __init__(self, path, cell_id: str, config: Mapping, params: Mapping | None = None):
        self.path = str(path)
        self.cell_id = cell_id
        self.config = dict(config)
        self.hash = config_hash(self.config)
        sim = self.config["sim"]
        self.S = int(sim["S"])
        self.block = int(sim.get("block") or self.S)
        self.n_blocks = -(-self.S // self.block)
        self.keep = int(sim.get("keep", 0))
        init_store(self.path)
        root = zarr.open_group(store=self.path, mode="a", zarr_format=3)
        cells = root.require_group("cells")
        a = cell_attrs(self.path, cell_id)
        self.finished = False
        if a is not None and a.get("complete") is True:
            if a.get("config_hash") != self.hash:
                raise StoreError(
                    f"cell {cell_id!r} of {self.path} was computed with another config "
                    f"(hash {a.get('config_hash', '?')[:12]} != {self.hash[:12]}); use another out.dir."
                )
            self.finished = True
            self.group = cells[cell_id]
            return
        same = a is not None and a.get("config_hash") == self.hash and a.get("S") == self.S \
            and a.get("block") == self.block  # fmt: skip
        if same:
            self.group = cells[cell_id]
            self._log("resume", blocks_done=sorted(a.get("blocks_done", [])))
            return
        if cell_id in cells or (Path(self.path) / "cells" / cell_id).exists():
            del cells[cell_id]
        self.group = cells.create_group(cell_id, overwrite=True)
        self._update(
            config=json.dumps(self.config, sort_keys=True, default=str),
            config_hash=self.hash,
            seed=int(sim["seed"]),
            params=json.loads(json.dumps(dict(params or {}), default=str)),
            S=self.S,
            block=self.block,
            n_blocks=self.n_blocks,
            keep=self.keep,
            versions=versions(),
            device=device(),
            blocks_done=[],
            timing={},
            trajectories=False,
            log=[_event("start")],
        )

    # one metadata write per update (zarr.json is replaced atomically); `attrs.update` would
    # write key by key, and a crash between two keys would leave them inconsistent
    def _update(self, **kw) -> None:
        self.group.update_attributes(kw)

    def _log(self, kind: str, **kw) -> None:
        log = list(self.group.attrs.get("log", []))
        log.append(_event(kind, **kw))
        self._update(log=log)

    @property
    def blocks_done(self) -> set[int]:
        return set(int(k) for k in self.group.attrs.get("blocks_done", []))

    def pending_blocks(self) -> list[tuple[int, int, int]]:
        """(block index, first sample, number of samples) of the blocks still to compute."""
        done = self.blocks_done
        return [(k, k * self.block, min(self.block, self.S - k * self.block))
                for k in range(self.n_blocks) if k not in done]

    def write_block(self, k: int, summary: xr.Dataset, trajectories: xr.Dataset | None = None,
                    seconds: float = 0.0, compile_seconds: float = 0.0) -> None:
        """Write block k's summary (and, for the block holding them, the kept trajectories)."""
        base = f"cells/{self.cell_id}"
        lo = k * self.block
        hi = min(lo + self.block, self.S)
        ids = summary["sample"].values
        if len(ids) != hi - lo or ids[0] != lo:
            raise StoreError(f"block {k} must hold samples {lo}..{hi - 1}, got {ids[0]}..{ids[-1]}.")
        if not self.blocks_done:
            self._template(summary).to_zarr(
                self.path, group=f"{base}/summary", mode="w", compute=False, consolidated=False,
                zarr_format=3,
            )  # fmt: skip
        region = summary.drop_vars([v for v in summary.variables if "sample" not in summary[v].dims]
                                   + ["sample"])
        region.to_zarr(self.path, group=f"{base}/summary", region={"sample": slice(lo, hi)},
                       consolidated=False, zarr_format=3)
        extra = {}
        if trajectories is not None:
            trajectories.to_zarr(self.path, group=f"{base}/trajectories", mode="w",
                                 consolidated=False, zarr_format=3)
            extra["trajectories"] = True
        timing = dict(self.group.attrs.get("timing", {}))
        timing[str(k)] = [float(seconds), float(compile_seconds)]
        log = list(self.group.attrs.get("log", []))
        log.append(_event("block", block=k))
        self._update(blocks_done=sorted(self.blocks_done | {k}), timing=timing, log=log, **extra)

    def write_dataset(self, name: str, ds: xr.Dataset) -> None:
        """Write a further Dataset of the cell (e.g. `open_loop`) and flag it in the attrs."""
        if name in ("summary", "trajectories"):
            raise StoreError(f"{name!r} is written by write_block.")
        ds.to_zarr(self.path, group=f"cells/{self.cell_id}/{name}", mode="w", consolidated=False,
                   zarr_format=3)
        log = list(self.group.attrs.get("log", []))
        log.append(_event("dataset", name=name))
        self._update(log=log, **{name: True})

    def _template(self, first: xr.Dataset) -> xr.Dataset:
        """The full-size summary (all S samples) with lazy, never-computed data arrays."""
        import dask.array as da

        ids = np.arange(self.S, dtype=np.int64)
        data = {}
        for name, v in first.data_vars.items():
            if "sample" in v.dims:
                shape = tuple(self.S if d == "sample" else first.sizes[d] for d in v.dims)
                chunks = tuple(self.block if d == "sample" else first.sizes[d] for d in v.dims)
                data[name] = xr.Variable(v.dims, da.zeros(shape, dtype=v.dtype, chunks=chunks), v.attrs)
            else:
                data[name] = v.variable
        coords = {k: c.variable for k, c in first.coords.items() if k != "sample"}
        coords["sample"] = ("sample", ids)
        return xr.Dataset(data, coords=coords, attrs=first.attrs)

    def finish(self, **extra: Any) -> None:
        """Mark the cell complete (the last write of a cell)."""
        missing = set(range(self.n_blocks)) - self.blocks_done
        if missing:
            raise StoreError(f"cell {self.cell_id!r}: blocks {sorted(missing)} are not written.")
        timing = self.group.attrs.get("timing", {})
        log = list(self.group.attrs.get("log", []))
        log.append(_event("complete"))
        self._update(
            log=log,
            seconds=float(sum(t[0] for t in timing.values())),
            compile_seconds=float(sum(t[1] for t in timing.values())),
            **extra,
        )
        self._update(complete=True, completed=_now())
