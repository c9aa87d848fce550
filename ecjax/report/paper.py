"""The paper's Table 1 (Sivianes et al., IFAC 2023; MODEL §9) and the relations between its
scenarios that its values and its §6.3 state, checked on a store's cells.

The paper's values come from one simulated day of its own data; ecjax's from the mean over S
Monte Carlo days of its data (docs/data.md), with the model parameters the paper does not give
set by the project (MODEL §9). The numbers are therefore not expected to match; the relations
between the scenarios are (MODEL §9: "ours differs, but the relations should hold").
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np

SCENARIOS = ("islanded", "ccdmpc", "dmpc")  # the paper's columns, in its order
COLUMNS = {"islanded": "Islanded CC-MPC", "ccdmpc": "Distributed CC-MPC", "dmpc": "Standard DMPC"}

TABLE1 = {  # paper Table 1: index -> (islanded, distributed, standard)
    "E1": (38.59, 28.86, 27.09),
    "E2": (11.68, 5.25, 4.57),
    "E3": (26.90, 23.61, 22.52),
    "E4": (0.0, 37.49, 40.66),
    "E5": (56.40, 24.47, 21.15),
    "E6": (113.13, 83.80, 79.35),
    "E7": (59.37, 30.04, 27.71),
    "E8": (53.76, 53.76, 51.64),
}

MEANS = {s: {k: v[j] for k, v in TABLE1.items()} for j, s in enumerate(SCENARIOS)}  # the paper's, as means
ZERO_SE = {s: {k: 0.0 for k in TABLE1} for s in SCENARIOS}
ROUNDING = 0.011  # the paper prints two decimals: its identities hold within 0.01 (26.90 vs 38.59 - 11.68)

# The paper's case leaves these to the project (MODEL §9); every difference of level between
# its numbers and ours starts here.
DATA_NOTE = (
    "The paper's values are one simulated day of its data; ours are the mean over the cell's S "
    "Monte Carlo days of ecjax's data for the same case (Seville, September): household loads "
    "from SynPRO profiles and irradiance from the IWEC weather year instead of the paper's "
    "Spanish load model and PVGIS, the September 2023 day-ahead price shape (docs/data.md), and "
    "project defaults for what the paper does not give (PV area, battery and trade power "
    "limits, cost weights, initial battery energy; MODEL §9). Levels therefore differ; the "
    "relations between the scenarios are what the paper's results claim."
)


@dataclasses.dataclass(frozen=True)
class Relation:
    text: str  # the relation, in the paper's column names
    source: str  # where the paper states or shows it
    holds: Callable  # (mean, se) -> bool, each a dict scenario -> dict index -> value
    why: str | Callable  # the mechanism, and what turns it in ecjax's data: text, or (mean, empty) -> text,
    # `empty` the share (%) of a scenario's planned (prosumer, step) entries whose tightened band was empty

    def reason(self, mean: dict, empty: dict) -> str:
        return self.why(mean, empty) if callable(self.why) else self.why


def _tol(se: dict, a: str, b: str, k: str) -> float:
    return 2.0 * float(np.hypot(se[a][k], se[b][k]))


def _gt(k: str, *order: str):
    def holds(m, se):
        return all(m[a][k] > m[b][k] for a, b in zip(order, order[1:]))

    return holds


def _eq(k: str, a: str, b: str, rel: float = 0.01):
    def holds(m, se):
        return abs(m[a][k] - m[b][k]) <= rel * max(abs(m[a][k]), abs(m[b][k])) + _tol(se, a, b, k)

    return holds


def _e4_why(m: dict, e: dict) -> str:
    base = ("The paper's mechanism: the tightened bounds keep the distributed CC-MPC's batteries away from "
            "eb_min, leaving less energy to trade than the untightened standard DMPC. ")
    if e.get("ccdmpc", 0.0) >= 25.0:
        return base + (
            f"In ecjax's case the tightening at this δ empties the band (both bounds meet at its middle) "
            f"for {e['ccdmpc']:.0f} % of the distributed CC-MPC's planned (prosumer, step) entries (standard "
            f"DMPC: {e.get('dmpc', 0.0):.0f} %): its plans hold the batteries at the band's middle, and the "
            f"energy above it leaves as trades and sales (E4 {m['ccdmpc']['E4']:.2f} against "
            f"{m['dmpc']['E4']:.2f} kWh, E5 {m['ccdmpc']['E5']:.2f} against {m['dmpc']['E5']:.2f} kWh) "
            "instead of staying stored.")
    return base + ("Where the trade power limit binds in both scenarios they trade alike, and the order "
                   "is within the Monte Carlo error.")


RELATIONS = (
    Relation("E1: islanded > distributed > standard",
             "Table 1 (38.59 > 28.86 > 27.09); §6.3 (whose first sentence calls islanded's E1 the "
             "lowest, against its own table and next sentence)",
             _gt("E1", "islanded", "ccdmpc", "dmpc"),
             "Trades let prosumers' batteries serve consumers, who then buy less from the grid. The "
             "standard DMPC plans on the untightened band and so has more battery energy to trade "
             "than the distributed CC-MPC; where the tightened band is empty or the batteries stay "
             "near a bound for the whole day (little PV surplus in our irradiance year), the two "
             "trade alike and their order can turn within the Monte Carlo error."),
    Relation("E2: islanded > distributed > standard", "Table 1 (11.68 > 5.25 > 4.57); §6.3",
             _gt("E2", "islanded", "ccdmpc", "dmpc"),
             "Without trades a prosumer's only outlet for surplus PV is a sale to the grid at γ·c; "
             "with trades the surplus goes to consumers (worth c to the community), so sales drop. "
             "If our prosumers have no surplus (PV area and battery limits are project defaults), "
             "all three sell about nothing and the order is noise."),
    Relation("E3: islanded > distributed > standard", "Table 1 (26.90 > 23.61 > 22.52); §6.3",
             _gt("E3", "islanded", "ccdmpc", "dmpc"),
             "The net cost follows E1 and E2: trading lowers it, the tightening's safety margin "
             "costs a little of that gain. It fails where E1's order fails."),
    Relation("E4 = 0 islanded", "Table 1; §6.2 (trades not allowed)",
             lambda m, se: abs(m["islanded"]["E4"]) <= 1e-9,
             "The islanded scenario has no trade inputs (bt_max = 0): E4 is zero by construction. "
             "A nonzero value is a bug, not a data difference."),
    Relation("E4: distributed < standard", "Table 1 (37.49 < 40.66); §6.3",
             _gt("E4", "dmpc", "ccdmpc"), lambda m, e: _e4_why(m, e)),
    Relation("E5: islanded > distributed > standard", "Table 1 (56.40 > 24.47 > 21.15); §6.3",
             _gt("E5", "islanded", "ccdmpc", "dmpc"),
             "As E2 (E2 is E5 priced at γ·c)."),
    Relation("E6: islanded > distributed > standard", "Table 1 (113.13 > 83.80 > 79.35)",
             _gt("E6", "islanded", "ccdmpc", "dmpc"),
             "As E1 (E1 is E6 priced at c)."),
    Relation("E7: islanded > distributed > standard", "Table 1 (59.37 > 30.04 > 27.71); §6.3",
             _gt("E7", "islanded", "ccdmpc", "dmpc"),
             lambda m, e: ("Consumers buy from the grid what prosumers do not deliver, so the order of the two "
                           "trading scenarios follows E4's: here the distributed CC-MPC delivers "
                           f"{m['ccdmpc']['E4']:.2f} kWh, the standard DMPC {m['dmpc']['E4']:.2f} kWh (see E4)."
                           if m["ccdmpc"]["E4"] >= m["dmpc"]["E4"] else
                           "Consumers buy from the grid what prosumers do not deliver; trading lowers E7 by "
                           "less than E4 where deliveries replace the consumers' cheap hours only.")),
    Relation("E7 > E8 islanded", "Table 1 (59.37 > 53.76); §6.3",
             lambda m, se: m["islanded"]["E7"] > m["islanded"]["E8"],
             lambda m, e: ("The paper's E8 (53.76 kWh) is about its seven EVs' daily energy (7 × 7.25–8.35 kWh): "
                           "its PV covers the prosumers' own loads. ecjax's PV (IWEC irradiance, the project's PV "
                           "area) covers less: islanded, its prosumers sell "
                           f"{m['islanded']['E5']:.2f} kWh (the paper's 56.40) and buy {m['islanded']['E8']:.2f} kWh, "
                           f"load and battery charging besides the EVs, against the consumers' "
                           f"{m['islanded']['E7']:.2f} kWh.")),
    Relation("E8: islanded = distributed", "Table 1 (53.76 = 53.76); §6.3",
             _eq("E8", "islanded", "ccdmpc"),
             lambda m, e: ("The paper's prosumers trade only PV surplus, so their own purchases do not change. "
                           f"ecjax's buy {m['ccdmpc']['E8'] - m['islanded']['E8']:+.2f} kWh "
                           f"({100 * (m['ccdmpc']['E8'] / m['islanded']['E8'] - 1):+.1f} %) with trading: a "
                           "prosumer's plan weighs the consumers' price c_t, and charging from the grid at cheap "
                           "hours to deliver at dear ones pays once the price ratio exceeds 1/(η_c·η_t) ≈ 1.14, "
                           "which the September consumer price shape reaches (docs/data.md). Equal here means "
                           "within 1 % or two standard errors.")),
    Relation("E3 = E1 − E2 (every scenario)", "definition",
             lambda m, se: all(abs(m[s]["E3"] - (m[s]["E1"] - m[s]["E2"])) <= ROUNDING for s in SCENARIOS),
             "A definition (within the paper's rounding to 0.01); a failure is a bug."),
    Relation("E6 = E7 + E8 (every scenario)", "definition; Table 1 (113.13 = 59.37 + 53.76)",
             lambda m, se: all(abs(m[s]["E6"] - (m[s]["E7"] + m[s]["E8"])) <= ROUNDING for s in SCENARIOS),
             "A definition (within the paper's rounding to 0.01); a failure is a bug."),
)
