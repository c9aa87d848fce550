"""The energy community: agents and their physical parameters (MODEL §1–3, §9).

`Community` holds per-agent arrays (shape [n]) and community-wide scalars. Agents are either
prosumers (battery + PV + EV) or consumers (no decision variables). Efficiencies and the time
step are community-wide: they enter the QP matrices P and A, which every agent, sample, risk
level and MPC step share (MODEL §4); everything that differs between agents enters q, lo, hi.

Build one with `make_community` (validates, with errors that name the field and the allowed
range), `paper_case` (MODEL §9) or `generate_community` (any n and prosumer share).
"""

from __future__ import annotations

import math

import equinox as eqx
import numpy as np
from jaxtyping import Array, Float

HOURS = 24

_PER_AGENT = (
    "capacity",
    "eb_lo",
    "eb_hi",
    "bc_max",
    "bd_max",
    "bt_max",
    "ugb_max",
    "pv_area",
    "ev_daily",
    "ev_max",
    "eb0",
)


class CommunityError(ValueError):
    """A community parameter is out of its allowed range."""


class Community(eqx.Module):
    """Physical parameters of n agents (MODEL §2–3). Units: kW, kWh, m², h.

    Per-agent fields are float arrays of shape [n]; consumers carry zeros there.
    `ev_avail` is the EV availability timetable v_i[h] (0/1) for the hours h = 0..23 of the
    day; the EV's daily energy `ev_daily` is due at hour 24 (MODEL §3, eq 9).
    """

    capacity: Float[Array, " n"]  # battery capacity, kWh
    eb_lo: Float[Array, " n"]  # eb_min_i (28 % of capacity in the paper), kWh   (2)
    eb_hi: Float[Array, " n"]  # eb_max_i (87 %), kWh                            (2)
    bc_max: Float[Array, " n"]  # charging power limit, kW                       (3)
    bd_max: Float[Array, " n"]  # discharge power limit (bd + Σbt/η_t + ugb), kW (4)
    bt_max: Float[Array, " n"]  # per-partner trade limit, kW                    (5)
    ugb_max: Float[Array, " n"]  # sale-to-grid limit, kW
    pv_area: Float[Array, " n"]  # a_i, m²
    ev_daily: Float[Array, " n"]  # e_daily_i, kWh                              (9)
    ev_max: Float[Array, " n"]  # EV charging power limit, kW                    (8)
    ev_avail: Float[Array, "n 24"]  # v_i[h] in {0, 1}                           (8)
    eb0: Float[Array, " n"]  # initial battery energy at midnight, kWh
    prosumers: tuple[int, ...] = eqx.field(static=True)
    eta_c: float = eqx.field(static=True, default=0.945)
    eta_d: float = eqx.field(static=True, default=0.945)
    eta_t: float = eqx.field(static=True, default=0.93)
    eta_ev: float = eqx.field(static=True, default=0.95)
    eta_pv: float = eqx.field(static=True, default=0.20)
    dt: float = eqx.field(static=True, default=1.0)

    @property
    def n(self) -> int:
        return int(self.capacity.shape[0])

    @property
    def consumers(self) -> tuple[int, ...]:
        return tuple(i for i in range(self.n) if i not in self.prosumers)

    @property
    def is_prosumer(self) -> np.ndarray:
        mask = np.zeros(self.n, dtype=bool)
        mask[list(self.prosumers)] = True
        return mask

    def pv_coef(self):
        """kW of PV per W/m² of irradiance: η_pv · a_i / 1000 (MODEL §3)."""
        return self.eta_pv * self.pv_area / 1000.0


def _fail(field: str, allowed: str, got) -> None:
    raise CommunityError(f"community.{field} must be {allowed}, got {got}.")


def make_community(
    *,
    prosumers,
    capacity,
    eb_lo_frac=0.28,
    eb_hi_frac=0.87,
    bc_max,
    bd_max,
    bt_max,
    ugb_max,
    pv_area,
    ev_daily,
    ev_max,
    ev_avail,
    eb0_frac=0.5,
    eta_c=0.945,
    eta_d=0.945,
    eta_t=0.93,
    eta_ev=0.95,
    eta_pv=0.20,
    dt=1.0,
) -> Community:
    """Validate the parameters and build a `Community`.

    Per-agent arguments are arrays of shape [n] (scalars broadcast); `*_frac` arguments are
    fractions of capacity. Consumers' battery, PV and EV parameters are set to 0 whatever
    was passed. Raises `CommunityError` naming the field and the allowed range.
    """
    ev_avail = np.asarray(ev_avail, dtype=np.float64)
    if ev_avail.ndim != 2 or ev_avail.shape[1] != HOURS:
        _fail("ev_avail", f"an array of shape [n, {HOURS}]", f"shape {ev_avail.shape}")
    n = ev_avail.shape[0]
    if n < 2:
        _fail("n", "at least 2 agents", n)
    prosumers = tuple(sorted(int(i) for i in prosumers))
    if len(set(prosumers)) != len(prosumers) or any(not 0 <= i < n for i in prosumers):
        _fail("prosumers", f"distinct agent indices in [0, {n - 1}]", prosumers)
    if not prosumers:
        _fail("prosumers", "a non-empty set (at least one prosumer)", prosumers)
    mask = np.zeros(n, dtype=bool)
    mask[list(prosumers)] = True

    def arr(name, value):
        a = np.broadcast_to(np.asarray(value, dtype=np.float64), (n,)).copy()
        if not np.all(np.isfinite(a)):
            bad = int(np.flatnonzero(~np.isfinite(a))[0])
            _fail(f"{name}[{bad}]", "a finite number", a[bad])
        return np.where(mask, a, 0.0)

    for name, value, lo, hi in (
        ("eta_c", eta_c, 0.0, 1.0),
        ("eta_d", eta_d, 0.0, 1.0),
        ("eta_t", eta_t, 0.0, 1.0),
        ("eta_ev", eta_ev, 0.0, 1.0),
        ("eta_pv", eta_pv, 0.0, 1.0),
    ):
        if not (math.isfinite(value) and lo < value <= hi):
            _fail(name, f"in ({lo}, {hi}]", value)
    if not (math.isfinite(dt) and dt > 0):
        _fail("dt", "> 0 (hours)", dt)
    if dt != 1.0:
        _fail("dt", "1.0 (hourly steps: profiles are hourly)", dt)

    capacity = arr("capacity", capacity)
    lo_frac = arr("eb_lo_frac", eb_lo_frac)
    hi_frac = arr("eb_hi_frac", eb_hi_frac)
    e0_frac = arr("eb0_frac", eb0_frac)
    values = {
        "bc_max": arr("bc_max", bc_max),
        "bd_max": arr("bd_max", bd_max),
        "bt_max": arr("bt_max", bt_max),
        "ugb_max": arr("ugb_max", ugb_max),
        "pv_area": arr("pv_area", pv_area),
        "ev_daily": arr("ev_daily", ev_daily),
        "ev_max": arr("ev_max", ev_max),
    }
    for i in prosumers:
        if capacity[i] <= 0:
            _fail(f"capacity[{i}]", "> 0 kWh for a prosumer", capacity[i])
        if not 0.0 <= lo_frac[i] < hi_frac[i] <= 1.0:
            _fail(
                f"eb_lo_frac[{i}], eb_hi_frac[{i}]",
                "ordered as 0 <= eb_lo_frac < eb_hi_frac <= 1",
                (lo_frac[i], hi_frac[i]),
            )
        if not 0.0 <= e0_frac[i] <= 1.0:
            _fail(f"eb0_frac[{i}]", "in [0, 1]", e0_frac[i])
        for name, a in values.items():
            if a[i] < 0:
                _fail(f"{name}[{i}]", ">= 0", a[i])
    for i in range(n):
        row = ev_avail[i]
        if not np.all((row == 0) | (row == 1)):
            _fail(f"ev_avail[{i}]", "0 or 1 in every hour", row)
    ev_avail = np.where(mask[:, None], ev_avail, 0.0)
    for i in prosumers:
        deliverable = ev_avail[i].sum() * values["ev_max"][i] * eta_ev * dt
        if deliverable + 1e-9 < values["ev_daily"][i]:
            _fail(
                f"ev_daily[{i}]",
                f"<= {deliverable:.4g} kWh, the energy its availability window "
                f"({int(ev_avail[i].sum())} h at ev_max={values['ev_max'][i]:g} kW, "
                f"eta_ev={eta_ev:g}) can deliver",
                values["ev_daily"][i],
            )
    return Community(
        capacity=capacity,
        eb_lo=lo_frac * capacity,
        eb_hi=hi_frac * capacity,
        eb0=e0_frac * capacity,
        ev_avail=ev_avail,
        prosumers=prosumers,
        eta_c=float(eta_c),
        eta_d=float(eta_d),
        eta_t=float(eta_t),
        eta_ev=float(eta_ev),
        eta_pv=float(eta_pv),
        dt=float(dt),
        **values,
    )


def _ev_windows(rng: np.random.Generator, n: int) -> np.ndarray:
    """Random home-charging timetables: home from an evening arrival hour until a morning
    departure hour (both random), so the window spans midnight."""
    avail = np.zeros((n, HOURS))
    for i in range(n):
        depart = rng.integers(6, 10)  # leaves between 06:00 and 09:59
        arrive = rng.integers(16, 22)  # back between 16:00 and 21:59
        avail[i, :depart] = 1.0
        avail[i, arrive:] = 1.0
    return avail


def generate_community(
    n: int, prosumer_share: float = 7 / 15, seed: int = 0, **overrides
) -> Community:
    """A seeded random community of `n` agents, `round(prosumer_share·n)` (>= 1) prosumers.

    Distributions follow the paper case (MODEL §9): capacity U(3.3, 3.9) kWh, EV daily energy
    U(7.25, 8.35) kWh, EV limit 2.5 kW, random overnight availability. Project defaults for
    what the paper leaves open: PV area U(10, 14) m² at η_pv = 0.2; charge/discharge limits
    2 kW; trade limit 1.5 kW per partner; sale limit 2 kW; initial energy 50 % of capacity.
    `overrides` replace any `make_community` argument.
    """
    if not isinstance(n, (int, np.integer)) or n < 2:
        _fail("n", "an integer >= 2", n)
    if not 0.0 < prosumer_share <= 1.0:
        _fail("prosumer_share", "in (0, 1]", prosumer_share)
    rng = np.random.default_rng(seed)
    n_pro = max(1, int(round(prosumer_share * n)))
    prosumers = tuple(range(n_pro))
    kw = dict(
        prosumers=prosumers,
        capacity=rng.uniform(3.3, 3.9, n),
        bc_max=2.0,
        bd_max=2.0,
        bt_max=1.5,
        ugb_max=2.0,
        pv_area=rng.uniform(10.0, 14.0, n),
        ev_daily=rng.uniform(7.25, 8.35, n),
        ev_max=2.5,
        ev_avail=_ev_windows(rng, n),
    )
    kw.update(overrides)
    return make_community(**kw)


def paper_case(seed: int = 0, **overrides) -> Community:
    """The paper's case study (MODEL §9): 15 agents, 7 prosumers."""
    return generate_community(15, 7 / 15, seed=seed, **overrides)
