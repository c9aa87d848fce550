"""Community construction and validation (MODEL §1–3, §9)."""

import numpy as np
import pytest

from ecjax.community import CommunityError, generate_community, make_community, paper_case


def base_kwargs(n=4):
    return dict(
        prosumers=(0, 1),
        capacity=3.6,
        bc_max=2.0,
        bd_max=2.0,
        bt_max=1.5,
        ugb_max=2.0,
        pv_area=12.0,
        ev_daily=7.5,
        ev_max=2.5,
        ev_avail=np.ones((n, 24)),
    )


def test_paper_case_matches_model_section_9():
    c = paper_case(0)
    assert c.n == 15 and len(c.prosumers) == 7
    pro = np.array(c.prosumers)
    cap = np.asarray(c.capacity)[pro]
    assert np.all((cap >= 3.3) & (cap <= 3.9))
    np.testing.assert_allclose(np.asarray(c.eb_lo)[pro], 0.28 * cap)
    np.testing.assert_allclose(np.asarray(c.eb_hi)[pro], 0.87 * cap)
    ev = np.asarray(c.ev_daily)[pro]
    assert np.all((ev >= 7.25) & (ev <= 8.35))
    assert (c.eta_c, c.eta_d, c.eta_t, c.eta_ev) == (0.945, 0.945, 0.93, 0.95)
    # consumers carry no battery, PV or EV
    con = np.array(c.consumers)
    assert np.all(np.asarray(c.capacity)[con] == 0) and np.all(np.asarray(c.ev_avail)[con] == 0)


def test_generator_is_seeded_and_sized():
    a, b, d = generate_community(30, 0.5, seed=3), generate_community(30, 0.5, seed=3), generate_community(30, 0.5, seed=4)
    assert a.n == 30 and len(a.prosumers) == 15
    np.testing.assert_array_equal(a.capacity, b.capacity)
    assert not np.array_equal(a.capacity, d.capacity)


@pytest.mark.parametrize(
    "change,field",
    [
        (dict(eb_lo_frac=0.9, eb_hi_frac=0.5), "eb_lo_frac[0], eb_hi_frac[0]"),
        (dict(capacity=-1.0), "capacity[0]"),
        (dict(capacity=np.nan), "capacity[0]"),
        (dict(bc_max=-0.5), "bc_max[0]"),
        (dict(bt_max=np.inf), "bt_max[0]"),
        (dict(eta_c=1.2), "eta_c"),
        (dict(eta_t=0.0), "eta_t"),
        (dict(prosumers=(0, 7)), "prosumers"),
        (dict(prosumers=()), "prosumers"),
        (dict(ev_avail=np.ones((4, 23))), "ev_avail"),
        (dict(eb0_frac=1.5), "eb0_frac[0]"),
    ],
)
def test_bad_parameters_name_the_field(change, field):
    kw = base_kwargs()
    kw.update(change)
    with pytest.raises(CommunityError) as e:
        make_community(**kw)
    assert f"community.{field}" in str(e.value)


def test_ev_that_cannot_be_charged_in_its_window_is_rejected():
    avail = np.zeros((4, 24))
    avail[:, 20:23] = 1.0  # 3 h at 2.5 kW·0.95 = 7.125 kWh < 7.5 kWh
    kw = base_kwargs()
    kw["ev_avail"] = avail
    with pytest.raises(CommunityError, match=r"community.ev_daily\[0\].*7.125"):
        make_community(**kw)
    avail[:, 19:23] = 1.0  # 4 h: 9.5 kWh is enough
    make_community(**kw)
