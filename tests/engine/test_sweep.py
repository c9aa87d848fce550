"""Sweeps of real tiny cells: round trip through the store, an interrupted sweep (a real
`ecjax` process killed with SIGKILL) resumes to the same store without computing a finished
cell or block twice, a dask.distributed LocalCluster and Hydra's own multirun give the same
numbers as the in-process run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import dask.array as da
import numpy as np
import pytest
import xarray as xr

from ecjax import store, sweep
from ecjax.config import cell_inputs
from ecjax.experiment import run_batch

from .conftest import CONF, ECJAX, ROOT, TINY, subprocess_env

pytestmark = pytest.mark.slow

# Two cells of two samples each, written one sample per block; sample 0 kept with its iterates.
SWEEP = [*TINY, "scenario=islanded,ccdmpc", "sim.block=1", "sim.keep=1", "out.report=null"]
CELLS = ["scenario=ccdmpc", "scenario=islanded"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The sweep, uninterrupted, in this process (dask synchronous scheduler)."""
    out = tmp_path_factory.mktemp("reference")
    res = sweep.run(sweep.plan([*SWEEP, f"out.dir={out}"], CONF))
    assert res.failed == {} and sorted(res.computed) == CELLS
    return str(out / "results.zarr")


def assert_same_store(a: str, b: str) -> None:
    assert store.list_cells(a) == store.list_cells(b) == CELLS
    for cid in CELLS:
        ca, cb = store.open_cell(a, cid), store.open_cell(b, cid)
        xr.testing.assert_identical(ca.summary.compute(), cb.summary.compute())
        xr.testing.assert_identical(ca.trajectories.compute(), cb.trajectories.compute())
        assert ca.attrs["config_hash"] == cb.attrs["config_hash"]


def test_round_trip_equals_run_batch(reference):
    """What the store returns is what run_batch computed, block by block."""
    cell = store.open_cell(reference, "scenario=ccdmpc")
    assert isinstance(cell.summary["E3"].data, da.Array)
    inp = cell_inputs(cell.config)
    blocks = [run_batch(inp.community, inp.profiles, inp.deltas, 1, keep=1 - s, sample_offset=s,
                        **inp.run_kwargs()) for s in (0, 1)]
    direct = xr.concat([b.summary for b in blocks], dim="sample", data_vars="minimal", coords="minimal",
                       compat="override", join="override")
    stored = cell.summary.compute()
    assert set(stored.data_vars) == set(direct.data_vars)
    for k in direct.data_vars:
        np.testing.assert_array_equal(stored[k].values, direct[k].values, err_msg=k)
    traj = cell.trajectories.compute()
    assert set(traj.data_vars) == set(blocks[0].trajectories.data_vars)
    assert {"u_iter", "u_star", "theta_trace", "cost_trace"} <= set(traj.data_vars)
    for k in traj.data_vars:
        np.testing.assert_array_equal(traj[k].values, blocks[0].trajectories[k].values, err_msg=k)
    assert int(cell.summary["iters"].max()) >= 1  # the cooperative iteration ran


def _wait(cond, proc, timeout=600.0):
    t0 = time.monotonic()
    while not cond():
        if proc.poll() is not None:
            raise AssertionError(f"ecjax exited early ({proc.returncode}): {proc.stderr.read()}")
        if time.monotonic() - t0 > timeout:
            proc.kill()
            raise AssertionError("timed out")
        time.sleep(0.05)


def test_killed_sweep_resumes_to_the_same_store(reference, tmp_path, jax_cache):
    out = tmp_path / "run"
    path = str(out / "results.zarr")
    cmd = [*ECJAX, "-m", *SWEEP, f"out.dir={out}", f"cache_dir={jax_cache}"]
    first = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env=subprocess_env(), cwd=tmp_path)

    def one_done_other_half() -> bool:
        try:
            done = store.list_cells(path)
            if len(done) != 1:
                return False
            (other,) = set(CELLS) - set(done)
            return (store.cell_attrs(path, other) or {}).get("blocks_done") == [0]
        except store.StoreError:
            return False

    _wait(one_done_other_half, first)
    first.send_signal(signal.SIGKILL)
    first.wait(30)
    assert first.returncode == -signal.SIGKILL
    (finished,) = store.list_cells(path)
    (half,) = set(CELLS) - {finished}
    assert store.cell_state(path, half) == "partial"

    second = subprocess.run(cmd, capture_output=True, text=True, env=subprocess_env(), cwd=tmp_path,
                            timeout=900)
    assert second.returncode == 0, second.stderr
    assert "1 computed, 1 already finished, 0 failed" in second.stderr
    assert_same_store(reference, path)
    # no cell and no block computed twice
    log_f = store.open_cell(path, finished).attrs["log"]
    assert {e["pid"] for e in log_f} == {first.pid}
    log_h = store.open_cell(path, half).attrs["log"]
    blocks = [(e["block"], e["pid"]) for e in log_h if e["event"] == "block"]
    assert blocks == [(0, first.pid), (1, blocks[1][1])] and blocks[1][1] != first.pid
    assert [e["event"] for e in log_h].count("complete") == 1
    # a third run computes nothing
    third = subprocess.run(cmd, capture_output=True, text=True, env=subprocess_env(), cwd=tmp_path, timeout=300)
    assert third.returncode == 0 and "0 computed, 2 already finished" in third.stderr


def test_local_cluster_equals_in_process(reference, tmp_path, jax_cache, monkeypatch):
    """The same sweep on a dask.distributed LocalCluster (worker processes on 127.0.0.1)."""
    for k, v in subprocess_env().items():  # the worker processes inherit this environment
        monkeypatch.setenv(k, v)
    p = sweep.plan([*SWEEP, f"out.dir={tmp_path}", "sweep.cluster=local", "sweep.workers=2",
                    f"cache_dir={jax_cache}"], CONF)
    res = sweep.run(p)
    assert res.failed == {} and sorted(res.computed) == CELLS
    assert_same_store(reference, p.store)
    # computed in the workers, not here
    for cid in CELLS:
        pids = {e["pid"] for e in store.open_cell(p.store, cid).attrs["log"]}
        assert os.getpid() not in pids


def test_hydra_multirun_equals_in_process(reference, tmp_path, jax_cache):
    """experiments/run.py under @hydra.main: Hydra's launcher runs one job per scenario."""
    out = tmp_path / "hydra"
    r = subprocess.run(
        [sys.executable, str(ROOT / "experiments" / "run.py"), "-m", *SWEEP, f"out.dir={out}",
         f"cache_dir={jax_cache}"],
        capture_output=True, text=True, env=subprocess_env(), cwd=tmp_path, timeout=900,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    assert_same_store(reference, str(out / "results.zarr"))
    assert sorted(store.store_attrs(out / "results.zarr")["sweep"]["cells"])[0].startswith("scenario=")
