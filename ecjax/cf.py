"""CF-style metadata of every variable and coordinate ecjax stores, and one dimension order.

Every stored array carries `units` and `long_name` (CF conventions §3.1, §3.2); status codes
carry `flag_values` and `flag_meanings` (§3.5). Units follow UDUNITS spelling (`kW`, `kW h`,
`h`, `1` for counts, indices and flags); money is `EUR` (ISO 4217: UDUNITS has no currency).
The CF standard-name table has no names for these quantities (battery energy of a prosumer,
peer-to-peer trades, FC-MPC iterates), so ecjax sets no `standard_name`: the `long_name` is
the description.

Dimension order, the same for a quantity wherever it is stored (`DIM_ORDER`): the batch
dimensions first (cell, risk, sample), then the bound side, then steps (the closed-loop step
`time`, a predicted step `k`/`k0`), then FC-MPC iterations, then agents, then the inner
dimensions (`to_agent`, `input`). E.g. `viol_lo` is (risk, sample, time, agent) in the summary
and in the trajectories.

`describe(ds, dataset)` sets the attributes of a Dataset built by ecjax; `conform` puts its
dimensions in that order. `VARIABLES` is the table; a variable it does not know keeps the
attributes it has (tests check that every stored variable is described).
"""

from __future__ import annotations

from typing import Mapping

import xarray as xr

from .metrics import INDEX_DOC, INDEX_NAMES, STATUS_DOC
from .qp.status import Status

DIM_ORDER = ("cell", "risk", "sample", "side", "time", "k", "k0", "iterate0", "iteration",
             "agent", "prosumer", "consumer", "to_agent", "input")

EUR = "EUR"
KWH = "kW h"
KW = "kW"
ONE = "1"

QP_STATUS = {
    "flag_values": [int(s) for s in Status if s >= 0],
    "flag_meanings": " ".join(s.name for s in Status if s >= 0),
}
SIDE = {"flag_values": [0, 1], "flag_meanings": "lower upper"}

# Coordinates, the same in every dataset.
COORDS: dict[str, dict] = {
    "cell": {"units": ONE, "long_name": "cell of the sweep: one combination of the swept settings"},
    "risk": {"units": ONE, "long_name": "risk level δ: allowed probability of violating each "
                                        "chance-constrained battery bound"},
    "run_risk": {"units": ONE, "long_name": "risk level the cell's controller ran at (the standard DMPC: "
                                            "0.5, no tightening, whatever δ was asked)"},
    "sample": {"units": ONE, "long_name": "Monte Carlo sample: disturbance draws of key fold_in(seed, sample)"},
    "time": {"units": "h", "long_name": "closed-loop step t: the hour [t, t+1) of the simulated day"},
    "agent": {"units": ONE, "long_name": "agent of the community (index)"},
    "is_prosumer": {"units": ONE, "long_name": "agent role: 1 prosumer (battery, PV, EV), 0 consumer",
                    "flag_values": [0, 1], "flag_meanings": "consumer prosumer"},
    "prosumer": {"units": ONE, "long_name": "prosumer, in the community's order (0..|P|-1)"},
    "prosumer_agent": {"units": ONE, "long_name": "agent index of each prosumer"},
    "to_agent": {"units": ONE, "long_name": "agent that receives the trade"},
    "input": {"units": ONE, "long_name": "lane of the prosumer's input vector u_i: bc, bd, ugb, ev, then bt to "
                                         "each other agent, N steps each (ecjax.layout.AgentLayout)"},
    "iterate0": {"units": ONE, "long_name": "FC-MPC iterate p = 0..p_max (0: the islanded plan)"},
    "iteration": {"units": ONE, "long_name": "FC-MPC iteration p = 1..p_max"},
    "side": {"units": ONE, "long_name": "battery bound: 0 lower (eb_min), 1 upper (eb_max)", **SIDE},
    "k": {"units": "h", "long_name": "predicted step k = 1..N of the plan (eb after k hours)"},
    "k0": {"units": "h", "long_name": "predicted step k = 0..N-1 of the plan (inputs and grid import)"},
    "consumer": {"units": ONE, "long_name": "agent index of a consumer"},
}

_STATUS = "worst QP status of the step (the highest code of its solves)"
_STEP_COUNTS = {
    **{k: STATUS_DOC[k] for k in ("qp_held", "qp_fallback", "qp_weight_fallback")},
    "qp_steps": "solver iterations of the step, summed over prosumers and FC-MPC iterations",
}


def _step_common() -> dict[str, dict]:
    """Per-step records of the closed loop, in the summary and the trajectories alike."""
    out = {
        "iters": {"units": ONE, "long_name": "FC-MPC iterations of the step after the islanded iterate"},
        "theta": {"units": KW, "long_name": "final max_i θ_i of the step: norm of the last change of a "
                                            "prosumer's inputs"},
        "phi": {"units": EUR, "long_name": "global MPC cost Φ of the applied plan (MODEL §4; € with the "
                                           "weighted comfort and slack terms)"},
        "central_status": {"units": ONE, "long_name": "QP status of the centralized solve of the step "
                                                      "(0 when the gap is not asked)", **QP_STATUS},
        "qp_status": {"units": ONE, "long_name": _STATUS, **QP_STATUS},
        "viol_lo": {"units": ONE, "long_name": "battery energy below eb_min after the step (prosumers; 0 for "
                                               "consumers)"},
        "viol_hi": {"units": ONE, "long_name": "battery energy above eb_max after the step (prosumers; 0 for "
                                               "consumers)"},
    }
    out.update({k: {"units": ONE, "long_name": v} for k, v in _STEP_COUNTS.items()})
    return out


def _index_units(k: str) -> str:
    return EUR if k in ("E1", "E2", "E3") else KWH


SUMMARY: dict[str, dict] = {
    **{k: {"units": _index_units(k), "long_name": INDEX_DOC[k].rsplit(" (", 1)[0]} for k in INDEX_NAMES},
    "curtailed": {"units": KWH, "long_name": "PV energy curtailed at full batteries, over the day and the agents"},
    "deficit": {"units": KWH, "long_name": "energy bought to refill batteries below empty, over the day and "
                                           "the agents"},
    "spilled": {"units": KWH, "long_name": "consumers' unpaid export to the grid, over the day"},
    "slack": {"units": KWH, "long_name": "soft-bound slack of the applied plans (Σ s_lo + s_hi over the "
                                         "horizon), summed over the steps and prosumers"},
    "empty_steps": {"units": ONE, "long_name": "predicted (prosumer, step) entries whose tightened band was "
                                               "empty, summed over the day's plans"},
    "gap": {"units": EUR, "long_name": "Φ of the applied plan minus Φ of the centralized plan (valid where "
                                       "central_status = 0)"},
    **_step_common(),
}

TRAJECTORIES: dict[str, dict] = {
    "eb": {"units": KWH, "long_name": "battery energy after the step (after clipping to [0, capacity])"},
    "eb_raw": {"units": KWH, "long_name": "battery energy after the step, before clipping"},
    "eev": {"units": KWH, "long_name": "EV energy delivered since midnight, after the step"},
    "u_bc": {"units": KW, "long_name": "applied battery charging bc"},
    "u_bd": {"units": KW, "long_name": "applied battery discharging to the own load bd"},
    "u_ugb": {"units": KW, "long_name": "applied sale from the battery to the utility grid ugb"},
    "u_ev": {"units": KW, "long_name": "applied EV charging ev"},
    "u_bt": {"units": KW, "long_name": "applied trade bt from agent to to_agent, as delivered"},
    "ug": {"units": KW, "long_name": "power bought from the utility grid (deficit purchase included)"},
    "spill": {"units": KW, "long_name": "unpaid export to the grid: a consumer's negative import"},
    "curtail": {"units": KWH, "long_name": "PV energy clipped at a full battery"},
    "deficit": {"units": KWH, "long_name": "energy bought to refill a battery below empty"},
    "pv": {"units": KW, "long_name": "realized PV power (consumers 0)"},
    "load": {"units": KW, "long_name": "realized load"},
    "price": {"units": "EUR kW-1 h-1", "long_name": "utility grid price c_t of the step"},
    "empty": {"units": ONE, "long_name": "predicted steps of the agent's plan whose tightened band was empty"},
    "slack": {"units": KWH, "long_name": "soft-bound slack of the applied plan: Σ_k (s_lo + s_hi) over the "
                                         "horizon"},
    "cost_trace": {"units": EUR, "long_name": "global MPC cost Φ of FC-MPC iterate p (held after the stop)"},
    "theta_trace": {"units": KW, "long_name": "max_i θ_i of FC-MPC iteration p (0 after the stop)"},
    "lam_trace": {"units": ONE, "long_name": "weight λ_i of prosumer i at FC-MPC iteration p: u_i^p = λ_i u_i^{p,*} + "
                                            "(1 − λ_i) u_i^{p−1} (fcmpc.weights; 0 after the stop)"},
    "phi_central": {"units": EUR, "long_name": "Φ of the centralized plan of the step (= phi when not asked)"},
    "u_iter": {"units": KW, "long_name": "inputs u_i of FC-MPC iterate p (held after the stop)"},
    "u_star": {"units": KW, "long_name": "subproblem optimum z_i* of FC-MPC iteration p"},
    "u_clip": {"units": KW, "long_name": "largest |planned - applied| over the agent's first-step inputs"},
    **_step_common(),
}

OPEN_LOOP: dict[str, dict] = {
    "count": {"units": ONE, "long_name": "open-loop draws outside the bound at the predicted step"},
    "rate": {"units": ONE, "long_name": "empirical open-loop violation rate"},
    "ci_low": {"units": ONE, "long_name": "lower end of the Clopper-Pearson interval of the rate"},
    "ci_high": {"units": ONE, "long_name": "upper end of the Clopper-Pearson interval of the rate"},
    "p_model": {"units": ONE, "long_name": "violation probability under the disturbance model (cumulative "
                                           "variance)"},
    "bound": {"units": KWH, "long_name": "battery bound (eb_min or eb_max)"},
    "tightened": {"units": KWH, "long_name": "tightened bound the plan was made with (eqs 17, 18)"},
    "planned": {"units": KWH, "long_name": "planned battery energy"},
    "eb_mean": {"units": KWH, "long_name": "mean battery energy under the disturbance model"},
    "eb_sd": {"units": KWH, "long_name": "standard deviation of the battery energy under the model"},
    "slack": {"units": KWH, "long_name": "soft-bound slack of the plan"},
    "active": {"units": ONE, "long_name": "plan on the tightened bound (no slack, band not empty)"},
    "empty": {"units": ONE, "long_name": "tightened band empty"},
    "delta": {"units": ONE, "long_name": "risk level the plan was made at"},
    "delta_low": {"units": ONE, "long_name": "lower end of the central interval of the rate of S Bernoulli(δ) "
                                             "draws"},
    "delta_high": {"units": ONE, "long_name": "upper end of the central interval of the rate of S "
                                              "Bernoulli(δ) draws"},
    "in_interval": {"units": ONE, "long_name": "rate within δ's central interval"},
    "ug_count": {"units": ONE, "long_name": "draws whose consumer import fell below zero at the predicted step"},
    "ug_rate": {"units": ONE, "long_name": "empirical rate of negative consumer import"},
    "ug_ci_low": {"units": ONE, "long_name": "lower end of the Clopper-Pearson interval of ug_rate"},
    "ug_ci_high": {"units": ONE, "long_name": "upper end of the Clopper-Pearson interval of ug_rate"},
    "ug_cap": {"units": KW, "long_name": "cap on deliveries to the consumer the plan was made with"},
    "qp_status": {"units": ONE, "long_name": "worst QP status of the plan", **QP_STATUS},
    "iters": {"units": ONE, "long_name": "FC-MPC iterations of the plan"},
}

VARIABLES: dict[str, dict[str, dict]] = {"summary": SUMMARY, "trajectories": TRAJECTORIES, "open_loop": OPEN_LOOP}


def attrs_of(dataset: str, name: str) -> dict | None:
    """The CF attributes of variable or coordinate `name` of `dataset` (None if unknown)."""
    if dataset not in VARIABLES:
        raise ValueError(f"`dataset` must be one of {tuple(VARIABLES)}, got {dataset!r}.")
    if name in COORDS and name not in VARIABLES[dataset]:
        return COORDS[name]
    return VARIABLES[dataset].get(name)


def conform(ds: xr.Dataset) -> xr.Dataset:
    """`ds` with every variable's dimensions in `DIM_ORDER` (other dimensions last, in their order)."""
    return ds.transpose(*[d for d in DIM_ORDER if d in ds.dims], ...)


def describe(ds: xr.Dataset, dataset: str, overrides: Mapping[str, Mapping] | None = None) -> xr.Dataset:
    """A copy of `ds` in `DIM_ORDER` with the CF attributes of `VARIABLES[dataset]` on every
    variable and coordinate it knows (and `overrides`: name -> attributes); attributes of other
    names are kept."""
    ds = conform(ds).copy()
    for name, v in ds.variables.items():
        a = attrs_of(dataset, str(name))
        extra = (overrides or {}).get(str(name))
        if a is not None or extra is not None:
            v.attrs.update({**(a or {}), **(extra or {})})
    return ds


def undescribed(ds: xr.Dataset) -> list[str]:
    """Names of the variables and coordinates of `ds` that lack `units` or `long_name`."""
    return sorted(str(k) for k, v in ds.variables.items() if not {"units", "long_name"} <= set(v.attrs))
