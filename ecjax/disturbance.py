"""Disturbances: hourly normal distributions and their sampling (MODEL §5).

For one day of one two-month group m, a `Profiles` pytree holds, per hour of day h:
irradiance ϖ[h] ~ N(irr_mu[h], irr_sd[h]²) (one draw shared by all agents), each agent's load
ul_i[h] ~ N(ul_mu[i, h], ul_sd[i, h]²) (independent across agents and hours), and the price
c[h]. The forecast is the mean. This module is the only place randomness is drawn.

`synthetic_profiles` builds a plausible September day for Seville from closed-form shapes;
`ecjax.data` provides the tables derived from real data.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray

from .community import HOURS, Community


class ProfileError(ValueError):
    """A disturbance profile is malformed."""


class Profiles(eqx.Module):
    """Hourly distributions of one day (h = 0..23 is the interval [h, h+1))."""

    irr_mu: Float[Array, " 24"]  # W/m²
    irr_sd: Float[Array, " 24"]
    ul_mu: Float[Array, "n 24"]  # kW
    ul_sd: Float[Array, "n 24"]
    price: Float[Array, " 24"]  # €/kWh


def make_profiles(irr_mu, irr_sd, ul_mu, ul_sd, price) -> Profiles:
    """Validate and build `Profiles` (numpy in, numpy leaves out)."""
    arrays = {
        "irr_mu": np.asarray(irr_mu, np.float64),
        "irr_sd": np.asarray(irr_sd, np.float64),
        "ul_mu": np.asarray(ul_mu, np.float64),
        "ul_sd": np.asarray(ul_sd, np.float64),
        "price": np.asarray(price, np.float64),
    }
    for name, a in arrays.items():
        want = (HOURS,) if not name.startswith("ul") else None
        if want is not None and a.shape != want:
            raise ProfileError(f"profiles.{name} must have shape {want}, got {a.shape}.")
        if name.startswith("ul") and (a.ndim != 2 or a.shape[1] != HOURS):
            raise ProfileError(f"profiles.{name} must have shape [n, {HOURS}], got {a.shape}.")
        if not np.all(np.isfinite(a)):
            raise ProfileError(f"profiles.{name} must be finite everywhere.")
        if name != "price" and np.any(a < 0):
            raise ProfileError(f"profiles.{name} must be >= 0, got min {a.min():g}.")
    if arrays["ul_mu"].shape != arrays["ul_sd"].shape:
        raise ProfileError("profiles.ul_mu and profiles.ul_sd must have the same shape.")
    if np.any(arrays["price"] < 0):
        raise ProfileError(f"profiles.price must be >= 0 €/kWh, got min {arrays['price'].min():g}.")
    return Profiles(**arrays)


def check_profiles(profiles: Profiles, community: Community) -> None:
    if profiles.ul_mu.shape[0] != community.n:
        raise ProfileError(
            f"profiles.ul_mu has {profiles.ul_mu.shape[0]} agents, the community has {community.n}."
        )


def synthetic_profiles(n: int, seed: int = 0, price_mean: float = 0.34) -> Profiles:
    """A plausible September day in Seville from closed-form shapes (no data needed).

    Irradiance: a clear-sky-like bell between sunrise 07:45 and sunset 20:15 local time,
    peak 800 W/m² at 14:00, std 18 % of the mean. Loads: a household shape with a morning
    and an evening peak, scaled by a seeded factor U(0.6, 1.4) per agent (mean about
    0.45 kW), std 30 % of the mean. Price: a two-peak day-ahead shape with mean `price_mean`.
    """
    rng = np.random.default_rng(seed)
    h = np.arange(HOURS) + 0.5  # middle of hour h
    sunrise, sunset = 7.75, 20.25
    x = np.clip((h - sunrise) / (sunset - sunrise), 0.0, 1.0)
    irr_mu = 800.0 * np.sin(np.pi * x) ** 1.5
    irr_sd = 0.18 * irr_mu
    base = (
        0.25
        + 0.35 * np.exp(-0.5 * ((h - 8.0) / 1.5) ** 2)
        + 0.25 * np.exp(-0.5 * ((h - 14.5) / 1.5) ** 2)
        + 0.65 * np.exp(-0.5 * ((h - 21.0) / 2.0) ** 2)
    )
    scale = rng.uniform(0.6, 1.4, n)
    ul_mu = scale[:, None] * base[None, :]
    ul_sd = 0.3 * ul_mu
    shape = (
        1.0
        + 0.25 * np.exp(-0.5 * ((h - 9.0) / 1.5) ** 2)
        + 0.45 * np.exp(-0.5 * ((h - 21.0) / 1.8) ** 2)
        - 0.2 * np.exp(-0.5 * ((h - 15.0) / 2.5) ** 2)
    )
    price = price_mean * shape / shape.mean()
    return make_profiles(irr_mu, irr_sd, ul_mu, ul_sd, price)


class Window(eqx.Module):
    """The profiles seen over a horizon of N steps from hour t: hours (t + k) mod 24."""

    irr_mu: Float[Array, " N"]
    irr_sd: Float[Array, " N"]
    ul_mu: Float[Array, "n N"]
    ul_sd: Float[Array, "n N"]
    price: Float[Array, " N"]


def window(profiles: Profiles, t, N: int) -> Window:
    """Forecast window at MPC step t (traced is fine); past midnight it wraps (MODEL §7)."""
    hours = (t + jnp.arange(N)) % HOURS
    return Window(
        irr_mu=jnp.take(profiles.irr_mu, hours),
        irr_sd=jnp.take(profiles.irr_sd, hours),
        ul_mu=jnp.take(profiles.ul_mu, hours, axis=1),
        ul_sd=jnp.take(profiles.ul_sd, hours, axis=1),
        price=jnp.take(profiles.price, hours),
    )


class Draw(eqx.Module):
    """One realisation of the day's disturbances."""

    irr: Float[Array, " T"]
    ul: Float[Array, "n T"]


def sample_day(key: PRNGKeyArray, profiles: Profiles, T: int = HOURS, t0=0) -> Draw:
    """Draw the disturbances of hours t0 .. t0+T-1 (one sample; vmap over keys for S)."""
    k_irr, k_ul = jax.random.split(key)
    hours = (t0 + jnp.arange(T)) % HOURS
    mu_i, sd_i = jnp.take(profiles.irr_mu, hours), jnp.take(profiles.irr_sd, hours)
    mu_u = jnp.take(profiles.ul_mu, hours, axis=1)
    sd_u = jnp.take(profiles.ul_sd, hours, axis=1)
    dtype = jnp.result_type(mu_i)
    e_irr = jax.random.normal(k_irr, (T,), dtype)
    e_ul = jax.random.normal(k_ul, mu_u.shape, dtype)
    return Draw(irr=mu_i + sd_i * e_irr, ul=mu_u + sd_u * e_ul)
