"""Every conf/experiment config composes and runs at a tiny size, and its report renders from
the store alone: Markdown, valid non-empty PNG figures, one self-contained HTML page."""

from __future__ import annotations

import base64
import io
import re

import warnings

import matplotlib.image as mpimg
import numpy as np
import pytest
import xarray as xr

import ecjax
from ecjax import cf, store, sweep
from ecjax.cli import main
from ecjax.report.data import collect

from .conftest import CONF, TINY
from .test_config import EXPERIMENTS

pytestmark = pytest.mark.slow

# Per experiment: overrides that keep its structure (its sweep axes, several risk levels,
# several blocks) at a tiny size, the cells expected and the figures its report must have.
TINY_RUNS = {
    "paper_table1": (
        [],
        ["scenario=islanded", "scenario=ccdmpc", "scenario=dmpc"],
        {"indices.png", "calibration.png", "traj_scenario_islanded.png", "traj_scenario_ccdmpc.png",
         "traj_scenario_dmpc.png"},
    ),
    "risk_sweep": (
        ["ccmpc.deltas=[0.05,0.3]"],
        ["ccmpc.tightening=cumulative", "ccmpc.tightening=per_step"],
        {"indices.png", "calibration.png", "indices_vs_delta.png"},
    ),
    "community_size": (
        ["community.n=3,4", "scenario=ccdmpc"],
        ["community.n=3", "community.n=4"],
        {"indices.png", "calibration.png", "community_size.png"},
    ),
    "agreement": (  # one cell of the sweep (the tables of both rules: test_report_tables)
        ["community.n=4", "fcmpc.weights=optimal"],
        ["scenario=ccdmpc"],
        {"indices.png", "calibration.png", "agreement.png", "traj_scenario_ccdmpc.png"},
    ),
    "mc_validation": (
        ["sim.S=4", "sim.block=2", "ccmpc.deltas=[0.1,0.2]", "ccmpc.tightening=cumulative",
         "validate.S=2000"],
        ["scenario=ccdmpc"],
        {"indices.png", "calibration.png", "indices_vs_delta.png", "open_loop.png"},
    ),
}


def test_every_experiment_is_covered():
    assert set(TINY_RUNS) == set(EXPERIMENTS)


def _check_png(path):
    assert path.stat().st_size > 1000
    img = mpimg.imread(path)  # decodes the PNG
    assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100
    assert np.ptp(img[..., :3]) > 0.1  # not blank


@pytest.mark.parametrize("name", sorted(TINY_RUNS))
def test_experiment_runs_tiny_and_reports(name, tmp_path, capsys):
    extra, cells, figures = TINY_RUNS[name]
    args = [f"experiment={name}", *TINY, *extra, f"out.dir={tmp_path}"]
    if name == "mc_validation":
        args.remove("sim.S=2")
    plan = sweep.plan(args, CONF)
    assert [c.id for c in plan.cells] == cells
    rc = main(["--config-dir", str(CONF), *args])
    assert rc == 0
    printed = capsys.readouterr().out
    assert f"store:  {tmp_path / 'results.zarr'}" in printed and "index.html" in printed
    path = tmp_path / "results.zarr"
    assert store.list_cells(path) == sorted(cells)
    for c in plan.cells:
        cell = store.open_cell(path, c.id)
        assert cell.config == c.config
        S = c.config["sim"]["S"]
        assert cell.summary.sizes["sample"] == S
        if c.config["scenario"]["name"] != "dmpc":
            np.testing.assert_array_equal(cell.summary["risk"].values, c.config["ccmpc"]["deltas"])
        assert len([e for e in cell.attrs["log"] if e["event"] == "block"]) == -(-S // (c.config["sim"]["block"] or S))
        assert np.isfinite(cell.summary["E3"].values).all()
        assert cf.undescribed(cell.summary) == []  # units and long_name on every variable and coordinate
        if c.config["validate"]["open_loop"]:
            assert cf.undescribed(cell.open_loop) == [] and cell.open_loop["count"].dims == ("risk", "side", "k", "agent")
            assert ecjax.open_results(path, "open_loop")["rate"].dims == ("cell", "risk", "side", "k", "agent")
            ol = cell.open_loop.compute()
            np.testing.assert_array_equal(ol["risk"].values, c.config["ccmpc"]["deltas"])
            np.testing.assert_array_equal(ol["delta"].values, c.config["ccmpc"]["deltas"])
            np.testing.assert_array_equal(ol["rate"].values, ol["count"].values / 2000)
            # where the plan sits on its tightened bound, the model probability is δ (cumulative)
            act = ol["active"].values
            p = np.broadcast_to(ol["delta"].values[:, None, None, None], act.shape)
            np.testing.assert_allclose(ol["p_model"].values[act], p[act], atol=2e-3)
        else:
            assert cell.open_loop is None
    if name == "paper_table1":
        check_self_describing(path, plan)
    report = tmp_path / "report"
    written = {p.name for p in report.glob("*.png")}
    assert written == figures
    for f in written:
        _check_png(report / f)
    md = (report / "report.md").read_text()
    assert "Table 1" in md and all(f"({f})" in md for f in figures)
    assert ("Open-loop validation" in md) == (name == "mc_validation")
    html = (report / "index.html").read_text()
    assert html.startswith("<!DOCTYPE html>") and "Table 1" in html
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)
    assert len(images) == len(figures)
    for b64 in images:  # embedded, decodable
        assert mpimg.imread(io.BytesIO(base64.b64decode(b64)), format="png").size > 0
    assert not re.search(r'(src|href)="(?!data:)', html)  # nothing external
    if name == "agreement":  # the gap from the kept samples' cost traces and centralized solves
        assert "FC-MPC agreement with the centralized optimum" in md and "| weights |" in md
        for v in collect(path):
            assert v.agreement is not None and v.agreement.steps > 0
            assert len(v.agreement.mean) == v.config["fcmpc"]["p_max"] + 1
            np.testing.assert_allclose(v.agreement.mean[0], 1.0)  # the islanded iterate: no cooperation yet
            assert np.all(v.agreement.worst >= v.agreement.mean)
    if name == "paper_table1":  # beside the paper's values, its relations marked
        assert "Table 1 beside the paper's published values" in md and "| E1 [€] | 38.59 |" in md
        assert "of 12 held by ecjax's means" in md and "| E4 = 0 islanded | Table 1; §6.2" in md
        assert "Columns:" in md and "empty-band entries per day" in md


def check_self_describing(path, plan):
    """The store of the paper's three scenarios read as a user would: xarray's defaults open a
    dataset without a warning, every variable and coordinate has units and a long name, and
    `ecjax.open_results` gives one Dataset with the standard DMPC beside the others at δ."""
    import cf_xarray  # noqa: F401  (registers the .cf accessor)

    ids = [c.id for c in plan.cells]
    for cid in ids:
        cell = store.open_cell(path, cid, verify=False)
        for ds in (cell.summary, cell.trajectories):
            assert cf.undescribed(ds) == [], cid
        assert cell.summary["viol_lo"].dims == ("risk", "sample", "time", "agent")
        assert cell.trajectories["viol_lo"].dims == ("risk", "sample", "time", "agent")
        assert "prosumer_agent" in cell.trajectories.coords and "is_prosumer" in cell.summary.coords
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            raw = xr.open_zarr(path, group=f"cells/{cid}/summary")  # consolidated: no warning
        assert raw["qp_status"].attrs["flag_meanings"].split()[0] == "solved"
    ds = ecjax.open_results(path)
    assert ds["cell"].values.tolist() == ids and ds["scenario"].values.tolist() == ["islanded", "ccdmpc", "dmpc"]
    assert ds["risk"].values.tolist() == [0.05]  # the level asked; dmpc ran at 0.5 (run_risk)
    assert ds["run_risk"].values[:, 0].tolist() == [0.05, 0.05, 0.5]
    assert not ds["E1"].isnull().any() and cf.undescribed(ds) == []
    dmpc = store.open_cell(path, "scenario=dmpc", verify=False).summary
    np.testing.assert_array_equal(ds.sel(scenario="dmpc", risk=0.05)["E3"].values, dmpc["E3"].values[0])
    np.testing.assert_array_equal((ds["qp_status"].cf == "solved").values, ds["qp_status"].values == 0)
    np.testing.assert_array_equal((ds["is_prosumer"].cf == "prosumer").values, ds["is_prosumer"].values)
    assert "Data Variables" in repr(ds.cf)
    traj = ecjax.open_results(path, "trajectories")
    assert traj.sizes["cell"] == 3 and "prosumer_agent" in traj.coords and cf.undescribed(traj) == []


def test_report_command_rerenders_from_the_store(tmp_path, capsys):
    args = [*TINY, "scenario=islanded", "sim.keep=0", f"out.dir={tmp_path}", "out.report=null"]
    assert main(["--config-dir", str(CONF), *args]) == 0
    assert not (tmp_path / "report").exists()
    out = tmp_path / "elsewhere"
    assert main(["report", str(tmp_path / "results.zarr"), "--out", str(out)]) == 0
    assert {p.name for p in out.iterdir()} == {"report.md", "index.html", "indices.png", "calibration.png"}
    md = (out / "report.md").read_text()
    # Table 1 holds the stored means (mean ± sd over samples) of the one cell
    cell = store.open_cell(tmp_path / "results.zarr", "scenario=islanded")
    e6 = cell.summary["E6"].values[0]
    assert f"| E6 [kWh] | {e6.mean():.2f} ± {e6.std():.2f} |" in md
    assert main(["report", str(tmp_path / "missing.zarr")]) == 2
    capsys.readouterr()
    # resume re-plans the recorded run: nothing left to compute
    assert main(["resume", str(tmp_path / "results.zarr")]) == 0
    assert "0 computed, 1 already finished, 0 failed" in capsys.readouterr().err
    assert main(["cells", str(tmp_path / "results.zarr")]) == 0
    assert capsys.readouterr().out.startswith("scenario=islanded\tcomplete")
