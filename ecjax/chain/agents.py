"""The prosumers' own computations in an on-chain replay (MODEL §6, paper Algorithm 2).

Each prosumer solves its FC-MPC subproblem with the batch engine's own functions
(`ecjax.fcmpc.agent_solve`, batched over the prosumers of an iteration by `_solve_agents` in one
compiled call, with the run's operator and solver settings; `accepted` and `combine` for its
proposal and iterate), from what it reads on chain: the measured states
uploaded at p = 0 and the committed iterates of the others. It keeps its own solver warm starts
as the batch engine does (`ecjax.fcmpc`: islanded solves start from the previous step's
islanded solution, the first cooperative solve from the previous step's last one with x set to
the agent's iterate, later ones from the previous iteration), so a replay repeats the stored
run's arithmetic up to the fixed-point rounding of the shared data.

Encoding for the contract: a plan is clipped to the contract's bounds [0, bound] (a solver
solution may leave its box by up to the solver's primal tolerance) and rounded to fixed point.
"""

from __future__ import annotations

import dataclasses

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from ecjax.chain import fixedpoint as fp
from ecjax import fcmpc
from ecjax.fcmpc import (
    Controller,
    FCMPCSettings,
    _solve_agents,
    accepted,
    cold_start,
    combine,
    make_controller,
    shift,
    shift_blocks,
)
from ecjax.layout import AgentLayout
from ecjax.plan import Plan, Stage, make_stage, plan_from_vectors
from ecjax.qp import Solution


@dataclasses.dataclass(frozen=True)
class Encoded:
    """A plan as uploaded: fixed-point lanes, and how far the real plan lay outside the bounds."""

    q: np.ndarray  # int64 lanes within [0, hi]
    outside: float  # max distance (kW) clipped away to enter [0, bound]


def encode(u, hi, scale: int) -> Encoded:
    """Clip a real plan to the per-lane fixed-point bounds `hi` (and 0) and round it."""
    u = np.asarray(u, dtype=np.float64)
    hi = np.asarray(hi, dtype=np.int64)
    inside = np.clip(u, 0.0, hi / scale)
    q = np.clip(fp.to_fixed(inside, scale), 0, hi)
    outside = float(np.max(np.abs(u - inside), initial=0.0))
    return Encoded(q=q.astype(np.int64), outside=outside)


def _others(ctl: Controller, u_all) -> Plan:
    """The plan every prosumer's subproblem reads: the prosumers' inputs `u_all` [P, nu] (a
    subproblem reads the others' bc, bd, ev and bt, never their states)."""
    c, N = ctl.community, ctl.N
    lay = AgentLayout(c.n, N)
    return plan_from_vectors(jnp.pad(u_all, ((0, 0), (0, lay.nx - lay.nu))), c, N)


@eqx.filter_jit
def _islanded(ctl: Controller, stage: Stage, warm: Solution, fallback) -> tuple[Solution, jax.Array]:
    """Iterate 0 of every prosumer at once (`_solve_agents`, trades fixed at 0), and each one's
    iterate: its solution, or its fallback plan where not solved."""
    P, nu = fallback.shape[0], AgentLayout(ctl.community.n, ctl.N).nu
    sol = _solve_agents(ctl, stage, _others(ctl, jnp.zeros((P, nu), fallback.dtype)), False, warm)
    return sol, accepted(sol, fallback)[0]


@eqx.filter_jit
def _cooperative(ctl: Controller, stage: Stage, u_all, base: Solution, x, w) -> tuple[Solution, jax.Array, jax.Array]:
    """Iteration p >= 1 of every prosumer at once: each subproblem against `u_all` [P, nu],
    warm-started from `base` with x set to the prosumer's iterate `x` [P, nx]. Returns the
    solutions, the proposals (a failed solve proposes the previous iterate) and the iterates."""
    warm = eqx.tree_at(lambda s: s.x, base, x)
    sol = _solve_agents(ctl, stage, _others(ctl, u_all), True, warm)
    x_star = accepted(sol, x)[0]
    return sol, x_star, combine(w, x_star, x)


@eqx.filter_jit
def _weights(ctl: Controller, fc: FCMPCSettings, stage: Stage, x_prev, x_star):
    return fcmpc.weights(ctl, fc, stage, x_prev, x_star)


class ProsumerSolvers:
    """The local solvers of every prosumer (index k = 0..P-1 in `community.prosumers` order).

    The prosumers' subproblems of an iteration are solved in one compiled call, batched over
    the prosumers as the batch engine batches them (`ecjax.fcmpc._solve_agents`); each
    prosumer's subproblem, warm start and iterate are its own, so its result is what it would
    compute alone up to floating-point rounding.

    **Arguments:** the run's `community`, `profiles`, `weights`, `N`, `solver`, `dtype`, the
    options (`tightening`, `tighten_consumers`), the risk level `delta` and the FC-MPC weight `w`.
    """

    def __init__(self, community, profiles, weights, N, solver, dtype, options, delta, w: float, fc=None):
        self.c = community
        self.N = N
        self.options = options
        self.delta = delta
        self.w = float(w)
        self.fc = fc if fc is not None else FCMPCSettings(w=self.w)
        self.ctl = make_controller(community, weights, N, solver, dtype)
        self.lay = AgentLayout(community.n, N)
        self.profiles = jax.tree_util.tree_map(lambda a: jnp.asarray(a, dtype), profiles)
        self.dtype = dtype
        P = len(community.prosumers)
        cold = cold_start(self.ctl.agent_op, P)
        self._warm = (cold, cold)  # (islanded, cooperative) warm starts of every prosumer
        self._x = None  # [P, nx] each prosumer's own (real) iterate, all of x_i
        self._sol: Solution | None = None  # last cooperative solves of this step
        self._island: Solution | None = None
        self._fallback = jnp.zeros((P, self.lay.nx), dtype)  # previous plans, shifted
        self._w = jnp.asarray(self.w, dtype)
        self.stage: Stage | None = None
        self.qp_status = np.zeros(P, dtype=np.int64)

    @property
    def ids(self) -> tuple[int, ...]:
        return tuple(self.c.prosumers)

    def begin_step(self, t: int, eb0, eev0) -> None:
        """Stage data of step t from the states read on chain ([n] arrays; consumers 0)."""
        d = jnp.asarray(self.delta, self.dtype)
        eb0 = jnp.asarray(eb0, self.dtype)
        eev0 = jnp.asarray(eev0, self.dtype)
        self.stage = make_stage(
            self.c, self.profiles, t, eb0, eev0, d, self.N, self.options.tightening, self.options.tighten_consumers
        )
        self.qp_status[:] = 0

    def _status(self, sol: Solution) -> None:
        self.qp_status = np.maximum(self.qp_status, np.asarray(sol.status, dtype=np.int64))

    def optimal_weights(self) -> np.ndarray:
        """The weights λ^p [P] of the last cooperative iteration by the batch engine's rule
        (`ecjax.fcmpc.weights` with the run's `fcmpc` settings: the optimal λ, or the uniform
        weight where its QP falls back), from every prosumer's previous iterate and optimum."""
        lam, _ = _weights(self.ctl, self.fc, self.stage, self._x_prev, self._x_star)
        return np.asarray(lam, dtype=np.float64)

    def apply_weights(self, lam) -> None:
        """Each prosumer's iterate with the weights λ applied on chain:
        x_i^p = λ_i·x_i* + (1 − λ_i)·x_i^{p−1} (`ecjax.fcmpc.combine`)."""
        lam = jnp.asarray(np.asarray(lam, dtype=np.float64), self.dtype)
        self._x = combine(lam[:, None], self._x_star, self._x_prev)

    def islanded(self) -> np.ndarray:
        """Iterate 0 of every prosumer: its own problem, trades fixed at 0. Returns u^0 [P, nu] (real)."""
        sol, x = _islanded(self.ctl, self.stage, self._warm[0], self._fallback)
        self._status(sol)
        self._island, self._x, self._sol = sol, x, None  # not solved: the fallback plan
        return np.asarray(sol.x[:, : self.lay.nu], dtype=np.float64)

    def cooperative(self, u_all: np.ndarray) -> np.ndarray:
        """Iteration p >= 1 of every prosumer: the global cost over its own variables with every
        other prosumer at `u_all` [P, nu] (the committed iterates read on chain). Returns the
        subproblem optima u^{p,*} [P, nu]."""
        base = self._sol if self._sol is not None else self._warm[1]
        u_all = jnp.asarray(u_all, self.dtype)
        self._x_prev = self._x
        sol, x_star, self._x = _cooperative(self.ctl, self.stage, u_all, base, self._x, self._w)
        self._x_star = x_star
        self._status(sol)
        self._sol = sol  # not solved: the previous iterate proposed
        return np.asarray(x_star[:, : self.lay.nu], dtype=np.float64)

    def end_step(self) -> None:
        """Shift each prosumer's solutions one step ahead: the warm starts of the next step."""
        last = self._sol if self._sol is not None else self._island
        self._warm = (shift(self._island, self.N), shift(last, self.N))
        self._fallback = shift_blocks(self._x, self.N)
