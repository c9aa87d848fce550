"""Audit of a stored run: its origin checked, then replayed through the coordinator on chain.

Always, in every mode, first (`ecjax.chain.origin`): the config hash recomputed from the stored
config against the one recorded at run time, and the cell's kept samples run again from the
stored config by the batch code, as the run computed them (same seed and sample ids, so the
same disturbance draws): every stored array of the sample (states, draws, price, controls,
FC-MPC iterates and optima, θ, iterations, QP statuses) and its summary row (E1..E8, Φ,
counts) against the re-run, floats within a hundredth of the solver's tolerance, integers
exactly. A store changed after the run, or a config changed after the run, differs here. The
re-run goes on in a thread beside the replay (`origin_in_background`); its differences come
first in the report all the same.

Then on chain, compared for every MPC step (tolerances from `ecjax.chain.tolerance`):
- the measured states uploaded at p = 0 with the stored plant's states;
- every iteration both made: the uploaded subproblem optima u_i^{p,*} and the committed iterates
  u_i^p (rebuilt from the contract's events and checked against its hashes) with the stored
  `u_star`, `u_iter`; the contract's max θ with the stored `theta_trace`;
- the iteration at which the step stopped (the contract's decision) with the stored `iters`;
- the applied controls (first input step of the last committed iterates) with the stored `u_*`;
- the plant driven by those controls and the stored draw (battery energy, grid purchases);
and E1..E8 recomputed from the applied controls with `ecjax.metrics` against the stored indices.

Modes: `stored` (default) uploads the stored iterates, so the contract checks on them the
fixed-point combination, the bounds, θ² and every stop decision as it computes them; `solve`
lets each prosumer solve its subproblem again from what it reads on chain (independent agents).

Coordination: `full` (default, the paper's) puts every upload on chain; `commit` runs the
iterations off chain and posts one commitment per step (`ecjax.chain.commit`); the audit then
also checks every step's root on chain against the prosumers' records and re-executes every
leaf, and with `--challenge` proves a wrong leaf on chain. The records of the audited sample are
kept in the store (`cells/<cell>/commitments/`), for anyone to challenge within the window.
With `--contract ADDRESS` (and `--chain rpc --url URL`) nothing is replayed or posted: the
commitments already at that contract are checked against the records kept in the store (roots,
every leaf re-executed, prosumer signatures included; the contract's configHash against the
stored config), and `--challenge` proves the first wrong leaf of each step still open
(`audit_commitments`).

After the audit of a store, a receipt is appended to `cells/<cell>/audits.json` (chain kind and
id, contract address, block range, config hashes, verdict, mode, date; `ecjax.store`); an
earlier receipt on the same persistent chain (`rpc`, same chain id and genesis block) is checked: the contract
at its address must still commit to the configuration recomputed from the stored config.

    ecjax audit STORE --cell ID --sample S --risk DELTA [--chain tester|anvil|rpc] [--url URL]
                [--key-env NAME] [--keystore PATH] [--mode stored|solve] [--out DIR]
                [--coordination full|commit] [--challenge] [--contract ADDRESS]

Exit status: 0 verified, 1 not verified (the first difference is printed), 2 bad arguments or
data that cannot be audited, 3 the chain could not be used.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import sys
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

import numpy as np
import xarray as xr

from ecjax.chain import fixedpoint as fp
from ecjax.chain.client import Chain, Coordinator
from ecjax.chain.commit import NotCommitCoordinator, check_onchain
from ecjax.chain.origin import OriginCheck, check_origin
from ecjax.chain.plant import APPLIED, applied_controls, bounds, run_plant
from ecjax.chain.replay import CHAINS, COORDINATIONS, MODES, Replay, open_chain, replay
from ecjax.chain.report import AuditReport, CheckStats, Difference
from ecjax.chain.sample import RunInputs, SampleError, StoredSample, select, stored_sample
from ecjax.chain.tolerance import FLOAT_SLACK, MEANING, AuditTolerance, derive
from ecjax.layout import AgentLayout
from ecjax.metrics import INDEX_NAMES, indices

__all__ = ["audit_commitments", "audit_run", "audit_store", "check_receipts", "compare", "main"]


# ------------------------------------------------------------------ comparisons


class _Checker:
    """Collects comparisons: statistics per quantity and every value beyond its tolerance."""

    def __init__(self):
        self.stats: dict[str, CheckStats] = {}
        self.diffs: list[Difference] = []

    def values(
        self, quantity, chain, stored, tol, *, locate: Callable[[tuple], dict], note: str = "", sides=("chain", "stored")
    ):
        chain = np.asarray(chain, dtype=np.float64)
        stored = np.asarray(stored, dtype=np.float64)
        tol = np.broadcast_to(np.asarray(tol, dtype=np.float64), chain.shape)
        d = np.abs(chain - stored)
        bad = ~(d <= tol)  # NaN counts as a difference
        s = self.stats.setdefault(quantity, CheckStats())
        s.count += int(chain.size)
        if chain.size:
            s.max_abs = max(s.max_abs, float(np.nanmax(np.where(np.isfinite(d), d, np.inf))))
            s.max_ratio = max(s.max_ratio, float(np.nanmax(np.where(np.isfinite(d), d / tol, np.inf))))
        s.failed += int(bad.sum())
        for idx in zip(*np.nonzero(bad)) if chain.ndim else ([()] if bad else []):
            self.diffs.append(
                Difference(
                    quantity=quantity, chain=float(chain[idx]), stored=float(stored[idx]),
                    tolerance=float(tol[idx]), note=note, sides=sides, **locate(tuple(int(i) for i in idx)),
                )
            )  # fmt: skip

    def explained(self, quantity):
        """A comparison whose difference is within tolerance by an argument, not a number."""
        self.stats.setdefault(quantity, CheckStats()).count += 1

    def exact(self, quantity, chain, stored, note: str = "", **where):
        s = self.stats.setdefault(quantity, CheckStats())
        s.count += 1
        if chain != stored:
            s.failed += 1
            s.max_abs = max(s.max_abs, abs(float(chain) - float(stored)))
            self.diffs.append(Difference(quantity=quantity, chain=chain, stored=stored, note=note, **where))


def lane_name(lay: AgentLayout, i: int, lane: int) -> str:
    """Name of value `lane` of agent i's input vector: bc[k], bd[k], ugb[k], ev[k], bt[i->j][k]."""
    b, k = divmod(lane, lay.N)
    if b < 4:
        return f"{('bc', 'bd', 'ugb', 'ev')[b]}[{k}]"
    return f"bt[{i}->{int(lay.partners(i)[b - 4])}][{k}]"


def compare(sample: StoredSample, rep: Replay, inputs: RunInputs, tol: AuditTolerance) -> tuple[_Checker, dict]:
    """Compare the chain's record (`rep.history`) with the stored sample. Returns the checker and
    per-step / per-index details for the report."""
    chk = _Checker()
    c, N = inputs.community, int(inputs.N)
    lay = AgentLayout(c.n, N)
    ids = list(c.prosumers)
    scale = tol.scale
    detail: dict[str, Any] = {"iterations": [], "indices": {}, "notes": []}
    if rep.history is None or rep.mismatch:
        chk.diffs.append(Difference("chain", note=f"the replay on chain failed: {rep.mismatch}"))
        return chk, detail
    steps = rep.history.steps
    if len(steps) < sample.T or any(not s.iterations or not s.iterations[-1].terminated for s in steps[: sample.T]):
        note = f"the chain holds {len(steps)} steps, not {sample.T} terminated ones"
        chk.diffs.append(Difference("chain", note=note))
        return chk, detail
    planned = {k: np.zeros((sample.T, c.n)) for k in APPLIED}
    planned["u_bt"] = np.zeros((sample.T, c.n, c.n))
    e_applied = np.zeros(sample.T)
    kappa = float(inputs.fc.kappa)
    for t in range(sample.T):
        st = steps[t]
        its = st.iterations
        # measured state uploaded at p = 0
        eb, eev = sample.measured_state(t, c)
        for name, stored in (("state_eb", eb), ("state_eev", eev)):
            col = int(name == "state_eev")
            got = np.array([fp.from_fixed(st.states.get(k, (0, 0))[col], scale) for k in range(len(ids))])
            at = lambda ix, t=t: dict(step=t, iteration=0, agent=ids[ix[0]])  # noqa: E731
            chk.values(name, got, stored[ids], tol.state(), locate=at)
        stop_chain, stop_stored = its[-1].p, int(sample.iters[t])
        for p in range(min(stop_chain, stop_stored) + 1):
            it = its[p]
            loc = lambda ix, t=t, p=p: dict(  # noqa: E731
                step=t, iteration=p, agent=ids[ix[0]], where=lane_name(lay, ids[ix[0]], ix[1])
            )
            if p >= 1:
                missing = np.full(lay.nu, np.nan)  # a prosumer that did not upload
                ustar = np.stack([fp.from_fixed(it.uploads[k], scale) if k in it.uploads else missing for k in range(len(ids))])
                chk.values("u_star", ustar, sample.u_star[t, p - 1], tol.u_star(p), locate=loc)
            chk.values("u_iter", fp.from_fixed(it.committed, scale), sample.u_iter[t, p], tol.u_iter(p), locate=loc)
            if p >= 1:
                chk.values(
                    "theta", fp.theta(it.max_theta2, scale), sample.theta_trace[t, p - 1], tol.theta(p),
                    locate=lambda ix, t=t, p=p: dict(step=t, iteration=p, where="max_i θ_i"),
                )  # fmt: skip
        extra = 0.0  # per-entry distance between the two stopping iterates, when they differ
        if stop_chain != stop_stored:
            q = min(stop_chain, stop_stored)
            th = sample.theta_trace[t, q - 1] if q >= 1 else np.inf
            if q >= 1 and abs(th - kappa) <= tol.theta(q) + tol.h:
                # θ at the stop lies within rounding of ϰ (the contract compares θ² with
                # round(ϰ·scale)²): either decision is the same computation. The later stop
                # moved each entry by at most the θ of the extra iterations.
                if stop_chain > stop_stored:
                    extra = sum(fp.theta(its[p].max_theta2, scale) for p in range(q + 1, stop_chain + 1))
                else:
                    extra = float(np.sum(sample.theta_trace[t, q:stop_stored]))
                chk.explained("iterations")
                detail["notes"].append(
                    f"step {t}: the chain stopped at iteration {stop_chain}, the stored run at {stop_stored}: "
                    f"θ = {th:.9g} at iteration {q} lies within the θ tolerance of ϰ = {kappa:g} (borderline "
                    f"decision); the step's applied controls are compared within a further {extra:.3g} kW"
                )
            else:
                chk.exact("iterations", stop_chain, stop_stored, step=t, iteration=stop_chain)
        else:
            chk.exact("iterations", stop_chain, stop_stored, step=t, iteration=stop_chain)
        detail["iterations"].append({"step": t, "chain": stop_chain, "stored": stop_stored})
        a = applied_controls(fp.from_fixed(its[-1].committed, scale), c, N)  # planned first step
        for k in APPLIED + ("u_bt",):
            planned[k][t] = a[k]
        e_applied[t] = tol.u_iter(max(stop_chain, stop_stored)) + extra
        if sample.qp_status[t] != 0:
            code = int(sample.qp_status[t])
            detail["notes"].append(f"step {t}: a stored QP ended with status {code} (not solved to tolerance)")
        if rep.mode == "solve" and rep.qp_status[t] != 0:
            code = int(rep.qp_status[t])
            detail["notes"].append(f"step {t}: a replayed QP ended with status {code} (not solved to tolerance)")
    # the plant under the chain's controls (held to the physical limits), and the indices
    plant = run_plant(c, inputs.profiles, sample, planned, N=N, trades_on=inputs.options.scenario != "islanded")
    pb = bounds(c, plant.price, e_applied, float(inputs.weights.gamma))
    for t in range(sample.T):
        loc = lambda ix, t=t: dict(step=t, agent=ix[0])  # noqa: E731
        for k in APPLIED:
            got, want = getattr(plant, k)[t], sample.applied[k][t]
            chk.values(f"applied_{k}", got, want, e_applied[t] + FLOAT_SLACK, locate=loc)
        chk.values(
            "applied_u_bt", plant.u_bt[t], sample.applied["u_bt"][t], e_applied[t] + FLOAT_SLACK,
            locate=lambda ix, t=t: dict(step=t, agent=ix[0], where=f"bt[{ix[0]}->{ix[1]}][0]"),
        )  # fmt: skip
    for t in range(sample.T):
        loc = lambda ix, t=t: dict(step=t, agent=ix[0])  # noqa: E731
        chk.values("price", plant.price[t], sample.price[t], FLOAT_SLACK, locate=lambda ix, t=t: dict(step=t))
        chk.values("eb", plant.eb[t], sample.eb[t], pb.eb[t] + FLOAT_SLACK, locate=loc)
        chk.values("eev", plant.eev[t], sample.eev[t], pb.eev[t] + FLOAT_SLACK, locate=loc)
        chk.values("ug", plant.ug[t], sample.ug[t], pb.ug[t] + FLOAT_SLACK, locate=loc)
    e_chain = plant.indices(c, float(inputs.weights.gamma))
    if sample.indices:
        e_stored, source = sample.indices, "summary"
    else:
        e_stored, source = _stored_indices(sample, c, float(inputs.weights.gamma)), "trajectory"
    for k in INDEX_NAMES:
        if k not in e_stored:
            continue
        tk = pb.indices[k] + FLOAT_SLACK * (1 + abs(e_stored[k]))
        note = f"recomputed from the chain's controls vs the stored {source}"
        chk.values(k, e_chain[k], e_stored[k], tk, locate=lambda ix: {}, note=note)
        detail["indices"][k] = {"chain": e_chain[k], "stored": e_stored[k], "tolerance": tk}
    if sample.indices:
        # the stored summary and trajectory are two evaluations of one closed loop: they agree up
        # to a solution's primal tolerance (whatever the mode of the replay)
        e_traj = _stored_indices(sample, c, float(inputs.weights.gamma))
        pb0 = bounds(c, plant.price, np.full(sample.T, tol.h + tol.eps_pri), float(inputs.weights.gamma))
        for k in INDEX_NAMES:
            if k in e_stored:
                tk = pb0.indices[k] + FLOAT_SLACK * (1 + abs(e_stored[k]))
                chk.values(
                    k, e_traj[k], e_stored[k], tk, locate=lambda ix: {}, sides=("stored trajectory", "stored summary"),
                    note="the stored summary is not the stored trajectory's",
                )  # fmt: skip
    for u in rep.uploads:
        if u.outside > tol.eps_pri:
            detail["notes"].append(
                f"step {u.t} iteration {u.p} prosumer {u.agent}: the {u.source} plan left the contract's bounds by "
                f"{u.outside:.3g} kW (> ε_pri); it was clipped before upload"
            )
        if u.source == "held":
            detail["notes"].append(
                f"step {u.t} iteration {u.p} prosumer {u.agent}: the stored run had stopped; "
                "its final iterate was uploaded again"
            )
    return chk, detail


def compare_weights(rep: Replay, chk: _Checker, detail: dict) -> None:
    """Weighted iterations (fcmpc.weights = optimal): the weights on chain (rebuilt from the
    events; the contract combined every iterate with them, and `Coordinator.history` checked
    each committed iterate bit-exactly against them) must be those the proposer sent; per
    step, the largest |λ_chain − λ_reference|, λ_reference the proposer's real λ (solve mode:
    the batch engine's optimal rule recomputed off chain from the prosumers' iterates; stored
    mode: the stored run's λ, `lam_trace`), goes to `detail["weights"]`."""
    if not rep.weights or rep.history is None:
        return
    its = {(it.t, it.p): it for st in rep.history.steps for it in st.iterations}
    steps: dict[int, dict] = {}
    for w in rep.weights:
        it = its.get((w.t, w.p))
        got = None if it is None or it.weights is None else it.weights
        if got is None or not np.array_equal(got, w.q):
            chk.diffs.append(Difference("weights", step=w.t, iteration=w.p,
                                        note="the weights on chain are not those proposed"))  # fmt: skip
            continue
        chk.exact("weights", 0, 0)
        d = float(np.max(np.abs(got / fp.WEIGHT_ONE - w.reference), initial=0.0))
        s = steps.setdefault(w.t, {"step": w.t, "iterations": 0, "reference": w.source, "max_abs": 0.0})
        s["iterations"] += 1
        s["max_abs"] = max(s["max_abs"], d)
        if w.source != s["reference"]:
            s["reference"] = "mixed"
    detail["weights"] = list(steps.values())
    if steps:
        worst = max(s["max_abs"] for s in steps.values())
        ref = "the batch engine's optimal λ recomputed off chain" if rep.mode == "solve" else "the stored run's λ"
        detail["notes"].append(
            f"weights proposed on chain in {sum(s['iterations'] for s in steps.values())} iterations; the largest "
            f"|λ_chain − λ_reference| is {worst:.3g} (reference: {ref}; fixed point 1/{fp.WEIGHT_ONE})"
        )


def _stored_indices(sample: StoredSample, c, gamma: float) -> dict[str, float]:
    import types

    import jax.numpy as jnp

    rec = types.SimpleNamespace(
        price=jnp.asarray(sample.price), ug=jnp.asarray(sample.ug), u_ugb=jnp.asarray(sample.applied["u_ugb"]),
        u_bt=jnp.asarray(sample.applied["u_bt"]),
    )  # fmt: skip
    return {k: float(v) for k, v in indices(c, gamma, rec).items()}


# ------------------------------------------------------------------ report


def _gas(rep: Replay) -> tuple[dict, dict]:
    by_kind: dict[str, list[int]] = {}
    for tx in rep.txs:
        by_kind.setdefault(tx.kind, []).append(tx.gas_used)
    gas = {
        "by_kind": {
            k: {"count": len(v), "min": min(v), "mean": float(np.mean(v)), "max": max(v)} for k, v in by_kind.items()
        },
        "total": int(sum(sum(v) for v in by_kind.values())),
        "per_upload_max": max((tx.gas_used for tx in rep.txs if tx.kind in ("initial", "upload")), default=0),
    }
    steps = sorted({tx.t for tx in rep.txs if tx.t is not None})
    per_step = [sum(1 for tx in rep.txs if tx.t == t) for t in steps]
    count = {
        "total": len(rep.txs),
        "by_kind": {k: len(v) for k, v in by_kind.items()},
        "uploads_per_step": per_step,
        "uploads_per_step_mean": float(np.mean(per_step)) if per_step else 0.0,
    }
    return gas, count


def build_report(
    sample, rep: Replay, inputs, tol: AuditTolerance, chk: _Checker, detail: dict, seconds: dict, label=None
) -> AuditReport:
    coord = rep.coordinator
    c = inputs.community
    cfg = rep.config
    gas, count = _gas(rep)
    chain = {
        "kind": coord.chain.kind,
        "chain_id": int(coord.chain.w3.eth.chain_id),
        "address": coord.address,
        "config_hash": "0x" + cfg.config_hash().hex(),
        "config_hash_on_chain": "0x" + coord.params["config_hash"].hex(),
        "head": "0x" + coord.head().hex(),
        "deploy_block": coord.from_block,
        "genesis": "0x" + bytes(coord.chain.w3.eth.get_block(0)["hash"]).hex(),
        "agents": [a.address for a in coord.agents],
    }
    run = {
        "cell": label,
        "sample": sample.sample,
        "risk": sample.risk,
        "scenario": inputs.options.scenario,
        "n": c.n,
        "prosumers": len(c.prosumers),
        "N": int(inputs.N),
        "T": sample.T,
        "p_max": int(inputs.fc.p_max),
        "kappa": float(inputs.fc.kappa),
        "w": f"{cfg.w.numerator}/{cfg.w.denominator}",
        "scale": cfg.scale,
        "period_s": cfg.period_s,
        "coordination": rep.coordination,
        "solver": {"eps_abs": inputs.solver.eps_abs, "eps_rel": inputs.solver.eps_rel},
    }
    if getattr(inputs.fc, "weights", "uniform") != "uniform":
        run["weights"] = inputs.fc.weights
    diffs = list(chk.diffs)
    if chain["config_hash"] != chain["config_hash_on_chain"]:
        diffs.insert(0, Difference("config_hash", note="the deployed configHash differs from the run's configuration"))
    return AuditReport(
        verified=not diffs,
        mode=rep.mode,
        run=run,
        chain=chain,
        tolerance=tol.as_dict(),
        meaning=MEANING,
        checks=chk.stats,
        differences=diffs,
        iterations=detail["iterations"],
        indices=detail["indices"],
        transactions=[dataclasses.asdict(tx) for tx in rep.txs],
        gas=gas,
        tx_count=count,
        seconds=seconds,
        notes=detail["notes"],
        replay=rep,
        weights=detail.get("weights"),
    )


# ------------------------------------------------------------------ entry points


def _chain_scale(inputs) -> int:
    spec = getattr(inputs, "chain", None) or {}
    return int(spec.get("scale", fp.SCALE)) if isinstance(spec, dict) else fp.SCALE


def audit_run(
    trajectories: xr.Dataset,
    inputs: RunInputs,
    chain: Chain | str = "tester",
    mode: str = "stored",
    *,
    summary: xr.Dataset | None = None,
    scale: int | None = None,
    period_s: int = 600,
    progress: bool = False,
    label: str | None = None,
    coordination: str = "full",
    challenge: bool = False,
    committer=None,
) -> AuditReport:
    """Audit one stored sample on chain, without a store (so without the check of its origin,
    which needs the stored config: `audit_store`).

    **Arguments:**
    - `trajectories`: the stored trajectories at one risk level and one sample (dims `risk`,
      `sample` selected or of length one), with the FC-MPC iterates (`record_plans`).
    - `inputs`: the run's typed inputs (`ecjax.config.CellInputs` or `ecjax.chain.sample.Inputs`).
    - `chain`: a `Chain`, or "tester" / "anvil" (started and stopped here).
    - `mode`: "stored" (upload the stored iterates) or "solve" (agents solve again from the chain).
    - `summary`: the same selection of the stored summary, for E1..E8 (else recomputed from
      the stored trajectory).
    - `scale`: fixed-point scale (default: `inputs.chain["scale"]` or 10⁶).
    - `coordination`: "full" (every upload on chain) or "commit" (one commitment per step,
      checked leaf by leaf; `challenge`: prove a wrong leaf on chain; `committer`: see
      `ecjax.chain.replay.CommitCoordination`).
    **Returns:** the `AuditReport` (`report.verified`, `report.first_difference`, `report.write(dir)`).
    """
    if mode not in MODES:
        raise ValueError(f"`mode` must be one of {MODES}, got {mode!r}.")
    t0 = time.perf_counter()
    sample = stored_sample(trajectories, summary)
    scale = int(scale if scale is not None else _chain_scale(inputs))
    ctx = open_chain(chain) if isinstance(chain, str) else contextlib.nullcontext(chain)
    with ctx as ch:
        rep = replay(
            sample, inputs, ch, mode, scale=scale, period_s=period_s, progress=progress, coordination=coordination,
            committer=committer,
        )  # fmt: skip
        t1 = time.perf_counter()
        tol = derive(inputs, mode, scale, float(rep.config.w))
        chk, detail = compare(sample, rep, inputs, tol)
        compare_weights(rep, chk, detail)
        if rep.coordination == "commit":
            from ecjax.chain.commit import check_replay

            check_replay(rep, chk, detail, challenge=challenge)
        seconds = {**rep.seconds, "audit": time.perf_counter() - t1}
        seconds["total"] = time.perf_counter() - t0
        return build_report(sample, rep, inputs, tol, chk, detail, seconds, label)


def audit_store(
    store: str | Path,
    cell: str,
    sample: int,
    risk: float,
    *,
    chain: str | None = None,
    url: str | None = None,
    key_env: str | None = None,
    keystore: str | None = None,
    password_env: str | None = None,
    mode: str = "stored",
    progress: bool = False,
    receipt: bool = True,
    coordination: str = "full",
    challenge: bool = False,
) -> AuditReport:
    """Audit sample `sample` at risk level `risk` of cell `cell` of a results store
    (`ecjax.store`): its origin (`ecjax.chain.origin.check_origin`: config hash, the sample run
    again from the stored config), then the replay on chain, then the earlier receipts; with
    `receipt`, a receipt of this audit is appended to the cell (`ecjax.store.add_audit`).
    Chain settings default to the cell's `chain` config (kind, url, key_env, keystore,
    password_env, scale, period_s); the arguments override them."""
    from ecjax import store as store_mod

    traj, summ, inputs, c = load_cell_sample(store, cell, sample, risk)
    origin = origin_in_background(c, sample, risk)
    report = audit_loaded(
        traj, summ, inputs, cell, chain=chain, url=url, key_env=key_env, keystore=keystore,
        password_env=password_env, mode=mode, progress=progress, origin=origin,
        earlier=store_mod.audits(store, cell), coordination=coordination, challenge=challenge,
    )  # fmt: skip
    keep_records(store, cell, report)
    if receipt:
        report.receipt_path = str(store_mod.add_audit(store, cell, report.receipt()))
    return report


def audit_commitments(
    store: str | Path,
    cell: str,
    sample: int,
    risk: float,
    address: str,
    *,
    url: str,
    key_env: str | None = None,
    keystore: str | None = None,
    password_env: str | None = None,
    challenge: bool = False,
):
    """Check the commitments already posted to the commit coordinator at `address` on the
    chain at `url` against the records the store keeps for the sample
    (`ecjax.chain.commit.records_path`): every step's root and lastP, every leaf re-executed
    (signatures included), and the contract's configHash against the one recomputed from the
    stored config (for this sample, risk level and the contract's challenge window). With
    `challenge`, the first wrong leaf of each step still open is proven on chain by the account
    whose key is in `key_env` (or `keystore`); without it no key is needed.
    **Returns:** `ecjax.chain.commit.OnChainCheck`. **Raises:** `SampleError` (no records kept,
    or the cell cannot be read), `NotCommitCoordinator` (nothing or something else at `address`)."""
    from ecjax.chain.commit import CommitCoordinator, read_records, records_path
    from ecjax.chain.replay import coordinator_config

    path = records_path(store, cell, sample, risk)
    if not path.is_file():
        raise SampleError(f"no committed records of sample {sample} at δ = {risk:g} in cell {cell!r} ({path}); "
                          "`ecjax audit --coordination commit` keeps them.")  # fmt: skip
    records, meta = read_records(path)
    with open_chain("rpc", url=url, key_env=key_env, keystore=keystore, password_env=password_env,
                    require_key=challenge) as ch:  # fmt: skip
        coord = CommitCoordinator.at(ch, address)
        inputs = load_cell_sample(store, cell, sample, risk)[2]
        check = check_onchain(coord, records, challenge=challenge)
        cfg = coordinator_config(
            inputs, float(risk), int(inputs.options.T), sample=int(sample), scale=_chain_scale(inputs),
            period_s=int(coord.params["period"]),
        )  # fmt: skip
        want, got = cfg.config_hash(), coord.params["config_hash"]
        if got != want:
            check.problems.insert(0, f"the contract at {coord.address} commits to configHash 0x{got.hex()[:16]}…, "
                                     f"the stored config gives 0x{want.hex()[:16]}…")  # fmt: skip
    if str(meta.get("address", "")).lower() != coord.address.lower():
        check.notes.append(f"the records were kept for the contract at {meta.get('address')} ({meta.get('kind')})")
    return check


def chain_settings(inputs, **override) -> dict:
    """The cell's chain settings with the non-None `override`s applied."""
    spec = dict(getattr(inputs, "chain", None) or {})
    spec.update({k: v for k, v in override.items() if v is not None})
    spec.setdefault("kind", "tester")
    return spec


def audit_loaded(
    traj,
    summ,
    inputs,
    cell: str | None,
    *,
    mode: str = "stored",
    progress: bool = False,
    origin: OriginCheck | Future | None = None,
    earlier: list[dict] = (),
    coordination: str = "full",
    challenge: bool = False,
    **chain,
) -> AuditReport:
    """`audit_run` with the chain given by the cell's `chain` settings and the overrides in `chain`
    (chain=kind, url, key_env, keystore, password_env). `origin`, the check of the sample
    against its stored config, comes first in the report and its differences fail the audit;
    `earlier`, the cell's receipts of earlier audits, are checked against the chain
    (`check_receipts`). `origin` may be a `Future` of that check (`origin_in_background`): it
    then runs beside the replay and is waited for after it."""
    spec = chain_settings(inputs, kind=chain.pop("chain", None), **chain)
    with open_chain(
        spec["kind"], url=spec.get("url"), key_env=spec.get("key_env"), keystore=spec.get("keystore"),
        password_env=spec.get("password_env"),
    ) as ch:  # fmt: skip
        report = audit_run(
            traj, inputs, ch, mode, summary=summ, scale=int(spec.get("scale", fp.SCALE)),
            period_s=int(spec.get("period_s", 600)), progress=progress, label=cell, coordination=coordination,
            challenge=challenge,
        )  # fmt: skip
        origin = resolve_origin(origin)
        diffs, notes = check_receipts(earlier, report, inputs, origin, ch)
    if origin is not None:
        report.origin = origin.to_dict()
        report.seconds["origin"] = origin.seconds
        diffs = list(origin.differences) + diffs
    report.differences = diffs + report.differences
    report.notes += notes
    report.verified = not report.differences
    return report


def origin_in_background(cell, sample: int, risk: float) -> Future:
    """`check_origin` in a thread beside the replay: the re-run of the sample spends most of its
    time in compiled XLA code, which releases the GIL, while the replay is Python (web3, and
    py-evm on the in-process chain); on two cores the two overlap. Nothing is shared but
    JAX's compilation cache, set up here before the thread starts."""
    from ecjax.sweep import jax_setup

    jax_setup(cell.config)
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ecjax-origin")
    future = pool.submit(check_origin, cell, sample, risk)
    pool.shutdown(wait=False)
    return future


def resolve_origin(origin: OriginCheck | Future | None) -> OriginCheck | None:
    """The check of the origin, waited for if it runs in the background (its error raised here)."""
    return origin.result() if isinstance(origin, Future) else origin


def keep_records(store, cell: str, report: AuditReport) -> Path | None:
    """Commit mode: keep the committed records of the audited sample in the store
    (`ecjax.chain.commit.records_path`), with the contract's address and chain, so that anyone
    holding the store can challenge a step within its window. Returns the file (None in full mode)."""
    rep = report.replay
    if rep is None or rep.coordination != "commit" or not rep.records:
        return None
    from ecjax.chain.commit import records_path, write_records

    path = records_path(store, cell, report.run["sample"], report.run["risk"])
    meta = {k: report.chain.get(k) for k in ("kind", "chain_id", "genesis", "address", "deploy_block")}
    write_records(path, rep.records, meta)
    report.notes.append(f"commit mode: the committed records are kept in the store at {path}")
    return path


def check_receipts(earlier, report: AuditReport, inputs, origin: OriginCheck | None, chain: Chain):
    """Check the cell's receipts of earlier audits: the store's config hash each recorded
    against the one recomputed now from the stored config and, for a receipt made on the same
    persistent chain (`rpc`, same chain id and genesis block), the configHash of the contract
    at its address against the coordinator configuration recomputed now from the stored config
    (for that receipt's sample, risk level, scale and iteration period).
    **Returns:** (differences, notes)."""
    from web3.exceptions import Web3Exception

    from ecjax.chain.replay import coordinator_config

    diffs, notes = [], []
    chain_id = int(chain.w3.eth.chain_id)
    genesis = report.chain.get("genesis")
    for r in earlier:
        when = f"the audit of {r.get('date', '?')} (sample {r.get('sample')}, δ = {r.get('risk')})"
        if origin is not None and r.get("config_hash") != origin.config_hash:
            diffs.append(Difference("receipt_config_hash", note=(
                f"{when} recorded the store's config hash {str(r.get('config_hash'))[:16]}…, the stored config "
                f"hashes to {origin.config_hash[:16]}… now")))  # fmt: skip
        rc = r.get("chain") or {}
        same = rc.get("kind") == "rpc" and chain.kind == "rpc" and rc.get("chain_id") == chain_id
        if not (same and rc.get("genesis") == genesis):  # a development chain restarted keeps its id
            continue
        cfg = coordinator_config(
            inputs, float(r["risk"]), int(inputs.options.T), sample=int(r["sample"]),
            scale=int(rc.get("scale") or fp.SCALE), period_s=int(rc.get("period_s") or 600),
        )  # fmt: skip
        want = "0x" + cfg.config_hash().hex()
        address = rc.get("address")
        try:
            code = chain.w3.eth.get_code(address)
            got = "0x" + bytes(Coordinator(chain, address).functions.configHash().call()).hex() if code else None
            why = "no contract"
        except (ValueError, TypeError, Web3Exception) as e:  # not an address, or not a coordinator
            got, why = None, f"{type(e).__name__}: {e}"
        if got is None:
            diffs.append(Difference("receipt_contract", note=f"{when}: no coordinator at {address} on chain {chain_id} ({why})"))
        elif got != want:
            diffs.append(Difference("receipt_contract", note=(
                f"{when}: the contract at {address} (chain {chain_id}) commits to configHash {got[:18]}…, the stored "
                f"config gives {want[:18]}…")))  # fmt: skip
        else:
            notes.append(f"{when}: the contract at {address} (chain {chain_id}) commits to the stored config's hash")
    return diffs, notes


def load_cell_sample(store, cell: str, sample: int, risk: float):
    """(trajectories, summary, inputs, cell) of one stored sample, loaded into memory; the cell
    is the opened `ecjax.store.Cell` (its config and attrs)."""
    from ecjax import store as store_mod
    from ecjax.config import cell_inputs

    path = Path(store)
    if not path.exists():
        raise SampleError(f"store {str(path)!r} does not exist.")
    cells = store_mod.list_cells(path)
    if cell not in cells:
        raise SampleError(f"cell {cell!r} is not a finished cell of {str(path)!r}; finished cells: {cells}.")
    c = store_mod.open_cell(path, cell)
    if c.trajectories is None:
        raise SampleError(f"cell {cell!r} kept no trajectories (sim.keep = 0): nothing to audit.")
    kept = c.trajectories["sample"].values.tolist()
    if sample not in kept:
        raise SampleError(f"sample {sample} of cell {cell!r} was not kept; kept samples: {kept}.")
    traj = select(c.trajectories, risk, sample).load()
    summ = select(c.summary, risk, sample).load()
    return traj, summ, cell_inputs(c.config), c


def load_sample(store, cell: str, sample: int, risk: float):
    """(trajectories, summary, inputs) of one stored sample, loaded into memory."""
    return load_cell_sample(store, cell, sample, risk)[:3]


# ------------------------------------------------------------------ CLI


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="ecjax audit",
        description=(
            "Audit a stored sample: run it again from the stored config and compare every stored array "
            "(always), then replay it through the FC-MPC coordinator contract and compare the chain's record. "
            "A receipt of the audit is appended to the cell (cells/<cell>/audits.json)."
        ),
    )
    ap.add_argument("store", help="results store (zarr directory)")
    ap.add_argument("--cell", required=True, help="cell id (see the store's finished cells)")
    ap.add_argument("--sample", required=True, type=int, help="sample id (one of the kept samples)")
    ap.add_argument("--risk", required=True, type=float, help="risk level δ in (0, 0.5]")
    ap.add_argument("--chain", choices=CHAINS, default=None, help="default: the cell's chain.kind, else tester")
    ap.add_argument("--url", help="JSON-RPC URL (chain rpc)")
    ap.add_argument("--key-env", help="environment variable holding the deployer key (chain rpc)")
    ap.add_argument("--keystore", help="encrypted keystore file of the deployer (chain rpc)")
    ap.add_argument("--password-env", help="environment variable holding the keystore password (ECJAX_CHAIN_PASSWORD)")
    ap.add_argument(
        "--mode", choices=MODES, default="stored",
        help=("stored (default): upload the stored iterates; the contract checks their fixed-point combination, "
              "bounds, θ² and stop decisions exactly. solve: each prosumer solves its subproblem again from the "
              "chain (independent agents), compared within the solver's tolerance"),
    )  # fmt: skip
    ap.add_argument(
        "--coordination", choices=COORDINATIONS, default="full",
        help=("full (default): every upload on chain, the paper's coordinator. commit: the iterations off chain, one "
              "Merkle commitment per MPC step, every leaf re-executed against the chain's roots"),
    )  # fmt: skip
    ap.add_argument("--challenge", action="store_true", help="commit: prove a wrong leaf on chain (slashes its bond)")
    ap.add_argument(
        "--contract", metavar="ADDRESS",
        help=("commit: check the commitments already posted to the commit coordinator at ADDRESS (on --chain rpc "
              "--url URL) against the records kept in the store, instead of replaying; no key needed unless "
              "--challenge"),
    )  # fmt: skip
    ap.add_argument("--out", help="report directory (default: audit-<cell>-s<sample>-r<risk>-<mode>)")
    ap.add_argument("--no-receipt", action="store_true", help="do not append a receipt to the store (read-only store)")
    ap.add_argument("--quiet", action="store_true", help="no progress bar")
    return ap


def main(argv: list[str] | None = None) -> int:
    """`ecjax audit`: 0 verified, 1 not verified, 2 bad input, 3 chain failure."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["audit"]:
        argv = argv[1:]
    ap = _parser()
    try:
        args = ap.parse_args(argv)
    except SystemExit as e:
        return int(e.code or 0) if e.code in (0, None) else 2
    err = _check_args(args)
    if err:
        print(f"ecjax audit: error: {err}", file=sys.stderr)
        return 2
    from ecjax import store as store_mod
    from ecjax.config import ConfigError
    from ecjax.store import StoreError

    if args.contract:
        return _main_contract(args)
    try:
        traj, summ, inputs, cell = load_cell_sample(args.store, args.cell, args.sample, args.risk)
        earlier = store_mod.audits(args.store, args.cell)
        if not args.quiet:
            print(f"ecjax audit: cell {args.cell}, sample {args.sample}, δ = {args.risk:g}: run again from the "
                  "stored config", file=sys.stderr)  # fmt: skip
        origin = origin_in_background(cell, args.sample, args.risk)
    except (SampleError, StoreError, ConfigError) as e:
        print(f"ecjax audit: error: {e}", file=sys.stderr)
        return 2
    if not args.quiet:
        kind = chain_settings(inputs, kind=args.chain)["kind"]
        print(f"ecjax audit: replay on {kind} ({args.mode} mode), beside the run", file=sys.stderr)
    try:
        report = audit_loaded(
            traj, summ, inputs, args.cell, chain=args.chain, url=args.url, key_env=args.key_env,
            keystore=args.keystore, password_env=args.password_env, mode=args.mode, progress=not args.quiet,
            origin=origin, earlier=earlier, coordination=args.coordination, challenge=args.challenge,
        )  # fmt: skip
    except (SampleError, StoreError, ConfigError) as e:
        try:
            origin = resolve_origin(origin)
        except (SampleError, StoreError, ConfigError) as e2:
            print(f"ecjax audit: error: {e2}", file=sys.stderr)
            return 2
        if not isinstance(e, SampleError):
            print(f"ecjax audit: error: {e}", file=sys.stderr)
            return 2
        if origin.differences:  # the stored sample is not the config's run; no replay of it either
            print(f"ecjax audit: the replay on chain cannot run: {e}", file=sys.stderr)
            print(f"not verified: first difference: {origin.differences[0].describe()}")
            return 1
        print(f"ecjax audit: error: {e}", file=sys.stderr)
        return 2
    except (KeyError, ValueError, ConnectionError, TimeoutError, RuntimeError, OSError) as e:
        print(f"ecjax audit: chain error: {e}", file=sys.stderr)
        return 3
    suffix = "-commit" if args.coordination == "commit" else ""
    out = Path(args.out or f"audit-{args.cell}-s{args.sample}-r{args.risk:g}-{args.mode}{suffix}")
    if not args.no_receipt:
        keep_records(args.store, args.cell, report)
    pj, pm = report.write(out)
    print(report.summary_line())
    print(f"report: {pj} {pm}")
    if not args.no_receipt:
        try:
            print(f"receipt: {store_mod.add_audit(args.store, args.cell, report.receipt())}")
        except (OSError, StoreError) as e:
            print(f"ecjax audit: warning: no receipt written to the store ({e})", file=sys.stderr)
    return 0 if report.verified else 1


def _main_contract(args) -> int:
    """`ecjax audit --coordination commit --contract ADDRESS`: the commitments on chain checked
    against the store's records (`audit_commitments`); report `commitments.json` in --out."""
    import json

    from ecjax.config import ConfigError
    from ecjax.store import StoreError

    try:
        check = audit_commitments(
            args.store, args.cell, args.sample, args.risk, args.contract, url=args.url, key_env=args.key_env,
            keystore=args.keystore, password_env=args.password_env, challenge=args.challenge,
        )  # fmt: skip
    except NotCommitCoordinator as e:
        print(f"ecjax audit: error: --contract: {e}", file=sys.stderr)
        return 2
    except (SampleError, StoreError, ConfigError) as e:
        print(f"ecjax audit: error: {e}", file=sys.stderr)
        return 2
    except (KeyError, ValueError, ConnectionError, TimeoutError, RuntimeError, OSError) as e:
        print(f"ecjax audit: chain error: {e}", file=sys.stderr)
        return 3
    out = Path(args.out or f"audit-{args.cell}-s{args.sample}-r{args.risk:g}-commitments")
    out.mkdir(parents=True, exist_ok=True)
    path = out / "commitments.json"
    path.write_text(json.dumps(check.to_dict(), indent=2, sort_keys=True, default=str) + "\n")
    n = len(check.steps)
    if check.verified:
        print(f"verified: {n} step commitments at {check.address} (chain {check.chain_id}) are the store's records; "
              "every leaf re-executed")  # fmt: skip
    else:
        print(f"not verified: first problem: {check.first_problem()}")
    for note in check.notes:
        print(f"note: {note}")
    print(f"report: {path}")
    return 0 if check.verified else 1


def _check_args(args) -> str | None:
    if not 0.0 < args.risk <= 0.5:
        return f"--risk must be in (0, 0.5], got {args.risk}."
    if args.sample < 0:
        return f"--sample must be >= 0, got {args.sample}."
    if args.chain == "rpc" and not args.url:
        return "--url is required with --chain rpc."
    if args.keystore and not Path(args.keystore).is_file():
        return f"--keystore {args.keystore!r} is not a file."
    if args.chain not in (None, "rpc") and (args.url or args.key_env or args.keystore):
        return f"--url/--key-env/--keystore apply to --chain rpc only, not {args.chain}."
    if args.challenge and args.coordination != "commit":
        return "--challenge applies to --coordination commit only."
    if args.contract is not None:
        from web3 import Web3

        if args.coordination != "commit":
            return "--contract applies to --coordination commit only."
        if not Web3.is_address(args.contract):
            return f"--contract {args.contract!r} is not an address."
        if args.chain != "rpc":
            return "--contract needs --chain rpc --url URL (the chain that holds the contract)."
    return None


if __name__ == "__main__":
    sys.exit(main())
