"""The closed loop (MODEL §7) of one sample at one risk level: a `lax.scan` over T steps.

At step t the controllers know the measured states and the forecast means; they plan with the
chosen scenario (MODEL §8) and apply the plan's first step. Then the step's disturbances are
drawn and the plant moves (`ecjax.plant.step`):
- the applied inputs are the plan's first step held to the physical limits (`applied_inputs`):
  a QP solution may leave its bounds by the solver tolerance, a converter cannot;
- prosumer: ug = scheduled; eb[t+1] follows eq (1) with the applied inputs (the planned
  eb[1] when the plan is exact) plus Δt(pv_real − pv_fc) − Δt η_c (ul_real − ul_fc);
- consumer: ug_j = ul_real_j − Σ_i bt_{i->j}; a negative value is spilled to the grid unpaid
  (for a prosumer, a negative scheduled import, which only the solver tolerance can cause,
  is recorded the same way);
- eb is clipped to [0, capacity]: energy clipped at the top is curtailed PV, energy missing at
  the bottom is bought from the grid at c_t.
Written for one instance; `ecjax.experiment` vmaps it over samples and risk levels.
"""

from __future__ import annotations


import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int

from . import evaluate, fcmpc, plant
from .community import HOURS
from .disturbance import Draw, Profiles
from .fcmpc import Controller, FCMPCSettings
from .layout import AgentLayout
from .plan import Plan, make_stage, plan_from_vectors

from .scenario import check_scenario, check_tightening, run_delta


def check_dtype(dtype) -> None:
    """The engine computes in float64, on a GPU too (an H100 or H200 runs float64 at half its
    float32 rate; these kernels are bound by memory traffic and launches). In float32 the
    batched QP solvers end some agent QPs in `numerical_error` (the interior-point method
    6-16 of 256 of the paper case's: docs/engine.md), so a
    float32 closed loop would be a batch of failures."""
    if jnp.dtype(dtype) != jnp.float64:
        raise ValueError(
            f"`sim.dtype` must be float64, got {jnp.dtype(dtype).name}: in float32 the QP solvers "
            "end some agent QPs in numerical_error (docs/engine.md)."
        )


class Options(eqx.Module):
    """Static choices of a closed-loop run."""

    scenario: str = eqx.field(static=True, default="ccdmpc")
    T: int = eqx.field(static=True, default=HOURS)
    tightening: str = eqx.field(static=True, default="cumulative")
    tighten_consumers: bool = eqx.field(static=True, default=False)
    gap: bool = eqx.field(static=True, default=False)  # centralized solve each step for the gap
    record_plans: bool = eqx.field(static=True, default=False)  # every FC-MPC iterate's inputs

    def check(self, N: int) -> None:
        check_scenario(self.scenario)
        check_tightening(self.tightening)
        if not 1 <= self.T <= HOURS:
            raise ValueError(f"`sim.T` must be in [1, {HOURS}] (one day from midnight), got {self.T}.")
        if N < 1:
            raise ValueError(f"`sim.N` must be >= 1, got {N}.")


class StepRecord(eqx.Module):
    """What one closed-loop step records (stacked over t by the scan)."""

    eb: Float[Array, " n"]  # battery energy after the step (after clipping)
    eb_raw: Float[Array, " n"]  # before clipping
    eev: Float[Array, " n"]
    u_bc: Float[Array, " n"]
    u_bd: Float[Array, " n"]
    u_ugb: Float[Array, " n"]
    u_ev: Float[Array, " n"]
    u_bt: Float[Array, "n n"]
    ug: Float[Array, " n"]  # power bought from the grid (kW), deficit purchase included
    spill: Float[Array, " n"]  # unpaid export to the grid (kW): consumers' negative import
    curtail: Float[Array, " n"]  # PV energy clipped at the top (kWh)
    deficit: Float[Array, " n"]  # energy bought to refill below 0 (kWh)
    pv: Float[Array, " n"]  # realized PV (kW)
    load: Float[Array, " n"]  # realized load (kW)
    price: Float[Array, ""]
    viol_lo: Bool[Array, " n"]  # eb below eb_lo (chance constraint (16), lower side)
    viol_hi: Bool[Array, " n"]
    empty: Int[Array, " n"]  # empty-band steps of the plan
    slack: Float[Array, " n"]  # Σ_k (s_lo + s_hi) of the plan (kWh; solver-tolerance negatives as 0)
    iters: Int[Array, ""]
    theta: Float[Array, ""]  # final max θ
    cost_trace: Float[Array, " p"]  # Φ per FC-MPC iterate
    theta_trace: Float[Array, " p"]  # max θ per iteration
    phi: Float[Array, ""]  # Φ of the applied plan
    phi_central: Float[Array, ""]  # Φ of the centralized plan (NaN-free: = phi when not asked)
    central_status: Int[Array, ""]  # QP status of that centralized solve (0 when not asked)
    qp_status: Int[Array, ""]
    qp_held: Int[Array, ""]  # FC-MPC subproblem solutions not solved: the previous iterate kept
    qp_fallback: Int[Array, ""]  # prosumers whose first plan was not solved: the fallback plan applied
    qp_steps: Int[Array, ""]
    u_iter: Float[Array, "p1 P nu"]  # inputs of FC-MPC iterates 0..p_max (record_plans; else empty)
    u_star: Float[Array, "p P nu"]  # subproblem optima of iterations 1..p_max (record_plans)
    u_clip: Float[Array, " n"]  # max |planned − applied| over the agent's first-step inputs (kW)
    # FC-MPC iterations whose optimal-weight λ-QP fell back to the uniform weight (`fcmpc.weights`;
    # None in a hand-made record: read as 0)
    qp_weight_fallback: Int[Array, ""] | None = None
    # weight λ_i^p of each prosumer at each FC-MPC iteration (0 past the stop; None in a hand-made
    # record)
    lam_trace: Float[Array, "p P"] | None = None


def _single_plan_result(ctl: Controller, fc: FCMPCSettings, stage, xs, sol, status, steps, record, ok):
    """FCMPCResult-shaped record of a plan made without iterating (islanded, centralized);
    `ok` [P]: which prosumers' plans come from a solved QP (the others took their fallback)."""
    c = ctl.community
    plan = plan_from_vectors(xs, c, ctl.N)
    phi = evaluate.cost(c, ctl.weights, stage, plan)
    nP, nu = xs.shape[0], AgentLayout(c.n, ctl.N).nu
    return fcmpc.FCMPCResult(
        xs=xs,
        plan=plan,
        iters=jnp.asarray(0, jnp.int32),
        theta=jnp.zeros((fc.p_max, nP), xs.dtype),
        cost=jnp.full((fc.p_max + 1,), phi),
        qp_status=status,
        held=jnp.zeros((nP,), jnp.int32),
        fallback=~ok,
        qp_steps=steps,
        island=sol,
        last=sol,
        u_iter=jnp.broadcast_to(xs[:, :nu], (fc.p_max + 1 if record else 0, nP, nu)),
        u_star=jnp.zeros((fc.p_max if record else 0, nP, nu), xs.dtype),
        x_iter=jnp.broadcast_to(xs, (fc.p_max + 1 if record else 0,) + xs.shape),
        weights=jnp.zeros((fc.p_max, nP), xs.dtype),
        weight_fallback=jnp.asarray(0, jnp.int32),
    )


def plan_step(ctl: Controller, fc: FCMPCSettings, opt: Options, stage, warm, fallback):
    """Plan at one stage with the scenario (MODEL §8). `warm` is the previous step's
    (island, last) pair of solver solutions, already shifted; `fallback` [P, nx] the previous
    step's plan shifted, taken by a prosumer whose QP is not solved (`ecjax.fcmpc`); returns
    the FCMPCResult."""
    c = ctl.community
    nP = len(c.prosumers)
    if opt.scenario == "islanded":
        sol = fcmpc.islanded(ctl, stage, warm[0])
        xs, ok = fcmpc.accepted(sol, fallback)
        return _single_plan_result(
            ctl, fc, stage, xs, sol, sol.status, jnp.sum(sol.num_steps), opt.record_plans, ok
        )
    if opt.scenario == "centralized":
        sol = fcmpc.centralized(ctl, stage, warm[0])
        ok = jnp.full((nP,), sol.status == 0)
        xs = jnp.where(ok[:, None], sol.x.reshape(nP, -1), fallback)
        return _single_plan_result(
            ctl, fc, stage, xs, sol, jnp.full((nP,), sol.status), sol.num_steps, opt.record_plans, ok,
        )  # fmt: skip
    return fcmpc.fcmpc(ctl, fc, stage, warm[0], warm[1], record=opt.record_plans, fallback=fallback)


def initial_fallback(ctl: Controller):
    """The fallback plan of the first step: zero inputs for every prosumer."""
    c = ctl.community
    return jnp.zeros((len(c.prosumers), AgentLayout(c.n, ctl.N).nx), ctl.agent_op.dtype)


def initial_warm(ctl: Controller, opt: Options):
    """Cold starts shaped like the solutions the scenario carries between steps."""
    nP = len(ctl.community.prosumers)
    if opt.scenario == "centralized":
        cold = fcmpc.cold_start(ctl.central_op, 1)
        cold = jax.tree_util.tree_map(lambda a: a[0], cold)
    else:
        cold = fcmpc.cold_start(ctl.agent_op, nP)
    return (cold, cold)


class Applied(eqx.Module):
    """First-step inputs as the plant applies them (consumers: zeros)."""

    bc: Float[Array, " n"]
    bd: Float[Array, " n"]
    ugb: Float[Array, " n"]
    ev: Float[Array, " n"]
    bt: Float[Array, "n n"]  # bt[i, j]: from i to j, as delivered at j


def applied_inputs(c, stage, planned, eev, trades_on: bool) -> Applied:
    """Hold the plan's first step to the physical limits of MODEL §2–3.

    bc, bd, ugb, bt to [0, max] (bt to 0 when trades are off, and on the diagonal), ev to
    [0, v·ev_max] and to what the EV can still take (eev <= e_daily); if the joint discharge
    bd + Σ_j bt_j/η_t + ugb exceeds bd_max, those three are scaled down together. A plan from
    the QP can break these only by the solver's tolerance; the plant cannot.
    """
    col = lambda a: jnp.asarray(a)  # noqa: E731
    bc = jnp.clip(planned.bc, 0.0, col(c.bc_max))
    bd = jnp.clip(planned.bd, 0.0, col(c.bd_max))
    ugb = jnp.clip(planned.ugb, 0.0, col(c.ugb_max))
    room = jnp.maximum(col(c.ev_daily) - eev, 0.0) / (c.dt * c.eta_ev)
    ev = jnp.clip(planned.ev, 0.0, jnp.minimum(stage.ev_hi[:, 0], room))
    bt_max = col(c.bt_max) if trades_on else jnp.zeros_like(col(c.bt_max))
    off_diag = 1.0 - jnp.eye(c.n, dtype=planned.bt.dtype)
    bt = jnp.clip(planned.bt, 0.0, bt_max[:, None]) * off_diag
    out = bd + bt.sum(axis=1) / c.eta_t + ugb
    scale = jnp.where(out > col(c.bd_max), col(c.bd_max) / jnp.where(out > 0, out, 1.0), 1.0)
    return Applied(bc=bc, bd=bd * scale, ugb=ugb * scale, ev=ev, bt=bt * scale[:, None])


def closed_loop(
    ctl: Controller,
    fc: FCMPCSettings,
    opt: Options,
    profiles: Profiles,
    draw: Draw,
    delta,
) -> StepRecord:
    """One day of closed-loop operation for one disturbance draw at risk level δ."""
    c = ctl.community
    N = ctl.N
    delta = run_delta(opt.scenario, delta)
    pro = jnp.asarray(c.is_prosumer)
    pv_coef = jnp.asarray(c.pv_coef())

    def step(carry, t):
        eb, eev, warm, fallback = carry
        stage = make_stage(c, profiles, t, eb, eev, delta, N, opt.tightening, opt.tighten_consumers)
        res = plan_step(ctl, fc, opt, stage, warm, fallback)
        warm = (fcmpc.shift(res.island, N), fcmpc.shift(res.last, N))
        fallback = fcmpc.shift_blocks(res.xs, N)  # the next step's fallback plan
        plan: Plan = res.plan
        planned = jax.tree_util.tree_map(lambda a: a[..., 0], plan)  # first input step
        u = applied_inputs(c, stage, planned, eev, opt.scenario != "islanded")
        ul_real = draw.ul[:, t]
        pv_real = pv_coef * draw.irr[t]
        ps = plant.step(c, eb, eev, u, pv_real, ul_real, stage.win.ul_mu[:, 0])
        eb_new, eev_new = ps.eb, ps.eev
        lo = jnp.asarray(c.eb_lo)
        hi = jnp.asarray(c.eb_hi)
        phi = res.cost[res.iters]
        if opt.gap:
            cs = fcmpc.centralized(ctl, stage)
            phi_c = evaluate.cost(c, ctl.weights, stage, plan_from_vectors(cs.x.reshape(len(c.prosumers), -1), c, N))
            c_status = cs.status
        else:
            phi_c, c_status = phi, jnp.asarray(0, jnp.int32)
        theta_max = res.theta.max(axis=1)
        clip = jnp.stack([jnp.abs(getattr(planned, k) - getattr(u, k)) for k in ("bc", "bd", "ugb", "ev")])
        clip = jnp.maximum(clip.max(axis=0), jnp.abs(planned.bt - u.bt).max(axis=1))
        rec = StepRecord(
            eb=eb_new,
            eb_raw=ps.eb_raw,
            eev=eev_new,
            u_bc=u.bc,
            u_bd=u.bd,
            u_ugb=u.ugb,
            u_ev=u.ev,
            u_bt=u.bt,
            ug=ps.ug,
            spill=ps.spill,
            curtail=ps.curtail,
            deficit=ps.deficit,
            pv=jnp.where(pro, pv_real, 0.0),
            load=ul_real,
            price=stage.win.price[0],
            viol_lo=pro & (eb_new < lo),
            viol_hi=pro & (eb_new > hi),
            empty=jnp.sum(stage.band.empty & pro[:, None], axis=1),
            slack=jnp.sum(jnp.maximum(plan.s_lo, 0.0) + jnp.maximum(plan.s_hi, 0.0), axis=1),
            iters=res.iters,
            theta=jnp.where(res.iters > 0, theta_max[jnp.maximum(res.iters - 1, 0)], 0.0),
            cost_trace=res.cost,
            theta_trace=theta_max,
            lam_trace=res.weights,
            phi=phi,
            phi_central=phi_c,
            central_status=c_status,
            qp_status=jnp.max(res.qp_status),
            qp_held=jnp.sum(res.held),
            qp_fallback=jnp.sum(res.fallback.astype(jnp.int32)),
            qp_steps=res.qp_steps,
            u_iter=res.u_iter,
            u_star=res.u_star,
            u_clip=clip,
            qp_weight_fallback=res.weight_fallback,
        )
        return (eb_new, eev_new, warm, fallback), rec

    eb0 = jnp.asarray(c.eb0)
    eev0 = jnp.zeros_like(eb0)
    carry = (eb0, eev0, initial_warm(ctl, opt), initial_fallback(ctl))
    _, recs = jax.lax.scan(step, carry, jnp.arange(opt.T))
    return recs
