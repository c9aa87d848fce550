"""Commit-and-challenge coordination: the negotiation off chain, one Merkle root per MPC step.

The prosumers run the FC-MPC iterations of a step among themselves (`Channel`: any transport
that delivers every prosumer's message of an iteration to every prosumer; `LocalChannel` in
process) and each computes what the paper's contract would: the committed iterates, θ² and the
stop decision, with the same integers (`OffChainNegotiation`, on the contract's `Mirror`). After
the step one prosumer posts its commitment to `FCMPCCommitCoordinator` with a bond: the root of
the step's leaves and the iteration at which it stopped (`StepRecord`):

- leaf (p, i) at position p·P + i, p = 0..lastP: `Leaf` (the uploaded vector u_i^{p,*}, the
  islanded plan at p = 0, and the committed iterate u_i^p as keccak256 of their packed bytes,
  θ_i², the iteration's max θ² and stop decision; the measured state at p = 0; prosumer i's
  signature of its message, `MessageDomain`);
- applied leaf at (lastP + 1)·P + i: the applied first inputs of prosumer i (lane k = 0 of each
  block of u_i^lastP, n + 3 values);
- zero leaves up to a power of two.

During the challenge window anyone holding the step's data (`StepRecord`, kept in the results
store for audited samples) re-executes every leaf with the contract's arithmetic
(`find_frauds`) and proves a wrong one on chain (`CommitCoordinator.challenge`): the contract
re-executes that leaf with the code of the paper's contract and slashes the committer's bond.

Every prosumer signs its own message (EIP-712 typed data bound to the chain, the contract, the
step, the iteration and its index; `MessageDomain`), and every prosumer accepts only messages
signed by their sender. The committer puts each signature in its leaf, so a leaf whose message
its prosumer did not sign is provable fraud, and no prosumer can deny what it sent. A prosumer
that sent nothing has an unsigned leaf holding the contract's default (the zero plan at p = 0,
its previous iterate later).
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path
from typing import Any, Protocol, Sequence

import numpy as np
from eth_abi import encode as abi_encode
from eth_keys import keys as eth_keys
from eth_utils import keccak, to_checksum_address

from ecjax.chain import fixedpoint as fp
from ecjax.chain.client import COMMIT_ARTIFACT, Chain, CoordinatorError, DeployedCoordinator, _hex, load_artifact
from ecjax.chain.config import CoordinatorConfig
from ecjax.chain.mirror import Mirror, StepNegotiation, initial_data

ZERO32 = b"\x00" * 32
LEAF_TYPES = ("uint32", "uint32", "uint32", "int32", "int32", "uint256", "uint256", "bool", "bytes32", "bytes32",
              "uint8", "bytes32", "bytes32")  # fmt: skip
FRAUDS = ("none", "combination", "bounds", "theta", "stop", "applied", "malformed", "signature")  # contract's `Fraud`
CHALLENGES = {"combination": "update", "bounds": "update", "theta": "update", "malformed": "update",
              "signature": "update", "stop": "iteration", "applied": "applied"}  # fmt: skip
SIG_BYTES = 65  # r ‖ s ‖ v; all zero: no message (a silent prosumer)
DEFAULT_BOND = 10**17  # wei per commitment (see contracts/README.md: what a bond must cover)
DEFAULT_CHALLENGE_BOND = 10**16  # wei staked by a challenger


# ------------------------------------------------------------------ prosumer signatures

DOMAIN_NAME, DOMAIN_VERSION = "FCMPCCommitCoordinator", "1"
MESSAGE_TYPE = "Message(uint32 t,uint32 p,uint32 i,int32 eb,int32 eev,bytes u)"
_DOMAIN_TYPEHASH = keccak(text="EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)")
_MESSAGE_TYPEHASH = keccak(text=MESSAGE_TYPE)
_ORDER = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141  # secp256k1
_HALF_ORDER = _ORDER // 2


@dataclasses.dataclass(frozen=True)
class MessageDomain:
    """The EIP-712 domain of a commit coordinator: what a prosumer's signature is bound to (the
    chain and the contract; the message binds the step, the iteration and the prosumer index).
    `digest` is the contract's `messageDigest`, `signer` its `isSigned` check."""

    chain_id: int
    contract: str

    @functools.cached_property
    def separator(self) -> bytes:
        return keccak(abi_encode(
            ["bytes32", "bytes32", "bytes32", "uint256", "address"],
            [_DOMAIN_TYPEHASH, keccak(text=DOMAIN_NAME), keccak(text=DOMAIN_VERSION), int(self.chain_id),
             to_checksum_address(self.contract)],
        ))  # fmt: skip

    def typed_data(self, t: int, p: int, i: int, eb: int, eev: int, u: bytes) -> dict:
        """The message as EIP-712 typed data (what a wallet shows and signs)."""
        field = lambda name, ty: {"name": name, "type": ty}  # noqa: E731
        return {
            "types": {
                "EIP712Domain": [field("name", "string"), field("version", "string"), field("chainId", "uint256"),
                                 field("verifyingContract", "address")],
                "Message": [field("t", "uint32"), field("p", "uint32"), field("i", "uint32"), field("eb", "int32"),
                            field("eev", "int32"), field("u", "bytes")],
            },
            "primaryType": "Message",
            "domain": {"name": DOMAIN_NAME, "version": DOMAIN_VERSION, "chainId": int(self.chain_id),
                       "verifyingContract": to_checksum_address(self.contract)},
            "message": {"t": int(t), "p": int(p), "i": int(i), "eb": int(eb), "eev": int(eev), "u": bytes(u)},
        }  # fmt: skip

    def digest(self, t: int, p: int, i: int, eb: int, eev: int, u_hash: bytes) -> bytes:
        """keccak256(0x1901 ‖ separator ‖ hashStruct(Message)), with keccak256(u) = `u_hash`."""
        sh = keccak(abi_encode(
            ["bytes32", "uint32", "uint32", "uint32", "int32", "int32", "bytes32"],
            [_MESSAGE_TYPEHASH, int(t), int(p), int(i), int(eb), int(eev), bytes(u_hash)],
        ))  # fmt: skip
        return keccak(b"\x19\x01" + self.separator + sh)

    def sign(self, account, t: int, p: int, i: int, eb: int, eev: int, u: bytes) -> bytes:
        """Prosumer i's signature (r ‖ s ‖ v, 65 bytes) of its message with `account` (its key,
        in memory)."""
        sig = account.unsafe_sign_hash(self.digest(t, p, i, eb, eev, keccak(u)))
        return sig.r.to_bytes(32, "big") + sig.s.to_bytes(32, "big") + bytes([sig.v])

    def signer(self, t: int, p: int, i: int, eb: int, eev: int, u_hash: bytes, sig: bytes) -> str | None:
        """The address that signed the message, or None: as the contract's `isSigned`, v must be
        27 or 28 and s in the lower half of the curve order."""
        sig = bytes(sig)
        if len(sig) != SIG_BYTES:
            return None
        r, s_, v = int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:64], "big"), sig[64]
        if v not in (27, 28) or not 0 < s_ <= _HALF_ORDER or not 0 < r < _ORDER:
            return None
        try:
            key = eth_keys.Signature(vrs=(v - 27, r, s_)).recover_public_key_from_msg_hash(
                self.digest(t, p, i, eb, eev, u_hash)
            )
        except Exception:  # no point on the curve for this r: ecrecover returns 0
            return None
        return key.to_checksum_address()


def signature_parts(sig: bytes) -> tuple[int, bytes, bytes]:
    """(v, r, s) of a 65-byte signature r ‖ s ‖ v."""
    sig = bytes(sig)
    return sig[64], sig[:32], sig[32:64]


# ------------------------------------------------------------------ leaves and the tree


@dataclasses.dataclass(frozen=True)
class Leaf:
    """Iteration leaf (p, i) of step t, as the contract's `Leaf` struct; `sig` prosumer i's
    signature of its message (r ‖ s ‖ v; zero: no message)."""

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
    sig: bytes = bytes(SIG_BYTES)

    def as_tuple(self) -> tuple:
        v, r, s = signature_parts(self.sig)
        return (self.t, self.p, self.i, self.eb, self.eev, int(self.theta2), int(self.max_theta2), bool(self.stop),
                self.u_star_hash, self.iterate_hash, v, r, s)  # fmt: skip

    def signed_by(self, domain: MessageDomain) -> str | None:
        """The address that signed this leaf's message, or None (unsigned or invalid)."""
        return domain.signer(self.t, self.p, self.i, self.eb, self.eev, self.u_star_hash, self.sig)

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
    [lastP + 1] Python integers; `stop` [lastP + 1]; `eb`, `eev` [P]; `applied` [P, n + 3];
    `sig` [lastP + 1, P, 65] uint8, each prosumer's signature of its message (zero: none sent).
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
    sig: np.ndarray | None = None

    def __post_init__(self):
        if self.sig is None:
            self.sig = np.zeros(self.u_star.shape[:2] + (SIG_BYTES,), dtype=np.uint8)

    @property
    def n_prosumers(self) -> int:
        return int(self.u_star.shape[1])

    @classmethod
    def from_negotiation(cls, step: StepNegotiation, N: int, sigs: dict | None = None) -> "StepRecord":
        """The record of a negotiated step (`Mirror` record) with the prosumers' signatures
        `sigs` {(p, i): 65 bytes}. A prosumer without an upload at p >= 1 re-sent its iterate
        (combine(u, u) = u, θ = 0); without one at p = 0 it holds the zero plan, as in the
        paper's contract; its leaf is unsigned."""
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
        sig = np.zeros((last + 1, P, SIG_BYTES), dtype=np.uint8)
        for (p, i), b in (sigs or {}).items():
            if p <= last and i in its[p].uploads:
                sig[p, i] = np.frombuffer(bytes(b), dtype=np.uint8)
        return cls(
            t=int(step.t), last_p=last, u_star=u_star, u_iter=u_iter,
            theta2=[[int(it.theta2.get(i, 0)) for i in range(P)] for it in its],
            max_theta2=[int(it.max_theta2) for it in its], stop=[bool(it.terminated) for it in its],
            eb=np.array([s[0] for s in states], dtype=np.int64), eev=np.array([s[1] for s in states], dtype=np.int64),
            applied=u_iter[last][:, ::N].copy(), sig=sig,
        )  # fmt: skip

    def copy(self) -> "StepRecord":
        return StepRecord(
            t=self.t, last_p=self.last_p, u_star=self.u_star.copy(), u_iter=self.u_iter.copy(),
            theta2=[list(r) for r in self.theta2], max_theta2=list(self.max_theta2), stop=list(self.stop),
            eb=self.eb.copy(), eev=self.eev.copy(), applied=self.applied.copy(), sig=self.sig.copy(),
        )  # fmt: skip

    # ---------------------------------------------------------- leaves
    def leaf(self, p: int, i: int) -> Leaf:
        return Leaf(
            t=self.t, p=p, i=i, eb=int(self.eb[i]) if p == 0 else 0, eev=int(self.eev[i]) if p == 0 else 0,
            theta2=self.theta2[p][i], max_theta2=self.max_theta2[p], stop=self.stop[p],
            u_star_hash=keccak(fp.pack(self.u_star[p, i])), iterate_hash=keccak(fp.pack(self.u_iter[p, i])),
            sig=self.sig[p, i].tobytes(),
        )  # fmt: skip

    def sign(self, p: int, i: int, account, domain: MessageDomain) -> None:
        """Put `account`'s signature of leaf (p, i)'s message into the record."""
        leaf = self.leaf(p, i)
        sig = domain.sign(account, self.t, p, i, leaf.eb, leaf.eev, fp.pack(self.u_star[p, i]))
        self.sig[p, i] = np.frombuffer(sig, dtype=np.uint8)

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
            eb=self.eb, eev=self.eev, applied=self.applied, sig=self.sig,
        )  # fmt: skip

    @classmethod
    def from_arrays(cls, a: dict) -> "StepRecord":
        return cls(
            t=int(a["t"]), last_p=int(a["last_p"]), u_star=np.asarray(a["u_star"], dtype=np.int64),
            u_iter=np.asarray(a["u_iter"], dtype=np.int64), theta2=[[int(v) for v in r] for r in a["theta2"]],
            max_theta2=[int(v) for v in a["max_theta2"]], stop=[bool(v) for v in a["stop"]],
            eb=np.asarray(a["eb"], dtype=np.int64), eev=np.asarray(a["eev"], dtype=np.int64),
            applied=np.asarray(a["applied"], dtype=np.int64),
            sig=np.asarray(a["sig"], dtype=np.uint8) if "sig" in a else None,
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


def silent_default(rec: StepRecord, p: int, i: int) -> bool:
    """Whether leaf (p, i) holds what the contract accepts unsigned: at p = 0 the zero plan with
    eb = eev = 0, at p >= 1 the previous committed iterate as the uploaded vector."""
    leaf = rec.leaf(p, i)
    if p == 0:
        return leaf.eb == 0 and leaf.eev == 0 and not np.any(rec.u_star[0, i])
    return leaf.u_star_hash == keccak(fp.pack(rec.u_iter[p - 1, i]))


def signature_problem(rec: StepRecord, p: int, i: int, domain: MessageDomain, address: str) -> str | None:
    """Why leaf (p, i) fails the contract's signature check (prosumer i at `address`), or None."""
    leaf = rec.leaf(p, i)
    if leaf.sig[64] == 0:
        return None if silent_default(rec, p, i) else "no signature, and not a silent prosumer's default"
    who = leaf.signed_by(domain)
    if who is None:
        return "not a valid signature"
    if who.lower() != str(address).lower():
        return f"signed by {who}, not by the prosumer ({address})"
    return None


def find_frauds(rec: StepRecord, mirror: Mirror, domain: MessageDomain | None = None) -> list[Fraud]:
    """Re-execute every leaf of `rec` as the contract's challenges do, with the contract's
    integers (`fixedpoint`, `mirror`: bounds, w, κ², p_max). Returns every wrong leaf, per leaf
    the first of: signature (with `domain` and the prosumers' addresses in `mirror`), malformed,
    bounds, combination, θ; then per iteration the stop rule; then the applied inputs. An honest
    record gives []."""
    out: list[Fraud] = []
    P, nu = rec.n_prosumers, mirror.nu
    check_sigs = domain is not None and mirror.addresses is not None
    for p in range(rec.last_p + 1):
        for i in range(P):
            a = rec.u_star[p, i]
            hi = mirror.block_bounds(i, p)
            prev = rec.u_iter[p - 1, i] if p else None
            bad = np.flatnonzero((a < 0) | (a > hi)) if a.shape == (nu,) else None
            why = signature_problem(rec, p, i, domain, mirror.addresses[i]) if check_sigs else None
            if why is not None:
                out.append(Fraud(rec.t, "signature", p, i, why))
            elif a.shape != (nu,) or rec.u_iter[p, i].shape != (nu,):
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


def plant_fraud(
    rec: StepRecord, kind: str, mirror: Mirror, domain: MessageDomain | None = None, accounts=None
) -> tuple[StepRecord, int, int | None]:
    """A dishonest committer's record (tests, benchmarks, demonstrations): a copy of `rec` with
    one wrong leaf of `kind` (combination, bounds, bounds0 (a trade at p = 0), theta, stop (a
    premature stop at p = 2), applied), at iteration min(2, lastP) and prosumer 1; or, at the
    last iteration, a misreported message with every number recomputed to match it (the leaf is
    consistent but for its signature): `misreport` (the prosumer's signature of its true message
    kept), `unsigned` (no signature), `forged` (signed with another key; needs `domain`),
    `replayed` (the message and signature of the prosumer's previous iteration: the same vector,
    signed for another iteration). With `domain` and the prosumers' `accounts`, a `bounds` or
    `bounds0` message is signed by its prosumer (one that sent a vector outside its bounds).
    Returns (record, p, i) of the leaf or iteration (i None)."""
    bad = rec.copy()
    p, i = min(2, rec.last_p), 1
    if kind in ("misreport", "unsigned", "forged", "replayed"):
        p = rec.last_p
        if kind == "replayed":
            assert p >= 2, "a replayed message needs an earlier optimum (p - 1 >= 1)"
            bad.u_star[p, i] = rec.u_star[p - 1, i]
            bad.sig[p, i] = rec.sig[p - 1, i]
        else:
            hi = mirror.block_bounds(i, p)
            k = 1  # not a first input: the applied inputs stay what they were
            bad.u_star[p, i, k] = rec.u_star[p, i, k] + 1000 if rec.u_star[p, i, k] + 1000 <= hi[k] else 0
        bad.u_iter[p, i] = fp.combine(bad.u_star[p, i], bad.u_iter[p - 1, i], mirror.w_num, mirror.w_den)
        bad.theta2[p][i] = fp.theta2(bad.u_iter[p, i], bad.u_iter[p - 1, i])
        bad.max_theta2[p] = max(bad.theta2[p])
        assert bad.stop[p] == (p == mirror.p_max or bad.max_theta2[p] <= mirror.kappa2), "the stop rule changed"
        assert np.array_equal(bad.applied[i], bad.u_iter[p, i][:: mirror.N]), "the applied inputs changed"
        if kind == "unsigned":
            bad.sig[p, i] = 0
        elif kind == "forged":
            from eth_account import Account

            bad.sign(p, i, Account.create(), domain)
        return bad, p, i
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
            applied=rec.u_iter[p][:, :: mirror.N].copy(), sig=rec.sig[: p + 1].copy(),
        )  # fmt: skip
        i = None
    elif kind == "applied":
        p = rec.last_p
        bad.applied[i, 0] += 1
    else:
        raise ValueError(kind)
    if kind in ("bounds", "bounds0") and domain is not None and accounts is not None:
        bad.sign(p, i, accounts[i], domain)
    return bad, p, i


# ------------------------------------------------------------------ off-chain negotiation


class Channel(Protocol):
    """How the prosumers exchange an iteration's messages off chain. A message is bytes: at
    p = 0 `int32 eb ‖ int32 eev ‖ u^0`, at p >= 1 `u^{p,*}` (big-endian int32 lanes, the data
    the paper's contract hashes into its chain), followed by the sender's 65-byte signature
    (`MessageDomain.sign`). A network transport implements the same two calls; `collect`
    returns what every prosumer received (the same for all)."""

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
    `channel`, the state machine and the integers of `mirror` (the contract's mirror).

    With `domain` (the commit coordinator's, `CommitCoordinator.domain`), each prosumer i signs
    its messages with its key (`accounts[i]`, in memory, or the `account` of a call), and a
    message that does not carry its sender's signature (checked against `mirror.addresses`) is
    not received: its sender counts as silent. Without a domain, messages go unsigned."""

    def __init__(self, mirror: Mirror, channel: Channel | None = None, *, domain: MessageDomain | None = None,
                 accounts=None):  # fmt: skip
        self.mirror = mirror
        self.channel = channel if channel is not None else LocalChannel()
        self.domain = domain
        self.accounts = list(accounts) if accounts is not None else []
        self.sigs: dict[tuple[int, int, int], bytes] = {}  # (t, p, i) -> signature of a received message
        self.refused: list[tuple[int, int, int]] = []  # (t, p, i) of messages without their sender's signature

    def _signature(self, i, t, p, eb, eev, u: bytes, account) -> bytes:
        if self.domain is None:
            return bytes(SIG_BYTES)
        account = account if account is not None else self.accounts[i]
        return self.domain.sign(account, t, p, i, eb, eev, u)

    def send_initial(self, i: int, t: int, eb: int, eev: int, u, account=None) -> None:
        u = fp.pack(u)
        sig = self._signature(i, t, 0, int(eb), int(eev), u, account)
        self.channel.publish(t, 0, i, initial_data(int(eb), int(eev), u) + sig)

    def send(self, i: int, t: int, p: int, u_star, account=None) -> None:
        u = fp.pack(u_star)
        self.channel.publish(t, p, i, u + self._signature(i, t, p, 0, 0, u, account))

    def close(self, t: int, p: int):
        """Apply the messages of iteration (t, p) signed by their senders, in prosumer order, and
        close it; returns the closed `IterationRecord`."""
        m, nu = self.mirror, self.mirror.nu
        for i, msg in sorted(self.channel.collect(t, p).items()):
            data, sig = msg[:-SIG_BYTES], msg[-SIG_BYTES:]
            eb, eev, u = (*(int(v) for v in fp.unpack(data[:8])), data[8:]) if p == 0 else (0, 0, data)
            if self.domain is not None:
                who = self.domain.signer(t, p, i, eb, eev, keccak(u), sig)
                if who is None or m.addresses is None or who.lower() != str(m.addresses[i]).lower():
                    self.refused.append((t, p, i))
                    continue
            if p == 0:
                m.initial(i, t, eb, eev, fp.unpack(u, nu))
            else:
                m.upload(i, t, p, fp.unpack(u, nu))
            self.sigs[(t, p, i)] = bytes(sig) if self.domain is not None else bytes(SIG_BYTES)
        if (m.t, m.p) == (t, p):  # someone was missing: closed as after the deadline
            m.close()
        return [it for s in m.steps if s.t == t for it in s.iterations if it.p == p][-1]

    def record(self, t: int) -> StepRecord:
        step = next(s for s in self.mirror.steps if s.t == t)
        sigs = {(p, i): b for (tt, p, i), b in self.sigs.items() if tt == t}
        return StepRecord.from_negotiation(step, self.mirror.N, sigs)


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


class NotCommitCoordinator(ValueError):
    """An address that holds no `FCMPCCommitCoordinator` (not an address, no contract, or a
    contract with other code)."""


class CommitCoordinator(DeployedCoordinator):
    """A deployed `FCMPCCommitCoordinator` and the accounts of its prosumers."""

    ARTIFACT = COMMIT_ARTIFACT

    @classmethod
    def at(cls, chain: Chain, address: str) -> "CommitCoordinator":
        """The commit coordinator already deployed at `address`, as a watcher sees it (no
        prosumer accounts). Its runtime code must be the committed artifact's, byte for byte
        outside the immutables (the deployment parameters, zero in the artifact); raises
        `NotCommitCoordinator` otherwise."""
        from web3 import Web3

        if not isinstance(address, str) or not Web3.is_address(address):
            raise NotCommitCoordinator(f"{address!r} is not an address.")
        address = to_checksum_address(address)
        code = np.frombuffer(bytes(chain.w3.eth.get_code(address)), dtype=np.uint8)
        if not code.size:
            raise NotCommitCoordinator(f"no contract at {address} on chain {chain.chain_id}.")
        want = np.frombuffer(bytes.fromhex(load_artifact(COMMIT_ARTIFACT)["deployedBytecode"][2:]), dtype=np.uint8)
        if code.size != want.size or np.any((code != want) & (want != 0)):
            raise NotCommitCoordinator(
                f"the contract at {address} on chain {chain.chain_id} is not an FCMPCCommitCoordinator "
                "(its code is not the commit coordinator's)."
            )
        return cls(chain, address)

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

    def domain(self) -> MessageDomain:
        """The EIP-712 domain the prosumers sign their messages in (this chain and contract)."""
        return MessageDomain(self.chain.chain_id, self.address)

    def negotiation(self, channel: Channel | None = None) -> OffChainNegotiation:
        """An off-chain negotiation of this contract's prosumers: its parameters and addresses,
        its domain, and the prosumers' accounts this object holds."""
        return OffChainNegotiation(self.mirror(), channel, domain=self.domain(), accounts=self.agents)

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


def commitment_problem(rec: StepRecord, c: dict) -> str | None:
    """Why the commitment `c` on chain (`CommitCoordinator.commitment`) is not `rec`'s, or None."""
    if c["status"] == "none":
        return f"step {rec.t}: no commitment on chain"
    if c["root"] != rec.root or c["last_p"] != rec.last_p:
        return (f"step {rec.t}: the stored data give root 0x{rec.root.hex()[:16]}… (lastP {rec.last_p}), "
                f"the chain holds 0x{c['root'].hex()[:16]}… (lastP {c['last_p']})")  # fmt: skip
    return None


def check_commitments(coord: CommitCoordinator, records: Sequence[StepRecord]) -> list[str]:
    """Compare every record's root and lastP with the commitment on chain; returns the
    differences (a record that is not what was committed cannot be used to challenge)."""
    problems = (commitment_problem(rec, coord.commitment(rec.t)) for rec in records)
    return [x for x in problems if x is not None]


@dataclasses.dataclass
class OnChainCheck:
    """The check of commitments already on chain against the records a watcher holds
    (`check_onchain`): per step its status and what was found, the problems (records that are
    not what was committed, or a contract that does not commit to the run), the wrong leaves,
    the challenges raised."""

    address: str
    chain_id: int
    steps: list[dict]
    problems: list[str]
    frauds: list[Fraud]
    challenges: list[ChallengeResult]
    notes: list[str]

    @property
    def verified(self) -> bool:
        return not self.problems and not self.frauds

    def first_problem(self) -> str | None:
        if self.problems:
            return self.problems[0]
        return f"wrong leaf: {self.frauds[0].describe()}" if self.frauds else None

    def to_dict(self) -> dict:
        return dict(
            verdict="verified" if self.verified else "not verified", address=self.address, chain_id=self.chain_id,
            steps=self.steps, problems=self.problems, frauds=[dataclasses.asdict(f) for f in self.frauds],
            challenges=[dataclasses.asdict(r) for r in self.challenges], notes=self.notes,
        )  # fmt: skip


def check_onchain(
    coord: CommitCoordinator, records: Sequence[StepRecord], *, challenge: bool = False, challenger=None
) -> OnChainCheck:
    """Check the commitments already posted to `coord` (`CommitCoordinator.at`) against
    `records` (`read_records`): every step's root and lastP, then every leaf of the steps whose
    records are what was committed re-executed (`find_frauds`, signatures included). With
    `challenge`, the first wrong leaf of each step still open to challenges is proven on chain
    by `challenger` (an account or an unlocked address; default: the chain's funder)."""
    mirror, domain = coord.mirror(), coord.domain()
    period, now = int(coord.params["period"]), coord.chain.timestamp()
    problems, frauds, results, notes, steps = [], [], [], [], []
    for rec in records:
        c = coord.commitment(rec.t)
        why = commitment_problem(rec, c)
        found = [] if why is not None else find_frauds(rec, mirror, domain)
        open_until = int(c["posted_at"]) + period if c["status"] == "pending" else None
        steps.append(dict(step=rec.t, status=c["status"], matches=why is None, wrong_leaves=len(found),
                          window_end=open_until, committer=c["committer"]))  # fmt: skip
        if why is not None:
            problems.append(why)
            continue
        frauds += found
        if not (found and challenge):
            continue
        if open_until is None or now > open_until:
            why_not = f"its commitment is {c['status']}" if open_until is None else f"its window closed at {open_until}"
            notes.append(f"step {rec.t}: not challenged ({why_not})")
            continue
        res = coord.challenge(rec, found[0], challenger if challenger is not None else coord.chain._funder)
        results.append(res)
        verdict = f"slashed ({res.fraud})" if res.slashed else "not proven"
        notes.append(f"step {rec.t}: challenged {found[0].describe()} on chain: {verdict}, {res.gas_used} gas, "
                     f"tx {res.tx_hash}")  # fmt: skip
    n = coord.next_step()
    if n > len(records):
        notes.append(f"the contract holds commitments of steps 0..{n - 1}; the records cover {len(records)}")
    return OnChainCheck(coord.address, coord.chain.chain_id, steps, problems, frauds, results, notes)


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
    domain = coord.domain()
    results: list[ChallengeResult] = []
    for problem in check_commitments(coord, rep.records):
        chk.diffs.append(Difference("commitment", note=problem))
    for rec in rep.records:
        frauds = find_frauds(rec, mirror, domain)
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
