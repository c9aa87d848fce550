"""ecjax as a package: the wheel built from the checkout, installed without the checkout.

The wheel is built offline (no build isolation: setuptools comes from the test extra),
installed with `pip install --no-deps --target` into a scratch folder, and run from another
working directory with only that folder on PYTHONPATH (its dependencies come from this
environment): the configs it composes are the ones shipped inside it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from .conftest import ROOT, TINY, XLA


def _packages_in_checkout() -> set[str]:
    found = {"ecjax.conf"}
    for d in (ROOT / "ecjax").rglob("*"):
        if d.is_dir() and d.name != "__pycache__" and any(f.is_file() for f in d.iterdir()):
            found.add(".".join(d.relative_to(ROOT).parts))
    found.add("ecjax")
    for d in (ROOT / "conf").iterdir():
        if d.is_dir() and d.name != "local" and any(d.glob("*.yaml")):
            found.add(f"ecjax.conf.{d.name}")
    return found


def test_pyproject_lists_every_package_and_config_group():
    setup = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert set(setup["packages"]) == _packages_in_checkout()
    assert setup["package-dir"] == {"ecjax.conf": "conf"}


def _env(target: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("ECJAX_CONFIG_DIR", "PYTHONPATH")}
    env.update(PYTHONPATH=str(target), PYTHONWARNINGS="ignore")
    env.setdefault("XLA_FLAGS", XLA)
    return env


@pytest.mark.slow
def test_wheel_installs_and_runs_outside_the_checkout(tmp_path):
    wheels, target, work = tmp_path / "wheels", tmp_path / "site", tmp_path / "work"
    work.mkdir()
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    build = subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                            "-w", str(wheels), str(ROOT)], capture_output=True, text=True, cwd=tmp_path)
    assert build.returncode == 0, build.stderr[-3000:]
    # no setuptools deprecation (the SPDX `license` string, every data folder a listed package)
    assert "deprecat" not in (build.stdout + build.stderr).lower(), build.stderr[-3000:]
    (wheel,) = wheels.glob("ecjax-*.whl")
    inst = subprocess.run([*pip, "install", "--no-deps", "--no-index", "--target", str(target), str(wheel)],
                          capture_output=True, text=True, cwd=tmp_path)
    assert inst.returncode == 0, inst.stderr[-3000:]
    assert (target / "ecjax" / "conf" / "config.yaml").is_file()
    assert (target / "ecjax" / "conf" / "experiment" / "paper_table1.yaml").is_file()
    env = _env(target)

    def ecjax(*args, timeout=120):
        return subprocess.run([sys.executable, "-m", "ecjax", *args], capture_output=True, text=True,
                              cwd=work, env=env, timeout=timeout)

    where = subprocess.run([sys.executable, "-c", "import ecjax; from ecjax.config.compose import default_config_dir as d; "
                            "print(ecjax.__file__); print(d())"],
                           capture_output=True, text=True, cwd=work, env=env)
    assert where.returncode == 0, where.stderr[-3000:]
    mod, cdir = where.stdout.split()
    assert Path(mod).resolve() == (target / "ecjax" / "__init__.py").resolve()  # not the checkout
    assert Path(cdir).resolve() == (target / "ecjax" / "conf").resolve()

    v = ecjax("--version")
    assert v.returncode == 0 and v.stdout.strip() == "ecjax 0.1.0", v.stderr
    h = ecjax("--help")
    assert h.returncode == 0
    for word in ("community", "scenario", "paper_table1", "risk_sweep", "resume", "verify", "--cfg"):
        assert word in h.stdout, word

    # a tiny job, the store relative to the working directory as out.dir says
    r = ecjax(*TINY, "scenario=islanded", "sim.S=1", "report.figures=false", "out.dir=results/here")
    assert r.returncode == 0, r.stderr[-3000:]
    store = work / "results" / "here" / "results.zarr"
    assert store.is_dir() and (work / "results" / "here" / "report").is_dir()
    assert f"store:  {store.resolve()}" in r.stdout
    assert "1 computed" in r.stderr
