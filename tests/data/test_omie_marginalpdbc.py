"""OMIE day-ahead marginal price files (marginalpdbc_YYYYMMDD.1) -> hourly EUR/kWh."""

from datetime import date

import numpy as np
import pytest

from ecjax.data import hours_in_day, read_omie_marginalpdbc


def _omie_text(day: date, es, pt=None, *, eol="\n", trailing=True) -> str:
    """A file as OMIE publishes it: header, one line per period, '*' terminator."""
    pt = es if pt is None else pt
    lines = ["MARGINALPDBC;"]
    for p, (x_pt, x_es) in enumerate(zip(pt, es), start=1):
        end = ";" if trailing else ""
        lines.append(f"{day.year};{day.month:02d};{day.day:02d};{p};{x_pt:.2f};{x_es:.2f}{end}")
    lines.append("*")
    return eol.join(lines) + eol


# A realistic Spanish September day (10 Sep 2023-like: mean ~102, max 131.57 at 21-22 h,
# min 54 at 15-16 h), EUR/MWh
SEPT_ES = [108.0, 101.5, 97.2, 95.0, 94.1, 96.3, 104.2, 118.9, 126.4, 118.0, 99.8, 82.1,
           70.5, 63.0, 57.8, 54.0, 56.1, 67.9, 91.3, 117.6, 128.9, 131.57, 127.4, 118.2]


def _write(tmp_path, name, text, encoding="latin-1"):
    p = tmp_path / name
    p.write_bytes(text.encode(encoding))
    return p


def test_hours_in_day_eu_rule():
    assert hours_in_day(date(2023, 3, 26)) == 23
    assert hours_in_day(date(2023, 10, 29)) == 25
    assert hours_in_day(date(2024, 3, 31)) == 23
    assert hours_in_day(date(2024, 10, 27)) == 25
    assert hours_in_day(date(2025, 10, 26)) == 25
    assert hours_in_day(date(2023, 9, 10)) == 24
    assert hours_in_day(date(2023, 10, 22)) == 24


def test_reads_a_24_period_day_es_and_pt(tmp_path):
    pt = [x + 1.5 for x in SEPT_ES]
    p = _write(tmp_path, "marginalpdbc_20230910.1", _omie_text(date(2023, 9, 10), SEPT_ES, pt,
                                                               eol="\r\n"))
    es = read_omie_marginalpdbc(p)
    assert es.shape == (24,)
    np.testing.assert_allclose(es, np.array(SEPT_ES) / 1000, rtol=1e-12)
    np.testing.assert_allclose(read_omie_marginalpdbc(p, country="PT"), np.array(pt) / 1000,
                               rtol=1e-12)
    assert int(np.argmax(es)) == 21 and int(np.argmin(es)) == 15
    # no trailing ';', comma decimals and blank lines after '*' are tolerated
    text = _omie_text(date(2023, 9, 10), SEPT_ES, trailing=False).replace(".", ",") + "\n\n"
    q = _write(tmp_path, "comma.1", text)
    np.testing.assert_allclose(read_omie_marginalpdbc(q), es, rtol=1e-12)


def test_reads_a_25_period_day(tmp_path):
    prices = SEPT_ES[:3] + [93.0] + SEPT_ES[3:]  # repeated 02-03 h: periods 3 and 4
    p = _write(tmp_path, "marginalpdbc_20231029.1", _omie_text(date(2023, 10, 29), prices))
    out = read_omie_marginalpdbc(p)
    assert out.shape == (25,)
    np.testing.assert_allclose(out, np.array(prices) / 1000, rtol=1e-12)
    out24 = read_omie_marginalpdbc(p, as_24h=True)
    assert out24.shape == (24,)
    assert out24[2] == pytest.approx((prices[2] + prices[3]) / 2000)
    np.testing.assert_allclose(out24[3:], np.array(prices[4:]) / 1000, rtol=1e-12)
    np.testing.assert_allclose(out24[:2], np.array(prices[:2]) / 1000, rtol=1e-12)


def test_reads_a_23_period_day(tmp_path):
    prices = SEPT_ES[:2] + SEPT_ES[3:]  # no 02-03 h
    p = _write(tmp_path, "marginalpdbc_20240331.1", _omie_text(date(2024, 3, 31), prices))
    out = read_omie_marginalpdbc(p)
    assert out.shape == (23,)
    out24 = read_omie_marginalpdbc(p, as_24h=True)
    assert out24.shape == (24,)
    assert out24[2] == pytest.approx((prices[1] + prices[2]) / 2000)
    np.testing.assert_allclose(out24[3:], np.array(prices[2:]) / 1000, rtol=1e-12)


def test_reads_a_96_quarter_hour_day(tmp_path):
    rng = np.random.default_rng(0)
    quarters = np.round(np.repeat(SEPT_ES, 4) + rng.normal(0, 5, 96), 2)
    p = _write(tmp_path, "marginalpdbc_20251002.1", _omie_text(date(2025, 10, 2), quarters))
    out = read_omie_marginalpdbc(p)
    assert out.shape == (24,)
    np.testing.assert_allclose(out, quarters.reshape(24, 4).mean(axis=1) / 1000, rtol=1e-12)


def test_reads_a_100_quarter_hour_day(tmp_path):
    quarters = np.round(np.linspace(-1.0, 120.0, 100), 2)  # negative prices are legal
    p = _write(tmp_path, "marginalpdbc_20251026.1", _omie_text(date(2025, 10, 26), quarters))
    out = read_omie_marginalpdbc(p)
    assert out.shape == (25,)
    np.testing.assert_allclose(out, quarters.reshape(25, 4).mean(axis=1) / 1000, rtol=1e-12)
    assert read_omie_marginalpdbc(p, as_24h=True).shape == (24,)


def _good(day=date(2023, 9, 10), prices=SEPT_ES):
    return _omie_text(day, prices)


@pytest.mark.parametrize("text, match", [
    ("", "first line must be 'MARGINALPDBC;'"),
    (_good().replace("MARGINALPDBC;", "MARGINALPIBC;"), "first line must be"),
    (_good().replace("*\n", ""), "missing the '\\*' terminator"),
    (_good().replace("2023;09;10;5;", "2023;09;10;6;", 1), "period 6 out of sequence"),
    (_good().replace("2023;09;10;24;", "2023;09;11;24;"), "one day per file"),
    (_good().replace(";94.10;", ";n/a;"), "bad date, period or price"),
    (_good().replace("2023;09;10;3;", "2023;13;10;3;"), "bad date"),
    (_good().replace("2023;09;10;7;", "2023;09;10;7;1.0;"), "expected 'YYYY;MM;DD;PERIOD"),
    (_good() + "2023;09;10;25;1.0;1.0;\n", "text after the '\\*' terminator"),
    ("MARGINALPDBC;\n*\n", "no price lines"),
    (_good(prices=SEPT_ES[:23]), "23 periods, but 2023-09-10 has 24 clock hours"),
    # a normal 24-period day written for the 25-hour DST day
    (_good(day=date(2023, 10, 29)), "24 periods, but 2023-10-29 has 25 clock hours"),
    (_good(prices=list(range(48))), "48 periods"),
    (_good().replace(";94.10;", ";nan;"), "price is not finite"),
])
def test_rejects_malformed_files(tmp_path, text, match):
    p = _write(tmp_path, "marginalpdbc_bad.1", text)
    with pytest.raises(ValueError, match=match) as exc:
        read_omie_marginalpdbc(p)
    msg = str(exc.value)
    assert msg.startswith("path ") and "not an OMIE marginalpdbc file" in msg
