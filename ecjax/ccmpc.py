"""Chance constraints: deterministic equivalents of the battery bounds (MODEL §5, eqs 16–18).

Pure functions; no solver here. The battery absorbs a prosumer's PV and load errors, so k
steps ahead of the measured state

    cumulative:  s_i[k]² = Δt² Σ_{τ<k} [ (η_pv a_i/1000)² σ_ϖ[τ]² + η_c² σ_ul_i[τ]² ]
    per_step:    s_i[k]² = Δt²      [ (η_pv a_i/1000)² σ_ϖ[k-1]² + η_c² σ_ul_i[k-1]² ]

and, with z = Φ⁻¹(1 − δ), the soft bounds are  eb_lo + z s − s_lo <= eb[k] <= eb_hi − z s + s_hi.
An empty band (eb_lo + z s > eb_hi − z s) collapses to its middle and is counted.
"""

from __future__ import annotations

import equinox as eqx
import jax.numpy as jnp
from jax.scipy.special import ndtri
from jaxtyping import Array, Bool, Float

from .community import Community
from .disturbance import Window

from .scenario import TIGHTENINGS, Tightening, check_tightening  # noqa: F401


def check_delta(delta) -> None:
    """Boundary check of a risk level (Python floats only; call before compiling)."""
    import numpy as np

    d = np.asarray(delta, dtype=np.float64)
    if not np.all(np.isfinite(d)) or np.any(d <= 0.0) or np.any(d > 0.5):
        raise ValueError(f"`ccmpc.deltas` must be in (0, 0.5] (0.5 = deterministic MPC), got {delta}.")


def quantile(delta):
    """z = Φ⁻¹(1 − δ): 0 at δ = 0.5 (the deterministic MPC)."""
    return ndtri(1.0 - jnp.asarray(delta))


class Band(eqx.Module):
    """Tightened battery bounds for k = 1..N and which of them are empty."""

    lo: Float[Array, "n N"]
    hi: Float[Array, "n N"]
    empty: Bool[Array, "n N"]


def step_variance(community: Community, win: Window) -> Float[Array, "n N"]:
    """Variance added to eb by the disturbance of each step τ = 0..N-1."""
    pv = jnp.asarray(community.pv_coef())[:, None]
    var_pv = (pv * win.irr_sd[None, :]) ** 2
    var_ul = (community.eta_c * win.ul_sd) ** 2
    return community.dt**2 * (var_pv + var_ul)


def battery_sd(community: Community, win: Window, mode: Tightening) -> Float[Array, "n N"]:
    """s_i[k] for the states k = 1..N (index k-1)."""
    check_tightening(mode)
    v = step_variance(community, win)
    if mode == "cumulative":
        v = jnp.cumsum(v, axis=1)
    return jnp.sqrt(v)


def tightened_band(community: Community, win: Window, delta, mode: Tightening) -> Band:
    """Bounds of eq 17/18 for every agent (consumers get a zero band; they have no battery)."""
    z = quantile(delta)
    s = battery_sd(community, win, mode)
    lo = jnp.asarray(community.eb_lo)[:, None] + z * s
    hi = jnp.asarray(community.eb_hi)[:, None] - z * s
    empty = lo > hi
    mid = 0.5 * (lo + hi)
    return Band(lo=jnp.where(empty, mid, lo), hi=jnp.where(empty, mid, hi), empty=empty)


def consumer_import_floor(win: Window, delta, enabled: bool) -> Float[Array, "n N"]:
    """Optional tightening of ug_j >= 0 for consumers (MODEL §5, off in the paper case):
    trades delivered to j are capped at max(ul_mu − z σ_ul, 0) instead of ul_mu."""
    if not enabled:
        return win.ul_mu
    return jnp.maximum(win.ul_mu - quantile(delta) * win.ul_sd, 0.0)
