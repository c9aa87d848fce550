"""The `ecjax` command.

    ecjax [-m] [--config-dir DIR] [--cfg [job|hydra|all]] [--resolve] [--info [WHAT]] [OVERRIDE ...]
                                                           run the configured cells (default)
    ecjax report STORE [--out DIR]                         Markdown + PNG + HTML from a store
    ecjax resume STORE                                     finish an interrupted run, recompute damaged cells
    ecjax cells STORE [--quick]                            list the cells of a store and their state
    ecjax verify STORE [--quick] [--strict] [--seal]       check every cell against its manifest
    ecjax audit ...                                        replay stored runs on chain
    ecjax --version | --help

OVERRIDEs are Hydra overrides of the config (`sim.S=16`, `community=generated`, `+x=1`); sweep
overrides (`community.n=5,10,20`, `range(..)`) expand into one cell per value, as with Hydra's
--multirun (`-m` is accepted and implied). Every value is checked before anything compiles.
`hydra.run.dir=D` / `hydra.sweep.dir=D` are taken as `out.dir=D` (store and report go there);
`hydra.searchpath=[file:///abs/dir]` adds a directory of one's own configs; every other
`hydra.*` override is refused (exit 2), naming the ecjax key to use instead.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
import time
from pathlib import Path
from typing import Mapping

USAGE = __doc__.split("\n\n")[1]
SUBCOMMANDS = ("run", "report", "resume", "cells", "verify", "audit")
CFG_CHOICES = ("job", "hydra", "all")
INFO_CHOICES = ("all", "config", "defaults", "defaults-tree", "plugins", "searchpath")


def version() -> str:
    from . import __version__

    return __version__


def _catalogue(config_dir) -> str:
    """The config groups (with their options and defaults) and the experiments of a config
    directory, for `--help`."""
    from omegaconf import OmegaConf

    from .config.compose import CONFIG_NAME, default_config_dir

    cdir = Path(config_dir) if config_dir else default_config_dir()
    if not (cdir / f"{CONFIG_NAME}.yaml").is_file():
        return f"config directory: {cdir} (no {CONFIG_NAME}.yaml)"
    defaults = {}
    try:
        for d in OmegaConf.load(cdir / f"{CONFIG_NAME}.yaml").get("defaults", []):
            if isinstance(d, Mapping) or OmegaConf.is_dict(d):
                defaults.update({str(k): v for k, v in dict(d).items()})
    except Exception:  # the help text stays useful with a broken config.yaml
        pass
    lines = [f"config directory: {cdir}", "config groups (GROUP=OPTION; * the default):"]
    for g in sorted(p for p in cdir.iterdir() if p.is_dir() and any(p.glob("*.yaml"))):
        opts = sorted(f.stem for f in g.glob("*.yaml"))
        if g.name == "experiment":
            continue
        lines.append(f"  {g.name:<11} " + ", ".join(o + ("*" if defaults.get(g.name) == o else "")
                                                       for o in opts))
    exps = sorted(f.stem for f in (cdir / "experiment").glob("*.yaml"))
    if exps:
        lines.append("experiments (experiment=NAME):")
        for e in exps:
            title = ""
            try:
                title = str(OmegaConf.load(cdir / "experiment" / f"{e}.yaml").get("title") or "")
            except Exception:
                pass
            lines.append(f"  {e:<18} {title}".rstrip())
    lines += ["subcommands:",
              "  report STORE     Markdown + PNG + HTML report from a store",
              "  resume STORE     finish an interrupted run, recompute damaged cells",
              "  cells STORE      the cells of a store and their state",
              "  verify STORE     check every cell against its manifest",
              "  audit ...        replay stored runs through the coordinator contract",
              "(ecjax SUBCOMMAND --help for each)"]
    return "\n".join(lines)


def _hydra_args(argv: list[str]) -> list[str]:
    """Hydra's `--cfg`/`-c` and `--info` take an optional value: `--cfg sim.S=3` means
    `--cfg job sim.S=3`, as with Hydra."""
    out, i = [], 0
    while i < len(argv):
        a = argv[i]
        nxt = argv[i + 1] if i + 1 < len(argv) else None
        if a in ("--cfg", "-c"):
            out.append("--cfg=" + (nxt if nxt in CFG_CHOICES else "job"))
            i += 2 if nxt in CFG_CHOICES else 1
            continue
        if a == "--info":
            out.append("--info=" + (nxt if nxt in INFO_CHOICES else "all"))
            i += 2 if nxt in INFO_CHOICES else 1
            continue
        out.append(a)
        i += 1
    return out


def _out_dir_overrides(overrides: list[str]) -> list[str]:
    """`hydra.run.dir=D` / `hydra.sweep.dir=D` -> `out.dir=D` (refused when they disagree
    with each other or with an `out.dir` given too)."""
    dirs, rest = {}, []
    for o in overrides:
        key, sep, val = o.partition("=")
        if sep and key.strip() in ("hydra.run.dir", "hydra.sweep.dir", "out.dir"):
            dirs[key.strip()] = val
            if key.strip() == "out.dir":
                rest.append(o)
            continue
        rest.append(o)
    if len(set(dirs.values())) > 1:
        from .config import ConfigError

        raise ConfigError("the output directory is given twice with different values ("
                          + ", ".join(f"{k}={v}" for k, v in dirs.items())
                          + "): hydra.run.dir and hydra.sweep.dir are taken as out.dir; give one.")
    if dirs and "out.dir" not in dirs:
        rest.append(f"out.dir={next(iter(dirs.values()))}")
    return rest


def _err(msg: str) -> int:
    print(f"ecjax: error: {msg}", file=sys.stderr)
    return 2


def _run(argv: list[str], cwd: str | None = None) -> int:
    """`ecjax [overrides]`; relative paths of the overrides are taken from `cwd` (default: the
    working directory)."""
    from .config import ConfigError
    from .store import StoreError

    ap = argparse.ArgumentParser(prog="ecjax", usage=USAGE, add_help=True,
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=_catalogue(_peek_config_dir(argv)))
    ap.add_argument("--version", action="version", version=f"ecjax {version()}")
    ap.add_argument("-m", "--multirun", action="store_true", help="expand sweep overrides (implied)")
    ap.add_argument("--config-dir", default=None,
                    help="directory of config.yaml (default: $ECJAX_CONFIG_DIR, ./conf, the configs "
                    "shipped with ecjax)")
    ap.add_argument("--cfg", "-c", choices=CFG_CHOICES, default=None,
                    help="print the config (job: ecjax's, hydra: Hydra's node, all: both) and the "
                    "cells, run nothing")
    ap.add_argument("--resolve", action="store_true", help="with --cfg: resolve interpolations")
    ap.add_argument("--info", choices=INFO_CHOICES, default=None,
                    help="Hydra's information (search path, defaults list, ...), run nothing")
    ap.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. sim.S=16 community.n=5,10")
    args = ap.parse_args(_hydra_args(argv))
    from . import sweep

    try:
        overrides = _out_dir_overrides(args.overrides)
        if args.info:
            return _info(args.info, overrides, args.config_dir)
        if args.cfg in ("hydra", "all"):
            _print_hydra_cfg(args.cfg, overrides, args.config_dir, args.resolve)
            if args.cfg == "hydra":
                return 0
        plan = sweep.plan(overrides, args.config_dir, cwd=cwd)
        if args.cfg:
            from omegaconf import OmegaConf

            from .config.compose import compose, to_dict

            if args.resolve:
                print(OmegaConf.to_yaml(OmegaConf.create(plan.base)), end="")
            else:  # as composed, without the settings no file sets (their sections' defaults)
                print(OmegaConf.to_yaml(to_dict(compose(plan.overrides, args.config_dir), resolve=False)),
                      end="")
            print(f"# {len(plan.cells)} cell(s): " + ", ".join(c.id for c in plan.cells))
            return 0
        t0 = time.perf_counter()
        print(f"ecjax: {len(plan.cells)} cell(s) -> {plan.store}", file=sys.stderr)
        res = sweep.run(plan)
    except (ConfigError, StoreError) as e:
        return _err(str(e))
    print(f"ecjax: {len(res.computed)} computed, {len(res.skipped)} already finished, "
          f"{len(res.failed)} failed in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    for cid, problems in res.damaged.items():
        print(f"ecjax: cell {cid!r} was damaged ({'; '.join(problems)}): removed and recomputed",
              file=sys.stderr)
    for cid, msg in res.failed.items():
        print(f"ecjax: cell {cid} failed: {msg}", file=sys.stderr)
    print(f"store:  {Path(plan.store).resolve()}")
    if plan.report:
        from .report import make_report
        from .store import list_cells

        try:
            if list_cells(plan.store):
                paths = make_report(plan.store, plan.report)
                print(f"report: {Path(paths.html).resolve()}")
                print(f"        {Path(paths.markdown).resolve()}")
            else:
                print("ecjax: no finished cell, no report", file=sys.stderr)
        except StoreError as e:  # e.g. a damaged cell outside this run's cells
            return _err(str(e))
    return 1 if res.failed else 0


def _peek_config_dir(argv: list[str]) -> str | None:
    for i, a in enumerate(argv):
        if a == "--config-dir" and i + 1 < len(argv):
            return argv[i + 1]
        if a.startswith("--config-dir="):
            return a.split("=", 1)[1]
    return None


def _hydra_session(overrides: list[str], config_dir):
    """A Hydra session on the config directory (for --info and --cfg hydra)."""
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from .config.compose import check_hydra_overrides, default_config_dir, register_resolvers

    register_resolvers()
    check_hydra_overrides(overrides)
    if GlobalHydra.instance().is_initialized():
        GlobalHydra.instance().clear()
    cdir = Path(config_dir) if config_dir else default_config_dir()
    return initialize_config_dir(config_dir=str(cdir.resolve()), version_base=None)


def _single_values(overrides: list[str]) -> list[str]:
    """The overrides without a sweep (a value list `a,b`), which Hydra's --info and --cfg hydra
    compose once; hydra.searchpath keeps its list."""
    return [o for o in overrides if "," not in o.partition("=")[2] or o.startswith("hydra.searchpath")]


def _info(what: str, overrides: list[str], config_dir) -> int:
    """Hydra's `--info` on ecjax's config (search path, defaults list and tree, config)."""
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException

    from .config.compose import CONFIG_NAME, typed_overrides
    from .config.schema import config_error

    plain = typed_overrides(_single_values(overrides))
    try:
        with _hydra_session(plain, config_dir), _root_logger_kept():
            GlobalHydra.instance().hydra.show_info(what, CONFIG_NAME, plain)
    except HydraException as e:
        raise config_error(e) from None
    return 0


@contextlib.contextmanager
def _root_logger_kept():
    """Hydra's `show_info` sets the root logger to DEBUG with a handler on the sys.stdout of
    the moment; as a call inside a process (`ecjax.cli.main`), that would leave every later
    debug message of every library printed to that stream. Restore the level and handlers."""
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    try:
        yield
    finally:
        root.setLevel(level)
        for h in list(root.handlers):
            if h not in handlers:
                root.removeHandler(h)


def _print_hydra_cfg(which: str, overrides: list[str], config_dir, resolve: bool) -> None:
    """`--cfg hydra` / `--cfg all`: Hydra's node as Hydra composes it. ecjax reads only
    hydra.searchpath from it (and, from the command line, hydra.run.dir / hydra.sweep.dir as
    out.dir); hydra.run.dir and hydra.sweep.dir default to out.dir, which is what
    experiments/run.py, run under Hydra's own launcher, writes to."""
    from hydra import compose as _compose
    from hydra.errors import HydraException
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    from .config.compose import CONFIG_NAME, typed_overrides
    from .config.schema import config_error

    plain = typed_overrides(_single_values(overrides))
    try:
        with _hydra_session(plain, config_dir):
            cfg = _compose(CONFIG_NAME, overrides=plain, return_hydra_config=True)
        if resolve:  # what can be resolved outside a running Hydra job (not hydra.job.num, ...)
            try:
                OmegaConf.resolve(cfg)
            except OmegaConfBaseException:
                for key in ("hydra.run.dir", "hydra.sweep.dir"):
                    OmegaConf.update(cfg, key, str(OmegaConf.select(cfg, key)))
        if which == "hydra":
            cfg = OmegaConf.masked_copy(cfg, "hydra")
        print(OmegaConf.to_yaml(cfg), end="")
    except (HydraException, OmegaConfBaseException) as e:
        raise config_error(e) from None


def _notes(store: str, checks) -> None:
    """Tell which cells cannot be verified (finished before ecjax stored checksums)."""
    legacy = [c.cell for c in checks if c.state == "unverifiable"]
    if legacy:
        print(f"ecjax: note: {len(legacy)} cell(s) of {store} have no manifest (written before ecjax "
              f"stored checksums) and cannot be verified: {', '.join(legacy)}", file=sys.stderr)


def report_dir(store: str, recorded: Mapping | None = None) -> str:
    """Where `report` and `resume` write the report of `store`: beside the store, never into
    the directories that the run which wrote it recorded (the store may have been copied or
    moved since; those directories then belong to another run).

    `recorded`: that run's `out` settings (`store`, `report`). When its report sat below the
    store's directory (`report/` in the default layout), the report keeps that place relative
    to `store`; otherwise, and without a record, `STORE/../report`.
    """
    here = Path(store).resolve().parent
    rec = dict(recorded or {})
    if rec.get("store") and rec.get("report"):
        was_store, was_report = Path(str(rec["store"])), Path(str(rec["report"]))
        if was_store.is_absolute() == was_report.is_absolute():
            rel = Path(os.path.relpath(os.path.normpath(was_report), os.path.normpath(was_store.parent)))
            if ".." not in rel.parts and rel.parts and not rel.is_absolute():
                return str(here / rel)
    return str(here / "report")


def _report(argv: list[str]) -> int:
    from .store import StoreError, check_store, store_attrs

    ap = argparse.ArgumentParser(prog="ecjax report", description="Report of a results store.")
    ap.add_argument("store")
    ap.add_argument("--out", default=None, help="output directory (default: beside the store, "
                    "STORE/../report)")
    args = ap.parse_args(argv)
    from .report import make_report

    try:
        out = args.out or report_dir(args.store, (store_attrs(args.store).get("sweep") or {}).get("out"))
        checks = check_store(args.store)
        _notes(args.store, checks)
        paths = make_report(args.store, out, verify=False)
    except StoreError as e:
        return _err(str(e))
    print(f"report: {Path(paths.html).resolve()}")
    print(f"        {Path(paths.markdown).resolve()}")
    return 0


def _resume(argv: list[str]) -> int:
    from .store import StoreError, store_attrs
    from .sweep import _quote

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
    # outputs go beside the store resumed, never into the directories recorded by the run that
    # wrote it (for a copied or moved store, those belong to another run)
    store = str(Path(args.store).resolve())
    report = report_dir(store, out) if out.get("report") else None
    pinned = [f"out.dir={_quote(str(Path(store).parent))}", f"out.store={_quote(store)}",
              f"out.report={_quote(report)}" if report else "out.report=null"]
    # the run's other relative paths (a scheduler file, a price file) are taken from the
    # directory it was planned in, when this machine has it
    cwd = desc.get("cwd")
    cwd = cwd if cwd and Path(cwd).is_dir() else None
    argv = [a for a in desc["argv"] if a.partition("=")[0].strip() not in _OUT_KEYS]
    return _run(["--config-dir", desc["config_dir"], *argv, *pinned], cwd=cwd)


_OUT_KEYS = ("out.dir", "out.store", "out.report", "hydra.run.dir", "hydra.sweep.dir")


def _cells(argv: list[str]) -> int:
    from .store import DamagedCellError, StoreError, cell_attrs, verify_store

    ap = argparse.ArgumentParser(prog="ecjax cells", description="List the cells of a store and "
                                 "their state; finished cells are checked against their manifests.")
    ap.add_argument("store")
    ap.add_argument("--quick", action="store_true", help="check chunk files and sizes only, read no data")
    args = ap.parse_args(argv)
    try:
        checks = verify_store(args.store, full=not args.quick)
    except StoreError as e:
        return _err(str(e))
    for chk in checks:
        a = cell_attrs(args.store, chk.cell) or {}
        state = {
            "verified": "complete",
            "unverifiable": "complete (unverified: no manifest)",
            "damaged": "DAMAGED",
            "partial": f"partial {len(a.get('blocks_done', []))}/{a.get('n_blocks', '?')} blocks",
        }.get(chk.state, chk.state)
        times = f"run {a['seconds']:.1f} s, compile {a['compile_seconds']:.1f} s" if "seconds" in a else ""
        print(f"{chk.cell}\t{state}\t{times}")
    _notes(args.store, checks)
    if any(c.state == "damaged" for c in checks):
        return _err(str(DamagedCellError(args.store, checks)))
    return 0


def _verify(argv: list[str]) -> int:
    from .store import DamagedCellError, StoreError, seal_cell, verify_store

    ap = argparse.ArgumentParser(
        prog="ecjax verify", description="Check every cell of a store against its manifest: exit 0 "
        "clean, 2 damaged (every damaged cell and array listed).")
    ap.add_argument("store")
    ap.add_argument("--quick", action="store_true", help="check chunk files and sizes only, read no data")
    ap.add_argument("--strict", action="store_true",
                    help="cells without a manifest (written before checksums) count as damaged")
    ap.add_argument("--seal", action="store_true",
                    help="give cells without a manifest one, when every chunk of theirs reads back")
    args = ap.parse_args(argv)
    try:
        checks = verify_store(args.store, full=not args.quick or args.seal)
        if args.seal:
            for chk in checks:
                if chk.state == "unverifiable":
                    seal_cell(args.store, chk.cell)
                    chk.state = "verified"
                    print(f"ecjax: sealed cell {chk.cell!r}: its data as they read now are in its manifest",
                          file=sys.stderr)
    except StoreError as e:
        return _err(str(e))
    for chk in checks:
        print(f"{chk.cell}\t{chk.state}")
    damaged = [c for c in checks if c.state == "damaged"]
    legacy = [c for c in checks if c.state == "unverifiable"]
    _notes(args.store, checks)
    if damaged:
        return _err(str(DamagedCellError(args.store, checks, limit=None)))
    if legacy and args.strict:
        return _err(f"{len(legacy)} cell(s) cannot be verified (--strict).")
    n = sum(c.state == "verified" for c in checks)
    print(f"ecjax: {args.store}: {n} cell(s) verified{' (quick)' if args.quick else ''}, "
          f"{len(legacy)} unverifiable, {len(checks) - n - len(legacy)} unfinished", file=sys.stderr)
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
    """Entry point of the `ecjax` console script (and of `python -m ecjax`)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] in (["--version"], ["-V"]):
        print(f"ecjax {version()}")
        return 0
    import jax

    jax.config.update("jax_enable_x64", True)
    cmd = argv[0] if argv and argv[0] in SUBCOMMANDS else "run"
    rest = argv[1:] if argv and argv[0] in SUBCOMMANDS else argv
    handler = {"run": _run, "report": _report, "resume": _resume, "cells": _cells, "verify": _verify,
               "audit": _audit}[cmd]
    return handler(rest)


if __name__ == "__main__":
    sys.exit(main())
