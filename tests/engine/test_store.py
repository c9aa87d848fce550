"""The zarr store: block-wise cell writes, atomic finish marker, resume, lazy dask reads."""

from __future__ import annotations

import json
import warnings

import dask.array as da
import numpy as np
import pytest
import xarray as xr

from ecjax import cf, store, sweep
from ecjax.store import CellWriter, StoreError

from .conftest import CONF, TINY


def _config(tmp_path, *extra):
    (c,) = sweep.plan([f"out.dir={tmp_path}", *TINY, "scenario=ccdmpc", *extra], CONF).cells
    return c.config


def _summary(lo: int, n: int, R: int = 2, A: int = 3, T: int = 2) -> xr.Dataset:
    """A summary-shaped block with values that encode (risk, sample) so misplacement shows."""
    ids = np.arange(lo, lo + n)
    r = np.arange(R)[:, None]
    e1 = 100.0 * r + ids[None, :]
    viol = ((ids[None, :, None, None] + np.arange(T)[None, None, :, None] + np.arange(A)) % 3 == 0)
    viol = np.broadcast_to(viol, (R, n, T, A))
    return xr.Dataset(
        {
            "E1": (("risk", "sample"), e1),
            "iters": (("risk", "sample", "time"), np.broadcast_to(e1[..., None], (R, n, T)).astype(np.int32)),
            "viol_lo": (("risk", "sample", "time", "agent"), viol),
        },
        coords={"risk": [0.05, 0.1][:R], "sample": ids, "time": np.arange(T), "agent": np.arange(A),
                "is_prosumer": ("agent", np.array([True, True, False])[:A])},
        attrs={"scenario": "ccdmpc"},
    )


def test_block_round_trip_and_lazy_open(tmp_path):
    cfg = _config(tmp_path, "sim.S=5", "sim.block=2", "sim.keep=1")
    path = tmp_path / "s.zarr"
    w = CellWriter(path, "c1", cfg, {"scenario": "ccdmpc"})
    assert [b[:2] for b in w.pending_blocks()] == [(0, 0), (1, 2), (2, 4)]
    traj = xr.Dataset({"eb": (("risk", "sample", "time", "agent"), np.random.default_rng(0).random((2, 1, 2, 3)))})
    for k, lo, n in w.pending_blocks():
        w.write_block(k, _summary(lo, n), traj if k == 0 else None, seconds=1.0, compile_seconds=2.0)
        if k < 2:  # not finished: invisible to readers
            assert store.list_cells(path) == []
            with pytest.raises(StoreError, match="not finished"):
                store.open_cell(path, "c1")
    w.finish()
    assert store.list_cells(path) == ["c1"]
    cell = store.open_cell(path, "c1")
    assert isinstance(cell.summary["E1"].data, da.Array)  # lazy, dask-backed
    assert cell.summary["E1"].data.chunks[1] == (2, 2, 1)  # one zarr chunk per block
    # stored as written, with the CF attributes of every variable and coordinate
    want = cf.describe(_summary(0, 5).assign_coords(sample=np.arange(5)), "summary")
    xr.testing.assert_identical(cell.summary.compute(), want)
    assert cf.undescribed(cell.summary) == []
    np.testing.assert_array_equal(cell.trajectories["eb"].values, traj["eb"].values)
    assert cell.config == json.loads(json.dumps(cfg))
    assert cell.attrs["seed"] == cfg["sim"]["seed"] and cell.attrs["params"] == {"scenario": "ccdmpc"}
    assert set(cell.attrs["versions"]) >= {"jax", "ecjax", "numpy", "xarray", "zarr"}
    assert cell.attrs["device"].startswith("cpu")
    assert cell.attrs["seconds"] == 3.0 and cell.attrs["compile_seconds"] == 6.0
    assert [e["event"] for e in cell.attrs["log"]] == ["start", "block", "block", "block", "complete"]
    assert store.store_attrs(path)["format"] == store.FORMAT


def test_interrupted_cell_resumes_from_its_last_block(tmp_path):
    cfg = _config(tmp_path, "sim.S=4", "sim.block=2")
    path = tmp_path / "s.zarr"
    w = CellWriter(path, "c", cfg)
    w.write_block(0, _summary(0, 2))
    del w  # the process dies here: block 0 written, block 1 not, no marker
    assert store.cell_state(path, "c") == "partial" and store.list_cells(path) == []
    w = CellWriter(path, "c", cfg)
    assert w.pending_blocks() == [(1, 2, 2)]
    w.write_block(1, _summary(2, 2))
    w.finish()
    cell = store.open_cell(path, "c")
    np.testing.assert_array_equal(cell.summary["E1"].values, _summary(0, 4)["E1"].values)
    assert [e["event"] for e in cell.attrs["log"]] == ["start", "block", "resume", "block", "complete"]
    # finished: a new writer with the same config does nothing
    assert CellWriter(path, "c", cfg).finished


def test_partial_cell_with_another_config_is_rewritten(tmp_path):
    path = tmp_path / "s.zarr"
    w = CellWriter(path, "c", _config(tmp_path, "sim.S=4", "sim.block=2"))
    w.write_block(0, _summary(0, 2))
    cfg2 = _config(tmp_path, "sim.S=4", "sim.block=2", "sim.seed=9")
    w2 = CellWriter(path, "c", cfg2)
    assert [b[0] for b in w2.pending_blocks()] == [0, 1]
    assert [e["event"] for e in w2.group.attrs["log"]] == ["start"]


def test_finished_cell_is_never_overwritten_by_another_config(tmp_path):
    path = tmp_path / "s.zarr"
    cfg = _config(tmp_path)
    w = CellWriter(path, "c", cfg)
    w.write_block(0, _summary(0, 2))
    w.finish()
    with pytest.raises(StoreError, match="another config"):
        CellWriter(path, "c", _config(tmp_path, "sim.seed=3"))
    assert store.open_cell(path, "c").summary["E1"].shape == (2, 2)


def test_block_with_wrong_samples_is_refused(tmp_path):
    w = CellWriter(tmp_path / "s.zarr", "c", _config(tmp_path, "sim.S=4", "sim.block=2"))
    with pytest.raises(StoreError, match="samples 0..1"):
        w.write_block(0, _summary(1, 2))
    with pytest.raises(StoreError, match="not written"):
        w.finish()


def test_not_a_store(tmp_path):
    with pytest.raises(StoreError):
        store.list_cells(tmp_path / "nothing.zarr")


def test_listing_ignores_a_writers_temporary_metadata(tmp_path):
    """zarr writes metadata through a temporary `zarr.<hex>.partial` file next to it; a
    reader listing the cells while another process writes them (progress monitors, the
    resume logic) may meet one. It is not a cell and must not break the listing."""
    cfg = _config(tmp_path, "sim.S=2", "sim.block=2")
    path = tmp_path / "s.zarr"
    w = CellWriter(path, "c1", cfg)
    w.write_block(0, _summary(0, 2))
    w.finish()
    (path / "cells" / "zarr.0123456789abcdef0123456789abcdef.partial").write_text("{}")
    assert store.all_cells(path) == ["c1"]
    assert store.list_cells(path) == ["c1"]


def test_store_of_another_format_is_refused_by_name(tmp_path):
    path = tmp_path / "s.zarr"
    w = CellWriter(path, "c", _config(tmp_path))
    w.write_block(0, _summary(0, 2))
    w.finish()
    root = path / "zarr.json"
    meta = json.loads(root.read_text())
    meta["attributes"]["format"] = "ecjax-store/1"
    root.write_text(json.dumps(meta))
    for call in (store.list_cells, lambda p: store.open_cell(p, "c"), store.init_store):
        with pytest.raises(StoreError, match="format 'ecjax-store/1'.*reads and writes 'ecjax-store/2'"):
            call(path)


def test_consolidated_metadata_opens_without_warning_and_stays_unread(tmp_path):
    """After `consolidate` xarray opens a cell's dataset with its defaults and no warning; a
    cell written later (the copy is stale) is still listed and opened by ecjax."""
    path = tmp_path / "s.zarr"
    cfg = _config(tmp_path)
    for cid in ("c1", "c2"):
        w = CellWriter(path, cid, cfg)
        w.write_block(0, _summary(0, 2))
        w.finish()
        if cid == "c1":
            assert store.consolidate(path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ds = xr.open_zarr(path, group="cells/c1/summary")
    assert ds["E1"].attrs["units"] == "EUR" and ds["viol_lo"].dims == ("risk", "sample", "time", "agent")
    assert store.list_cells(path) == ["c1", "c2"]
    assert store.open_cell(path, "c2").summary["E1"].shape == (2, 2)
