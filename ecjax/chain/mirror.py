"""Pure-Python mirror of `FCMPCCoordinator`: the same state machine, the same integers.

Used to rebuild a negotiation from the contract's events (client.Coordinator.history), to predict
what the contract must compute (tests), and later by the replay/audit of stored runs. Time is not
modelled: iterations close when told (`close`) or when the last prosumer uploads.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from eth_abi import encode as abi_encode
from eth_utils import keccak

from ecjax.chain import fixedpoint as fp

ZERO32 = b"\x00" * 32


class ProtocolError(ValueError):
    """An upload the contract would reject; `name` is the contract's custom error."""

    def __init__(self, name: str, message: str = ""):
        super().__init__(f"{name}: {message}" if message else name)
        self.name = name


def chain_step(head: bytes, agent: str, t: int, p: int, data: bytes) -> bytes:
    """One link of the upload hash chain: keccak256(abi.encode(head, agent, t, p, keccak256(data)))."""
    return keccak(abi_encode(["bytes32", "address", "uint32", "uint32", "bytes32"], [head, agent, t, p, keccak(data)]))


def initial_data(eb: int, eev: int, u_packed: bytes) -> bytes:
    """Bytes hashed into the chain for a p = 0 upload: int32 eb | int32 eev | u (big-endian)."""
    return fp.pack([eb, eev]) + bytes(u_packed)


@dataclasses.dataclass
class IterationRecord:
    """One closed (or open) iteration of one step."""

    t: int
    p: int
    uploads: dict[int, np.ndarray]  # prosumer -> uploaded vector (u^0 at p = 0, u^{p,*} otherwise)
    theta2: dict[int, int]  # prosumer -> θ² (uploaders only; 0 for the others)
    committed: np.ndarray  # [n_prosumers, nu] committed iterates after this iteration
    max_theta2: int = 0
    closed: bool = False
    terminated: bool = False
    weighted: bool = False  # optima submitted, combined with proposed weights
    weights: np.ndarray | None = None  # [P] proposed weights q_i (λ_i = q_i / WEIGHT_ONE), if applied
    proposer: int | None = None  # prosumer that proposed them


@dataclasses.dataclass
class StepNegotiation:
    """One MPC step's negotiation: the states uploaded at p = 0 and every iteration of step `t`."""

    t: int
    states: dict[int, tuple[int, int]]  # prosumer -> (eb, eev) fixed point, as uploaded at p = 0
    iterations: list[IterationRecord]

    @property
    def final(self) -> np.ndarray:
        """Committed iterates after the last iteration of the step."""
        return self.iterations[-1].committed


class Mirror:
    """The contract's protocol on integers.

    **Arguments:** `n_prosumers`, `nu`; `w_num`/`w_den`; `kappa2`; `p_max`; optional `bounds`
    (fixed-point (bc, bd, ugb, ev, bt) per prosumer) and `N` to check bounds like the contract;
    optional `addresses` (needed for the hash chain).
    """

    def __init__(self, n_prosumers, nu, w_num, w_den, kappa2, p_max, *, N=None, bounds=None, addresses=None):
        self.n_prosumers, self.nu = int(n_prosumers), int(nu)
        self.w_num, self.w_den = int(w_num), int(w_den)
        self.kappa2, self.p_max = int(kappa2), int(p_max)
        self.N = N
        self.bounds = None if bounds is None else [tuple(int(v) for v in b) for b in bounds]
        self.addresses = None if addresses is None else list(addresses)
        self.t, self.p = 0, 0
        self.committed = np.zeros((self.n_prosumers, self.nu), dtype=np.int64)
        self.head = ZERO32
        self.last_weights: tuple[int, int] | None = None
        self.steps: list[StepNegotiation] = []
        self._open_iteration()

    @classmethod
    def from_config(cls, config, addresses=None) -> "Mirror":
        return cls(
            config.n_prosumers,
            config.nu,
            config.w.numerator,
            config.w.denominator,
            config.kappa2,
            config.p_max,
            N=config.N,
            bounds=config.fixed_bounds(),
            addresses=addresses,
        )

    # -------------------------------------------------------------- state
    @property
    def current(self) -> IterationRecord:
        return self.steps[-1].iterations[-1]

    def _open_iteration(self):
        if self.p == 0:
            self.steps.append(StepNegotiation(t=self.t, states={}, iterations=[]))
        self.steps[-1].iterations.append(
            IterationRecord(t=self.t, p=self.p, uploads={}, theta2={}, committed=self.committed.copy())
        )

    def block_bounds(self, i: int, p: int) -> np.ndarray | None:
        """Per-lane upper bounds of prosumer i at iteration p (trades 0 at p = 0)."""
        if self.bounds is None or self.N is None:
            return None
        bc, bd, ugb, ev, bt = self.bounds[i]
        hi = np.full(self.nu, 0 if p == 0 else bt, dtype=np.int64)
        for k, v in enumerate((bc, bd, ugb, ev)):
            hi[k * self.N : (k + 1) * self.N] = v
        return hi

    def _check(self, i, t, p, u):
        if not 0 <= i < self.n_prosumers:
            raise ProtocolError("NotAgent", f"prosumer {i}")
        if t != self.t or p != self.p:
            raise ProtocolError("WrongRound", f"({t}, {p}) but open is ({self.t}, {self.p})")
        if i in self.current.uploads:
            raise ProtocolError("AlreadyUploaded", f"prosumer {i}")
        if u.shape != (self.nu,):
            raise ProtocolError("BadLength", f"{u.shape} != ({self.nu},)")
        hi = self.block_bounds(i, p)
        lo_bad = np.flatnonzero(u < 0)
        hi_bad = np.flatnonzero(u > hi) if hi is not None else np.array([], dtype=np.int64)
        bad = np.union1d(lo_bad, hi_bad)
        if bad.size:
            raise ProtocolError("OutOfBounds", f"index {int(bad[0])}")

    def _chain(self, i, t, p, data):
        if self.addresses is not None:
            self.head = chain_step(self.head, self.addresses[i], t, p, data)

    # -------------------------------------------------------------- protocol
    def initial(self, i: int, t: int, eb: int, eev: int, u) -> bytes:
        """p = 0 upload; returns the committed hash."""
        u = np.asarray(u, dtype=np.int64)
        self._check(i, t, 0, u)
        self.committed[i] = u
        self.steps[-1].states[i] = (int(eb), int(eev))
        it = self.current
        it.uploads[i] = u.copy()
        it.theta2[i] = 0
        it.committed[i] = u
        packed = fp.pack(u)
        self._chain(i, t, 0, initial_data(eb, eev, packed))
        self._after_upload()
        return keccak(packed)

    def upload(self, i: int, t: int, p: int, u_star) -> tuple[int, bytes]:
        """p >= 1 upload; returns (θ², committed hash)."""
        u_star = np.asarray(u_star, dtype=np.int64)
        if p == 0:
            raise ProtocolError("WrongRound", "p = 0 needs `initial`")
        if (t, p) == (self.t, self.p) and self.current.weighted:
            raise ProtocolError("MixedIteration", f"({t}, {p}) is a weighted iteration")
        self._check(i, t, p, u_star)
        prev = self.committed[i]
        new = fp.combine(u_star, prev, self.w_num, self.w_den)
        th2 = fp.theta2(new, prev)
        self.committed[i] = new
        it = self.current
        it.uploads[i] = u_star.copy()
        it.theta2[i] = th2
        it.committed[i] = new
        it.max_theta2 = max(it.max_theta2, th2)
        self._chain(i, t, p, fp.pack(u_star))
        self._after_upload()
        return th2, keccak(fp.pack(new))

    def submit(self, i: int, t: int, p: int, u_star) -> None:
        """Weighted iteration p >= 1: prosumer i's optimum, checked and recorded, not combined."""
        u_star = np.asarray(u_star, dtype=np.int64)
        if p == 0 or (t, p) != (self.t, self.p):
            raise ProtocolError("WrongRound", f"({t}, {p}) but open is ({self.t}, {self.p})")
        it = self.current
        if it.uploads and not it.weighted:
            raise ProtocolError("MixedIteration", f"({t}, {p}) is a uniform iteration")
        self._check(i, t, p, u_star)
        it.weighted = True
        it.uploads[i] = u_star.copy()
        it.theta2[i] = 0
        self._chain(i, t, p, fp.pack(u_star))

    def propose(self, k: int, t: int, p: int, q) -> tuple[list[int], list[bytes]]:
        """Prosumer k proposes the weights q [P] (λ_i = q_i / WEIGHT_ONE) of the open weighted
        iteration: every submitted optimum is combined with its weight, the others keep their
        iterate; the iteration closes. Returns (θ² per prosumer, committed hash per prosumer)."""
        if not 0 <= k < self.n_prosumers:
            raise ProtocolError("NotAgent", f"prosumer {k}")
        if self.last_weights == (t, p):
            raise ProtocolError("WeightsAlreadyProposed", f"({t}, {p})")
        if p == 0 or (t, p) != (self.t, self.p):
            raise ProtocolError("WrongRound", f"({t}, {p}) but open is ({self.t}, {self.p})")
        it = self.current
        if not it.weighted:
            raise ProtocolError("NoSubmissions", f"({t}, {p})")
        q = np.asarray(q, dtype=np.int64).reshape(-1)
        try:
            fp.check_weights(q, self.n_prosumers)
        except ValueError as e:
            name, _, msg = str(e).partition(": ")
            raise ProtocolError(name, msg) from None
        self.last_weights = (t, p)
        th = [0] * self.n_prosumers
        for i, u_star in it.uploads.items():
            prev = self.committed[i]
            new = fp.combine_weight(u_star, prev, int(q[i]))
            th[i] = fp.theta2(new, prev)
            self.committed[i] = new
            it.committed[i] = new
            it.theta2[i] = th[i]
        it.max_theta2 = max(th)
        it.weights, it.proposer = q.copy(), int(k)
        self._chain(k, t, p, fp.pack(q))
        hashes = [self.committed_hash(i) for i in range(self.n_prosumers)]
        self.close()
        return th, hashes

    def _after_upload(self):
        if len(self.current.uploads) == self.n_prosumers and not self.current.weighted:
            self.close()

    def close(self) -> tuple[int, bool]:
        """Close the open iteration; returns (max θ², terminated)."""
        it = self.current
        done = self.p == self.p_max or (self.p != 0 and it.max_theta2 <= self.kappa2)
        if self.p == 0:
            for i in range(self.n_prosumers):
                if i not in it.uploads:
                    self.committed[i] = 0
                    it.committed[i] = 0
        for i in range(self.n_prosumers):
            it.theta2.setdefault(i, 0)
        it.closed, it.terminated = True, done
        m2 = it.max_theta2
        if done:
            self.t, self.p = self.t + 1, 0
        else:
            self.p += 1
        self._open_iteration()
        return m2, done

    def committed_hash(self, i: int) -> bytes:
        return keccak(fp.pack(self.committed[i]))
