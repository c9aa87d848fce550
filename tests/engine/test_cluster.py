"""Sweeps on dask clusters whose workers start in another directory than the `ecjax` that plans
them: every path is absolute in the plan, results land where the client said, `sweep.scheduler`
takes an address or a scheduler file, and the SLURM recipe (`sweep=slurm`) runs through
dask-jobqueue's real SLURMCluster against stand-ins for `sbatch` and `scancel` that start each
job as local processes in a directory of their own. A worker killed mid-cell loses nothing and
doubles nothing: its task runs again on the restarted worker, which continues the cell from its
last finished block.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sys
import threading
import time
from pathlib import Path

import pytest
import xarray as xr

from ecjax import cli, cluster, store, sweep
from ecjax.config import ConfigError

from .conftest import CONF, TINY, subprocess_env

# Two cells that differ only in a report setting (not part of the numbers): the same compiled
# programs, and the same results whichever worker computes which block. Three blocks of one
# sample each; the first keeps its sample's trajectories, so the second runs another program
# (the programs of tests/engine/test_sweep.py): the worker is killed while it loads that one,
# after the cell's first block is written.
CELLS = ["report.delta=0.05", "report.delta=0.1"]
RUN = [*TINY, "scenario=ccdmpc", "sim.S=3", "sim.block=1", "sim.keep=1", "report.figures=false"]

SBATCH = '''#!{python}
"""sbatch stand-in: runs the job script at once with bash, in a session of its own, from
$FAKE_SLURM_HOME; prints the job id (the session's pid) as sbatch does."""
import os, subprocess, sys, time
home = os.environ["FAKE_SLURM_HOME"]
name = os.path.join(home, f"job-{{time.monotonic_ns()}}")
with open(sys.argv[-1]) as f, open(name + ".sh", "w") as g:
    g.write(f.read())
p = subprocess.Popen(["bash", name + ".sh"], cwd=home, start_new_session=True,
                     stdin=subprocess.DEVNULL, stdout=open(name + ".log", "w"), stderr=subprocess.STDOUT)
print(f"Submitted batch job {{p.pid}}")
'''
SCANCEL = '''#!{python}
"""scancel stand-in: ends the job's session."""
import os, signal, sys
try:
    os.killpg(int(sys.argv[-1]), signal.SIGTERM)
except ProcessLookupError:
    pass
'''


@pytest.fixture
def dirs(tmp_path, monkeypatch):
    """client/ (where ecjax runs), workers/ (where the workers start), elsewhere/; the
    environment the worker processes inherit (with the test session's compilation cache and
    XLA flags: a program compiled here or by another test is loaded, not compiled again)."""
    out = {name: tmp_path / name for name in ("client", "workers", "elsewhere")}
    for d in out.values():
        d.mkdir()
    for k, v in subprocess_env().items():
        monkeypatch.setenv(k, v)
    monkeypatch.chdir(out["client"])
    return out


# -------------------------------------------------------------------------- planning
def test_plan_makes_every_path_absolute(dirs):
    (dirs["client"] / "prices.csv").write_text("".join(f"{h},0.2\n" for h in range(24)))
    (dirs["client"] / "sched.json").write_text(json.dumps({"address": "tcp://127.0.0.1:1"}))
    tiny = [o for o in TINY if not o.startswith("data=")]
    p = sweep.plan([*tiny, "scenario=ccdmpc", "out.dir=runs/x", "cache_dir=jc", "sweep.scheduler=sched.json",
                    "data=price_csv", "data.price.path=prices.csv"], CONF)
    here = dirs["client"]
    (cell,) = p.cells
    for cfg in (p.base, cell.config):
        assert cfg["out"] == {"dir": str(here / "runs/x"), "store": str(here / "runs/x/results.zarr"),
                              "report": str(here / "runs/x/report")}
        assert cfg["cache_dir"] == str(here / "jc")
        assert cfg["sweep"]["scheduler"] == str(here / "sched.json")
        assert cfg["data"]["price"]["path"] == str(here / "prices.csv")
    d = p.description()
    assert d["cwd"] == str(here) and Path(d["config_dir"]).is_absolute()
    # an address and the machine-local cache settings stay as written
    p = sweep.plan([*TINY, "scenario=ccdmpc", "sweep.scheduler=tcp://10.0.0.5:8786", "cache_dir=auto"], CONF)
    assert p.base["sweep"]["scheduler"] == "tcp://10.0.0.5:8786" and p.base["cache_dir"] == "auto"
    # a relative path is taken from `cwd` when given (what `ecjax resume` does)
    p = sweep.plan([*TINY, "scenario=ccdmpc", "out.dir=o"], CONF, cwd=dirs["elsewhere"])
    assert p.store == str(dirs["elsewhere"] / "o" / "results.zarr")


def test_resume_takes_relative_paths_from_the_planning_directory(dirs, monkeypatch):
    """`ecjax resume` from elsewhere: the store's outputs pinned beside it (the run's own out.*
    and hydra.*.dir overrides dropped), its other relative paths taken from the directory the
    run was planned in."""
    path = dirs["client"] / "o" / "results.zarr"
    store.init_store(path, {"argv": ["hydra.run.dir=o", "sim.S=2", "sweep.scheduler=s.json"],
                            "config_dir": str(CONF), "cwd": str(dirs["client"]),
                            "out": {"dir": "o", "store": "o/results.zarr", "report": "o/report"}})
    seen = {}
    monkeypatch.setattr(cli, "_run", lambda argv, cwd=None: seen.update(argv=argv, cwd=cwd) or 0)
    monkeypatch.chdir(dirs["elsewhere"])
    assert cli.main(["resume", str(path)]) == 0
    assert seen["cwd"] == str(dirs["client"])
    assert seen["argv"] == ["--config-dir", str(CONF), "sim.S=2", "sweep.scheduler=s.json",
                            f"out.dir='{path.parent}'", f"out.store='{path}'", f"out.report='{path.parent / 'report'}'"]


BAD = [
    (["sweep.scheduler=nowhere.json"], "sweep.scheduler must be a dask scheduler address"),
    (["sweep.scheduler=notjson.json"], "sweep.scheduler: '"),
    (["sweep.scheduler=tcpx://h:1"], "sweep.scheduler must be"),
    (["sweep=slurm", "sweep.jobqueue.kind=slurmish"], "sweep.jobqueue.kind must be one of"),
    (["sweep=slurm", "+sweep.jobqueue.partition=cpu"], "sweep.jobqueue.partition is not a keyword"),
    (["sweep=slurm", "+sweep.jobqueue.n_workers=3"], "sweep.jobqueue.n_workers is set by ecjax"),
    (["sweep=slurm", "sweep.jobqueue.memory=null"], "sweep.jobqueue: dask_jobqueue.SLURMCluster refuses"),
    (["sweep=slurm", "sweep.jobqueue.memory=16XB"], "sweep.jobqueue: dask_jobqueue.SLURMCluster refuses"),
]


@pytest.mark.parametrize("overrides,message", BAD, ids=[b[1][:40] for b in BAD])
def test_bad_cluster_settings_are_named_before_anything_runs(dirs, overrides, message, capsys):
    (dirs["client"] / "notjson.json").write_text("not json")
    with pytest.raises(ConfigError, match=re.escape(message)):
        sweep.plan([*TINY, "scenario=ccdmpc", *overrides], CONF)
    assert cli.main(["--config-dir", str(CONF), *TINY, "scenario=ccdmpc", *overrides]) == 2
    assert message in capsys.readouterr().err
    assert not (dirs["client"] / "outputs").exists()


def test_slurm_recipe_renders_its_job_script(dirs):
    p = sweep.plan([*TINY, "scenario=ccdmpc", "sweep=slurm", "sweep.jobqueue.account=proj",
                    "sweep.jobqueue.queue=cpu", "sweep.jobqueue.job_script_prologue=[source /shared/env/bin/activate]"],
                   CONF)
    script = cluster.job_script(p.base["sweep"], "tcp://10.0.0.5:8786")
    for line in ("#SBATCH -p cpu", "#SBATCH -A proj", "#SBATCH --cpus-per-task=8", "#SBATCH --mem=15G",
                 "#SBATCH -t 02:00:00", "source /shared/env/bin/activate"):
        assert line in script, line
    assert "distributed.cli.dask_worker tcp://10.0.0.5:8786" in script and "--nthreads 1" in script


# ------------------------------------------------------------------------- real clusters
def _fake_slurm(dirs, monkeypatch) -> None:
    bin_ = dirs["client"].parent / "bin"
    bin_.mkdir()
    for name, text in (("sbatch", SBATCH), ("scancel", SCANCEL)):
        (bin_ / name).write_text(text.format(python=sys.executable))
        (bin_ / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_SLURM_HOME", str(dirs["workers"]))


class Killer(threading.Thread):
    """Kills (SIGKILL) the worker process that computes a cell of `path` once the cell's first
    block is written and its second is not."""

    def __init__(self, path: str, cells: list[str]):
        super().__init__(daemon=True)
        self.path, self.cells = path, cells
        self.killed: tuple[str, int, list] | None = None
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set() and self.killed is None:
            for cid in self.cells:
                try:
                    a = store.cell_attrs(self.path, cid) or {}
                except store.StoreError:
                    continue
                done = a.get("blocks_done", [])
                if done == [0]:
                    pid = a["log"][-1]["pid"]
                    os.kill(pid, signal.SIGKILL)
                    self.killed = (cid, pid, list(done))
                    return
            time.sleep(0.005)


def _check_store(path: str, killed) -> None:
    """Every cell finished, verified against its manifest, each block written once, the cell
    whose worker was killed continued by another process and equal to the other cell."""
    assert store.list_cells(path) == CELLS
    assert all(c.state == "verified" for c in store.verify_store(path))
    cid, pid, done = killed
    for c in CELLS:
        log = store.open_cell(path, c).attrs["log"]
        blocks = [e["block"] for e in log if e["event"] == "block"]
        assert sorted(blocks) == [0, 1, 2], (c, log)
        assert [e["event"] for e in log].count("complete") == 1
        if c == cid:
            by = {e["block"]: e["pid"] for e in log if e["event"] == "block"}
            assert {by[k] for k in done} == {pid}
            assert pid not in {by[k] for k in set(by) - set(done)}
            assert "resume" in [e["event"] for e in log]
    a, b = (store.open_cell(path, c) for c in CELLS)
    xr.testing.assert_identical(a.summary.compute(), b.summary.compute())
    xr.testing.assert_identical(a.trajectories.compute(), b.trajectories.compute())


def test_scheduler_file(dirs):
    """A running dask cluster given by the scheduler file it wrote, as a path relative to the
    client's directory: the plan makes it absolute, the client reaches the scheduler."""
    from distributed import LocalCluster

    sched = dirs["workers"] / "sched.json"
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None,
                      scheduler_kwargs={"scheduler_file": str(sched)}) as lc:
        p = sweep.plan([*RUN, "out.dir=o", "sweep.scheduler=../workers/sched.json"], CONF)
        assert p.base["sweep"]["scheduler"] == str(sched)
        client, started = cluster.open_client(p.base["sweep"])
        with client:
            assert started is None and client.scheduler.address == lc.scheduler_address
            assert client.submit(sum, [1, 2]).result() == 3


@pytest.mark.slow
def test_slurm_workers_elsewhere_one_killed_mid_cell(dirs, monkeypatch, capsys):
    """`ecjax sweep=slurm` from client/ with a relative out.dir: dask-jobqueue submits the
    worker jobs, which start in workers/; one worker is killed mid-cell; the store and the
    report are in client/, complete and verified; `ecjax resume` from elsewhere/ computes
    nothing and puts the report beside the store."""
    _fake_slurm(dirs, monkeypatch)
    killer = Killer(str(dirs["client"] / "runs" / "results.zarr"), CELLS)
    killer.start()
    try:
        rc = cli.main(["--config-dir", str(CONF), *RUN, "report.delta=0.05,0.1", "out.dir=runs", "sweep=slurm",
                       "sweep.workers=1", "sweep.jobqueue.job_cpu=1", "sweep.jobqueue.memory=8GB",
                       "sweep.jobqueue.scheduler_options={host: 127.0.0.1}"])
    finally:
        killer.stop.set()
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert "2 computed, 0 already finished, 0 failed" in err and "no report" not in err
    runs = dirs["client"] / "runs"
    assert f"store:  {runs / 'results.zarr'}" in out and f"report: {runs / 'report' / 'index.html'}" in out
    assert killer.killed is not None, "no worker was caught mid-cell"
    _check_store(str(runs / "results.zarr"), killer.killed)
    # the jobs ran in workers/, and wrote nothing else there
    assert sorted({p.suffix for p in dirs["workers"].iterdir()}) == [".log", ".sh"]

    (runs / "report" / "index.html").unlink()
    monkeypatch.chdir(dirs["elsewhere"])
    assert cli.main(["resume", os.path.relpath(runs / "results.zarr")]) == 0
    out, err = capsys.readouterr()
    assert "0 computed, 2 already finished" in err
    assert (runs / "report" / "index.html").is_file() and not (dirs["elsewhere"] / "outputs").exists()
