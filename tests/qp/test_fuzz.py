"""Fuzz: the engine's QP solver against Clarabel on the whole QP family a user can configure.

Hypothesis draws a structure (tests/fuzz_family.py: QP kind, n agents and the prosumer set,
horizon N, every cost weight from {0, 1e-9, 1e-8, ..., 1e3}, γ from [0, 1), efficiencies)
and a seed; numpy draws a batch of instances of that structure from the seed (community
parameters, profiles and prices, start hour, states, δ in (0, 0.5], both tightening modes,
the other agents' plan), with degenerate corners on purpose. One operator is prepared per
structure the way the controller prepares it (`fcmpc.make_controller` with `IPM()`, the
engine's default: eps_abs = eps_rel = 1e-6, float64) and the batch is solved in one
compiled call (`solve_batch`).

Every instance is also written from MODEL's equations as a sparse QP and solved by Clarabel
(`fuzz_family.reference`, eps 1e-10), and checked:
- a feasible instance (Clarabel solves it) must come back `solved`: never `max_iter`, never
  an infeasibility certificate;
- its plan's global cost Φ (MODEL §4, evaluated from the plan) is within 1e-6 × max(1, |Φ*|,
  |f*|) of Clarabel's Φ*, f* the QP's optimum (Φ* less the part of Φ that the free agents do
  not change), and it violates no constraint of MODEL §3, §5 by more than 1e-6 × (1 + s),
  s the instance's primal scale (its largest finite bound or |Ax|). These are the scales the
  solver's relative tolerances refer to: the residuals within eps 1e-6 relative, and the
  duality gap and the multiplier-weighted primal residual each within eps_rel / 2 of
  max(1, |f|, |g|) (f, g the QP's primal and dual objectives), which bound the objective's
  error; with weights up to 1e3 and EV energies of tens of kWh the violations reach ~1e-5
  kWh. The absolute figures are reported as well;
- `solved` is honest: the KKT residuals of (x, y) on the assembled QP (P, A, q, lo, hi of
  `ecjax.ocp`, user units) meet the solver's tolerance, ‖Ax − Π(Ax)‖∞ <= eps_abs + eps_rel ×
  max(‖Ax‖∞, finite bounds) and ‖Px + q + Aᵀy‖∞ <= eps_abs + eps_rel × max(‖Px‖∞, ‖Aᵀy‖∞,
  ‖q‖∞), with y in the normal cone of the bounds (no multiplier on an infinite side);
- an instance drawn infeasible on purpose (Clarabel: primal infeasible) is not `solved`.

Fast lane: one small agent structure (96 instances) and one small centralized one (64).
Slow lane (marker `fuzz_slow`, ~9 min in one process): 7 agent structures (10,080
instances) in three parts that run side by side under pytest-xdist, and 4 centralized
structures (1,280); it runs the build a user gets, with XLA's full optimization. Both lanes
run in `make test`; `make fuzz` runs the fuzz suite alone. A lane
runs all its structures and reports every failure at the end; any failure fails it. Set
ECJAX_FUZZ_RANDOM=1 for fresh draws instead of the fixed sequence.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import pathlib
import time
import zlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st

from ecjax import ocp
from ecjax.fcmpc import make_controller
from ecjax.plan import plan_from_vectors, vectors_from_plan
from ecjax.qp import IPM, Status, solve_batch
from ecjax.weights import CostWeights
from fuzz_family import (
    ETAS,
    GAMMA_VALUES,
    PLAN_FIELDS,
    WEIGHT_NAMES,
    WEIGHT_VALUES,
    Structure,
    draw_batch,
    phi,
    reference,
    violation,
)

pytestmark = pytest.mark.reference

SOLVER = IPM()  # as the engine uses it
OBJ_TOL = 1e-6  # |Φ − Φ*| / max(1, |Φ*|, |f*|): eps; the IPM bounds the objective error by eps_rel
VIOL_TOL = 1e-6  # constraint violation of the plan / (1 + primal scale): eps_abs + eps_rel × scale
CHUNK = 8  # samples per vmapped piece (solve_batch)
FEASIBLE = ("Solved", "AlmostSolved")
STATS: dict = {}


def _settings(n):
    return settings(
        max_examples=n,
        deadline=None,
        database=None,
        derandomize=os.environ.get("ECJAX_FUZZ_RANDOM") != "1",
        phases=(Phase.explicit, Phase.generate),  # no shrinking: every example compiles
        suppress_health_check=list(HealthCheck),
        print_blob=True,
    )


@st.composite
def structures(draw, kind, n_min, n_max, pro_max, N_values, pro_min=1):
    n = draw(st.integers(n_min, n_max))
    order = draw(st.permutations(range(n)))
    prosumers = tuple(sorted(order[: draw(st.integers(pro_min, min(n, pro_max)))]))
    N = draw(st.sampled_from(N_values))
    w = {k: draw(st.sampled_from(WEIGHT_VALUES)) for k in WEIGHT_NAMES}
    weights = CostWeights(gamma=draw(st.sampled_from(GAMMA_VALUES)), **w)
    eta = draw(st.sampled_from(ETAS))
    return Structure(kind, n, prosumers, N, weights, eta), draw(st.integers(0, 2**32 - 1))


# ----------------------------------------------------------------------------- ecjax side
@functools.lru_cache(maxsize=None)
def _qp_data(kind, weights, trades_on):
    """q, lo, hi of a batch (jitted once per kind and weights)."""
    if kind == "central":
        return jax.jit(jax.vmap(lambda c, stage: ocp.centralized_qp(c, weights, stage)))
    return jax.jit(jax.vmap(lambda c, stage, i, others: ocp.agent_qp(c, weights, stage, i, others, trades_on)))


def solve_ecjax(batch):
    """The batch through the engine's operator: (op, q, lo, hi, solution, plans)."""
    s = batch.s
    c0 = jax.tree_util.tree_map(lambda v: v[0], batch.community)
    ctl = make_controller(c0, s.weights, s.N, SOLVER, centralized=s.kind == "central")
    if s.kind == "central":
        op = ctl.central_op
        q, lo, hi = _qp_data(s.kind, s.weights, True)(batch.community, batch.stage)
    else:
        op = ctl.agent_op
        args = (batch.community, batch.stage, jnp.asarray(batch.agent, jnp.int32), batch.others)
        q, lo, hi = _qp_data(s.kind, s.weights, s.trades_on)(*args)
    sol = solve_batch(op, q, lo, hi, chunk=CHUNK)
    x = np.asarray(sol.x, np.float64)
    nP = len(s.prosumers)
    if s.kind == "central":
        xs = x.reshape(batch.B, nP, -1)
    else:  # the free agent's vector in the others' plan
        xs = np.array(jax.vmap(lambda p: vectors_from_plan(p, c0))(batch.others))
        xs[np.arange(batch.B), [s.prosumers.index(i) for i in batch.agent]] = x
    plans = jax.vmap(lambda v: plan_from_vectors(v, c0, s.N))(jnp.asarray(xs))
    plans = {k: np.asarray(getattr(plans, k), np.float64) for k in PLAN_FIELDS + ("bt",)}
    return op, (np.asarray(q), np.asarray(lo), np.asarray(hi)), sol, plans


def kkt_excess(op, q, lo, hi, x, y, eps_abs, eps_rel):
    """Per instance: the primal and dual residuals of (x, y) on the assembled QP in user units,
    each divided by its tolerance (<= 1: met), the largest multiplier on an infinite side of a
    row, and the primal scale max(‖Ax‖∞, largest finite bound)."""
    A = np.asarray(op.A_orig, np.float64)
    Pd = np.diag(np.asarray(op.P_orig, np.float64))
    Ax = x @ A.T
    z = np.clip(Ax, lo, hi)
    fin = lambda v: np.where(np.isfinite(v), np.abs(v), 0.0)  # noqa: E731
    prim = np.abs(Ax - z).max(axis=1)
    prim_scale = np.maximum(np.abs(Ax).max(axis=1), np.maximum(fin(lo), fin(hi)).max(axis=1))
    Px, Aty = Pd * x, y @ A
    dual = np.abs(Px + q + Aty).max(axis=1)
    dual_scale = np.max([np.abs(Px).max(axis=1), np.abs(Aty).max(axis=1), np.abs(q).max(axis=1)], axis=0)
    cone = np.maximum(np.where(np.isinf(hi), y, 0.0), np.where(np.isinf(lo), -y, 0.0)).max(axis=1)
    return prim / (eps_abs + eps_rel * prim_scale), dual / (eps_abs + eps_rel * dual_scale), cone, prim_scale


def run(lane, s: Structure, seed: int, B: int):
    t0 = time.perf_counter()
    batch = draw_batch(s, seed, B)
    op, (q, lo, hi), sol, plans = solve_ecjax(batch)
    t_ecjax = time.perf_counter() - t0
    status = np.asarray(sol.status)
    steps = np.asarray(sol.num_steps)
    x, y = np.asarray(sol.x, np.float64), np.asarray(sol.y, np.float64)
    kp, kd, cone, scale = kkt_excess(op, q, lo, hi, x, y, SOLVER.eps_abs, SOLVER.eps_rel)
    f_ecjax = phi(s, batch.d, plans)
    v_ecjax = violation(s, batch.d, plans, s.trades_on, batch.checked)
    fails, rel, viol, rel_phi, viol_abs = [], np.zeros(B), np.zeros(B), np.zeros(B), np.zeros(B)
    inconclusive = 0
    for b in range(B):
        d_b = {k: v[b] for k, v in batch.d.items()}
        ref_status, ref_plan, obj, const = reference(s, d_b, batch.free(b), batch.fixed(b), s.trades_on)
        if batch.feasible[b] and ref_status not in FEASIBLE:  # Clarabel stalled: once more, at 1e-8
            ref_status, ref_plan, obj, const = reference(s, d_b, batch.free(b), batch.fixed(b), s.trades_on, tol=1e-8)
        tag = f"instance {b} (agent {batch.agent[b]}, ecjax status {Status(int(status[b])).name}, {steps[b]} iterations)"
        if int(status[b]) == Status.solved and (kp[b] > 1 or kd[b] > 1 or cone[b] > 0):
            fails.append(("dishonest", f"{tag}: solved, but prim/tol {kp[b]:.3g}, dual/tol {kd[b]:.3g}, wrong-side y {cone[b]:.3g}"))
        one_d = {k: v[None] for k, v in d_b.items()}
        one = {k: v[None] for k, v in ref_plan.items()}
        v_ref = float(violation(s, one_d, one, s.trades_on, batch.checked[b : b + 1])[0])
        if not batch.feasible[b]:  # infeasible by construction; Clarabel may still claim a point
            if ref_status in FEASIBLE and v_ref <= VIOL_TOL:
                fails.append(("drawing", f"{tag}: drawn infeasible, but Clarabel's point is feasible"))
            elif int(status[b]) == Status.solved:
                fails.append(("dishonest", f"{tag}: infeasible, reported solved"))
            continue
        if ref_status == "PrimalInfeasible":
            fails.append(("drawing", f"{tag}: drawn feasible, Clarabel says primal infeasible"))
            continue
        if ref_status not in FEASIBLE:  # no reference optimum; ecjax's KKT residuals are checked above
            inconclusive += 1
            continue
        f_ref = float(phi(s, one_d, one)[0])
        # the reference's own consistency: its QP objective is Φ up to a constant, its plan feasible
        assert abs(f_ref - obj - const) <= 1e-9 * max(1.0, abs(f_ref)), (s.describe(), b, f_ref, obj + const)
        assert v_ref <= VIOL_TOL, (s.describe(), b, "reference plan infeasible", v_ref)
        if int(status[b]) != Status.solved:
            fails.append(("not solved", f"{tag}: feasible (Clarabel Φ* = {f_ref:.9g}), not solved"))
            continue
        rel[b] = abs(f_ecjax[b] - f_ref) / max(1.0, abs(f_ref), abs(obj))  # f* = Φ* − constant: the QP's optimum
        viol[b] = v_ecjax[b] / (1.0 + scale[b])
        rel_phi[b], viol_abs[b] = abs(f_ecjax[b] - f_ref) / max(1.0, abs(f_ref)), v_ecjax[b]
        if rel[b] > OBJ_TOL or viol[b] > VIOL_TOL:
            fails.append((
                "inaccurate",
                f"{tag}: Φ = {f_ecjax[b]:.12g} against Φ* = {f_ref:.12g} (f* = {obj:.6g}, rel {rel[b]:.3g}), "
                f"violation {v_ecjax[b]:.3g} (scale {scale[b]:.3g})",
            ))  # fmt: skip
    wall = time.perf_counter() - t0
    errors = dict(rel=rel, viol=viol, rel_phi=rel_phi, viol_abs=viol_abs)
    _record(lane, s, batch, status, steps, errors, kp, kd, t_ecjax, wall, inconclusive, len(fails))
    head = f"{s.describe()} seed={seed}: {len(fails)} of {B} fail"
    if fails:
        counts = {c: sum(1 for c_, _ in fails if c_ == c) for c in sorted({c for c, _ in fails})}
        print(f"\n{head} {counts}, statuses {np.bincount(status, minlength=5).tolist()}")
    return [(s, category, f"{head}: {msg}") for category, msg in fails]


def _record(lane, s, batch, status, steps, errors, kp, kd, t_ecjax, wall, inconclusive, failed):
    zero = dict(structures=0, instances=0, infeasible=0, inconclusive=0, failed=0, kkt=0.0, steps=0, steps_sum=0, t_ecjax=0.0, wall=0.0)
    r = STATS.setdefault((lane, s.kind), zero)
    r["inconclusive"] += inconclusive
    r["failed"] += failed
    ok = status == int(Status.solved)
    r["structures"] += 1
    r["instances"] += batch.B
    r["infeasible"] += int((~batch.feasible).sum())
    for k, v in errors.items():
        r[k] = max(r.get(k, 0.0), float(v.max()))
    r["kkt"] = max(r["kkt"], float(np.max(np.maximum(kp, kd), where=ok, initial=0.0)))
    r["steps"] = max(r["steps"], int(steps.max()))
    r["steps_sum"] += int(steps.sum())  # mean iterations: steps_sum / instances
    r["t_ecjax"] += t_ecjax
    r["wall"] += wall


@pytest.fixture(scope="module", autouse=True)
def _report():
    """Each lane's figures, printed (`-s`) and, with ECJAX_FUZZ_REPORT=DIR, written there as
    JSON per process (pytest-xdist's workers do not show their output)."""
    yield
    out = os.environ.get("ECJAX_FUZZ_REPORT")
    if out and STATS:
        name = f"fuzz_{os.environ.get('PYTEST_XDIST_WORKER', 'main')}_{os.getpid()}.json"
        rows = [{"lane": lane, "kind": kind, **r} for (lane, kind), r in sorted(STATS.items())]
        (pathlib.Path(out) / name).write_text(json.dumps(rows, indent=1))
    for (lane, kind), r in sorted(STATS.items()):
        print(
            f"\nQP fuzz {lane} {kind}: {r['structures']} structures, {r['instances']} instances "
            f"({r['infeasible']} infeasible, {r['inconclusive']} without a Clarabel optimum), {r['failed']} failed, worst |Φ − Φ*| / max(1, |Φ*|, |f*|) {r['rel']:.2g} "
            f"(/ max(1, |Φ*|): {r['rel_phi']:.2g}), worst violation / (1 + scale) {r['viol']:.2g} "
            f"(absolute: {r['viol_abs']:.2g}), worst KKT residual / tolerance {r['kkt']:.2g}, iterations mean {r['steps_sum'] / r['instances']:.2f} max {r['steps']}, "
            f"{r['t_ecjax']:.0f} s ecjax (compile included), {r['wall']:.0f} s in all"
        )


def run_agent(lane, s: Structure, seed: int, B: int):
    """Both agent QP kinds on one structure (one operator, one compilation): B islanded
    instances and 2B FC-MPC subproblems."""
    out = []
    for kind, size, sd in (("island", B, seed), ("fcmpc", 2 * B, seed + 1)):
        out += run(lane, dataclasses.replace(s, kind=kind), sd, size)
    return out


def check(failures):
    """Every failure of every structure of the lane, reported at once."""
    assert not failures, f"{len(failures)} failures:\n" + "\n".join(m for _, _, m in failures[:20])


# ------------------------------------------------------------------------------ fast lane
def _curved(case) -> bool:
    return any(getattr(case[0].weights, k) for k in WEIGHT_NAMES)


@_settings(1)
@given(case=structures("island", 2, 5, 5, (6, 12, 24)).filter(_curved))
def test_fuzz_fast_agent(case):
    """Agent QPs of a small structure (n <= 5), not every weight 0: that corner, an LP, is
    the slow lane's first draw."""
    check(run_agent("fast", *case, 32))


@_settings(1)
@given(case=structures("central", 3, 4, 4, (6, 12), pro_min=2))
def test_fuzz_fast_central(case):
    """Centralized QPs of a small structure (n <= 4, 2-4 prosumers); the draw is Hypothesis'
    simplest, every weight 0 (an LP)."""
    check(run("fast", *case, 64))


# ------------------------------------------------------------------------------ slow lane
DEFAULT = dict(n=15, prosumers=tuple(range(7)), N=24, weights=CostWeights(), eta=ETAS[0])


def _central_size(s: Structure) -> int:
    """Centralized instances per structure, by size (its Newton system's blocks grow with the
    number of prosumers and agents)."""
    nv = len(s.prosumers) * (s.n + 7) * s.N
    return int(np.clip(6e7 / nv**2, 16, 200)) // 8 * 8


AGENT_PARTS = 3  # the agent lane in parts that pytest-xdist's workers share


def _in_part(part: int):
    """A draw's part: a hash of the drawn structure, so that the parts split one fixed
    sequence of draws (each part filters it; filtered draws do not count as examples)."""
    return lambda case: zlib.crc32(repr(case).encode()) % AGENT_PARTS == part


@pytest.mark.slow
@pytest.mark.fuzz_slow
@pytest.mark.parametrize("part", range(AGENT_PARTS))
def test_fuzz_slow_agent(part, optimized):
    """Agent QPs, n <= 15, N in {6, 12, 24}: 480 islanded and 960 FC-MPC instances per
    structure, 2 drawn structures per part and the paper case's structure with the default
    weights in part 0: 7 structures, 10,080 instances. The simplest draw, every weight 0 (an
    LP), falls in one of the parts. Every structure runs; the failures of all are reported at
    the end."""
    failures = []

    @_settings(2)
    @given(case=structures("island", 2, 15, 15, (6, 12, 24, 24)).filter(_in_part(part)))
    def draw(case):
        failures.extend(run_agent("slow", *case, 480))

    if part == 0:
        failures.extend(run_agent("slow", Structure("island", **DEFAULT), 1, 480))
    draw()
    check(failures)


@pytest.mark.slow
@pytest.mark.fuzz_slow
def test_fuzz_slow_central(optimized):
    """Centralized QPs, n <= 6, N in {6, 12, 24}, 3 structures (the explicit example has the
    default weights)."""
    failures = []

    @_settings(2)
    @given(case=structures("central", 2, 6, 6, (6, 12, 24)))
    @example(case=(Structure("central", 5, (0, 1, 3), 24, CostWeights(), ETAS[0]), 1))
    def draw(case):
        s, seed = case
        failures.extend(run("slow", s, seed, _central_size(s)))

    draw()
    check(failures)
