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
    why: str  # the mechanism in the model, and what can turn it in ecjax's data


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
             _gt("E4", "dmpc", "ccdmpc"),
             "The tightened bounds keep the distributed CC-MPC's batteries further from eb_min, "
             "leaving less energy to trade. Where our bands are empty for most predicted steps "
             "(both bounds meet in the middle) or the trade power limit binds in both scenarios, "
             "the two trade the same."),
    Relation("E5: islanded > distributed > standard", "Table 1 (56.40 > 24.47 > 21.15); §6.3",
             _gt("E5", "islanded", "ccdmpc", "dmpc"),
             "As E2 (E2 is E5 priced at γ·c)."),
    Relation("E6: islanded > distributed > standard", "Table 1 (113.13 > 83.80 > 79.35)",
             _gt("E6", "islanded", "ccdmpc", "dmpc"),
             "As E1 (E1 is E6 priced at c)."),
    Relation("E7: islanded > distributed > standard", "Table 1 (59.37 > 30.04 > 27.71); §6.3",
             _gt("E7", "islanded", "ccdmpc", "dmpc"),
             "Consumers buy less from the grid when prosumers deliver to them; the order of the two "
             "trading scenarios follows E4's."),
    Relation("E7 > E8 islanded", "Table 1 (59.37 > 53.76); §6.3",
             lambda m, se: m["islanded"]["E7"] > m["islanded"]["E8"],
             "Islanded, consumers buy all their load from the grid while prosumers cover part of "
             "theirs with PV and battery. Our community's consumers and prosumers have other "
             "loads (SynPRO households drawn per agent) and the EV demand of prosumers is the "
             "project's range: prosumers can buy more than consumers."),
    Relation("E8: islanded = distributed", "Table 1 (53.76 = 53.76); §6.3",
             _eq("E8", "islanded", "ccdmpc"),
             "The paper finds prosumers' own purchases unchanged by trading: they trade only "
             "surplus. In ecjax a prosumer may charge from the grid to sell to a consumer later "
             "when prices differ over the day (the cost weighs c_t at each hour), which raises E8 "
             "with trading. Equal here means within 1 % or two standard errors."),
    Relation("E3 = E1 − E2 (every scenario)", "definition",
             lambda m, se: all(abs(m[s]["E3"] - (m[s]["E1"] - m[s]["E2"])) <= ROUNDING for s in SCENARIOS),
             "A definition (within the paper's rounding to 0.01); a failure is a bug."),
    Relation("E6 = E7 + E8 (every scenario)", "definition; Table 1 (113.13 = 59.37 + 53.76)",
             lambda m, se: all(abs(m[s]["E6"] - (m[s]["E7"] + m[s]["E8"])) <= ROUNDING for s in SCENARIOS),
             "A definition (within the paper's rounding to 0.01); a failure is a bug."),
)
