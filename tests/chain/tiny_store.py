"""A tiny results store written by the engine itself, for the audit tests: n = 4 agents
(2 prosumers), one kept sample, T = 3, N = 5, p_max = 4, the IPM at 1e-6."""

from __future__ import annotations

from pathlib import Path

from ecjax import store, sweep

CONF = Path(__file__).resolve().parents[2] / "conf"
DELTA = 0.05

TINY = [
    "out.report=null",
    "community=generated",
    "community.n=4",
    "community.prosumer_share=0.5",
    "community.seed=1",
    "data=synthetic",
    "scenario=ccdmpc",
    f"ccmpc.deltas=[{DELTA}]",
    "sim.S=1",
    "sim.T=3",
    "sim.N=5",
    "sim.keep=1",
    "sim.record_plans=true",
    "fcmpc.p_max=4",
    "solver.eps_abs=1e-6",
    "solver.eps_rel=1e-6",
    "solver.max_iter=4000",
    "progress=false",
]


def write_store(out: Path, overrides=TINY) -> tuple[Path, list[str]]:
    """Run the sweep of `overrides` into `out`; returns (store path, its cell ids)."""
    plan = sweep.plan([f"out.dir={out}", *overrides], CONF)
    res = sweep.run(plan, progress=False)
    assert not res.failed, res.failed
    return Path(plan.store), store.list_cells(plan.store)


def audit_args(path, cid, *extra, out=None, risk: float = DELTA, sample: int = 0) -> list[str]:
    """`ecjax audit` arguments for one sample of a cell."""
    a = [str(path), "--cell", cid, "--sample", str(sample), "--risk", str(risk), "--quiet", *extra]
    return a + (["--out", str(out)] if out is not None else [])
