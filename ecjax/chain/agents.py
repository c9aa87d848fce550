"""The prosumers' own computations in an on-chain replay (MODEL §6, paper Algorithm 2).

Each prosumer solves its FC-MPC subproblem with the batch engine's own functions
(`ecjax.fcmpc.agent_solve`, with the run's operator and solver settings; `accepted` and
`combine` for its proposal and iterate), from what it reads on chain: the measured states
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
from ecjax.fcmpc import Controller, accepted, agent_solve, cold_start, combine, make_controller, shift, shift_blocks
from ecjax.layout import AgentLayout
from ecjax.plan import Stage, make_stage, plan_from_vectors
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


@eqx.filter_jit
def _agent_solve(ctl: Controller, stage: Stage, i, u_all, trades_on, warm) -> Solution:
    """Prosumer i's subproblem with the others fixed at `u_all` [P, nu] (inputs only: the
    subproblem reads the others' bc, bd, ev and bt, never their states)."""
    c, N = ctl.community, ctl.N
    lay = AgentLayout(c.n, N)
    others = plan_from_vectors(jnp.pad(u_all, ((0, 0), (0, lay.nx - lay.nu))), c, N)
    return agent_solve(ctl, stage, i, others, trades_on, warm)


def _row(tree, k: int):
    return jax.tree_util.tree_map(lambda a: a[k], tree)


class ProsumerSolvers:
    """The local solvers of every prosumer (index k = 0..P-1 in `community.prosumers` order).

    **Arguments:** the run's `community`, `profiles`, `weights`, `N`, `solver`, `dtype`, the
    options (`tightening`, `tighten_consumers`), the risk level `delta` and the FC-MPC weight `w`.
    """

    def __init__(self, community, profiles, weights, N, solver, dtype, options, delta, w: float):
        self.c = community
        self.N = N
        self.options = options
        self.delta = delta
        self.w = float(w)
        self.ctl = make_controller(community, weights, N, solver, dtype)
        self.lay = AgentLayout(community.n, N)
        self.profiles = jax.tree_util.tree_map(lambda a: jnp.asarray(a, dtype), profiles)
        self.dtype = dtype
        P = len(community.prosumers)
        cold = cold_start(self.ctl.agent_op, P)
        self._warm = [(_row(cold, k), _row(cold, k)) for k in range(P)]  # (island, coop)
        self._x: list = [None] * P  # each prosumer's own (real) iterate, all of x_i
        self._sol: list = [None] * P  # last cooperative solve of this step
        self._island: list = [None] * P
        self._fallback = [jnp.zeros((self.lay.nx,), dtype) for _ in range(P)]  # previous plan, shifted
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

    def _solve(self, k: int, u_all, trades_on: bool, warm) -> Solution:
        sol = _agent_solve(
            self.ctl, self.stage, jnp.asarray(self.ids[k], jnp.int32), jnp.asarray(u_all, self.dtype),
            jnp.asarray(trades_on), warm,
        )  # fmt: skip
        self.qp_status[k] = max(self.qp_status[k], int(sol.status))
        return sol

    def islanded(self, k: int) -> np.ndarray:
        """Iterate 0 of prosumer k: its own problem, trades fixed at 0. Returns u_k^0 (real)."""
        zeros = np.zeros((len(self.ids), self.lay.nu))
        sol = self._solve(k, zeros, False, self._warm[k][0])
        self._island[k] = sol
        self._x[k] = accepted(sol, self._fallback[k])[0]  # not solved: the fallback plan
        self._sol[k] = None
        return np.asarray(sol.x[: self.lay.nu], dtype=np.float64)

    def cooperative(self, k: int, u_all: np.ndarray) -> np.ndarray:
        """Iteration p >= 1 of prosumer k: the global cost over its own variables with every
        other prosumer at `u_all` [P, nu] (the committed iterates read on chain). Returns u_k^{p,*}."""
        base = self._sol[k] if self._sol[k] is not None else self._warm[k][1]
        warm = eqx.tree_at(lambda s: s.x, base, self._x[k])
        sol = self._solve(k, u_all, True, warm)
        self._sol[k] = sol
        x_star = accepted(sol, self._x[k])[0]  # not solved: the previous iterate proposed
        self._x[k] = combine(self.w, x_star, self._x[k])
        return np.asarray(x_star[: self.lay.nu], dtype=np.float64)

    def end_step(self) -> None:
        """Shift each prosumer's solutions one step ahead: the warm starts of the next step."""
        for k in range(len(self.ids)):
            island = self._island[k]
            last = self._sol[k] if self._sol[k] is not None else island
            self._warm[k] = (shift(island, self.N), shift(last, self.N))
            self._fallback[k] = shift_blocks(self._x[k], self.N)
