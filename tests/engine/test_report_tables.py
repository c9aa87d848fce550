"""The report's tables from hand-made cell views (no run): no spread for one sample, a unit and
a meaning for every column, Table 1 beside the paper's values with its relations marked."""

from __future__ import annotations

import numpy as np
import pytest

from ecjax.metrics import INDEX_NAMES
from ecjax.report import markdown, paper, tables
from ecjax.report.data import CellView, Rate


def _rate() -> Rate:
    z = np.zeros(1)
    return Rate(k=z.astype(np.int64), n=np.full(1, 10), lo=z, hi=z + 0.3, worst=z)


def view(scenario: str, S: int, means: dict, sd: float = 1.0, n: int = 15) -> CellView:
    return CellView(
        id=f"scenario={scenario}", params={"scenario": scenario}, config={}, attrs={"device": "cpu"},
        scenario=scenario, tightening="cumulative", n=n, n_prosumers=7, S=S, T=24, N=24,
        deltas=np.array([0.5 if scenario == "dmpc" else 0.05]),
        mean={**{k: np.array([means[k]]) for k in INDEX_NAMES}, "empty_steps": np.array([3038.0])},
        sd={**{k: np.array([sd]) for k in INDEX_NAMES}, "empty_steps": np.array([0.0])},
        viol={s: _rate() for s in ("lo", "hi", "any")}, iters=np.ones(1), theta=np.zeros(1),
        qp_fail=np.zeros(1), qp_held=np.zeros(1), qp_fallback=np.zeros(1), has_trajectories=False,
    )  # fmt: skip


def paper_views(S: int, change: dict | None = None) -> list[CellView]:
    out = []
    for s in paper.SCENARIOS:
        m = dict(paper.MEANS[s])
        m.update((change or {}).get(s, {}))
        out.append(view(s, S, m))
    return out


def all_tables(views):
    return [tables.table1(views, 0.05), *tables.paper_table1(views, 0.05), tables.cells(views), tables.violations(views)]


@pytest.mark.parametrize("S", [1, 8])
def test_spread_only_with_samples_and_every_column_explained(S):
    views = paper_views(S)
    for t in all_tables(views):
        assert len(t.meanings) == len(t.header) and all(m.strip() for m in t.meanings), t.key
        text = markdown.table(t)
        assert ("±" in text) == (S > 1 and t.key in ("table1", "paper_table1")), t.key
        assert "Columns:" in text
    t1 = tables.table1(views, 0.05)
    assert t1.rows[0][1] == ("38.59" if S == 1 else "38.59 ± 1.00")
    assert ("no spread to show" in t1.note) == (S == 1)
    viol = tables.violations(views)
    assert viol.rows[0][-1] == "3038.0 of 4032 (75 %)"  # a count of the day's planned entries
    assert {"T [h]", "final θ [kW]", "QP not solved [%]", "slack [kWh]", "run [s]"} <= set(tables.cells(views).header)


def test_paper_relations_held_or_not_with_the_reason():
    values, rel = tables.paper_table1(paper_views(4), 0.05)
    assert values.header[1:4] == ["Islanded CC-MPC: paper", "Islanded CC-MPC: ecjax", "Islanded CC-MPC: ecjax − paper"]
    assert values.rows[0][1:4] == ["38.59", "38.59 ± 1.00", "+0.00"]
    assert "not the paper's case" in values.note  # hand-made views: no community config
    views = paper_views(4)
    for v in views:
        v.config = {"community": {"kind": "paper"}, "data": {"kind": "real"}}
    assert "not the paper's case" not in tables.paper_table1(views, 0.05)[0].note
    assert [r[2:4] for r in rel.rows] == [["held", "held"]] * len(paper.RELATIONS)
    assert all(r[4] == "" for r in rel.rows) and rel.title.startswith(f"The paper's relations between its "
                                                                       f"scenarios: {len(paper.RELATIONS)} of")
    # standard DMPC trading less than distributed, islanded trading at all: not held, with why
    views = paper_views(4, {"dmpc": {"E4": 30.0}, "islanded": {"E4": 0.5}})
    _, rel = tables.paper_table1(views, 0.05)
    bad = {r[0]: r for r in rel.rows if r[3] == "NOT held"}
    assert set(bad) == {"E4 = 0 islanded", "E4: distributed < standard"}
    assert "bt_max = 0" in bad["E4 = 0 islanded"][4] and bad["E4: distributed < standard"][4]
    # an equality within two standard errors of the difference holds
    near = paper_views(64, {"ccdmpc": {"E8": 53.76 + 0.2}})
    assert {r[0]: r[3] for r in tables.paper_table1(near, 0.05)[1].rows}["E8: islanded = distributed"] == "held"


def test_no_paper_comparison_without_the_three_scenarios():
    views = paper_views(2)[:2]
    assert tables.paper_table1(views, 0.05) == []
    with pytest.raises(ValueError, match="meanings"):
        tables.Table("x", "x", ["a", "b"], [], meanings=["only one"])


def test_community_size_axis_counts_agents_in_integers(tmp_path, monkeypatch):
    from matplotlib.ticker import MaxNLocator

    from ecjax.report import plots

    figs = []
    monkeypatch.setattr(plots, "_save", lambda fig, path: figs.append(fig) or path)
    views = [view("ccdmpc", 2, paper.MEANS["ccdmpc"], n=n) for n in (5, 10, 20)]
    for v in views:
        v.params = {"community.n": v.n, "scenario": "ccdmpc"}
        v.attrs = {"seconds": 2.0 * v.n, "compile_seconds": 10.0}
    plots.community_size(views, tmp_path / "x.png")
    (fig,) = figs
    for ax in fig.axes:
        loc = ax.xaxis.get_major_locator()
        assert isinstance(loc, MaxNLocator) and loc._integer
        assert all(float(t).is_integer() for t in ax.get_xticks()), ax.get_xticks()


def test_agreement_table_reads_the_gap_curves():
    from ecjax.report.data import Agreement

    views = []
    for rule, worst in (("uniform", [1.0, 0.5, 0.02, 0.009, 0.009]), ("optimal", [1.0, 0.1, 5e-4, 5e-4, 5e-4])):
        v = view("ccdmpc", 2, paper.MEANS["ccdmpc"], n=15)
        v.params = {"fcmpc.weights": rule}
        v.config = {"fcmpc": {"weights": rule}}
        v.agreement = Agreement(mean=np.asarray(worst) / 2, worst=np.asarray(worst), steps=40)
        views.append(v)
    views.append(view("islanded", 2, paper.MEANS["islanded"]))  # no gap recorded: no row
    t = tables.agreement(views)
    assert [r[3] for r in t.rows] == ["optimal", "uniform"] and len(t.meanings) == len(t.header)
    assert t.header[-2:] == ["p to g <= 0.01", "p to g <= 0.001"]
    assert t.rows[0][-2:] == ["2", "2"] and t.rows[1][-2:] == ["3", "-"]
    assert t.header[5:7] == ["g at p = 1", "g at p = 4"]  # p = 5, 10, 30 beyond p_max = 4
    assert t.rows[1][5] == "2.50e-01 / 5.00e-01"
    assert tables.agreement([views[-1]]) is None
