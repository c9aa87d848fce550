"""Sweeps: expand a configuration into cells and compute them on dask.

A cell is one combination of the swept settings (scenario, community size, tightening, ...);
risk levels and samples stay vectorized inside it. The swept settings come from the config's
`sweep.params` (override key -> Hydra sweep values, e.g. ``scenario: islanded,ccdmpc,dmpc``)
and from sweep overrides on the command line (``community.n=5,10,20``, ``range(..)``,
``choice(..)``, as Hydra's --multirun). Each combination is composed by Hydra and validated
before anything is compiled.

Cells run in this process (`sweep.cluster=none`: one after another, or `sweep.workers`
threads), on a dask.distributed LocalCluster of `sweep.workers` processes on 127.0.0.1
(`sweep.cluster=local`), on a batch system's workers through dask-jobqueue
(`sweep.cluster=jobqueue`, `sweep=slurm`), or on a running cluster (`sweep.scheduler`: an
address or a scheduler file); see `ecjax.cluster`. Every path setting (`PATH_KEYS`) is made
absolute when the run is planned, so a worker writes where the planning process said,
whatever its own working directory. Every
cell is written to the store atomically (`ecjax.store.CellWriter`), so an interrupted sweep
resumes where it stopped: finished cells are skipped, an unfinished one continues from its
last finished block, and a finished one whose data no longer match its manifest (a missing,
truncated or altered chunk: `ecjax.store.verify_cell`) is removed and computed again.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import re
import time
import traceback
from pathlib import Path
from typing import Callable, Mapping, Sequence

from . import store as _store
from .config import ConfigError, check_config, compose, config_hash, default_config_dir, lookup, to_dict


@dataclasses.dataclass
class CellSpec:
    id: str
    params: dict  # swept key -> value (as written in the override)
    overrides: list  # the overrides that compose this cell
    config: dict  # resolved


@dataclasses.dataclass
class SweepPlan:
    argv: list  # the overrides as given
    overrides: list  # plain (non-sweep) overrides
    axes: dict  # swept key -> list of values
    base: dict  # resolved config without the sweep expanded
    cells: list  # CellSpec
    config_dir: str
    cwd: str = ""  # the directory relative paths were taken from

    @property
    def store(self) -> str:
        return self.base["out"]["store"]

    @property
    def report(self) -> str | None:
        return self.base["out"].get("report")

    def description(self) -> dict:
        return {
            "argv": list(self.argv),
            "axes": self.axes,
            "cells": [c.id for c in self.cells],
            "config_dir": self.config_dir,
            "cwd": self.cwd,
            "out": dict(self.base["out"]),
            "title": self.base.get("title"),
        }


@dataclasses.dataclass
class SweepResult:
    store: str
    computed: list  # cell ids computed (fully or partly) by this run
    skipped: list  # cell ids already finished before this run
    failed: dict  # cell id -> error text
    seconds: float
    damaged: dict = dataclasses.field(default_factory=dict)  # cell id -> problems (removed, recomputed)


# ----------------------------------------------------------------------------- planning
def _parser():
    from hydra.core.override_parser.overrides_parser import OverridesParser

    return OverridesParser.create()


def _parse(lines: Sequence[str]):
    from hydra.errors import HydraException

    try:
        return _parser().parse_overrides(list(lines))
    except HydraException as e:
        raise ConfigError(f"bad override: {e}") from None


def _values(override) -> list[str]:
    if override.is_sweep_override():
        return [str(v) for v in override.sweep_string_iterator()]
    return [override.get_value_element_as_str()]


def _param_line(key: str, value) -> str:
    if isinstance(value, (list, tuple)):
        value = ",".join(str(v) for v in value)
    return f"{key}={value}"


def _quote(s: str) -> str:
    return "'" + str(s).replace("\\", "\\\\").replace("'", "\\'") + "'"


_SAFE = re.compile(r"[^A-Za-z0-9_.=,+-]")


def cell_id(params: Mapping, config: Mapping) -> str:
    """Readable id of a cell from its swept settings (`key=value+key=value`)."""
    if not params:
        return f"scenario={config['scenario']['name']}"
    text = "+".join(f"{k}={v}" for k, v in params.items())
    text = _SAFE.sub("_", text).lstrip("._") or "cell"
    return text


# Settings that name a file or directory. `plan` makes each relative one absolute (from the
# planning directory), so that a dask worker started anywhere reads and writes the same files.
# cache_dir `auto`/null and paths from `~` stay as they are: they are taken on the machine
# that compiles; a scheduler address stays an address.
PATH_KEYS = ("out.dir", "out.store", "out.report", "data.price.path", "chain.keystore", "cache_dir",
             "sweep.scheduler")


def _set(cfg: dict, key: str, value) -> None:
    *head, last = key.split(".")
    for part in head:
        cfg = cfg[part]
    cfg[last] = value


def absolute_paths(cfg: Mapping, here) -> dict[str, str]:
    """The path settings of a resolved config that are relative, made absolute from the
    directory `here`: key -> absolute path."""
    from .cluster import is_address

    out = {}
    for key in PATH_KEYS:
        v = lookup(cfg, key)
        if not isinstance(v, str) or not v.strip():
            continue
        if key == "cache_dir" and (v.startswith("~") or jax_cache_dir(v) is None or v.strip().lower() == "auto"):
            continue
        if key == "sweep.scheduler" and is_address(v):
            continue
        p = Path(v).expanduser()
        if not p.is_absolute():
            out[key] = os.path.normpath(Path(here) / p)
        elif str(p) != v:
            out[key] = str(p)
    return out


def plan(argv: Sequence[str] = (), config_dir=None, cwd=None) -> SweepPlan:
    """Compose, expand and validate every cell of a run; nothing is computed or compiled.

    **Arguments:** `argv` Hydra overrides (sweep overrides like ``community.n=5,10`` expand
    into cells); `config_dir` the config directory (default: `default_config_dir()`); `cwd`
    the directory relative paths are taken from (default: the working directory). Every
    path setting (`PATH_KEYS`) of the plan's configs is absolute.

    **Returns:** a `SweepPlan` whose cells hold their resolved, validated configs. Raises
    `ConfigError` naming the key (and the cell) of the first bad value, or of a scheduler
    file or a dask-jobqueue setting that cannot serve (`ecjax.cluster.check`).
    """
    from . import cluster

    argv = [a for a in argv if a not in ("-m", "--multirun")]
    here = Path(os.path.abspath(cwd if cwd is not None else os.getcwd()))
    cdir = str(here / Path(config_dir).expanduser()) if config_dir is not None else None
    parsed = _parse(argv)
    plain = [o.input_line for o in parsed if not o.is_sweep_override()]
    cli_sweeps = [o for o in parsed if o.is_sweep_override()]
    base_cfg = compose(plain, cdir)
    base = to_dict(base_cfg)
    fixed = absolute_paths(base, here)
    for key, value in fixed.items():
        _set(base, key, value)
    given = {o.key_or_group for o in parsed}
    axes: dict[str, list[str]] = {}
    params = ((base.get("sweep") or {}).get("params")) or {}  # a mapping: the schema types it
    for key, value in params.items():
        if key in given or value is None:
            continue
        (o,) = _parse([_param_line(key, value)])
        axes[o.key_or_group] = _values(o)
    for o in cli_sweeps:
        axes[o.key_or_group] = _values(o)
    out = base.get("out") or {}
    pinned = [f"out.{k}={_quote(v)}" if v is not None else f"out.{k}=null" for k, v in out.items()]
    pinned += [f"{k}={_quote(v)}" for k, v in fixed.items() if not k.startswith("out.") and k not in axes]
    cells = []
    seen = {}
    keys = list(axes)
    for combo in itertools.product(*(axes[k] for k in keys)) if keys else [()]:
        params_c = dict(zip(keys, combo))
        ovr = plain + [f"{k}={v}" for k, v in params_c.items()] + pinned
        cfg = to_dict(compose(ovr, cdir)) if keys else base
        for key, value in absolute_paths(cfg, here).items():  # a swept path
            _set(cfg, key, value)
            ovr = [*ovr, f"{key}={_quote(value)}"]
        cid = cell_id(params_c, cfg)
        try:
            check_config(cfg)
        except ConfigError as e:
            raise ConfigError(f"{e} (cell {cid})" if keys else str(e)) from None
        if cid in seen:
            raise ConfigError(f"two cells have the id {cid!r}: {seen[cid]} and {params_c}.")
        seen[cid] = params_c
        cells.append(CellSpec(id=cid, params=params_c, overrides=ovr, config=cfg))
    if not keys:
        check_config(base)
    cluster.check(base.get("sweep") or {})
    return SweepPlan(argv=list(argv), overrides=plain, axes=axes, base=base, cells=cells,
                     config_dir=str(Path(cdir or default_config_dir()).resolve()), cwd=str(here))


def check_store_configs(p: SweepPlan) -> None:
    """Refuse a store whose finished cells were computed with other configs."""
    if not Path(p.store).exists():
        return
    for c in p.cells:
        a = _store.cell_attrs(p.store, c.id)
        if a is not None and a.get("complete") is True and a.get("config_hash") != config_hash(c.config):
            raise _store.StoreError(
                f"{p.store} already holds a finished cell {c.id!r} computed with another config; "
                "choose another out.dir (or out.store) for this run."
            )


# ---------------------------------------------------------------------------- one cell
def jax_cache_dir(setting) -> str | None:
    """Where JAX's persistent compilation cache goes for the config key `cache_dir`.

    `auto` (the default): `$JAX_COMPILATION_CACHE_DIR` if set, else `$XDG_CACHE_HOME/ecjax/jax`
    (`~/.cache/ecjax/jax` without XDG_CACHE_HOME), taken on the machine that compiles (a dask
    worker uses its own); a path: that directory; null / false: no persistent cache.
    """
    if setting is None or setting is False or str(setting).strip().lower() in ("", "null", "none", "false", "off"):
        return None
    if str(setting).strip().lower() == "auto":
        env = os.environ.get("JAX_COMPILATION_CACHE_DIR")
        if env:
            return env
        base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        return str(Path(base) / "ecjax" / "jax")
    return str(Path(str(setting)).expanduser())


def jax_setup(config: Mapping) -> None:
    """x64 and the persistent compilation cache of `config` (its key `cache_dir`), for a
    process about to compile the batch code: a cell's worker, or the audit's re-run of a
    sample (which then loads what the run compiled)."""
    import jax

    jax.config.update("jax_enable_x64", True)
    cache = jax_cache_dir(config.get("cache_dir", "auto"))
    if cache:  # a process keeps the first directory it compiled with
        jax.config.update("jax_compilation_cache_dir", cache)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)


def run_cell(store_path: str, cell_id: str, config: Mapping, params: Mapping,
             progress: bool = False) -> dict:
    """Compute one cell into the store (the task a dask worker runs); resumable.

    **Returns:** ``{"id", "blocks": [computed block indices], "seconds"}``; a cell that was
    already finished computes nothing.
    """
    jax_setup(config)
    from .config import cell_inputs
    from .experiment import run_batch

    t0 = time.perf_counter()
    w = _store.CellWriter(store_path, cell_id, config, params)
    if w.finished:
        return {"id": cell_id, "blocks": [], "seconds": 0.0}
    inp = cell_inputs(config)
    pending = w.pending_blocks()
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=sum(n for _, _, n in pending), desc=cell_id, unit="sample", leave=False)
    done = []
    for k, lo, n in pending:
        base = bar.n if bar is not None else 0
        cb = (lambda d, tot, b=base: (bar.update(b + d - bar.n))) if bar is not None else None
        res = run_batch(inp.community, inp.profiles, inp.deltas, n, keep=min(inp.keep, n) if k == 0 else 0,
                        sample_offset=lo, progress=cb, **inp.run_kwargs())
        w.write_block(k, res.summary, res.trajectories if k == 0 else None, res.seconds,
                      res.compile_seconds)
        done.append(k)
    if bar is not None:
        bar.close()
    vcfg = config.get("validate") or {}
    if vcfg.get("open_loop") and not w.group.attrs.get("open_loop"):
        w.write_dataset("open_loop", open_loop(inp, vcfg))
    w.finish(wall_seconds=time.perf_counter() - t0)
    return {"id": cell_id, "blocks": done, "seconds": time.perf_counter() - t0}


def open_loop(inp, vcfg: Mapping):
    """Open-loop validation (`ecjax.validate`) of the plan made at hour `validate.t` from the
    initial state (eb0, no EV energy yet) at every risk level of the cell; dims (risk, ...)."""
    import numpy as np
    import xarray as xr

    from .validate import open_loop_validation

    c = inp.community
    S = int(vcfg.get("S", 10000))
    parts = [
        open_loop_validation(
            c, inp.profiles, int(vcfg.get("t", 0)), np.asarray(c.eb0), np.zeros(c.n), float(d), S,
            seed=inp.seed, N=inp.N, scenario=inp.options.scenario, tightening=inp.options.tightening,
            tighten_consumers=inp.options.tighten_consumers, weights=inp.weights, solver=inp.solver,
            fc=inp.fc, dtype=inp.dtype, level=float(vcfg.get("level", 0.95)),
            chunk=min(int(vcfg.get("chunk", 65536)), S),
        )
        for d in inp.deltas
    ]  # fmt: skip
    ds = xr.concat(parts, dim="risk", combine_attrs="drop_conflicts")
    # zarr v3 has no stable string type: `side` is stored as 0 (lo) / 1 (hi), CF flag style
    sides = [str(x) for x in ds["side"].values]
    side = xr.Variable("side", np.arange(len(sides)), {"flag_values": list(range(len(sides))),
                                                      "flag_meanings": " ".join(sides)})
    return ds.assign_coords(risk=("risk", np.asarray(inp.deltas, float)), side=side)


def _safe(store_path, cell_id, config, params, progress=False) -> dict:
    try:
        return {"ok": True, **run_cell(store_path, cell_id, config, params, progress)}
    except Exception as e:  # a failed cell is reported; the other cells go on
        return {"ok": False, "id": cell_id, "error": f"{type(e).__name__}: {e}",
                "traceback": traceback.format_exc()}


# --------------------------------------------------------------------------- execution
def run(p: SweepPlan, progress: bool | None = None, on_cell: Callable[[dict], None] | None = None) -> SweepResult:
    """Compute the unfinished cells of a plan on dask and return what happened.

    Where cells run follows `sweep` of the base config (see the module docstring).
    """
    t0 = time.perf_counter()
    progress = bool(p.base.get("progress", True)) if progress is None else progress
    check_store_configs(p)
    _store.init_store(p.store, p.description())
    damaged = {}
    for c in p.cells:  # a damaged finished cell is not finished: removed, then computed again
        if _store.cell_state(p.store, c.id) != "complete":
            continue  # an unfinished one is continued or rewritten by its CellWriter
        chk = _store.verify_cell(p.store, c.id)
        if chk.state == "damaged":
            damaged[c.id] = chk.problems
            _store.discard_cell(p.store, c.id)
    skipped = [c.id for c in p.cells if _store.cell_state(p.store, c.id) == "complete"]
    pending = [c for c in p.cells if c.id not in skipped]
    sw = p.base.get("sweep") or {}
    results: list[dict] = []

    def record(r: dict) -> None:
        results.append(r)
        if on_cell is not None:
            on_cell(r)

    if pending:
        if sw.get("scheduler") or sw.get("cluster", "none") in ("local", "jobqueue"):
            _run_distributed(p, pending, sw, progress, record)
        else:
            _run_local(p, pending, int(sw.get("workers", 1)), progress, record)
    failed = {r["id"]: r["error"] for r in results if not r["ok"]}
    # every result is of a cell unfinished when the run started: finished by this run, even one
    # whose worker died after its last write (its task, run again, found it finished)
    computed = [r["id"] for r in results if r["ok"]]
    _store.consolidate(p.store)  # xarray then opens the store's datasets without listing it
    return SweepResult(store=p.store, computed=computed, skipped=skipped, failed=failed,
                       seconds=time.perf_counter() - t0, damaged=damaged)


def _bar(total: int, progress: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="cells", unit="cell", disable=not progress)


def _run_local(p: SweepPlan, pending, workers: int, progress: bool, record) -> None:
    import dask
    from dask.callbacks import Callback

    bar = _bar(len(pending), progress)
    inner = progress and workers == 1
    tasks = [dask.delayed(_safe, pure=False)(p.store, c.id, c.config, c.params, inner,
                                               dask_key_name=f"cell-{i}")
             for i, c in enumerate(pending)]

    class _Progress(Callback):
        def _posttask(self, key, result, dsk, state, worker_id):
            if isinstance(key, str) and key.startswith("cell-"):
                bar.update(1)
                record(result)

    scheduler = "synchronous" if workers == 1 else "threads"
    with _Progress():
        dask.compute(*tasks, scheduler=scheduler, num_workers=workers)
    bar.close()


def _run_distributed(p: SweepPlan, pending, sw: Mapping, progress: bool, record) -> None:
    """Each pending cell is one task. A worker that dies mid-cell (killed, its batch job
    ended) loses only its unfinished block: the scheduler gives the task to another worker,
    whose `CellWriter` continues the cell from its last finished block."""
    from distributed import as_completed

    from .cluster import open_client

    client, cluster = open_client(sw)
    bar = _bar(len(pending), progress)
    try:
        futures = {client.submit(_safe, p.store, c.id, c.config, c.params, False,
                                 key=f"ecjax-cell-{c.id}-{config_hash(c.config)[:8]}", pure=False): c.id
                   for c in pending}
        for fut in as_completed(list(futures)):
            try:
                r = fut.result()
            except Exception as e:  # the worker died
                r = {"ok": False, "id": futures[fut], "error": f"{type(e).__name__}: {e}"}
            bar.update(1)
            record(r)
    finally:
        bar.close()
        client.close()
        if cluster is not None:
            cluster.close()


def run_config(argv: Sequence[str] = (), config_dir=None, progress: bool | None = None) -> SweepResult:
    """`plan` then `run`: what `ecjax [overrides]` does before its report."""
    return run(plan(argv, config_dir), progress=progress)
