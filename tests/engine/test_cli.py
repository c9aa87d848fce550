"""The `ecjax` command as Hydra's users know it: --cfg job|hydra|all, --resolve, --info,
hydra.* overrides honoured or refused, a user config directory on Hydra's search path, the
version and the help. Nothing here compiles."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ecjax import cli
from ecjax.config import ConfigError
from ecjax.config.compose import check_hydra_overrides, packaged_config_dir
from ecjax.sweep import jax_cache_dir, plan

from .conftest import CONF, ROOT, subprocess_env


def _out(capsys, argv):
    rc = cli.main(argv)
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def test_version(capsys):
    from ecjax import __version__

    rc, out, _ = _out(capsys, ["--version"])
    assert rc == 0 and out.strip() == f"ecjax {__version__}"
    r = subprocess.run([sys.executable, "-m", "ecjax", "--version"], capture_output=True, text=True,
                       env=subprocess_env(), cwd=ROOT)
    assert r.returncode == 0 and r.stdout.strip() == f"ecjax {__version__}"


def test_help_lists_groups_experiments_and_subcommands(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for group in ("community", "scenario", "solver", "sweep", "chain"):
        assert f"\n  {group} " in out, group
    assert "paper*" in out  # the default option of a group is marked
    for exp in (p.stem for p in (CONF / "experiment").glob("*.yaml")):
        assert f"\n  {exp} " in out, exp
    for sub in ("report", "resume", "cells", "verify", "audit"):
        assert f"\n  {sub} " in out, sub
    assert "--cfg" in out and "--info" in out


def test_checkout_and_package_share_one_config_directory():
    assert packaged_config_dir() == CONF.resolve()


@pytest.mark.parametrize("argv", [["--cfg"], ["--cfg", "job"], ["-c", "job"], ["--cfg=job"]])
def test_cfg_job(capsys, argv):
    rc, out, _ = _out(capsys, [*argv, "sim.S=3", "--config-dir", str(CONF)])
    assert rc == 0
    body = "\n".join(l for l in out.splitlines() if not l.startswith("#"))
    cfg = yaml.safe_load(body)
    assert cfg["sim"]["S"] == 3 and "hydra" not in cfg
    assert cfg["out"]["store"] == "${out.dir}/results.zarr"  # unresolved, as Hydra's --cfg
    assert out.splitlines()[-1].startswith("# 3 cell(s): scenario=islanded")


def test_cfg_resolve(capsys, tmp_path):
    rc, out, _ = _out(capsys, ["--cfg", "job", "--resolve", f"out.dir={tmp_path}"])
    cfg = yaml.safe_load("\n".join(l for l in out.splitlines() if not l.startswith("#")))
    assert rc == 0 and cfg["out"]["store"] == f"{tmp_path}/results.zarr"


def test_cfg_hydra_and_all(capsys, tmp_path):
    rc, out, _ = _out(capsys, ["--cfg", "hydra", "--resolve", f"hydra.sweep.dir={tmp_path}"])
    cfg = yaml.safe_load(out)
    assert rc == 0 and list(cfg) == ["hydra"]
    assert cfg["hydra"]["run"]["dir"] == cfg["hydra"]["sweep"]["dir"] == str(tmp_path)
    rc, out, _ = _out(capsys, ["--cfg", "all"])
    cfg = yaml.safe_load("\n".join(l for l in out.splitlines() if not l.startswith("#")))
    assert rc == 0 and "hydra" in cfg and "sim" in cfg


@pytest.mark.parametrize("what,needle", [("searchpath", "file://"), ("defaults", "community/paper"),
                                         ("all", "Defaults List")])
def test_info(capsys, what, needle):
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    rc, out, _ = _out(capsys, ["--info", what])
    assert rc == 0 and needle in out
    # Hydra's show_info sets the root logger to DEBUG on the sys.stdout of the moment: a later
    # library debug message would print "Logging error" tracebacks to a closed stream
    assert (root.level, root.handlers) == (level, handlers)


@pytest.mark.parametrize("key", ["hydra.run.dir", "hydra.sweep.dir"])
def test_hydra_output_dir_is_out_dir(capsys, tmp_path, key):
    rc, out, _ = _out(capsys, ["-m", "--cfg", "job", "--resolve", f"{key}={tmp_path}"])
    cfg = yaml.safe_load("\n".join(l for l in out.splitlines() if not l.startswith("#")))
    assert rc == 0
    assert cfg["out"]["store"] == f"{tmp_path}/results.zarr"
    assert cfg["out"]["report"] == f"{tmp_path}/report"


def test_conflicting_output_dirs_are_refused(capsys, tmp_path):
    rc, _, err = _out(capsys, ["--cfg", f"hydra.sweep.dir={tmp_path}/a", f"out.dir={tmp_path}/b"])
    assert rc == 2 and "hydra.sweep.dir" in err and "out.dir" in err


@pytest.mark.parametrize("override,instead", [
    ("hydra.job.chdir=true", "never changes directory"),
    ("hydra.sweep.subdir=x", "cells/<id>"),
    ("hydra/launcher=basic", "sweep.cluster"),
    ("hydra.launcher.n_jobs=4", "sweep.cluster"),
    ("hydra.verbose=true", "progress"),
    ("hydra.output_subdir=null", "ecjax key"),
])
def test_unhonoured_hydra_overrides_are_refused(capsys, override, instead):
    rc, _, err = _out(capsys, ["-m", override, "--cfg"])
    key = override.split("=")[0]
    assert rc == 2 and key in err and instead in err
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):  # also through the Python API
        plan([override])
    rc, _, err = _out(capsys, [override, "out.report=null", "sim.T=1"])  # a run: refused before it starts
    assert rc == 2 and key in err


def test_hydra_run_dir_is_refused_by_the_api_naming_out_dir():
    with pytest.raises(ConfigError, match="out.dir"):
        check_hydra_overrides(["hydra.run.dir=/x"])


def test_user_config_directory_on_the_search_path(capsys, tmp_path):
    (tmp_path / "experiment").mkdir()
    (tmp_path / "experiment" / "mine.yaml").write_text("# @package _global_\ntitle: mine\nsim:\n  S: 7\n")
    rc, out, _ = _out(capsys, ["--cfg", "job", f"hydra.searchpath=[file://{tmp_path}]", "experiment=mine"])
    cfg = yaml.safe_load("\n".join(l for l in out.splitlines() if not l.startswith("#")))
    assert rc == 0 and cfg["title"] == "mine" and cfg["sim"]["S"] == 7
    rc, out, _ = _out(capsys, ["--info", "searchpath", f"hydra.searchpath=[file://{tmp_path}]"])
    assert rc == 0 and f"file://{tmp_path}" in out


def test_compilation_cache_dir(monkeypatch, tmp_path):
    monkeypatch.delenv("JAX_COMPILATION_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert jax_cache_dir("auto") == str(tmp_path / "xdg" / "ecjax" / "jax")
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert jax_cache_dir("auto") == str(Path.home() / ".cache" / "ecjax" / "jax")
    monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", str(tmp_path / "env"))
    assert jax_cache_dir("auto") == str(tmp_path / "env")
    assert jax_cache_dir(str(tmp_path / "mine")) == str(tmp_path / "mine")
    for off in (None, False, "null", "off"):
        assert jax_cache_dir(off) is None
    assert plan(["scenario=islanded"]).base["cache_dir"] == "auto"  # on by default
