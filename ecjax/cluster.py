"""Where a sweep's cells run on dask.distributed: a running scheduler, a LocalCluster, or the
workers of a batch system through dask-jobqueue.

The `sweep` settings read here (docs/clusters.md):

- `scheduler`: a running dask scheduler, as its address (``tcp://host:8786``) or as the JSON
  file it wrote with ``dask scheduler --scheduler-file FILE`` (dask's `scheduler_file`). A
  relative file name is taken from the directory the run is planned in. Given, it wins over
  `cluster`.
- `cluster: local`: a `distributed.LocalCluster` of `workers` processes on 127.0.0.1.
- `cluster: jobqueue`: a dask-jobqueue cluster (`pip install ecjax[cluster]`): its scheduler
  runs in the process that plans the sweep, and `workers` worker processes are asked of the
  batch system as jobs. `jobqueue.kind` picks the class (`slurm`: `SLURMCluster`, `pbs`,
  `sge`, `lsf`, `htcondor`, `oar`, `moab`; `local`: jobs as local processes, to try a
  configuration without a batch system); every other key of `jobqueue` is a keyword of that
  class (`cores`, `memory`, `processes`, `queue`, `account`, `walltime`,
  `job_extra_directives`, `job_script_prologue`, `python`, `interface`, `scheduler_options`,
  ...), null ones left to dask-jobqueue's own configuration (``~/.config/dask/jobqueue.yaml``).

Workers may start in any directory, on any machine: every path a cell writes or reads is made
absolute when the sweep is planned (`ecjax.sweep.plan`), so the results land where the client
said, which must be a file system that the workers share. `check` looks at what a run needs
from its surroundings (the scheduler file, dask-jobqueue and its keywords, a job script that
renders) before anything is computed and names the setting at fault.
"""

from __future__ import annotations

import inspect
import json
import re
from pathlib import Path
from typing import Mapping

from .config import ConfigError

# jobqueue.kind -> dask_jobqueue class
JOBQUEUE_CLASSES = {
    "slurm": "SLURMCluster",
    "pbs": "PBSCluster",
    "sge": "SGECluster",
    "lsf": "LSFCluster",
    "htcondor": "HTCondorCluster",
    "oar": "OARCluster",
    "moab": "MoabCluster",
    "local": "LocalCluster",
}
# keywords of the dask-jobqueue classes that ecjax sets itself, or that are renamed or not
# settable from a config: key -> what to use instead
_NOT_OPTIONS = {
    "n_workers": "sweep.workers (the number of worker processes in all)",
    "job_cls": "sweep.jobqueue.kind",
    "loop": None,
    "asynchronous": None,
    "scheduler_cls": None,
    "scheduler": None,
    "name": None,
    "host": "sweep.jobqueue.scheduler_options.host",
    "dashboard_address": "sweep.jobqueue.scheduler_options.dashboard_address",
    "extra": "sweep.jobqueue.worker_extra_args",
    "job_extra": "sweep.jobqueue.job_extra_directives",
    "env_extra": "sweep.jobqueue.job_script_prologue",
    "header_skip": "sweep.jobqueue.job_directives_skip",
}
_ADDRESS = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def is_address(scheduler) -> bool:
    """Whether a `sweep.scheduler` value is an address (``tcp://...``), not a file."""
    return isinstance(scheduler, str) and bool(_ADDRESS.match(scheduler))


def scheduler_address(path) -> str:
    """The address in a dask scheduler file; ConfigError naming `sweep.scheduler` if the file
    is missing or holds none."""
    p = Path(path)
    hint = ("a dask scheduler address like tcp://host:8786, or the file a running scheduler "
            "wrote with `dask scheduler --scheduler-file FILE`")
    if not p.is_file():
        raise ConfigError(f"sweep.scheduler must be {hint}; no such file: {str(p)!r}.")
    try:
        info = json.loads(p.read_text())
    except (OSError, ValueError) as e:
        raise ConfigError(f"sweep.scheduler: {str(p)!r} is not a dask scheduler file ({e}).") from None
    address = info.get("address") if isinstance(info, Mapping) else None
    if not isinstance(address, str) or not is_address(address):
        raise ConfigError(f"sweep.scheduler: {str(p)!r} is not a dask scheduler file (no `address`).")
    return address


# ------------------------------------------------------------------------ dask-jobqueue
def _jobqueue_class(kind):
    if kind not in JOBQUEUE_CLASSES:
        raise ConfigError(f"sweep.jobqueue.kind must be one of {', '.join(JOBQUEUE_CLASSES)}, got {kind!r}.")
    try:
        import dask_jobqueue
    except ImportError:
        raise ConfigError("sweep.cluster=jobqueue needs dask-jobqueue, which is not installed: "
                          "pip install 'ecjax[cluster]' (or dask-jobqueue).") from None
    if kind == "local":
        from dask_jobqueue.local import LocalCluster

        return LocalCluster
    return getattr(dask_jobqueue, JOBQUEUE_CLASSES[kind])


def _parameters(*fns) -> set[str]:
    names = set()
    for fn in fns:
        names |= {p.name for p in inspect.signature(fn).parameters.values()
                  if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name != "self"}
    return names


def jobqueue_options(sw: Mapping) -> tuple[type, dict]:
    """The dask-jobqueue class of `sweep.jobqueue.kind` and its keywords (the other keys of
    `sweep.jobqueue` that are not null); ConfigError for a key the class does not take."""
    jq = dict(sw.get("jobqueue") or {})
    cls = _jobqueue_class(jq.pop("kind", None))
    from dask_jobqueue.core import Job, JobQueueCluster

    known = (_parameters(JobQueueCluster.__init__, Job.__init__, cls.job_cls.__init__)
             - set(_NOT_OPTIONS))
    opts = {}
    for k, v in jq.items():
        if k in _NOT_OPTIONS:
            instead = _NOT_OPTIONS[k]
            raise ConfigError(f"sweep.jobqueue.{k} is set by ecjax or not settable here"
                              + (f"; use {instead}." if instead else "."))
        if k not in known:
            raise ConfigError(f"sweep.jobqueue.{k} is not a keyword of dask_jobqueue.{cls.__name__} "
                              f"(known: {', '.join(sorted(known))}).")
        if v is not None:
            opts[k] = v
    if "scheduler_options" not in opts:  # as dask-jobqueue would: its configuration's
        import dask

        section = opts.get("config_name") or cls.job_cls.default_config_name()
        opts["scheduler_options"] = dask.config.get(f"jobqueue.{section}.scheduler-options", {}) or {}
    # no dashboard unless asked for (scheduler_options.dashboard_address)
    opts["scheduler_options"] = {"dashboard_address": None,
                                 **{k: v for k, v in dict(opts["scheduler_options"]).items() if v is not None}}
    return cls, opts


def job_script(sw: Mapping, scheduler: str = "tcp://scheduler:8786") -> str:
    """The batch script one job of `sweep.jobqueue` runs (for the record and for checks); no
    scheduler is started and nothing is submitted."""
    cls, opts = jobqueue_options(sw)
    from dask_jobqueue.core import Job

    job = {k: v for k, v in opts.items() if k in _parameters(cls.job_cls.__init__, Job.__init__)}
    try:
        return cls.job_cls(scheduler=scheduler, name="ecjax-worker", **job).job_script()
    except (ValueError, TypeError, KeyError) as e:
        raise ConfigError(f"sweep.jobqueue: dask_jobqueue.{cls.__name__} refuses these settings: "
                          f"{str(e).strip()}") from None


# ----------------------------------------------------------------------------- checks
def check(sw: Mapping) -> None:
    """What a run with the `sweep` settings `sw` needs from its surroundings, checked before
    anything is computed: the scheduler file (when `scheduler` is not an address), or
    dask-jobqueue, its keywords and a job script that renders (`cluster: jobqueue`)."""
    scheduler = sw.get("scheduler")
    if scheduler:
        if not is_address(scheduler):
            scheduler_address(scheduler)
        return
    if sw.get("cluster") == "jobqueue":
        job_script(sw)


# ---------------------------------------------------------------------------- clients
def open_client(sw: Mapping):
    """A `distributed.Client` for the `sweep` settings, and the cluster it started (None for
    a running scheduler). The caller closes both."""
    from distributed import Client

    scheduler = sw.get("scheduler")
    if scheduler:
        kw = {"address": scheduler} if is_address(scheduler) else {"scheduler_file": str(scheduler)}
        try:
            return Client(**kw), None
        except OSError as e:
            raise ConfigError(f"sweep.scheduler: no dask scheduler answers at {scheduler!r} ({e}).") from None
    workers = int(sw.get("workers", 1))
    if sw.get("cluster") == "jobqueue":
        cls, opts = jobqueue_options(sw)
        cluster = cls(**opts)
        try:
            cluster.scale(workers)  # ceil(workers / processes) jobs
            return Client(cluster), cluster
        except BaseException:
            cluster.close()
            raise
    import logging

    from distributed import LocalCluster

    cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                           dashboard_address=None, silence_logs=logging.ERROR)
    try:
        return Client(cluster), cluster
    except BaseException:
        cluster.close()
        raise
