"""The engine under `@hydra.main`: Hydra's own launcher runs the jobs of a --multirun.

    python experiments/run.py experiment=risk_sweep sim.S=16
    python experiments/run.py -m community=generated community.n=5,10,20

Each Hydra job composes its cells (its overrides plus `sweep.params` of the config), computes
them into the shared store `out.store` (the same for every job of the run) and refreshes the
report. The `ecjax` command does the same from one process and dispatches the cells to dask
instead; both write the same store layout, and either resumes the other.

The store and the report go to Hydra's output directory: `hydra.run.dir` (a single run) or
`hydra.sweep.dir` (-m; Hydra's per-job folders `job<N>` hold only its own logs), both
`out.dir` unless overridden (`hydra.run.dir=D` and `out.dir=D` do the same). JAX's persistent
compilation cache is on as for `ecjax` (config key `cache_dir`).
"""

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from ecjax.config.compose import register_resolvers

register_resolvers()  # conf/solver takes IPM's defaults through ${ecjax.default:}, also for --cfg/--resolve


@hydra.main(config_path="../conf", config_name="config", version_base=None)
def main(cfg: DictConfig) -> int:
    import jax

    jax.config.update("jax_enable_x64", True)
    from ecjax import sweep
    from ecjax.report import make_report

    hc = HydraConfig.get()
    task = list(hc.overrides.task)
    # Hydra's output directory of this run, resolved by Hydra (hydra.run.dir / hydra.sweep.dir)
    out_dir = str(hc.sweep.dir) if hc.mode == RunMode.MULTIRUN else str(hc.runtime.output_dir)
    if not any(o.split("=", 1)[0].strip() == "out.dir" for o in task):
        task.append(f"out.dir={sweep._quote(out_dir)}")
    plan = sweep.plan(task)
    res = sweep.run(plan)
    for cid, msg in res.failed.items():
        print(f"cell {cid} failed: {msg}")
    print(f"store:  {plan.store}")
    if plan.report:
        print(f"report: {make_report(plan.store, plan.report).html}")
    return 1 if res.failed else 0


if __name__ == "__main__":
    main()
