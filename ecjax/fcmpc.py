"""FC-MPC: the feasible-cooperation iteration of one MPC step (MODEL §6, paper Algorithm 1).

    p = 0:  every prosumer solves its own problem with all trades fixed at 0 (islanded).
    p >= 1: every prosumer i solves, in parallel, the GLOBAL cost over its own variables with
            every other agent fixed at iterate p−1, then
                x_i^p = w·x_i* + (1 − w)·x_i^{p−1},     θ_i^p = ‖u_i^p − u_i^{p−1}‖₂
    stop at max_i θ_i^p <= ϰ or p = p_max.

With w <= 1/|P| each iterate is a convex combination of jointly feasible points, so it is
feasible (up to the QP tolerance) and may be applied whenever the loop stops. Beyond the paper,
`FCMPCSettings.weights = "optimal"` takes a weight λ_i per prosumer, x_i^p = λ_i·x_i* +
(1 − λ_i)·x_i^{p−1}, with λ minimizing Φ(x^p) over {λ >= 0, Σ λ_i <= 1} (`ecjax.coordination`,
docs/fcmpc.md): still a convex combination of the same feasible points, and never worse than
the uniform weight, which it falls back to where that small QP is not solved (counted,
`FCMPCResult.weight_fallback`).

A subproblem solution that does not end `solved` never enters an iterate. At p >= 1 the
prosumer proposes its previous iterate instead (x_i* := x_i^{p−1}, so x_i^p = x_i^{p−1}: the
combination with weight 0 on that prosumer, still a convex combination of feasible points);
at p = 0, where no iterate exists yet, it takes its fallback plan: its final iterate of the
previous MPC step shifted one step ahead (zero inputs at the first step). Both events are
counted per prosumer (`FCMPCResult.held`, `.fallback`) and reach the results store. Written for one
instance; the prosumers are a batch that shares the QP operator (vmap inside), and samples and
risk levels are vmapped outside (`ecjax.simulate`).

The loop is `init` (iterate 0), `step` (one iteration) and `terminate` on ecjax's one bounded
loop, with the carry a named pytree (`FCMPCState`). An on-chain prosumer
(`ecjax.chain.agents`) runs the same pieces for itself: `agent_solve`, `accepted`, `combine`.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int

from . import coordination, evaluate, ocp
from ._iterate import bounded_while
from .community import Community
from .layout import AgentLayout
from .plan import Plan, Stage, plan_from_vectors
from .qp import IPM, Operator, Solution, Status, prepare, solve
from .scenario import WEIGHT_RULES, WeightRule  # noqa: F401  (the rules, written once there)
from .weights import CostWeights


class FCMPCSettings(eqx.Module):
    """`w` None means 1/|P| (MODEL §6). `kappa` is ϰ in kW; `p_max` caps the iterations.
    `weights`: "uniform", the paper's x_i^p = w·x_i* + (1 − w)·x_i^{p−1} for every prosumer;
    "optimal", a weight per prosumer minimizing Φ(x^p) over the simplex (`ecjax.coordination`),
    with the uniform weight w as its fallback."""

    kappa: float = 1e-3
    p_max: int = eqx.field(static=True, default=30)
    w: float | None = eqx.field(static=True, default=None)
    weights: str = eqx.field(static=True, default="uniform")

    def weight(self, c: Community) -> float:
        return 1.0 / len(c.prosumers) if self.w is None else float(self.w)

    def check(self, c: Community) -> None:
        if not (isinstance(self.p_max, (int, np.integer)) and self.p_max >= 1):
            raise ValueError(f"`fcmpc.p_max` must be an integer >= 1, got {self.p_max}.")
        if not (np.isfinite(self.kappa) and self.kappa > 0):
            raise ValueError(f"`fcmpc.kappa` must be > 0, got {self.kappa}.")
        if self.weights not in WEIGHT_RULES:
            raise ValueError(f"`fcmpc.weights` must be one of {WEIGHT_RULES}, got {self.weights!r}.")
        wmax = 1.0 / len(c.prosumers)
        if self.w is not None and not (0 < self.w <= wmax + 1e-12):
            raise ValueError(
                f"`fcmpc.w` must be in (0, 1/|P|] = (0, {wmax:.6g}] so that every iterate is "
                f"feasible, got {self.w}."
            )


class Controller(eqx.Module):
    """What the controllers of one community share: structure, weights, QP operators.

    `agent_batch`: how many prosumers' subproblems one solve takes at once (the paper's
    prosumers solve in parallel; how a device runs them is the implementation's choice): None,
    all of them in one vmapped batch; k, pieces of k one after another (`lax.map`), which on a
    CPU is faster for large communities (`ecjax.experiment.agent_batch_for`)."""

    community: Community
    weights: CostWeights
    agent_op: Operator
    central_op: Operator | None
    N: int = eqx.field(static=True)
    agent_batch: int | None = eqx.field(static=True, default=None)


def check_agent_batch(agent_batch) -> None:
    if agent_batch is not None and not (isinstance(agent_batch, (int, np.integer)) and agent_batch >= 1):
        raise ValueError(f"`sim.agent_batch` must be an integer >= 1 or None (auto), got {agent_batch!r}.")


def make_controller(
    c: Community,
    weights: CostWeights,
    N: int,
    solver: IPM = IPM(),
    dtype=jnp.float64,
    centralized: bool = False,
    agent_batch: int | None = None,
) -> Controller:
    """Build (on the host, once) the shared QP operators of a community."""
    check_agent_batch(agent_batch)
    agent_structure = ocp.agent_structure(c, N, weights)
    lo_t, hi_t = _template_bounds(c, N, ocp.AgentRows(AgentLayout(c.n, N)))
    agent_op = prepare(agent_structure.P.toarray(), agent_structure.A.toarray(), solver, dtype=dtype,
                       lo=lo_t, hi=hi_t)
    central_op = None
    if centralized:
        central_structure = ocp.centralized_structure(c, N, weights)
        nP = len(c.prosumers)
        cr = ocp.CentralRows(AgentLayout(c.n, N), nP, len(c.consumers))
        lo_c, hi_c = _template_bounds(c, N, ocp.AgentRows(AgentLayout(c.n, N), with_recv=False))
        lo_c = np.concatenate([np.tile(lo_c, nP), np.full(cr.cons.stop - cr.cons.start, -np.inf)])
        hi_c = np.concatenate([np.tile(hi_c, nP), np.zeros(cr.cons.stop - cr.cons.start)])
        central_op = prepare(central_structure.P.toarray(), central_structure.A.toarray(), solver, dtype=dtype,
                             lo=lo_c, hi=hi_c)
    return Controller(
        community=c, weights=weights, agent_op=agent_op, central_op=central_op, N=N,
        agent_batch=None if agent_batch is None or agent_batch >= len(c.prosumers) else int(agent_batch),
    )  # fmt: skip


def _template_bounds(c: Community, N: int, rows: ocp.AgentRows):
    """Row classes for the solver: equality rows are the dynamics (1) and (6)."""
    lo = np.full(rows.m, -np.inf)
    hi = np.full(rows.m, np.inf)
    lo[: rows.n_box] = 0.0
    for s in (rows.dyn_b, rows.dyn_ev):
        lo[s] = 0.0
        hi[s] = 0.0
    return lo, hi


class FCMPCResult(eqx.Module):
    """Outcome of FC-MPC at one MPC step."""

    xs: Float[Array, "P nx"]  # final iterate of every prosumer
    plan: Plan
    iters: Int[Array, ""]  # iterations p used after the islanded iterate
    theta: Float[Array, "p_max P"]  # θ_i^p for p = 1..p_max (0 past the stop)
    cost: Float[Array, " p_max+1"]  # Φ of iterates 0..p_max (held after the stop)
    qp_status: Int[Array, " P"]  # worst QP status of each prosumer over the iterations
    held: Int[Array, " P"]  # subproblem solutions (p >= 1) not solved: previous iterate kept
    fallback: Array  # [P] bool: iterate 0 not solved, the fallback plan taken
    qp_steps: Int[Array, ""]  # solver iterations, summed over prosumers and FC-MPC iterations
    island: Solution  # iterate 0 (islanded) solves, per prosumer: warm start of the next step
    last: Solution  # last subproblem solves, per prosumer: warm start of the next step
    u_iter: Float[Array, "p_max+1 P nu"]  # inputs of iterates 0..p_max (held after the stop)
    u_star: Float[Array, "p_max P nu"]  # subproblem optima u_i^{p,*} of iterations 1..p_max
    x_iter: Float[Array, "p_max+1 P nx"]  # whole decision vectors of iterates 0..p_max (record)
    weights: Float[Array, "p_max P"]  # weight λ_i^p of each iteration (0 past the stop)
    weight_fallback: Int[Array, ""]  # iterations where the optimal λ-QP fell back to uniform


def _prosumer_ids(c: Community):
    return jnp.asarray(np.asarray(c.prosumers, dtype=np.int32))


def agent_solve(ctl: Controller, stage: Stage, i, others: Plan, trades_on, warm) -> Solution:
    """Prosumer i's subproblem (`ocp.agent_qp`) with every other agent at `others`, solved
    with the controller's operator from `warm`: what the batch engine and an on-chain
    prosumer (`ecjax.chain.agents`) both run.

    The caps of i's deliveries, bt_{i->j} <= ug_j + bt_{i->j} (the `recv` rows, from the others'
    plans), are held at >= 0: where another prosumer's plan imports nothing (ug_j = 0, an active
    bound), rounding (a solver's tolerance, or the fixed point of a plan read on chain) can
    leave the cap a little below 0, which would make the subproblem infeasible (bt >= 0)."""
    c = ctl.community
    q, lo, hi = ocp.agent_qp(c, ctl.weights, stage, i, others, trades_on)
    recv = ocp.AgentRows(AgentLayout(c.n, ctl.N)).recv
    hi = hi.at[recv].set(jnp.maximum(hi[recv], 0.0))
    return solve(ctl.agent_op, q, lo, hi, warm)


def _solve_agents(ctl: Controller, stage: Stage, others: Plan, trades_on, warm):
    """`agent_solve` for every prosumer: one vmapped batch, or pieces of `ctl.agent_batch`."""
    one = lambda i, wm: agent_solve(ctl, stage, i, others, trades_on, wm)  # noqa: E731
    ids = _prosumer_ids(ctl.community)
    if ctl.agent_batch is None:
        return jax.vmap(one)(ids, warm)
    return jax.lax.map(lambda a: one(*a), (ids, warm), batch_size=ctl.agent_batch)


def accepted(sol: Solution, fallback):
    """The solution's x where it is `solved`, else `fallback`; and the mask (one prosumer, or a
    leading batch of them)."""
    ok = sol.status == int(Status.solved)
    return jnp.where(ok[..., None], sol.x, fallback), ok


def combine(w, x_star, x_prev):
    """The FC-MPC iterate x^p = w·x* + (1 − w)·x^{p−1} (MODEL §6); `w` a scalar or one weight
    per prosumer ([P, 1])."""
    return w * x_star + (1.0 - w) * x_prev


def islanded(ctl: Controller, stage: Stage, warm: Solution | None = None) -> Solution:
    """Iterate 0: every prosumer alone, trades fixed at 0."""
    c = ctl.community
    return _solve_agents(ctl, stage, _zero_plan_like(c, ctl.N, stage), False, warm)


def _zero_plan_like(c, N, stage):
    z = jnp.zeros((c.n, N), stage.win.price.dtype)
    return Plan(bc=z, bd=z, ugb=z, ev=z, bt=jnp.zeros((c.n, c.n, N), z.dtype), eb=z, eev=z, s_lo=z, s_hi=z)


def worse_status(a, b):
    """Keep the worse of two status codes (0 = solved is best)."""
    return jnp.maximum(a, b)


class FCMPCState(eqx.Module):
    """The loop's carry: iterate p and everything the result reports."""

    p: Int[Array, ""]  # iterations done after the islanded iterate
    xs: Float[Array, "P nx"]  # iterate p of every prosumer
    sol: Solution  # the last subproblem solves: warm start of the next iteration
    island: Solution  # iterate 0's solves
    fallback: Array  # [P] bool: iterate 0 not solved, the fallback plan taken
    theta: Float[Array, "p_max P"]
    cost: Float[Array, " p_max+1"]
    status: Int[Array, " P"]  # worst QP status per prosumer
    held: Int[Array, " P"]  # subproblem solutions not solved (previous iterate proposed)
    steps: Int[Array, ""]  # solver iterations, summed
    done: Array  # max θ <= ϰ
    x_iter: Float[Array, "p_max+1 P nx"]  # iterates (with `record`; else empty)
    u_star: Float[Array, "p_max P nu"]  # subproblem optima (with `record`; else empty)
    lam: Float[Array, "p_max P"]  # weights λ_i^p applied at each iteration
    weight_fallback: Int[Array, ""]  # optimal rule: iterations that took the uniform weight


def cold_start(op: Operator, P: int) -> Solution:
    """A 'warm start' that is the solver's cold start, for P prosumers (scan carries)."""
    dt = op.dtype
    z = lambda *s: jnp.zeros((P,) + s, dt)  # noqa: E731
    return Solution(
        x=z(op.n), y=z(op.m), z=z(op.m),
        status=jnp.zeros((P,), jnp.int32), num_steps=jnp.zeros((P,), jnp.int32),
        prim_res=z(), dual_res=z(), obj=z(),
    )  # fmt: skip


def shift_blocks(v, N: int):
    """A vector made of N-blocks (ecjax.layout, ecjax.ocp rows), each moved one MPC step
    ahead with its last value repeated (the tail of a plan)."""
    b = v.reshape(v.shape[:-1] + (-1, N))
    return jnp.concatenate([b[..., 1:], b[..., -1:]], axis=-1).reshape(v.shape)


def shift(sol: Solution, N: int) -> Solution:
    """Shift a solution by one MPC step (`shift_blocks` on x, y, z)."""
    sh = lambda v: shift_blocks(v, N)  # noqa: E731
    return eqx.tree_at(lambda s: (s.x, s.y, s.z), sol, (sh(sol.x), sh(sol.y), sh(sol.z)))


def init(
    ctl: Controller,
    settings: FCMPCSettings,
    stage: Stage,
    warm_island: Solution | None = None,
    warm_coop: Solution | None = None,
    record: bool = False,
    fallback: Float[Array, "P nx"] | None = None,
) -> FCMPCState:
    """Iterate 0: the islanded solves (from `warm_island`), each prosumer's `fallback` plan
    where its solve is not solved (zeros if None). `warm_coop` seeds the first cooperative
    solves (None: the islanded solutions)."""
    c, N = ctl.community, ctl.N
    lay = AgentLayout(c.n, N)
    sol0 = islanded(ctl, stage, warm_island)
    if fallback is None:
        fallback = jnp.zeros_like(sol0.x)
    xs0, ok0 = accepted(sol0, fallback)
    cost0 = evaluate.cost(c, ctl.weights, stage, plan_from_vectors(xs0, c, N))
    p_max, nP, dtype = settings.p_max, len(c.prosumers), xs0.dtype
    hist = (p_max + 1, nP, lay.nx) if record else (0, nP, lay.nx)
    return FCMPCState(
        p=jnp.asarray(0, jnp.int32),
        xs=xs0,
        sol=sol0 if warm_coop is None else warm_coop,
        island=sol0,
        fallback=~ok0,
        theta=jnp.zeros((p_max, nP), dtype),
        cost=jnp.full((p_max + 1,), cost0, dtype),
        status=sol0.status,
        held=jnp.zeros((nP,), jnp.int32),
        steps=jnp.sum(sol0.num_steps),
        done=jnp.asarray(False),
        x_iter=jnp.broadcast_to(xs0, hist) if record else jnp.zeros(hist, dtype),
        u_star=jnp.zeros((p_max if record else 0, nP, lay.nu), dtype),
        lam=jnp.zeros((p_max, nP), dtype),
        weight_fallback=jnp.asarray(0, jnp.int32),
    )


def step(ctl: Controller, settings: FCMPCSettings, stage: Stage, s: FCMPCState, record: bool = False) -> FCMPCState:
    """Iteration p: every prosumer's subproblem against iterate p−1 (warm-started from its own
    iterate and last duals), the proposals (`accepted`: a failed solve proposes the previous
    iterate), their combination, θ and Φ."""
    c, N = ctl.community, ctl.N
    lay = AgentLayout(c.n, N)
    p_max = settings.p_max
    prev = plan_from_vectors(s.xs, c, N)
    warm = eqx.tree_at(lambda t: t.x, s.sol, s.xs)
    sol = _solve_agents(ctl, stage, prev, True, warm)
    x_star, ok = accepted(sol, s.xs)
    lam, fell_back = weights(ctl, settings, stage, s.xs, x_star)
    xs = combine(lam[:, None], x_star, s.xs)
    du = xs[:, : lay.nu] - s.xs[:, : lay.nu]
    theta = jnp.sqrt(jnp.sum(du * du, axis=1))
    phi = evaluate.cost(c, ctl.weights, stage, plan_from_vectors(xs, c, N))
    p = s.p + 1
    x_iter, u_star = s.x_iter, s.u_star
    if record:
        later = (jnp.arange(p_max + 1) >= p)[:, None, None]
        x_iter = jnp.where(later, xs[None], x_iter)
        u_star = u_star.at[p - 1].set(x_star[:, : lay.nu])
    return eqx.tree_at(
        lambda t: (t.p, t.xs, t.sol, t.theta, t.cost, t.status, t.held, t.steps, t.done, t.x_iter, t.u_star,
                   t.lam, t.weight_fallback),
        s,
        (p, xs, sol, s.theta.at[p - 1].set(theta), jnp.where(jnp.arange(p_max + 1) >= p, phi, s.cost),
         worse_status(s.status, sol.status), s.held + (~ok).astype(jnp.int32), s.steps + jnp.sum(sol.num_steps),
         jnp.max(theta) <= settings.kappa, x_iter, u_star, s.lam.at[p - 1].set(lam),
         s.weight_fallback + fell_back.astype(jnp.int32)),
    )  # fmt: skip


def weights(ctl: Controller, settings: FCMPCSettings, stage: Stage, x_prev, x_star):
    """The weights λ^p [P] of iteration p and whether the uniform weight was a fallback.
    "uniform": w for every prosumer (never a fallback); "optimal": `coordination.optimal_weights`
    on Φ as `evaluate.cost` writes it."""
    c, N = ctl.community, ctl.N
    w = settings.weight(c)
    if settings.weights == "uniform":
        return jnp.full((x_prev.shape[0],), w, x_prev.dtype), jnp.asarray(False)
    phi = lambda xs: evaluate.cost(c, ctl.weights, stage, plan_from_vectors(xs, c, N))  # noqa: E731
    out = coordination.optimal_weights(phi, x_prev, x_star, w)
    return out.lam, out.fallback


def terminate(settings: FCMPCSettings, s: FCMPCState):
    """Stop at max_i θ_i^p <= ϰ or p = p_max."""
    return s.done | (s.p >= settings.p_max)


def result(ctl: Controller, s: FCMPCState) -> FCMPCResult:
    nu = AgentLayout(ctl.community.n, ctl.N).nu
    return FCMPCResult(
        xs=s.xs, plan=plan_from_vectors(s.xs, ctl.community, ctl.N), iters=s.p, theta=s.theta, cost=s.cost,
        qp_status=s.status, held=s.held, fallback=s.fallback, qp_steps=s.steps, island=s.island, last=s.sol,
        u_iter=s.x_iter[..., :nu], u_star=s.u_star, x_iter=s.x_iter, weights=s.lam,
        weight_fallback=s.weight_fallback,
    )  # fmt: skip


def fcmpc(
    ctl: Controller,
    settings: FCMPCSettings,
    stage: Stage,
    warm_island: Solution | None = None,
    warm_coop: Solution | None = None,
    record: bool = False,
    fallback: Float[Array, "P nx"] | None = None,
) -> FCMPCResult:
    """Run FC-MPC at one stage: `init`, then `step` until `terminate`.

    `warm_island` seeds the islanded solves (iterate 0), `warm_coop` the first cooperative
    solves (then each iteration starts from the previous one). With `record`, the inputs of
    every iterate and every subproblem optimum are kept (the on-chain audit replays them).
    `fallback`: each prosumer's plan where its islanded solve is not solved (zeros if None).
    """
    s = init(ctl, settings, stage, warm_island, warm_coop, record, fallback)
    s = bounded_while(lambda s: ~terminate(settings, s), lambda s: step(ctl, settings, stage, s, record), s, settings.p_max)
    return result(ctl, s)


def centralized(ctl: Controller, stage: Stage, warm: Solution | None = None) -> Solution:
    """The joint problem over all prosumers (the optimum FC-MPC approaches)."""
    if ctl.central_op is None:
        raise ValueError("make_controller(..., centralized=True) is needed for the centralized problem.")
    q, lo, hi = ocp.centralized_qp(ctl.community, ctl.weights, stage)
    return solve(ctl.central_op, q, lo, hi, warm)
