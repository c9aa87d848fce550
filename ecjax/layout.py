"""Index layout of the decision vectors (MODEL §2).

One prosumer's decision vector in its FC-MPC subproblem (and, stacked over prosumers in
order, the centralized problem) is made of blocks, each of length N (horizon steps):

    u_i = [bc, bd, ugb, ev, bt[j_0], ..., bt[j_{m-1}]]      inputs, k = 0..N-1
    x_i = [u_i, eb, eev, s_lo, s_hi]                         eb, eev at k = 1..N; slacks k = 1..N

with j_0 < ... < j_{m-1} the other agents (m = n - 1), so `bt` is stored row-major as
`bt[j_idx, k]`. The inputs `u_i` come first: the on-chain coordinator receives exactly that
prefix (MODEL §6: θ is the norm over the inputs).
"""

from __future__ import annotations

import dataclasses

import numpy as np

INPUT_BLOCKS = ("bc", "bd", "ugb", "ev")
STATE_BLOCKS = ("eb", "eev")
SLACK_BLOCKS = ("s_lo", "s_hi")


@dataclasses.dataclass(frozen=True)
class AgentLayout:
    """Slices of one prosumer's decision vector; `n` agents, horizon `N`."""

    n: int
    N: int

    @property
    def m(self) -> int:
        """Number of trade partners (every other agent)."""
        return self.n - 1

    @property
    def nu(self) -> int:
        """Length of the input vector u_i."""
        return (len(INPUT_BLOCKS) + self.m) * self.N

    @property
    def nx(self) -> int:
        """Length of the whole decision vector x_i."""
        return self.nu + (len(STATE_BLOCKS) + len(SLACK_BLOCKS)) * self.N

    def _block(self, b: int) -> slice:
        return slice(b * self.N, (b + 1) * self.N)

    @property
    def bc(self) -> slice:
        return self._block(0)

    @property
    def bd(self) -> slice:
        return self._block(1)

    @property
    def ugb(self) -> slice:
        return self._block(2)

    @property
    def ev(self) -> slice:
        return self._block(3)

    @property
    def bt(self) -> slice:
        """All trades, flat; reshape to (m, N)."""
        return slice(4 * self.N, self.nu)

    @property
    def eb(self) -> slice:
        return slice(self.nu, self.nu + self.N)

    @property
    def eev(self) -> slice:
        return slice(self.nu + self.N, self.nu + 2 * self.N)

    @property
    def s_lo(self) -> slice:
        return slice(self.nu + 2 * self.N, self.nu + 3 * self.N)

    @property
    def s_hi(self) -> slice:
        return slice(self.nu + 3 * self.N, self.nu + 4 * self.N)

    def partners(self, i: int) -> np.ndarray:
        """The agents j != i, in the order of the bt blocks of agent i."""
        return np.array([j for j in range(self.n) if j != i], dtype=np.int64)

    def bt_index(self, i: int, j: int, k: int) -> int:
        """Flat index of bt_{i->j}[k] in agent i's vector."""
        jj = j if j < i else j - 1
        return 4 * self.N + jj * self.N + k
