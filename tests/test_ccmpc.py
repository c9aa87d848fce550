"""Chance-constraint tightening (MODEL §5)."""

import jax.numpy as jnp
import numpy as np
import pytest
from scipy.stats import norm

from ecjax import ccmpc
from ecjax.community import paper_case
from ecjax.disturbance import synthetic_profiles, window


@pytest.fixture(scope="module")
def case():
    c = paper_case(0)
    return c, synthetic_profiles(c.n, 0)


def test_quantile_matches_scipy():
    for d in (0.01, 0.05, 0.2, 0.5):
        assert float(ccmpc.quantile(d)) == pytest.approx(norm.ppf(1 - d), abs=1e-12)


def test_battery_sd_formulas(case):
    c, prof = case
    win = window(prof, 6, 24)
    i = c.prosumers[2]
    a = c.eta_pv * float(c.pv_area[i]) / 1000.0
    per = (a * np.asarray(win.irr_sd)) ** 2 + (c.eta_c * np.asarray(win.ul_sd[i])) ** 2
    np.testing.assert_allclose(ccmpc.battery_sd(c, win, "cumulative")[i], np.sqrt(np.cumsum(per)), rtol=1e-12)
    np.testing.assert_allclose(ccmpc.battery_sd(c, win, "per_step")[i], np.sqrt(per), rtol=1e-12)


def test_band_properties(case):
    """Back-off is 0 at δ = 0.5, grows as δ shrinks, and an empty band collapses to its middle."""
    c, prof = case
    win = window(prof, 0, 24)
    i = c.prosumers[0]
    b50 = ccmpc.tightened_band(c, win, 0.5, "cumulative")
    np.testing.assert_allclose(b50.lo[i], c.eb_lo[i])
    np.testing.assert_allclose(b50.hi[i], c.eb_hi[i])
    b05 = ccmpc.tightened_band(c, win, 0.05, "cumulative")
    b01 = ccmpc.tightened_band(c, win, 0.01, "cumulative")
    assert np.all(np.asarray(b01.hi[i] - b01.lo[i]) <= np.asarray(b05.hi[i] - b05.lo[i]) + 1e-12)
    assert np.all(np.asarray(b05.hi[i] - b05.lo[i]) <= np.asarray(b50.hi[i] - b50.lo[i]) + 1e-12)
    # with cumulative variance late steps are wide enough to empty the band at small δ
    b = ccmpc.tightened_band(c, win, 0.001, "cumulative")
    emp = np.asarray(b.empty[i])
    assert emp.any() and not emp[0]
    mid = 0.5 * (float(c.eb_lo[i]) + float(c.eb_hi[i]))
    np.testing.assert_allclose(np.asarray(b.lo[i])[emp], mid)
    np.testing.assert_allclose(np.asarray(b.hi[i])[emp], mid)


def test_zero_variance_means_no_backoff(case):
    c, prof = case
    win = window(prof, 0, 24)
    win = type(win)(irr_mu=win.irr_mu, irr_sd=0 * win.irr_sd, ul_mu=win.ul_mu, ul_sd=0 * win.ul_sd, price=win.price)
    b = ccmpc.tightened_band(c, win, 0.01, "cumulative")
    np.testing.assert_allclose(b.lo, jnp.broadcast_to(jnp.asarray(c.eb_lo)[:, None], b.lo.shape))


@pytest.mark.parametrize("bad", [0.0, -0.1, 0.6, float("nan")])
def test_bad_delta_is_named(bad):
    with pytest.raises(ValueError, match="ccmpc.deltas"):
        ccmpc.check_delta(bad)
    with pytest.raises(ValueError, match="ccmpc.tightening"):
        ccmpc.check_tightening("gaussian")
