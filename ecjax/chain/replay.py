"""Replay of a stored sample through the FC-MPC coordinator contract (paper Algorithm 2).

For one risk level and one sample, all T steps: deploy `FCMPCCoordinator` with a commitment to
the run's configuration (`coordinator_config`), make one account per prosumer (keys in memory
only), then for every MPC step t

- p = 0: each prosumer uploads its measured state (eb, eev) and its islanded plan u_i^0;
- p >= 1: each prosumer reads the committed iterates of iteration p − 1 on chain (rebuilt from
  the contract's events, decoded from the receipts of the iteration's transactions, and checked
  against the hashes the contract computed, `ChainView`), computes its subproblem optimum
  u_i^{p,*} and uploads it; the contract commits the iterate, computes θ and decides whether the
  step terminates; the agents follow that decision.

`mode="solve"`: each prosumer solves its QP with ecjax from what it read on chain
(`ecjax.chain.agents`; the prosumers' solves of an iteration run as one batched call). `mode="stored"`: the stored iterates are uploaded instead (checks the
protocol and the data alone); if the contract asks for an iteration the stored run did not make,
the stored final iterate is uploaded again (its θ is 0 up to rounding, so the step ends).

The MPC state of every step is the stored plant's measured state (the stored disturbance draw
moved the plant; MODEL §7).

`coordination="commit"`: the commit-and-challenge mode (`ecjax.chain.commit`). The prosumers
run the same iterations off chain (`OffChainNegotiation`: the same integers and decisions) and
prosumer t mod P posts one commitment per step to `FCMPCCommitCoordinator`, with a bond.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from fractions import Fraction
from typing import Any, Iterator

import numpy as np
from eth_account import Account
from eth_utils import keccak
from tqdm.auto import tqdm

from ecjax.chain import fixedpoint as fp
from ecjax.chain.agents import ProsumerSolvers, encode
from ecjax.chain.client import (
    KEY_ENV,
    KEYSTORE_PASSWORD_ENV,
    Chain,
    ChainMismatch,
    Coordinator,
    CoordinatorError,
    History,
    _hex,
)
from ecjax.chain.config import CoordinatorConfig
from ecjax.chain.mirror import Mirror
from ecjax.chain.sample import RunInputs, SampleError, StoredSample, check_compatible
from ecjax.config.groups import CHAIN_KINDS as CHAINS  # the `chain.kind` choices: one list
MODES = ("solve", "stored")
COORDINATIONS = ("full", "commit")


# ------------------------------------------------------------------ chains


@contextlib.contextmanager
def open_chain(
    kind: str = "tester",
    *,
    url: str | None = None,
    key_env: str | None = None,
    keystore: str | None = None,
    password_env: str | None = None,
    require_key: bool = True,
) -> Iterator[Chain]:
    """The chain of an audit: `tester` (embedded, default), `anvil` (started on 127.0.0.1 and
    stopped afterwards) or `rpc` (`url`; the deployer key from the environment variable
    `key_env` or the encrypted `keystore`, whose password is in `password_env`; without
    `require_key` it may be absent, for reading only)."""
    if kind == "tester":
        yield Chain.tester()
    elif kind == "anvil":
        with Chain.anvil() as chain:
            yield chain
    elif kind == "rpc":
        if not url:
            raise ValueError("`chain.url` (--url) is required with chain=rpc.")
        yield Chain.rpc(
            url, key_env=key_env or KEY_ENV, keystore=keystore, password_env=password_env or KEYSTORE_PASSWORD_ENV,
            require_key=require_key,
        )  # fmt: skip
    else:
        raise ValueError(f"`chain.kind` must be one of {CHAINS}, got {kind!r}.")


# ------------------------------------------------------------------ configuration commitment


def _plain(x) -> Any:
    if dataclasses.is_dataclass(x) and not isinstance(x, type):
        return {f.name: _plain(getattr(x, f.name)) for f in dataclasses.fields(x)}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    if hasattr(x, "shape") and hasattr(x, "dtype"):
        return np.asarray(x).tolist()
    if isinstance(x, (np.generic,)):
        return x.item()
    if x is None or isinstance(x, (bool, int, float, str)):
        return x
    return str(x)


def weight(inputs: RunInputs) -> Fraction:
    """The FC-MPC weight w as an exact fraction (MODEL §6: 1/|P| unless configured)."""
    P = len(inputs.community.prosumers)
    w = inputs.fc.w
    return Fraction(1, P) if w is None else Fraction(float(w)).limit_denominator(10**6)


def _optimal(inputs: RunInputs) -> bool:
    return getattr(inputs.fc, "weights", "uniform") == "optimal"


def coordinator_config(
    inputs: RunInputs, delta: float, T: int, *, sample: int | None = None, scale: int = fp.SCALE, period_s: int = 600
) -> CoordinatorConfig:
    """Deployment parameters of a replay; `model` (hashed into `configHash`) holds the community,
    profiles, cost weights, chance-constraint and solver settings, tolerance and p_max."""
    c = inputs.community
    scenario = inputs.options.scenario
    model = {
        "community": _plain(c),
        "profiles": _plain(inputs.profiles),
        "weights": _plain(inputs.weights),
        "solver": _plain(inputs.solver),
        "fcmpc": {"kappa": float(inputs.fc.kappa), "p_max": int(inputs.fc.p_max), "w": _plain(inputs.fc.w),
                  **({"weights": inputs.fc.weights} if _optimal(inputs) else {})},
        "options": _plain(inputs.options),
        "N": int(inputs.N),
        "T": int(T),
        "delta": float(delta),
        "dtype": str(np.dtype(inputs.dtype)),
        "seed": _plain(getattr(inputs, "seed", None)),
        "sample": sample,
    }
    ids = tuple(c.prosumers)
    bounds = [
        tuple(float(np.asarray(getattr(c, f))[i]) for f in ("bc_max", "bd_max", "ugb_max", "ev_max", "bt_max"))
        for i in ids
    ]
    return CoordinatorConfig(
        n=c.n,
        N=int(inputs.N),
        prosumer_ids=ids,
        bounds=bounds,
        w=weight(inputs),
        kappa=float(inputs.fc.kappa),
        p_max=0 if scenario == "islanded" else int(inputs.fc.p_max),
        period_s=int(period_s),
        scale=int(scale),
        model=model,
    )


# ------------------------------------------------------------------ reading the chain


@dataclasses.dataclass(frozen=True)
class ChainIteration:
    """An iteration as every agent reads it on chain."""

    t: int
    p: int
    committed: np.ndarray  # [P, nu] fixed point, after the iteration
    states: dict[int, tuple[int, int]]  # p = 0: prosumer -> (eb, eev) fixed point
    terminated: bool
    weights: np.ndarray | None = None  # weighted iteration: the weights applied (fixed point)


class ChainView:
    """What every agent reads: the committed iterates of the last closed iteration, rebuilt from
    the contract's events and checked against the hashes the contract computed.

    The events of an iteration are decoded from the receipts of its transactions (no scan of
    the chain); each rebuilt iterate is checked against the hash its upload event carries, a
    prosumer without an upload against the hash the contract stores, and the last upload's
    head against the contract's hash chain head (no upload unseen)."""

    def __init__(self, coord: Coordinator):
        self.coord = coord
        q = coord.params
        self.P, self.nu = q["n_prosumers"], q["nu"]
        self.w_num, self.w_den = q["w_num"], q["w_den"]
        self.committed = np.zeros((self.P, self.nu), dtype=np.int64)

    def read(self, t: int, p: int, events, from_block: int | None = None) -> ChainIteration:
        """Iteration (t, p) from `events`, the coordinator events of its transactions (e.g.
        `UploadResult.events`). If none of them closed it (a `closeIteration` by another
        account), its `IterationClosed` is read from the logs since `from_block`."""
        here = lambda e: (e["args"]["t"], e["args"].get("p", 0)) == (t, p)  # noqa: E731
        name = "InitialUploaded" if p == 0 else "Uploaded"
        ups = [e for e in events if e["event"] in (name, "Submitted") and here(e)]
        applied = [e for e in events if e["event"] == "WeightsApplied" and here(e)]
        closed = [e for e in events if e["event"] == "IterationClosed" and here(e)]
        if not closed and from_block is not None:
            ev = self.coord.contract.events.IterationClosed()
            closed = list(ev.get_logs(argument_filters={"t": t, "p": p}, from_block=from_block, to_block="latest"))
        if len(applied) > 1:
            raise ChainMismatch(f"step {t} iteration {p}: {len(applied)} WeightsApplied events.")
        q = fp.unpack(applied[0]["args"]["lam"], self.P) if applied else None
        new = self.committed.copy()
        states = {}
        if p == 0:
            new[:] = 0  # who did not upload gets the zero plan
        hashes = {}  # prosumer -> the hash its event names for the rebuilt iterate
        for e in ups:
            a = e["args"]
            k = a["agent"]
            if p == 0:
                new[k] = fp.unpack(a["u"], self.nu)
                states[k] = (int(a["eb"]), int(a["eev"]))
            elif e["event"] == "Uploaded":
                new[k] = fp.combine(fp.unpack(a["uStar"], self.nu), self.committed[k], self.w_num, self.w_den)
            elif q is not None:  # submitted, combined with the proposed weight
                new[k] = fp.combine_weight(fp.unpack(a["uStar"], self.nu), self.committed[k], int(q[k]))
            if e["event"] != "Submitted":
                hashes[k] = bytes(a["committedHash"])
        if applied:
            hashes.update({k: bytes(h) for k, h in enumerate(applied[0]["args"]["committedHash"])})
        for k in range(self.P):
            want = hashes.get(k)
            if want is not None and keccak(fp.pack(new[k])) != want:
                raise ChainMismatch(f"step {t} iteration {p}: prosumer {k}'s rebuilt iterate differs from its event.")
            if want is None and keccak(fp.pack(new[k])) != self.coord.committed_hash(k):
                raise ChainMismatch(f"step {t} iteration {p}: prosumer {k}'s rebuilt iterate differs from the stored hash.")
        heads = ups + applied
        if heads and bytes(max(heads, key=lambda e: (e["blockNumber"], e["logIndex"]))["args"]["head"]) != self.coord.head():
            raise ChainMismatch(f"step {t} iteration {p}: the contract's hash chain head holds uploads not read.")
        if len(closed) != 1:
            raise ChainMismatch(f"step {t} iteration {p}: expected one IterationClosed event, found {len(closed)}.")
        self.committed = new
        return ChainIteration(
            t=t, p=p, committed=new, states=states, terminated=bool(closed[0]["args"]["terminated"]), weights=q
        )


# ------------------------------------------------------------------ replay


@dataclasses.dataclass(frozen=True)
class TxRecord:
    kind: str  # deploy | fund | initial | upload | submit | weights | commit | refund
    tx_hash: str
    gas_used: int
    block: int
    t: int | None = None
    p: int | None = None
    agent: int | None = None  # prosumer index


@dataclasses.dataclass
class Upload:
    """One agent's upload: where its plan came from and what went on chain."""

    t: int
    p: int
    agent: int  # prosumer index k (community agent `prosumer_ids[k]`)
    source: str  # solved | stored | held (stored final iterate, uploaded past the stored stop)
    plan: np.ndarray  # the real plan before encoding
    outside: float  # kW clipped away to enter the contract's bounds
    tx: TxRecord | None  # None: sent off chain (commit mode)


@dataclasses.dataclass
class Replay:
    """Outcome of a replay. `coordinator` holds the agents' accounts in memory and is never
    serialized."""

    mode: str
    config: CoordinatorConfig
    coordinator: Coordinator
    history: History | None  # None when the events did not rebuild (see `mismatch`)
    mismatch: str | None  # why the replay stopped early or the events did not rebuild
    txs: list[TxRecord]
    uploads: list[Upload]
    qp_status: np.ndarray  # [T] worst subproblem status of the replay's own solves (solve mode)
    seconds: dict[str, float]
    coordination: str = "full"
    records: list = dataclasses.field(default_factory=list)  # commit mode: the steps' `StepRecord`s
    weights: list = dataclasses.field(default_factory=list)  # weighted iterations: `ProposedWeights`


@dataclasses.dataclass(frozen=True)
class ProposedWeights:
    """The weights proposed at iteration p of step t: `reference` λ (reals) as the proposer
    computed it (solve mode: the batch engine's rule, `ecjax.fcmpc.weights`; stored mode: the
    stored run's λ, `lam_trace`), `q` what went on chain (fixed point)."""

    t: int
    p: int
    proposer: int
    reference: np.ndarray
    q: np.ndarray
    source: str  # optimal | stored | held

    @property
    def chain(self) -> Chain:
        return self.coordinator.chain


class FullCoordination:
    """The paper's coordination: every upload is a transaction; what the agents read comes
    back from the contract's events (`ChainView`)."""

    def __init__(self, coord: Coordinator):
        self.coord, self.view = coord, ChainView(coord)
        self._stars: dict[int, np.ndarray] = {}
        self._events: list = []
        self._block: int | None = None

    def send(self, k: int, t: int, p: int, q, state=None) -> TxRecord:
        if p == 0:
            res = self.coord.upload_state(k, t, state[0], state[1], q)
        else:
            res = self.coord.upload(k, t, p, q, self.view.committed[k])
        self._events += res.events
        self._block = res.block if self._block is None else self._block
        return TxRecord("initial" if p == 0 else "upload", res.tx_hash, res.gas_used, res.block, t, p, k)

    def read(self, t: int, p: int) -> ChainIteration:
        events, block = self._events, self._block
        self._events, self._block = [], None
        return self.view.read(t, p, events, block)

    def submit(self, k: int, t: int, p: int, q) -> TxRecord:
        res = self.coord.submit(k, t, p, q)
        self._stars[k] = np.asarray(q)
        self._events += res.events
        self._block = res.block if self._block is None else self._block
        return TxRecord("submit", res.tx_hash, res.gas_used, res.block, t, p, k)

    def propose(self, k: int, t: int, p: int, q) -> TxRecord:
        stars = [self._stars.get(i) for i in range(self.view.P)]
        prevs = [self.view.committed[i] if stars[i] is not None else None for i in range(self.view.P)]
        self._stars = {}
        res = self.coord.propose_weights(k, t, p, q, stars, prevs)
        self._events += res.events
        self._block = res.block if self._block is None else self._block
        return TxRecord("weights", res.tx_hash, res.gas_used, res.block, t, p, k)

    def end_step(self, t: int) -> list[TxRecord]:
        return []

    def history(self) -> History:
        return self.coord.history()


class CommitCoordination:
    """Commit-and-challenge: the iterations off chain (`OffChainNegotiation` over `channel`),
    one commitment per step, posted by prosumer t mod P. `committer(record, mirror)` turns the
    honest record into the one posted (default: itself; a dishonest committer in tests and
    demonstrations), `mirror` holding the contract's parameters."""

    def __init__(self, coord, channel=None, committer=None):
        self.coord = coord
        self.neg = coord.negotiation(channel)  # each prosumer signs its messages
        self.committer = committer
        self.records: list = []

    def send(self, k: int, t: int, p: int, q, state=None) -> None:
        if p == 0:
            self.neg.send_initial(k, t, state[0], state[1], q)
        else:
            self.neg.send(k, t, p, q)

    def read(self, t: int, p: int) -> ChainIteration:
        it = self.neg.close(t, p)
        states = dict(next(s for s in self.neg.mirror.steps if s.t == t).states) if p == 0 else {}
        return ChainIteration(t=t, p=p, committed=it.committed.copy(), states=states, terminated=it.terminated)

    def end_step(self, t: int) -> list[TxRecord]:
        rec = self.neg.record(t)
        if self.committer is not None:
            rec = self.committer(rec, self.neg.mirror)
        self.records.append(rec)
        k = t % self.coord.params["n_prosumers"]
        r = self.coord.commit(rec, k)
        return [TxRecord("commit", _hex(r["transactionHash"]), int(r["gasUsed"]), int(r["blockNumber"]), t, None, k)]

    def history(self) -> History:
        return History(steps=self.neg.mirror.steps, head=self.coord.head(), events=[])


def _fund(chain: Chain, n: int, fund_wei: int | None, per_agent_txs: int) -> tuple[list, list[TxRecord]]:
    if fund_wei is None:
        if chain.kind == "rpc":
            price = int(chain.w3.eth.gas_price)
            fund_wei = 2 * price * 400_000 * per_agent_txs
        else:
            fund_wei = 10**19
    agents = [Account.create() for _ in range(n)]
    txs = []
    for a in agents:
        r = chain.send_value(a.address, fund_wei)
        txs.append(TxRecord("fund", _hex(r["transactionHash"]), int(r["gasUsed"]), int(r["blockNumber"])))
    return agents, txs


def _refund(chain: Chain, agents) -> list[TxRecord]:
    """Send what is left on the agents' accounts back to the funder (public chains)."""
    txs = []
    w3 = chain.w3
    for a in agents:
        base = w3.eth.get_block("latest").get("baseFeePerGas", 0) or 0
        tip = int(w3.eth.max_priority_fee)
        fee = 2 * base + tip
        value = int(w3.eth.get_balance(a.address)) - 21_000 * fee
        if value <= 0:
            continue
        tx = {"to": chain.funder_address, "value": value, "maxFeePerGas": fee, "maxPriorityFeePerGas": tip}
        r = chain._send(tx, a, 21_000)
        txs.append(TxRecord("refund", _hex(r["transactionHash"]), int(r["gasUsed"]), int(r["blockNumber"])))
    return txs


def replay(
    sample: StoredSample,
    inputs: RunInputs,
    chain: Chain,
    mode: str = "solve",
    *,
    scale: int = fp.SCALE,
    period_s: int = 600,
    fund_wei: int | None = None,
    progress: bool = False,
    coordination: str = "full",
    committer=None,
) -> Replay:
    """Replay `sample` (made with `inputs`) through a fresh coordinator on `chain`.

    **Arguments:** `mode` "solve" (agents solve their QPs from the chain) or "stored" (upload
    the stored iterates); `scale` the fixed-point scale; `period_s` the iteration deadline
    (commit mode: the challenge window); `fund_wei` per agent (default: enough for the replay);
    `progress` a tqdm bar on stderr; `coordination` "full" (the paper's: every upload on chain)
    or "commit" (off chain, one commitment per step; `committer` as in `CommitCoordination`).
    **Returns:** a `Replay` (transactions, uploads, the negotiation rebuilt from the events, or
    in commit mode from the off-chain messages, with the committed records).
    """
    if mode not in MODES:
        raise ValueError(f"`mode` must be one of {MODES}, got {mode!r}.")
    if coordination not in COORDINATIONS:
        raise ValueError(f"`coordination` must be one of {COORDINATIONS}, got {coordination!r}.")
    check_compatible(sample, inputs)
    optimal = _optimal(inputs)
    if optimal and coordination == "commit":
        raise SampleError(
            "fcmpc.weights = 'optimal' cannot be replayed in the commit mode: its leaves carry no weights "
            "(FCMPCCommitCoordinator combines with the uniform weight only); use coordination 'full'."
        )
    t_start = time.perf_counter()
    c = inputs.community
    scenario = inputs.options.scenario
    delta = 0.5 if scenario == "dmpc" else sample.risk  # dmpc plans without tightening (MODEL §8)
    T, P = sample.T, len(c.prosumers)
    ids = np.asarray(c.prosumers)
    config = coordinator_config(inputs, sample.risk, T, sample=sample.sample, scale=scale, period_s=period_s)
    bounds = Mirror.from_config(config)
    if coordination == "commit":
        from ecjax.chain.commit import DEFAULT_BOND, CommitCoordinator

        if fund_wei is None and chain.kind == "rpc":  # the bonds of its commitments, and gas
            fund_wei = DEFAULT_BOND * -(-T // P) + 2 * int(chain.w3.eth.gas_price) * 200_000 * T
        agents, txs = _fund(chain, P, fund_wei, T)
        coord = CommitCoordinator.deploy(chain, config, agents)
        net = CommitCoordination(coord, committer=committer)
    else:
        agents, txs = _fund(chain, P, fund_wei, T * (config.p_max + 1))
        coord = Coordinator.deploy(chain, config, agents)
        net = FullCoordination(coord)
    r = coord.deploy_receipt
    txs.insert(0, TxRecord("deploy", _hex(r["transactionHash"]), int(r["gasUsed"]), int(r["blockNumber"])))
    solvers = None
    if mode == "solve":
        solvers = ProsumerSolvers(
            c, inputs.profiles, inputs.weights, inputs.N, inputs.solver, inputs.dtype, inputs.options, delta,
            float(config.w), inputs.fc,
        )  # fmt: skip
    uploads: list[Upload] = []
    qp_status = np.zeros(T, dtype=np.int64)
    t_solve = 0.0
    bar = tqdm(total=T, desc=f"replay ({mode}, {chain.kind})", unit="step", disable=not progress, leave=False)

    proposed: list[ProposedWeights] = []

    def send(t, p, k, plan, source, state=None):
        enc = encode(plan, bounds.block_bounds(k, p), scale)
        tx = net.submit(k, t, p, enc.q) if optimal and p >= 1 else net.send(k, t, p, enc.q, state)
        if tx is not None:
            txs.append(tx)
        uploads.append(Upload(t, p, k, source, np.asarray(plan), enc.outside, tx))
        bar.set_postfix(t=t, p=p, tx=len(txs), refresh=False)  # drawn at tqdm's own pace

    failure = None
    t = p = 0
    try:
        for t in range(T):
            eb, eev = sample.measured_state(t, c)
            eb_q, eev_q = fp.to_fixed(eb[ids], scale), fp.to_fixed(eev[ids], scale)
            plans = None
            if solvers is not None:
                t0 = time.perf_counter()
                eb0 = np.zeros(c.n)
                eev0 = np.zeros(c.n)
                eb0[ids], eev0[ids] = fp.from_fixed(eb_q, scale), fp.from_fixed(eev_q, scale)
                solvers.begin_step(t, eb0, eev0)
                plans = solvers.islanded()  # every prosumer's own solve, one batched call
                t_solve += time.perf_counter() - t0
            stop = int(sample.iters[t])
            for k in range(P):
                if plans is not None:
                    plan, source = plans[k], "solved"
                else:
                    plan, source = sample.u_iter[t, 0, k], "stored"
                send(t, 0, k, plan, source, (int(eb_q[k]), int(eev_q[k])))
            it = net.read(t, 0)
            p = 0
            while not it.terminated:
                p += 1
                shared = fp.from_fixed(it.committed, scale)  # what every agent reads on chain
                if solvers is not None:
                    t0 = time.perf_counter()
                    plans = solvers.cooperative(shared)
                    t_solve += time.perf_counter() - t0
                for k in range(P):
                    if plans is not None:
                        plan, source = plans[k], "solved"
                    elif p <= stop:
                        plan, source = sample.u_star[t, p - 1, k], "stored"
                    else:
                        plan, source = sample.u_iter[t, stop, k], "held"
                    send(t, p, k, plan, source)
                if optimal:  # every optimum is on chain: one prosumer proposes the weights
                    if solvers is not None:
                        lam, src = solvers.optimal_weights(), "optimal"
                    elif p <= stop:
                        lam, src = sample.weights(t, p), "stored"
                    else:
                        lam, src = np.full(P, float(config.w)), "held"
                    q = fp.weights_to_fixed(lam)
                    txs.append(net.propose(t % P, t, p, q))
                    proposed.append(ProposedWeights(t, p, t % P, lam, q, src))
                    if solvers is not None:
                        solvers.apply_weights(q / fp.WEIGHT_ONE)
                it = net.read(t, p)
            txs += net.end_step(t)
            if solvers is not None:
                qp_status[t] = int(solvers.qp_status.max())
                solvers.end_step()
            bar.update(1)
    except (ChainMismatch, CoordinatorError, fp.FixedPointRangeError) as e:  # refused or disagreed: stop
        failure = f"step {t} iteration {p}: {type(e).__name__}: {e}"
    bar.close()
    if chain.kind == "rpc":
        txs += _refund(chain, agents)
    t_chain_end = time.perf_counter()
    history, mismatch = None, failure
    try:
        history = net.history()
    except ChainMismatch as e:
        mismatch = (mismatch + "; " if mismatch else "") + str(e)
    t_end = time.perf_counter()
    seconds = dict(
        replay=t_chain_end - t_start, solve=t_solve, chain=t_chain_end - t_start - t_solve, history=t_end - t_chain_end
    )
    return Replay(
        mode=mode, config=config, coordinator=coord, history=history, mismatch=mismatch, txs=txs,
        uploads=uploads, qp_status=qp_status, seconds=seconds, coordination=coordination,
        records=list(getattr(net, "records", [])), weights=proposed,
    )  # fmt: skip
