"""Random communities and stages for tests (seeded)."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from ecjax.community import HOURS, generate_community
from ecjax.disturbance import synthetic_profiles
from ecjax.plan import make_stage


def random_case(n: int, seed: int, N: int = 24, tightening="cumulative", delta=None, t=None):
    """A community of n agents, its profiles and a random stage (δ, start hour, states)."""
    rng = np.random.default_rng(seed)
    c = generate_community(n, prosumer_share=rng.uniform(0.3, 0.7), seed=seed)
    prof = synthetic_profiles(n, seed=seed)
    if delta is None:
        delta = float(rng.uniform(0.01, 0.5))
    if t is None:
        t = int(rng.integers(0, HOURS))
    eb0 = rng.uniform(0.0, 1.0, n) * np.asarray(c.capacity)
    # EV energy delivered so far: leave enough availability to reach e_daily by hour 24
    remaining = (np.asarray(c.ev_avail)[:, t:].sum(axis=1)) * np.asarray(c.ev_max) * c.eta_ev
    need = np.minimum(np.asarray(c.ev_daily), rng.uniform(0.2, 0.9, n) * remaining)
    eev0 = np.asarray(c.ev_daily) - need
    stage = make_stage(c, prof, t, jnp.asarray(eb0), jnp.asarray(eev0), delta, N, tightening)
    return c, prof, stage
