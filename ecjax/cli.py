"""The `ecjax` command.

    ecjax [-m] [--config-dir DIR] [--cfg] [OVERRIDE ...]   run the configured cells (default)
    ecjax report STORE [--out DIR]                         Markdown + PNG + HTML from a store
    ecjax resume STORE                                     finish an interrupted run
    ecjax cells STORE                                      list the cells of a store
    ecjax audit ...                                        replay stored runs on chain

OVERRIDEs are Hydra overrides of conf/ (`sim.S=16`, `community=generated`, `+x=1`); sweep
overrides (`community.n=5,10,20`, `range(..)`) expand into one cell per value, as with Hydra's
--multirun (`-m` is accepted and implied). Every value is checked before anything compiles.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

USAGE = __doc__.split("\n\n")[1]
SUBCOMMANDS = ("run", "report", "resume", "cells", "audit")


def _err(msg: str) -> int:
    print(f"ecjax: error: {msg}", file=sys.stderr)
    return 2


def _run(argv: list[str]) -> int:
    from .config import ConfigError
    from .store import StoreError

    ap = argparse.ArgumentParser(prog="ecjax", usage=USAGE, add_help=True)
    ap.add_argument("-m", "--multirun", action="store_true", help="expand sweep overrides (implied)")
    ap.add_argument("--config-dir", default=None, help="directory of config.yaml (default: conf/)")
    ap.add_argument("--cfg", action="store_true", help="print the resolved config and the cells, run nothing")
    ap.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. sim.S=16 community.n=5,10")
    args = ap.parse_args(argv)
    from . import sweep

    try:
        plan = sweep.plan(args.overrides, args.config_dir)
        if args.cfg:
            from omegaconf import OmegaConf

            print(OmegaConf.to_yaml(OmegaConf.create(plan.base)), end="")
            print(f"# {len(plan.cells)} cell(s): " + ", ".join(c.id for c in plan.cells))
            return 0
        t0 = time.perf_counter()
        print(f"ecjax: {len(plan.cells)} cell(s) -> {plan.store}", file=sys.stderr)
        res = sweep.run(plan)
    except (ConfigError, StoreError) as e:
        return _err(str(e))
    print(f"ecjax: {len(res.computed)} computed, {len(res.skipped)} already finished, "
          f"{len(res.failed)} failed in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    for cid, msg in res.failed.items():
        print(f"ecjax: cell {cid} failed: {msg}", file=sys.stderr)
    print(f"store:  {Path(plan.store).resolve()}")
    if plan.report:
        from .report import make_report
        from .store import list_cells

        if list_cells(plan.store):
            paths = make_report(plan.store, plan.report)
            print(f"report: {Path(paths.html).resolve()}")
            print(f"        {Path(paths.markdown).resolve()}")
        else:
            print("ecjax: no finished cell, no report", file=sys.stderr)
    return 1 if res.failed else 0


def _report(argv: list[str]) -> int:
    from .store import StoreError

    ap = argparse.ArgumentParser(prog="ecjax report", description="Report of a results store.")
    ap.add_argument("store")
    ap.add_argument("--out", default=None, help="output directory (default: STORE/../report)")
    args = ap.parse_args(argv)
    from .report import make_report

    out = args.out or str(Path(args.store).resolve().parent / "report")
    try:
        paths = make_report(args.store, out)
    except StoreError as e:
        return _err(str(e))
    print(f"report: {Path(paths.html).resolve()}")
    print(f"        {Path(paths.markdown).resolve()}")
    return 0


def _resume(argv: list[str]) -> int:
    from .store import StoreError, store_attrs

    ap = argparse.ArgumentParser(prog="ecjax resume", description="Finish an interrupted run.")
    ap.add_argument("store")
    args = ap.parse_args(argv)
    try:
        desc = store_attrs(args.store).get("sweep")
    except StoreError as e:
        return _err(str(e))
    if not desc:
        return _err(f"{args.store} records no run to resume.")
    out = desc.get("out", {})
    pinned = [f"out.dir={out.get('dir')}", f"out.store={args.store}",
              f"out.report={out['report']}" if out.get("report") else "out.report=null"]
    return _run(["--config-dir", desc["config_dir"], *desc["argv"], *pinned])


def _cells(argv: list[str]) -> int:
    from .store import StoreError, all_cells, cell_attrs

    ap = argparse.ArgumentParser(prog="ecjax cells", description="List the cells of a store.")
    ap.add_argument("store")
    args = ap.parse_args(argv)
    try:
        ids = all_cells(args.store)
    except StoreError as e:
        return _err(str(e))
    for cid in ids:
        a = cell_attrs(args.store, cid) or {}
        state = "complete" if a.get("complete") is True else \
            f"partial {len(a.get('blocks_done', []))}/{a.get('n_blocks', '?')} blocks"
        times = f"run {a['seconds']:.1f} s, compile {a['compile_seconds']:.1f} s" if "seconds" in a else ""
        print(f"{cid}\t{state}\t{times}")
    return 0


def _audit(argv: list[str]) -> int:
    try:
        from .chain.audit import main as audit_main  # imported only for this subcommand
    except ModuleNotFoundError as e:
        if e.name != "ecjax.chain.audit":
            raise
        return _err("`ecjax audit` needs ecjax.chain.audit, which this installation lacks.")
    return int(audit_main(argv) or 0)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `ecjax` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    import jax

    jax.config.update("jax_enable_x64", True)
    cmd = argv[0] if argv and argv[0] in SUBCOMMANDS else "run"
    rest = argv[1:] if argv and argv[0] in SUBCOMMANDS else argv
    handler = {"run": _run, "report": _report, "resume": _resume, "cells": _cells, "audit": _audit}[cmd]
    return handler(rest)


if __name__ == "__main__":
    sys.exit(main())
