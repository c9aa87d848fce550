"""Commit-and-challenge coordination: the negotiation off chain, one Merkle root per MPC step.

The prosumers run the FC-MPC iterations of a step among themselves (`Channel`: any transport
that delivers every prosumer's message of an iteration to every prosumer; `LocalChannel` in
process) and each computes what the paper's contract would: the committed iterates, θ² and the
stop decision, with the same integers (`OffChainNegotiation`, on the contract's `Mirror`). After
the step one prosumer posts its commitment to `FCMPCCommitCoordinator` with a bond: the root of
the step's leaves and the iteration at which it stopped (`StepRecord`):

- leaf (p, i) at position p·P + i, p = 0..lastP: `Leaf` (the uploaded vector u_i^{p,*}, the
  islanded plan at p = 0, and the committed iterate u_i^p as keccak256 of their packed bytes,
  θ_i², the iteration's max θ² and stop decision; the measured state at p = 0);
- applied leaf at (lastP + 1)·P + i: the applied first inputs of prosumer i (lane k = 0 of each
  block of u_i^lastP, n + 3 values);
- zero leaves up to a power of two.

During the challenge window anyone holding the step's data (`StepRecord`, kept in the results
store for audited samples) re-executes every leaf with the contract's arithmetic
(`find_frauds`) and proves a wrong one on chain (`CommitCoordinator.challenge`): the contract
re-executes that leaf with the code of the paper's contract and slashes the committer's bond.
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path
from typing import Any, Protocol, Sequence

import numpy as np
from eth_abi import encode as abi_encode
from eth_utils import keccak

from ecjax.chain import fixedpoint as fp
from ecjax.chain.client import COMMIT_ARTIFACT, Chain, CoordinatorError, DeployedCoordinator, _hex
from ecjax.chain.config import CoordinatorConfig
from ecjax.chain.mirror import Mirror, StepNegotiation, initial_data

ZERO32 = b"\x00" * 32
LEAF_TYPES = ("uint32", "uint32", "uint32", "int32", "int32", "uint256", "uint256", "bool", "bytes32", "bytes32")
FRAUDS = ("none", "combination", "bounds", "theta", "stop", "applied", "malformed")  # contract's `Fraud`
CHALLENGES = {"combination": "update", "bounds": "update", "theta": "update", "malformed": "update",
              "stop": "iteration", "applied": "applied"}  # fmt: skip
DEFAULT_BOND = 10**17  # wei per commitment (see contracts/README.md: what a bond must cover)
DEFAULT_CHALLENGE_BOND = 10**16  # wei staked by a challenger


# ------------------------------------------------------------------ leaves and the tree


@dataclasses.dataclass(frozen=True)
class Leaf:
    """Iteration leaf (p, i) of step t, as the contract's `Leaf` struct."""

    t: int
    p: int
    i: int
    eb: int
    eev: int
    theta2: int
    max_theta2: int
    stop: bool
    u_star_hash: bytes
    iterate_hash: bytes

    def as_tuple(self) -> tuple:
        return (self.t, self.p, self.i, self.eb, self.eev, int(self.theta2), int(self.max_theta2), bool(self.stop),
                self.u_star_hash, self.iterate_hash)  # fmt: skip

    def hash(self) -> bytes:
        """keccak256(abi.encode(leaf)), the contract's `leafHash`."""
        return keccak(abi_encode(LEAF_TYPES, self.as_tuple()))


def applied_hash(t: int, i: int, applied: bytes) -> bytes:
    """The contract's `appliedLeaf`: keccak256(abi.encode(t, i, keccak256(applied)))."""
    return keccak(abi_encode(["uint32", "uint32", "bytes32"], [t, i, keccak(applied)]))


def depth(n_leaves: int) -> int:
    """Depth of a tree of `n_leaves` leaves padded to a power of two."""
    d = 0
    while (1 << d) < n_leaves:
        d += 1
    return d


class MerkleTree:
    """Binary keccak256 tree, leaves at fixed positions, padded with zero leaves; a node is
    keccak256(left ‖ right)."""

    def __init__(self, leaves: Sequence[bytes]):
        d = depth(len(leaves))
        level = list(leaves) + [ZERO32] * ((1 << d) - len(leaves))
        self.levels = [level]
        while len(level) > 1:
            level = [keccak(level[k] + level[k + 1]) for k in range(0, len(level), 2)]
            self.levels.append(level)

    @property
    def root(self) -> bytes:
        return self.levels[-1][0]

    def proof(self, index: int) -> list[bytes]:
        """Sibling hashes from the leaf up (the contract's `proof`)."""
        out = []
        for level in self.levels[:-1]:
            out.append(level[index ^ 1])
            index >>= 1
        return out


# ------------------------------------------------------------------ a step's data


@dataclasses.dataclass
class StepRecord:
    """What a step's commitment commits to: every iteration's vectors and numbers, and the
    applied first inputs. Honest records come from the negotiation (`from_negotiation`); the
    fields are the committed data whatever they are, so a wrong one is what a challenge proves.

    Shapes: `u_star`, `u_iter` [lastP + 1, P, nu]; `theta2` [lastP + 1][P] and `max_theta2`
    [lastP + 1] Python integers; `stop` [lastP + 1]; `eb`, `eev` [P]; `applied` [P, n + 3].
    """

    t: int
    last_p: int
    u_star: np.ndarray
    u_iter: np.ndarray
    theta2: list[list[int]]
    max_theta2: list[int]
    stop: list[bool]
    eb: np.ndarray
    eev: np.ndarray
    applied: np.ndarray

    @property
    def n_prosumers(self) -> int:
        return int(self.u_star.shape[1])

    @classmethod
    def from_negotiation(cls, step: StepNegotiation, N: int) -> "StepRecord":
        """The record of a negotiated step (`Mirror` record). A prosumer without an upload at
        p >= 1 re-sent its iterate (combine(u, u) = u, θ = 0); without one at p = 0 it holds the
        zero plan, as in the paper's contract."""
        its = [it for it in step.iterations if it.closed]
        P, nu = its[0].committed.shape
        last = len(its) - 1
        u_star = np.zeros((last + 1, P, nu), dtype=np.int64)
        u_iter = np.zeros((last + 1, P, nu), dtype=np.int64)
        for p, it in enumerate(its):
            u_iter[p] = it.committed
            for i in range(P):
                u_star[p, i] = it.uploads[i] if i in it.uploads else (u_iter[p - 1, i] if p else 0)
        states = [step.states.get(i, (0, 0)) for i in range(P)]
        return cls(
            t=int(step.t), last_p=last, u_star=u_star, u_iter=u_iter,
            theta2=[[int(it.theta2.get(i, 0)) for i in range(P)] for it in its],
            max_theta2=[int(it.max_theta2) for it in its], stop=[bool(it.terminated) for it in its],
            eb=np.array([s[0] for s in states], dtype=np.int64), eev=np.array([s[1] for s in states], dtype=np.int64),
            applied=u_iter[last][:, ::N].copy(),
        )  # fmt: skip

    def copy(self) -> "StepRecord":
        return StepRecord(
            t=self.t, last_p=self.last_p, u_star=self.u_star.copy(), u_iter=self.u_iter.copy(),
            theta2=[list(r) for r in self.theta2], max_theta2=list(self.max_theta2), stop=list(self.stop),
            eb=self.eb.copy(), eev=self.eev.copy(), applied=self.applied.copy(),
        )  # fmt: skip

    # ---------------------------------------------------------- leaves
    def leaf(self, p: int, i: int) -> Leaf:
        return Leaf(
            t=self.t, p=p, i=i, eb=int(self.eb[i]) if p == 0 else 0, eev=int(self.eev[i]) if p == 0 else 0,
            theta2=self.theta2[p][i], max_theta2=self.max_theta2[p], stop=self.stop[p],
            u_star_hash=keccak(fp.pack(self.u_star[p, i])), iterate_hash=keccak(fp.pack(self.u_iter[p, i])),
        )  # fmt: skip

    def applied_bytes(self, i: int) -> bytes:
        return fp.pack(self.applied[i])

    @functools.cached_property
    def tree(self) -> MerkleTree:
        P = self.n_prosumers
        leaves = [self.leaf(p, i).hash() for p in range(self.last_p + 1) for i in range(P)]
        leaves += [applied_hash(self.t, i, self.applied_bytes(i)) for i in range(P)]
        return MerkleTree(leaves)

    @property
    def root(self) -> bytes:
        return self.tree.root

    def proof(self, p: int, i: int) -> list[bytes]:
        return self.tree.proof(p * self.n_prosumers + i)

    def applied_proof(self, i: int) -> list[bytes]:
        return self.tree.proof((self.last_p + 1) * self.n_prosumers + i)

    # ---------------------------------------------------------- storage
    def to_arrays(self) -> dict[str, np.ndarray]:
        """Arrays for `np.savez` (θ² as decimal strings: they may exceed 64 bits)."""
        return dict(
            t=np.array(self.t), last_p=np.array(self.last_p), u_star=self.u_star, u_iter=self.u_iter,
            theta2=np.array([[str(v) for v in r] for r in self.theta2]),
            max_theta2=np.array([str(v) for v in self.max_theta2]), stop=np.array(self.stop, dtype=bool),
            eb=self.eb, eev=self.eev, applied=self.applied,
        )  # fmt: skip

    @classmethod
    def from_arrays(cls, a: dict) -> "StepRecord":
        return cls(
            t=int(a["t"]), last_p=int(a["last_p"]), u_star=np.asarray(a["u_star"], dtype=np.int64),
            u_iter=np.asarray(a["u_iter"], dtype=np.int64), theta2=[[int(v) for v in r] for r in a["theta2"]],
            max_theta2=[int(v) for v in a["max_theta2"]], stop=[bool(v) for v in a["stop"]],
            eb=np.asarray(a["eb"], dtype=np.int64), eev=np.asarray(a["eev"], dtype=np.int64),
            applied=np.asarray(a["applied"], dtype=np.int64),
        )  # fmt: skip


# ------------------------------------------------------------------ checking a record


@dataclasses.dataclass(frozen=True)
class Fraud:
    """A wrong leaf: `kind` one of FRAUDS[1:], at iteration `p` and prosumer `i` (None: the
    whole iteration), and why."""

    t: int
    kind: str
    p: int
    i: int | None
    detail: str = ""

    def describe(self) -> str:
        who = f"iteration {self.p}" + ("" if self.i is None else f", prosumer {self.i}")
        return f"step {self.t}, {who}: {self.kind} ({self.detail})"


def find_frauds(rec: StepRecord, mirror: Mirror) -> list[Fraud]:
    """Re-execute every leaf of `rec` as the contract's challenges do, with the contract's
    integers (`fixedpoint`, `mirror`: bounds, w, κ², p_max). Returns every wrong leaf, per leaf
    the first of: malformed, bounds, combination, θ; then per iteration the stop rule; then the
    applied inputs. An honest record gives []."""
    out: list[Fraud] = []
    P, nu = rec.n_prosumers, mirror.nu
    for p in range(rec.last_p + 1):
        for i in range(P):
            a = rec.u_star[p, i]
            hi = mirror.block_bounds(i, p)
            prev = rec.u_iter[p - 1, i] if p else None
            bad = np.flatnonzero((a < 0) | (a > hi)) if a.shape == (nu,) else None
            if a.shape != (nu,) or rec.u_iter[p, i].shape != (nu,):
                out.append(Fraud(rec.t, "malformed", p, i, "a vector without nu values"))
            elif bad.size:
                k = int(bad[0])
                out.append(Fraud(rec.t, "bounds", p, i, f"value {k} = {int(a[k])} outside [0, {int(hi[k])}]"))
            else:
                c = a if p == 0 else fp.combine(a, prev, mirror.w_num, mirror.w_den)
                th2 = 0 if p == 0 else fp.theta2(c, prev)
                if not np.array_equal(c, rec.u_iter[p, i]):
                    k = int(np.flatnonzero(c != rec.u_iter[p, i])[0])
                    out.append(Fraud(rec.t, "combination", p, i, f"value {k} committed {int(rec.u_iter[p, i, k])}, "
                                                                  f"the combination gives {int(c[k])}"))  # fmt: skip
                elif th2 != rec.theta2[p][i]:
                    out.append(Fraud(rec.t, "theta", p, i, f"θ² committed {rec.theta2[p][i]}, recomputed {th2}"))
        m = max(rec.theta2[p])
        rule = p == mirror.p_max or (p != 0 and m <= mirror.kappa2)
        if rule != (p == rec.last_p) or rec.max_theta2[p] != m or rec.stop[p] != rule:
            out.append(Fraud(rec.t, "stop", p, None, f"max θ² {m}, committed {rec.max_theta2[p]}; the stop rule "
                                                     f"says {'stop' if rule else 'go on'}, the step stopped at "
                                                     f"{rec.last_p}, the leaves say {rec.stop[p]}"))  # fmt: skip
    N = mirror.N
    for i in range(P):
        want = rec.u_iter[rec.last_p, i][::N]
        if rec.applied[i].shape != want.shape:
            out.append(Fraud(rec.t, "malformed", rec.last_p, i, "applied inputs without n + 3 values"))
        elif not np.array_equal(rec.applied[i], want):
            k = int(np.flatnonzero(rec.applied[i] != want)[0])
            out.append(Fraud(rec.t, "applied", rec.last_p, i, f"applied value {k} is {int(rec.applied[i, k])}, "
                                                              f"the final iterate's first input {int(want[k])}"))  # fmt: skip
    return out


def plant_fraud(rec: StepRecord, kind: str, mirror: Mirror) -> tuple[StepRecord, int, int | None]:
    """A dishonest committer's record (tests, benchmarks, demonstrations): a copy of `rec` with
    one wrong leaf of `kind` (combination, bounds, bounds0 (a trade at p = 0), theta, stop (a
    premature stop at p = 2), applied), at iteration min(2, lastP) and prosumer 1. Returns
    (record, p, i) of the leaf or iteration (i None) it is in."""
    bad = rec.copy()
    p, i = min(2, rec.last_p), 1
    if kind == "combination":  # committed iterate one unit off the combination
        bad.u_iter[p, i, 3] += 1
    elif kind == "bounds":  # an optimum above the prosumer's bound, combined as if it were fine
        hi = mirror.block_bounds(i, p)
        bad.u_star[p, i, 0] = hi[0] + 1000
        bad.u_iter[p, i] = fp.combine(bad.u_star[p, i], bad.u_iter[p - 1, i], mirror.w_num, mirror.w_den)
        bad.theta2[p][i] = fp.theta2(bad.u_iter[p, i], bad.u_iter[p - 1, i])
    elif kind == "bounds0":  # a trade at p = 0
        p = 0
        hi = mirror.block_bounds(i, 1)
        bad.u_star[0, i, -1] = bad.u_iter[0, i, -1] = min(1000, int(hi[-1]))
    elif kind == "theta":
        bad.theta2[p][i] -= 1
    elif kind == "stop":  # stopped at p although max θ > κ
        assert rec.last_p > p and rec.max_theta2[p] > mirror.kappa2
        bad = StepRecord(
            t=rec.t, last_p=p, u_star=rec.u_star[: p + 1].copy(), u_iter=rec.u_iter[: p + 1].copy(),
            theta2=[list(r) for r in rec.theta2[: p + 1]], max_theta2=list(rec.max_theta2[: p + 1]),
            stop=list(rec.stop[:p]) + [True], eb=rec.eb.copy(), eev=rec.eev.copy(),
            applied=rec.u_iter[p][:, :: mirror.N].copy(),
        )  # fmt: skip
        i = None
    elif kind == "applied":
        p = rec.last_p
        bad.applied[i, 0] += 1
    else:
        raise ValueError(kind)
    return bad, p, i


# ------------------------------------------------------------------ off-chain negotiation


class Channel(Protocol):
    """How the prosumers exchange an iteration's messages off chain. A message is bytes: at
    p = 0 `int32 eb ‖ int32 eev ‖ u^0`, at p >= 1 `u^{p,*}` (big-endian int32 lanes, the data
    the paper's contract hashes into its chain). A network transport implements the same two
    calls; `collect` returns what every prosumer received (the same for all)."""

    def publish(self, t: int, p: int, sender: int, data: bytes) -> None: ...

    def collect(self, t: int, p: int) -> dict[int, bytes]: ...


class LocalChannel:
    """In-process `Channel`: a dictionary of the messages of every (t, p)."""

    def __init__(self):
        self._box: dict[tuple[int, int], dict[int, bytes]] = {}

    def publish(self, t: int, p: int, sender: int, data: bytes) -> None:
        box = self._box.setdefault((t, p), {})
        if sender in box:
            raise ValueError(f"prosumer {sender} already sent its message of step {t} iteration {p}.")
        box[sender] = bytes(data)

    def collect(self, t: int, p: int) -> dict[int, bytes]:
        return dict(self._box.pop((t, p), {}))


class OffChainNegotiation:
    """The iterations of the paper's contract run by the prosumers themselves: messages through
    `channel`, the state machine and the integers of `mirror` (the contract's mirror)."""

    def __init__(self, mirror: Mirror, channel: Channel | None = None):
        self.mirror = mirror
        self.channel = channel if channel is not None else LocalChannel()

    def send_initial(self, i: int, t: int, eb: int, eev: int, u) -> None:
        self.channel.publish(t, 0, i, initial_data(int(eb), int(eev), fp.pack(u)))

    def send(self, i: int, t: int, p: int, u_star) -> None:
        self.channel.publish(t, p, i, fp.pack(u_star))

    def close(self, t: int, p: int):
        """Apply the messages of iteration (t, p) in prosumer order and close it; returns the
        closed `IterationRecord`."""
        m, nu = self.mirror, self.mirror.nu
        for i, data in sorted(self.channel.collect(t, p).items()):
            if p == 0:
                head = fp.unpack(data[:8])
                m.initial(i, t, int(head[0]), int(head[1]), fp.unpack(data[8:], nu))
            else:
                m.upload(i, t, p, fp.unpack(data, nu))
        if (m.t, m.p) == (t, p):  # someone was missing: closed as after the deadline
            m.close()
        return [it for s in m.steps if s.t == t for it in s.iterations if it.p == p][-1]

    def record(self, t: int) -> StepRecord:
        step = next(s for s in self.mirror.steps if s.t == t)
        return StepRecord.from_negotiation(step, self.mirror.N)


# ------------------------------------------------------------------ the contract


@dataclasses.dataclass(frozen=True)
class ChallengeResult:
    t: int
    challenge: str  # update | iteration | applied
    fraud: str  # what the contract found ("none": the challenge failed)
    gas_used: int
    tx_hash: str

    @property
    def slashed(self) -> bool:
        return self.fraud != "none"


class CommitCoordinator(DeployedCoordinator):
    """A deployed `FCMPCCommitCoordinator` and the accounts of its prosumers."""

    ARTIFACT = COMMIT_ARTIFACT

    @classmethod
    def deploy(
        cls,
        chain: Chain,
        config: CoordinatorConfig,
        agents=None,
        *,
        bond: int = DEFAULT_BOND,
        challenge_bond: int = DEFAULT_CHALLENGE_BOND,
        fund_wei: int = 10**19,
    ) -> "CommitCoordinator":
        """Deploy for `config` (its `period_s` is the challenge window) with the bonds in wei."""
        return super().deploy(chain, config, agents, fund_wei=fund_wei, extra_args=(int(bond), int(challenge_bond)))

    def _more_params(self) -> dict[str, Any]:
        f = self.functions
        return dict(bond=f.bond().call(), challenge_bond=f.challengeBond().call())

    # ---------------------------------------------------------- reads
    def commitment(self, t: int) -> dict[str, Any]:
        root, committer, posted, last_p, status = self.functions.commitments(int(t)).call()
        return dict(root=bytes(root), committer=committer, posted_at=posted, last_p=last_p,
                    status=("none", "pending", "final", "slashed")[status])  # fmt: skip

    def next_step(self) -> int:
        return int(self.functions.nextStep().call())

    def head(self) -> bytes:
        """Root of the latest commitment (zero before the first)."""
        n = self.next_step()
        return self.commitment(n - 1)["root"] if n else ZERO32

    def credit(self, address: str) -> int:
        return int(self.functions.credit(address).call())

    # ---------------------------------------------------------- commitments
    def commit(self, rec: StepRecord, k: int, *, sender=None):
        """Prosumer k posts the commitment of `rec` with the bond; returns the receipt."""
        fn = self.functions.commit(int(rec.t), rec.root, int(rec.last_p))
        return self.chain.transact(fn, sender or self._sender(k), value=self.params["bond"])

    def finalize(self, start: int, stop: int, sender=None):
        """Release the bonds of steps [start, stop) past their window (any account)."""
        return self.chain.transact(self.functions.finalize(int(start), int(stop)), sender or self.chain._funder)

    def withdraw(self, sender):
        return self.chain.transact(self.functions.withdraw(), sender)

    # ---------------------------------------------------------- challenges
    def challenge(self, rec: StepRecord, fraud: Fraud, sender) -> ChallengeResult:
        """Prove `fraud` (from `find_frauds` on the data of the commitment `rec`) on chain."""
        kind = CHALLENGES[fraud.kind]
        if kind == "iteration":
            return self.challenge_iteration(rec, fraud.p, sender)
        if kind == "applied":
            return self.challenge_applied(rec, fraud.i, sender)
        return self.challenge_update(rec, fraud.p, fraud.i, sender)

    def challenge_update(self, rec: StepRecord, p: int, i: int, sender) -> ChallengeResult:
        """Re-execute leaf (p, i) on chain from its data and its predecessor (p − 1, i)."""
        leaf = rec.leaf(p, i)
        prev, prev_proof, u_prev = (rec.leaf(p - 1, i), rec.proof(p - 1, i), fp.pack(rec.u_iter[p - 1, i])) if p else (
            leaf, [], b"")  # fmt: skip
        fn = self.functions.challengeUpdate(
            rec.t, leaf.as_tuple(), rec.proof(p, i), prev.as_tuple(), prev_proof, fp.pack(rec.u_star[p, i]), u_prev
        )
        return self._challenge(rec.t, "update", fn, sender)

    def challenge_iteration(self, rec: StepRecord, p: int, sender) -> ChallengeResult:
        """Check iteration p's max θ² and stop decision on chain from its P leaves."""
        P = rec.n_prosumers
        fn = self.functions.challengeIteration(
            rec.t, [rec.leaf(p, i).as_tuple() for i in range(P)], [rec.proof(p, i) for i in range(P)]
        )
        return self._challenge(rec.t, "iteration", fn, sender)

    def challenge_applied(self, rec: StepRecord, i: int, sender) -> ChallengeResult:
        """Check prosumer i's applied inputs against its final committed iterate on chain."""
        q = rec.last_p
        fn = self.functions.challengeApplied(
            rec.t, i, rec.applied_bytes(i), rec.applied_proof(i), rec.leaf(q, i).as_tuple(), rec.proof(q, i),
            fp.pack(rec.u_iter[q, i]),
        )  # fmt: skip
        return self._challenge(rec.t, "applied", fn, sender)

    def _challenge(self, t: int, kind: str, fn, sender) -> ChallengeResult:
        receipt = self.chain.transact(fn, sender, value=self.params["challenge_bond"])
        ev = self.contract.events
        slashed = ev.Slashed().process_receipt(receipt, errors=_DISCARD)
        rejected = ev.ChallengeRejected().process_receipt(receipt, errors=_DISCARD)
        if not slashed and not rejected:
            raise CoordinatorError("NoVerdict", (_hex(receipt["transactionHash"]),))
        fraud = FRAUDS[slashed[0]["args"]["fraud"]] if slashed else "none"
        return ChallengeResult(t, kind, fraud, int(receipt["gasUsed"]), _hex(receipt["transactionHash"]))


def _discard():
    from web3.logs import DISCARD

    return DISCARD


_DISCARD = _discard()


# ------------------------------------------------------------------ data availability


def records_path(store, cell: str, sample: int, risk: float) -> Path:
    """Where the results store keeps the committed data of an audited sample."""
    return Path(store) / "cells" / cell / "commitments" / f"s{int(sample)}-r{float(risk):g}.npz"


def write_records(path: Path, records: Sequence[StepRecord], meta: dict) -> Path:
    """Write every step's record (and `meta`: contract address, chain) atomically to `path`."""
    import io
    import json

    from ecjax.store import _write_atomic

    arrays = {"meta": np.array(json.dumps(meta, sort_keys=True, default=str))}
    for rec in records:
        arrays.update({f"{rec.t}/{k}": v for k, v in rec.to_arrays().items()})
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_atomic(path, buf.getvalue())
    return path


def read_records(path: Path) -> tuple[list[StepRecord], dict]:
    """(records by step, meta) written by `write_records`."""
    import json

    with np.load(path, allow_pickle=False) as z:
        meta = json.loads(str(z["meta"]))
        steps: dict[int, dict] = {}
        for key in z.files:
            if "/" in key:
                t, k = key.split("/", 1)
                steps.setdefault(int(t), {})[k] = z[key]
    return [StepRecord.from_arrays(steps[t]) for t in sorted(steps)], meta


def check_commitments(coord: CommitCoordinator, records: Sequence[StepRecord]) -> list[str]:
    """Compare every record's root and lastP with the commitment on chain; returns the
    differences (a record that is not what was committed cannot be used to challenge)."""
    out = []
    for rec in records:
        c = coord.commitment(rec.t)
        if c["status"] == "none":
            out.append(f"step {rec.t}: no commitment on chain")
        elif c["root"] != rec.root or c["last_p"] != rec.last_p:
            out.append(f"step {rec.t}: the stored data give root 0x{rec.root.hex()[:16]}… (lastP {rec.last_p}), "
                       f"the chain holds 0x{c['root'].hex()[:16]}… (lastP {c['last_p']})")  # fmt: skip
    return out


# ------------------------------------------------------------------ audit


def check_replay(rep, chk, detail: dict, *, challenge: bool = False, challenger=None) -> list[ChallengeResult]:
    """The audit's check of a commit-mode replay (`ecjax.chain.audit`): every step's root and
    lastP on chain against the records the prosumers hold, and every leaf re-executed
    (`find_frauds`). Each problem is a difference of the audit (`chk`), each step checked a note
    in `detail`. With `challenge`, the first wrong leaf of each step is proven on chain by
    `challenger` (default: a fresh account funded by the chain's funder).
    **Returns:** the challenges raised."""
    from ecjax.chain.report import CheckStats, Difference

    coord: CommitCoordinator = rep.coordinator
    ids = list(coord.params["ids"])
    mirror = coord.mirror()
    results: list[ChallengeResult] = []
    for problem in check_commitments(coord, rep.records):
        chk.diffs.append(Difference("commitment", note=problem))
    for rec in rep.records:
        frauds = find_frauds(rec, mirror)
        stats = chk.stats.setdefault("commitment_leaves", CheckStats())
        stats.count += (rec.last_p + 2) * rec.n_prosumers
        stats.failed += len(frauds)
        for f in frauds:
            where = dict(step=rec.t, iteration=f.p, agent=None if f.i is None else ids[f.i])
            chk.diffs.append(Difference("commitment", note=f"wrong leaf: {f.describe()}", **where))
        if frauds and challenge:
            if challenger is None:
                (challenger,) = coord.chain.new_accounts(1, 2 * coord.params["challenge_bond"] + 10**18)
            res = coord.challenge(rec, frauds[0], challenger)
            results.append(res)
            verdict = f"slashed ({res.fraud})" if res.slashed else "not proven"
            detail["notes"].append(f"step {rec.t}: challenged {frauds[0].describe()} on chain: {verdict}, "
                                   f"{res.gas_used} gas, tx {res.tx_hash}")  # fmt: skip
    n = len(rep.records)
    detail["notes"].append(f"commit mode: {n} step commitments on chain checked against the prosumers' records; "
                           f"{sum(1 for d in chk.diffs if d.quantity == 'commitment')} problem(s)")  # fmt: skip
    detail["challenges"] = [dataclasses.asdict(r) for r in results]
    return results
