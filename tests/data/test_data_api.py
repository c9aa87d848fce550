"""Physical sanity of the shipped data and argument checking of the ecjax.data API."""

import numpy as np
import pytest

import ecjax.data as D


# ------------------------------------------------------------------------ irradiance
def test_month_group_mapping():
    assert [D.month_group(m) for m in range(1, 13)] == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5]
    assert D.month_group(np.int64(9)) == 4


def test_irradiance_shapes_and_defaults():
    mu, sd = D.irradiance_stats()
    assert mu.shape == sd.shape == (24,)
    mu4, sd4 = D.irradiance_stats(group=4)
    np.testing.assert_array_equal(mu, mu4)
    np.testing.assert_array_equal(sd, sd4)
    np.testing.assert_array_equal(D.irradiance_stats(month=10)[0], mu4)
    np.testing.assert_array_equal(D.irradiance_stats(group=4, month=9)[0], mu4)
    mu_all, sd_all = D.irradiance_stats_all()
    assert mu_all.shape == sd_all.shape == (6, 24)
    np.testing.assert_array_equal(mu_all[4], mu4)
    assert D.irradiance_stats_all(by_month=True)[0].shape == (12, 24)


def test_irradiance_is_a_copy():
    mu, _ = D.irradiance_stats()
    mu[:] = -1
    assert D.irradiance_stats()[0].min() >= 0


def test_ghi_physical_sanity():
    for by_month in (False, True):
        mu, sd = D.irradiance_stats_all(by_month=by_month)
        assert np.all(np.isfinite(mu)) and np.all(np.isfinite(sd))
        assert np.all(mu >= 0) and np.all(sd >= 0)
        # night: no sun in Seville before 06:00 or after 22:00 local clock, any season
        assert np.all(mu[:, :6] == 0) and np.all(mu[:, 22:] == 0)
        assert np.all(sd[:, :6] == 0) and np.all(sd[:, 22:] == 0)
        # summer days are longer and brighter than winter days
        assert mu[-6 if by_month else 3].sum() > 2 * mu[0].sum()
    # the mean never exceeds the clear-sky envelope at the site by more than a little
    for g in range(6):
        assert np.all(D.irradiance_stats(group=g)[0] <= 1.1 * D.clearsky_ghi(group=g) + 10)


def test_ghi_september_peak_and_daily_sum():
    mu, sd = D.irradiance_stats(month=9, by_month=True)
    # solar noon in Seville in September is ~14:20 CEST: the brightest hour is [13,14) or [14,15)
    assert int(np.argmax(mu)) in (13, 14)
    assert mu[14] > 600
    # hourly means in W/m^2 -> daily energy in kWh/m^2
    daily = mu.sum() / 1000.0
    assert 5.0 <= daily <= 6.0, daily
    # the Sep-Oct group (the paper's group for September) peaks at the same time, less energy
    mu_g, _ = D.irradiance_stats(month=9)
    assert int(np.argmax(mu_g)) in (13, 14)
    assert 4.0 <= mu_g.sum() / 1000.0 < daily
    # the clear-sky envelope also peaks at 13-15 h CEST
    assert int(np.argmax(D.clearsky_ghi(month=9, by_month=True))) in (13, 14)


# ----------------------------------------------------------------------------- loads
def test_household_types():
    kinds = D.household_types()
    assert len(kinds) == 4 and "family" in kinds
    kinds.append("x")
    assert "x" not in D.household_types()


@pytest.mark.parametrize("kind", D.household_types())
def test_load_physical_sanity(kind):
    mu, sd = D.load_stats(kind)
    assert mu.shape == sd.shape == (6, 24)
    assert np.all(mu > 0) and np.all(sd >= 0) and np.all(np.isfinite(sd))
    # hourly mean household power: 50 W .. 3 kW
    assert 0.05 < mu.min() and mu.max() < 3.0
    # annual energy 1000 .. 6000 kWh (per group: mean daily energy x ~61 days)
    annual = mu.sum(axis=1).mean() * 365
    assert 1000 < annual < 6000, annual
    for g in range(6):
        # evening peak: the daily maximum lies in 18..23 h or at midnight
        assert int(np.argmax(mu[g])) in (0, 18, 19, 20, 21, 22, 23)
        # evening hours are well above the night minimum
        assert mu[g, 18:23].max() > 1.5 * mu[g, 1:6].min()


def test_community_load_has_morning_and_evening_peak():
    mean = np.mean([D.load_stats(k)[0] for k in D.household_types()], axis=0)
    for g in range(6):
        p = mean[g]
        night = p[1:6].min()
        morning = [h for h in range(6, 10) if p[h] >= p[h - 1] and p[h] > p[h + 1]]
        assert morning and p[morning[0]] > 1.2 * night, (g, np.round(p, 3))
        assert 18 <= int(np.argmax(p)) <= 22
        assert p.max() > 2.0 * night


def test_agent_loads_scaling_and_determinism():
    mu, sd, kinds = D.agent_loads(15, month=9, seed=3)
    assert mu.shape == sd.shape == (15, 24) and len(kinds) == 15
    types, scales = D.agent_assignment(15, seed=3)
    assert types == kinds
    assert np.all((scales >= 0.8) & (scales <= 1.2))
    for i in range(15):
        m, s = D.load_stats(kinds[i])
        np.testing.assert_allclose(mu[i], scales[i] * m[4], rtol=1e-12)
        np.testing.assert_allclose(sd[i], scales[i] * s[4], rtol=1e-12)
    mu2, sd2, kinds2 = D.agent_loads(15, month=9, seed=3)
    np.testing.assert_array_equal(mu, mu2)
    assert kinds == kinds2
    mu3, _, _ = D.agent_loads(15, month=9, seed=4)
    assert not np.array_equal(mu, mu3)
    # any community size, one type only, fixed scale
    mu4, _, k4 = D.agent_loads(200, seed=0, kinds=["family"], scale_range=(1.0, 1.0))
    assert set(k4) == {"family"}
    np.testing.assert_allclose(mu4, np.broadcast_to(D.load_stats("family")[0][4], (200, 24)))
    # all types appear in a large community
    assert set(D.agent_assignment(200, seed=0)[0]) == set(D.household_types())


def test_agent_loads_shift_hours():
    mu0, sd0, _ = D.agent_loads(5, seed=1)
    mu1, sd1, _ = D.agent_loads(5, seed=1, shift_hours=1)
    np.testing.assert_array_equal(mu1[:, 1:], mu0[:, :-1])
    np.testing.assert_array_equal(mu1[:, 0], mu0[:, -1])
    np.testing.assert_array_equal(sd1, np.roll(sd0, 1, axis=1))


# ---------------------------------------------------------------------------- prices
def test_price_profiles():
    w = D.price_profile(kind="wholesale")
    c = D.price_profile()
    assert w.shape == c.shape == (24,)
    assert w.mean() == pytest.approx(0.1033, abs=1e-9)
    assert c.mean() == pytest.approx(0.34, abs=1e-9)
    np.testing.assert_allclose(c, D.consumer_price(w), rtol=1e-10)
    np.testing.assert_allclose(c, (w + D.CONSUMER_ADDER) * 1.0511269632 * 1.21, rtol=1e-10)
    assert 0.15 < D.CONSUMER_ADDER < 0.18
    # September shape: evening maximum at 21-22 h, solar-hour minimum at 15-16 h,
    # morning peak at 08-09 h
    assert int(np.argmax(w)) == 21 and int(np.argmin(w)) == 15
    assert w[8] > w[6] and w[8] > w[10]
    assert np.all(w > 0) and np.all(c > w)
    # E1/E6 of the paper (0.341-0.344 EUR/kWh) within 2 % of the consumer mean
    for e1, e6 in ((38.59, 113.13), (28.86, 83.80), (27.09, 79.35)):
        assert abs(e1 / e6 - c.mean()) < 0.02 * c.mean()


def test_consumer_price_custom():
    w = np.array([0.1, 0.2])
    np.testing.assert_allclose(D.consumer_price(w, adder=0.0, electricity_tax=0.0, vat=0.0), w)
    np.testing.assert_allclose(D.consumer_price(w, adder=0.05, electricity_tax=0.0, vat=0.1),
                               (w + 0.05) * 1.1)


def test_read_price_csv(tmp_path):
    prices = np.linspace(0.1, 0.33, 24)
    p = tmp_path / "p.csv"
    order = list(range(24))[::-1]
    p.write_text("# my tariff\nhour,price\n" + "".join(f"{h},{float(prices[h])!r}\n" for h in order))
    np.testing.assert_allclose(D.read_price_csv(p), prices, rtol=1e-15)
    q = tmp_path / "q.csv"
    q.write_text("".join(f"{h},{float(1000 * prices[h])!r}\n" for h in range(24)))
    np.testing.assert_allclose(D.read_price_csv(q, unit="EUR/MWh"), prices, rtol=1e-12)


@pytest.mark.parametrize("body, match", [
    ("".join(f"{h},0.1\n" for h in range(23)), r"missing \[23\]"),
    ("".join(f"{h},0.1\n" for h in range(24)) + "5,0.2\n", "hour 5 appears twice"),
    ("hour,price\n" + "".join(f"{h},abc\n" if h == 3 else f"{h},0.1\n" for h in range(24)),
     "line 5"),
    ("".join(f"{h},0.1\n" for h in range(23)) + "24,0.1\n", r"hour must be an integer in \[0, 23\]"),
    ("".join(f"{h},0.1,9\n" for h in range(24)), "expected 'hour,price'"),
])
def test_read_price_csv_rejects_malformed(tmp_path, body, match):
    p = tmp_path / "bad.csv"
    p.write_text(body)
    with pytest.raises(ValueError, match=match) as exc:
        D.read_price_csv(p)
    assert str(exc.value).startswith("path ")


# ----------------------------------------------------------------------- bad arguments
@pytest.mark.parametrize("call, argname", [
    (lambda: D.month_group(0), "month"),
    (lambda: D.month_group(13), "month"),
    (lambda: D.month_group(9.0), "month"),
    (lambda: D.month_group(True), "month"),
    (lambda: D.irradiance_stats(group=6), "group"),
    (lambda: D.irradiance_stats(group=-1), "group"),
    (lambda: D.irradiance_stats(month=0), "month"),
    (lambda: D.irradiance_stats(group=4, month=1), "month"),
    (lambda: D.irradiance_stats(group=4, by_month=True), "group"),
    (lambda: D.irradiance_stats(month=13, by_month=True), "month"),
    (lambda: D.clearsky_ghi(group=7), "group"),
    (lambda: D.load_stats("villa"), "kind"),
    (lambda: D.load_stats(0), "kind"),
    (lambda: D.agent_loads(0), "n"),
    (lambda: D.agent_loads(2.5), "n"),
    (lambda: D.agent_loads(3, seed=-1), "seed"),
    (lambda: D.agent_loads(3, month=13), "month"),
    (lambda: D.agent_loads(3, kinds=["villa"]), "kinds"),
    (lambda: D.agent_loads(3, kinds=[]), "kinds"),
    (lambda: D.agent_loads(3, kinds="family"), "kinds"),
    (lambda: D.agent_loads(3, scale_range=(0.0, 1.0)), "scale_range"),
    (lambda: D.agent_loads(3, scale_range=(1.2, 0.8)), "scale_range"),
    (lambda: D.agent_loads(3, scale_range=1.0), "scale_range"),
    (lambda: D.agent_loads(3, shift_hours=13), "shift_hours"),
    (lambda: D.agent_assignment(-2), "n"),
    (lambda: D.price_profile(month=5), "month"),
    (lambda: D.price_profile(month=0), "month"),
    (lambda: D.price_profile(kind="retail"), "kind"),
    (lambda: D.consumer_price([np.nan]), "wholesale"),
    (lambda: D.consumer_price([[0.1]]), "wholesale"),
    (lambda: D.consumer_price([0.1], vat=-0.1), "vat"),
    (lambda: D.consumer_price([0.1], electricity_tax=float("inf")), "electricity_tax"),
    (lambda: D.consumer_price([0.1], adder="x"), "adder"),
    (lambda: D.read_price_csv("x.csv", unit="ct/kWh"), "unit"),
    (lambda: D.read_omie_marginalpdbc("x", country="FR"), "country"),
])
def test_bad_arguments_raise_value_error_naming_the_argument(call, argname):
    with pytest.raises(ValueError, match=rf"^{argname}\b"):
        call()


def test_metadata():
    meta = D.metadata()
    assert meta["conventions"]["time_zone"] == "Europe/Madrid"
    assert "ASHRAE IWEC" in meta["irradiance_seville.csv"]["source"]
    assert meta["price_es_september.csv"]["wholesale_monthly_mean_eur_mwh"] == 103.3


def test_no_jax_or_pandas_needed():
    import subprocess
    import sys

    code = ("import sys, ecjax.data as D; D.agent_loads(3); D.irradiance_stats(); "
            "D.price_profile(); bad = [m for m in ('jax', 'pandas', 'pvlib') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)
