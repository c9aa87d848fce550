"""Replay and audit of a real stored sample on the embedded chain: both modes verify, a changed
value fails and is named, the report holds hashes and gas but no keys, and the agents' QPs
match an independent CVXPY reference built from what they read on chain."""

from __future__ import annotations

import json

import numpy as np
import pytest
import xarray as xr

from ecjax.chain import fixedpoint as fp
from ecjax.chain.audit import audit_run, lane_name
from ecjax.chain.plant import applied_controls, run_plant
from ecjax.chain.sample import SampleError, stored_sample
from ecjax.layout import AgentLayout
from ecjax.evaluate import grid_import
from ecjax.plan import make_stage, plan_from_vectors

pytestmark = [pytest.mark.chain, pytest.mark.slow]


@pytest.fixture(scope="module")
def stored_report(stored_run):
    return audit_run(stored_run.trajectories, stored_run.inputs, "tester", "stored", summary=stored_run.summary)


@pytest.fixture(scope="module")
def solve_report(stored_run):
    return audit_run(stored_run.trajectories, stored_run.inputs, "tester", "solve", summary=stored_run.summary)


def keys_of(report) -> list[str]:
    return [a.key.hex().removeprefix("0x") for a in report.replay.coordinator.agents]


def test_stored_run_exercises_both_stopping_rules(stored_run):
    iters = stored_run.trajectories.iters.values.ravel()
    p_max = stored_run.inputs.fc.p_max
    assert (iters < p_max).any() and (iters == p_max).any(), iters


def test_stored_mode_verifies(stored_report, stored_run, tmp_path):
    r = stored_report
    assert r.verified, r.summary_line()
    s = stored_sample(stored_run.trajectories, stored_run.summary)
    assert [it["chain"] for it in r.iterations] == s.iters.tolist()
    for q in ("state_eb", "u_iter", "u_star", "theta", "iterations", "applied_u_bt", "eb", "ug", "E1", "E8"):
        assert r.checks[q].count > 0 and r.checks[q].failed == 0, q
    # what went on chain is the stored data, rounded (not the stored data itself)
    assert 0 < r.checks["u_iter"].max_abs <= r.tolerance["u_iter_by_iteration"][-1]
    assert all(u.source == "stored" for u in r.replay.uploads)
    assert r.chain["config_hash"] == r.chain["config_hash_on_chain"]
    # transactions: deploy, funding, then P uploads per iteration of every step
    P = len(stored_run.inputs.community.prosumers)
    assert r.tx_count["uploads_per_step"] == [P * (k + 1) for k in s.iters.tolist()]
    assert r.gas["by_kind"]["upload"]["max"] < 400_000 and r.gas["per_upload_max"] > 21_000
    pj, pm = r.write(tmp_path / "audit")
    data = json.loads(pj.read_text())
    assert data["verdict"] == "verified" and data["first_difference"] is None
    md = pm.read_text()
    for tx in r.transactions:
        assert tx["tx_hash"] in md and tx["tx_hash"] in pj.read_text()
    assert "within the tolerance" in data["meaning"]
    for k in keys_of(r):  # keys never reach the report
        assert k not in pj.read_text() and k not in md


def test_solve_mode_verifies(solve_report, stored_run):
    r = solve_report
    assert r.verified, r.summary_line()
    assert all(u.source == "solved" for u in r.replay.uploads)
    assert r.checks["u_star"].max_abs > 0  # really solved again, not copied
    assert r.tolerance["sigma"] > r.tolerance["h"]
    assert r.seconds["solve"] > 0


def test_hash_chain_rebuilt_from_events(stored_report):
    coord = stored_report.replay.coordinator
    h = coord.history()
    assert h.head == coord.head() == bytes.fromhex(stored_report.chain["head"][2:]) != b"\x00" * 32


def _with_inputs(c, stage, plan: dict, i: int, u: np.ndarray, lay: AgentLayout) -> dict:
    """`plan` (numpy, every agent) with prosumer i's inputs set to `u` (bc, bd, ugb, ev, then
    bt to each partner) and its states and band slacks as they follow: the states by MODEL's
    dynamics (1), (6), the slacks as the least that meets the soft band (17), (18) (the
    optimal slacks for those states, the cost being increasing in them)."""
    N = lay.N
    out = {k: v.copy() for k, v in plan.items()}
    bc, bd, ugb, ev = (u[k * N : (k + 1) * N] for k in range(4))
    out["bc"][i], out["bd"][i], out["ugb"][i], out["ev"][i] = bc, bd, ugb, ev
    sent = np.zeros(N)
    for k, j in enumerate(lay.partners(i)):
        out["bt"][i, j] = u[(4 + k) * N : (5 + k) * N]
        sent += out["bt"][i, j]
    pv = c.eta_pv * c.pv_area[i] * np.asarray(stage.win.irr_mu, np.float64) / 1000.0
    flow = c.dt * (c.eta_c * bc - bd / c.eta_d - sent / c.eta_t - ugb + pv)
    eb = float(stage.eb0[i]) + np.cumsum(flow)
    out["eb"][i] = eb
    out["eev"][i] = float(stage.eev0[i]) + np.cumsum(c.dt * c.eta_ev * ev)
    out["s_lo"][i] = np.maximum(np.asarray(stage.band.lo[i], np.float64) - eb, 0.0)
    out["s_hi"][i] = np.maximum(eb - np.asarray(stage.band.hi[i], np.float64), 0.0)
    return out


@pytest.mark.reference
def test_agents_solve_their_subproblem_from_the_chain(solve_report, stored_run):
    """Each uploaded optimum u_i^{p,*} of the solve mode is an optimum of prosumer i's
    subproblem built from the chain's record (states, others' committed iterates), per an
    independent CVXPY + Clarabel reference: its global cost Φ is within the solver's relative
    accuracy of the reference optimum Φ*, plus what the fixed-point rounding of the upload
    (step h) can move it. MODEL's cost has no curvature in the sale and EV inputs, so the
    optimum need not be unique and its vector is not compared; the stored mode and the re-run
    of the sample compare vectors.

    Where another agent's fixed grid import ug_j >= 0 (a row of i's subproblem) is already
    violated by the rounding of j's iterate, the exact reference problem is infeasible; the
    violation must then be within the rounding and solver tolerances."""
    from reference import solve_reference

    inp = stored_run.inputs
    c, N, w = inp.community, inp.N, inp.weights
    lay = AgentLayout(c.n, N)
    tol = solve_report.tolerance
    eps = inp.solver.eps_rel if hasattr(inp.solver, "eps_rel") else 1e-6
    names = ("bc", "bd", "ugb", "ev", "bt", "eb", "eev", "s_lo", "s_hi")
    steps = solve_report.replay.history.steps[: len(solve_report.iterations)]
    checked = explained = 0
    worst = 0.0
    for st in steps:
        eb0 = np.zeros(c.n)
        eev0 = np.zeros(c.n)
        for k, i in enumerate(c.prosumers):
            eb0[i], eev0[i] = fp.from_fixed(np.array(st.states[k]))
        stage = make_stage(c, inp.profiles, st.t, eb0, eev0, stored_run.delta, N)
        for p in range(1, len(st.iterations)):
            prev = fp.from_fixed(st.iterations[p - 1].committed)
            others = plan_from_vectors(np.pad(prev, ((0, 0), (0, lay.nx - lay.nu))), c, N)
            fixed = {k: np.asarray(getattr(others, k), np.float64) for k in names}
            ug = np.asarray(grid_import(c, stage, others, load=np.where(c.is_prosumer[:, None], stage.win.ul_mu, stage.ul_cap)))
            for k, i in enumerate(c.prosumers):
                phi_star, _, status = solve_reference(c, w, stage, free=[i], fixed=type("Fixed", (), fixed))
                if status == "infeasible":
                    low = min(ug[j].min() for j in range(c.n) if j != i)
                    assert -(tol["h"] * 4 + tol["eps_pri"]) <= low < 0, (st.t, p, i, low)
                    explained += 1
                    continue
                assert status == "optimal"
                got = fp.from_fixed(st.iterations[p].uploads[k])
                plan = _with_inputs(c, stage, fixed, i, got, lay)
                phi_got, _, _ = solve_reference(c, w, stage, free=[], fixed=type("Plan", (), plan))
                # Φ's slope in the inputs times the rounding, for every lane of the upload
                slope = np.abs(np.asarray(stage.win.price, np.float64)).max() * c.dt * (1 + w.gamma) + 2 * max(w.delta_b, w.delta_ev, w.w_T, w.rho1) * c.dt * N
                bound = 10 * eps * max(1.0, abs(phi_star)) + slope * tol["h"] * got.size
                gap = phi_got - phi_star
                worst = max(worst, abs(gap) / bound)
                assert abs(gap) <= bound, (st.t, p, i, phi_got, phi_star, bound)
                checked += 1
    assert checked >= 6, (checked, explained)
    print(f"worst |Φ(u) − Φ*| / bound: {worst:.3g} over {checked} subproblems")


# ---------------------------------------------------------------- a changed value fails, named


def changed(ds: xr.Dataset, var: str, delta: float, **at) -> xr.Dataset:
    out = ds.copy(deep=True)
    idx = {k: v for k, v in at.items()}
    out[var][idx] = out[var][idx] + delta
    return out


def test_changed_iterate_fails_and_is_named(stored_run):
    c = stored_run.inputs.community
    lay = AgentLayout(c.n, stored_run.inputs.N)
    lane = lay.bt_index(0, 1, 2)
    traj = changed(stored_run.trajectories, "u_iter", 0.05, time=1, iterate0=2, prosumer=0, input=lane)
    r = audit_run(traj, stored_run.inputs, "tester", "stored", summary=stored_run.summary)
    assert not r.verified
    d = r.first_difference
    assert (d.quantity, d.step, d.iteration, d.agent, d.where) == ("u_iter", 1, 2, 0, lane_name(lay, 0, lane))
    assert d.where == "bt[0->1][2]"
    assert d.stored - d.chain == pytest.approx(0.05, abs=1e-4)
    assert "u_iter bt[0->1][2] (step 1, iteration 2, agent 0)" in r.summary_line()
    assert r.checks["u_iter"].failed == 1


def test_changed_subproblem_optimum_fails(stored_run):
    traj = changed(stored_run.trajectories, "u_star", -0.02, time=2, iteration=0, prosumer=1, input=1)
    r = audit_run(traj, stored_run.inputs, "tester", "stored", summary=stored_run.summary)
    d = r.first_difference
    assert not r.verified and (d.quantity, d.step, d.iteration, d.agent, d.where) == ("u_star", 2, 1, 1, "bc[1]")


def test_changed_applied_control_fails(stored_run):
    traj = changed(stored_run.trajectories, "u_bd", 0.05, time=2, agent=1)
    r = audit_run(traj, stored_run.inputs, "tester", "stored", summary=stored_run.summary)
    d = r.first_difference
    assert not r.verified and (d.quantity, d.step, d.agent) == ("applied_u_bd", 2, 1)
    assert len(r.differences) == 1


@pytest.mark.parametrize("mode", ["stored", "solve"])
def test_changed_index_fails(stored_run, mode):
    summ = changed(stored_run.summary, "E1", 0.01)
    r = audit_run(stored_run.trajectories, stored_run.inputs, "tester", mode, summary=summ)
    assert not r.verified and r.first_difference.quantity == "E1"
    assert {d.quantity for d in r.differences} == {"E1"}
    # the summary no longer is the stored trajectory's (a check as tight as the stored mode's)
    d = r.differences[-1]
    assert d.sides == ("stored trajectory", "stored summary") and d.stored - d.chain == pytest.approx(0.01, abs=1e-9)
    if mode == "stored":  # and the chain's controls give the original E1
        assert len(r.differences) == 2
        assert r.indices["E1"]["stored"] - r.indices["E1"]["chain"] == pytest.approx(0.01, abs=1e-3)


def test_changed_measured_state_fails(stored_run):
    traj = changed(stored_run.trajectories, "eb", 0.1, time=0, agent=1)
    r = audit_run(traj, stored_run.inputs, "tester", "stored", summary=stored_run.summary)
    d = r.first_difference
    assert not r.verified
    # the state uploaded at step 1 is the stored one: the chain agrees with it, but the plant
    # under the chain's controls does not reach it
    assert (d.quantity, d.step, d.agent) == ("eb", 0, 1)


def test_changed_iterate_fails_in_solve_mode(stored_run):
    traj = changed(stored_run.trajectories, "u_iter", 0.2, time=2, iterate0=3, prosumer=1, input=0)
    r = audit_run(traj, stored_run.inputs, "tester", "solve", summary=stored_run.summary)
    d = r.first_difference
    assert not r.verified and (d.quantity, d.step, d.iteration, d.agent, d.where) == ("u_iter", 2, 3, 1, "bc[0]")


# ---------------------------------------------------------------- plant and input errors


def test_plant_reproduces_the_stored_closed_loop(stored_run):
    """The plant equations driven by the stored applied controls give the stored states and
    purchases (MODEL §7), independently of the chain."""
    s = stored_sample(stored_run.trajectories, stored_run.summary)
    inp = stored_run.inputs
    rec = run_plant(inp.community, inp.profiles, s, s.applied, N=inp.N)
    np.testing.assert_allclose(rec.ug, s.ug, rtol=0, atol=1e-12)
    np.testing.assert_allclose(rec.eev, s.eev, rtol=0, atol=1e-12)
    np.testing.assert_allclose(rec.eb, s.eb, rtol=0, atol=1e-12)
    np.testing.assert_allclose(rec.u_bt, s.applied["u_bt"], rtol=0, atol=1e-12)
    e = rec.indices(inp.community, inp.weights.gamma)
    for k, v in s.indices.items():
        assert e[k] == pytest.approx(v, rel=1e-12, abs=1e-12)


def test_applied_controls_layout(stored_run):
    c = stored_run.inputs.community
    N = stored_run.inputs.N
    lay = AgentLayout(c.n, N)
    u = np.arange(2 * lay.nu, dtype=float).reshape(2, lay.nu)
    a = applied_controls(u, c, N)
    assert a["u_bc"][0] == 0 and a["u_bd"][1] == lay.nu + N and a["u_ev"][2] == 0
    assert a["u_bt"][1, 3] == lay.nu + lay.bt_index(1, 3, 0)
    assert a["u_bt"][0, 0] == 0 and a["u_bt"][2].sum() == 0


def test_unauditable_inputs_rejected(stored_run):
    import dataclasses

    from ecjax.simulate import Options

    traj = stored_run.trajectories.drop_vars(["u_iter", "u_star"])
    with pytest.raises(SampleError, match="record_plans"):
        audit_run(traj, stored_run.inputs, "tester", "stored")
    inp = dataclasses.replace(stored_run.inputs, options=Options(T=3, scenario="centralized", record_plans=True))
    with pytest.raises(SampleError, match="centralized"):
        audit_run(stored_run.trajectories, inp, "tester", "stored")
    with pytest.raises(ValueError, match="mode"):
        audit_run(stored_run.trajectories, stored_run.inputs, "tester", "again")
    two = xr.concat(
        [stored_run.trajectories, stored_run.trajectories.assign_coords(sample=[7])], dim="sample", data_vars="all"
    )
    with pytest.raises(SampleError, match="select one sample"):
        audit_run(two, stored_run.inputs, "tester", "stored")


# ---------------------------------------------------------------- borderline stopping decision


def _borderline_kappa(theta_stored: float, theta2_chain: int, scale: int) -> tuple[float, str] | None:
    """A tolerance ϰ' between the stored θ and the chain's rounded θ: one side stops, the other
    goes on. The contract compares θ² with round(ϰ'·scale)²."""
    a, a_c = theta_stored * scale, np.sqrt(theta2_chain)
    K = int(np.ceil(a_c))  # the chain stops: K² >= θ²; the stored run goes on: ϰ' < θ
    if K * K >= theta2_chain and K - 0.5 + 1e-3 < a:
        return (K - 0.5 + 1e-3) / scale, "chain stops"
    K = int(np.ceil(a - 0.5))  # the stored run stops: ϰ' >= θ; the chain goes on: K² < θ²
    if K * K < theta2_chain and K + 0.5 - 1e-3 >= a:
        return max(a, K - 0.5) / scale + 1e-12, "stored stops"
    return None


def test_borderline_stop_is_explained(stored_run, stored_report):
    """ϰ is chosen between the stored θ and the chain's θ (which differ by rounding) at the first
    decision of step 0: the two stop at different iterations, and the audit explains it."""
    import dataclasses

    from ecjax.fcmpc import FCMPCSettings
    from ecjax.experiment import run_batch
    from ecjax.simulate import Options

    s = stored_sample(stored_run.trajectories)
    th = s.theta_trace[0, 0]
    th2 = stored_report.replay.history.steps[0].iterations[1].max_theta2
    assert th > stored_run.inputs.fc.kappa  # step 0 goes past its first iteration
    found = _borderline_kappa(th, th2, fp.SCALE)
    assert found is not None, (th, th2)
    kappa, side = found
    inp = dataclasses.replace(
        stored_run.inputs, fc=FCMPCSettings(kappa=kappa, p_max=stored_run.inputs.fc.p_max), options=Options(T=1, record_plans=True)
    )
    res = run_batch(inp.community, inp.profiles, [stored_run.delta], 1, seed=inp.seed, options=inp.options, N=inp.N,
                    fc=inp.fc, weights=inp.weights, solver=inp.solver, keep=1)  # fmt: skip
    r = audit_run(res.trajectories, inp, "tester", "stored", summary=res.summary)
    (it,) = r.iterations
    assert it["chain"] != it["stored"] and (it["chain"] == 1) == (side == "chain stops"), (it, side)
    assert r.verified, r.summary_line()
    assert any("borderline" in n for n in r.notes)


# ---------------------------------------------------------------- other scenarios


@pytest.mark.parametrize("scenario, delta, modes", [("islanded", 0.05, ("stored", "solve")), ("dmpc", 0.05, ("solve",))])
def test_islanded_and_dmpc_runs_verify(stored_run, scenario, delta, modes):
    """islanded: p = 0 only (the contract is deployed with pMax = 0); dmpc: the agents plan
    without tightening (δ = 0.5) whatever the stored risk coordinate says."""
    import dataclasses

    from ecjax.experiment import run_batch
    from ecjax.fcmpc import FCMPCSettings
    from ecjax.simulate import Options

    inp = dataclasses.replace(
        stored_run.inputs, options=Options(T=2, scenario=scenario, record_plans=True), fc=FCMPCSettings(kappa=1e-3, p_max=3)
    )
    res = run_batch(inp.community, inp.profiles, [delta], 1, seed=2, options=inp.options, N=inp.N, fc=inp.fc,
                    weights=inp.weights, solver=inp.solver, keep=1)  # fmt: skip
    for mode in modes:
        r = audit_run(res.trajectories, inp, "tester", mode, summary=res.summary)
        assert r.verified, r.summary_line()
        P = len(inp.community.prosumers)
        if scenario == "islanded":
            assert r.replay.config.p_max == 0 and r.tx_count["uploads_per_step"] == [P, P]
        else:
            assert all(it["chain"] >= 1 for it in r.iterations)
