"""Index maps fixed on the host: x[idx] as strided slices where the indices allow.

A gather runs one element at a time on a CPU. Most index maps of the structured Newton system
and of the bound merge are runs of evenly spaced indices (a time step's columns, one block
column per variable kind, the padding index repeated), read row by row or, for a 2-D map,
column by column. `Take.build` cuts the flattened map into maximal runs

    idx = [s₀, s₀ + σ₀, …, s₀ + (c₀−1)σ₀ | s₁, … ],   x[idx] = concat(x[s₀ :: σ₀][:c₀], …)

(σ = 0: one entry repeated), keeps runs shorter than `MIN_RUN` together as small gathers, and
falls back to one gather when slices would cover less than half of the map.
"""

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Int

MIN_RUN = 4  # shorter runs are gathered


def _runs(f: np.ndarray):
    """Greedy maximal arithmetic runs (start, step >= 0, count) of a flat index vector."""
    out, i, n = [], 0, len(f)
    while i < n:
        j = i + 1
        if j < n and f[j] >= f[i]:
            step = f[j] - f[i]
            while j + 1 < n and f[j + 1] - f[j] == step:
                j += 1
            j += 1
            out.append((int(f[i]), int(step), j - i))
        else:
            out.append((int(f[i]), 0, 1))
        i = j
    return out


def _pieces(f: np.ndarray):
    """(pieces, gathered indices): ("s", start, step, count) slices, ("g", offset, count)
    gathers over the concatenated short runs."""
    pieces, gathered = [], []
    for start, step, count in _runs(f):
        if count >= MIN_RUN:
            pieces.append(("s", start, step, count))
            continue
        run = [start + k * step for k in range(count)]
        if pieces and pieces[-1][0] == "g":
            _, off, c = pieces[-1]
            pieces[-1] = ("g", off, c + count)
        else:
            pieces.append(("g", len(gathered), count))
        gathered.extend(run)
    return pieces, gathered


class Take(eqx.Module):
    """x ↦ x[idx] for a fixed integer array idx (any shape), as strided slices where possible."""

    gathered: Int[Array, " g"] | None  # the indices of the gather pieces, concatenated
    pieces: tuple = eqx.field(static=True)
    shape: tuple = eqx.field(static=True)
    transposed: bool = eqx.field(static=True)  # a 2-D map read column by column

    @staticmethod
    def build(idx) -> "Take":
        idx = np.asarray(idx, np.int64)
        reads = [(idx.reshape(-1), False)] + ([(idx.T.reshape(-1), True)] if idx.ndim == 2 else [])
        # the read with the fewest gathered entries, then the fewest pieces
        pieces, gathered, tr = min((_pieces(f) + (tr,) for f, tr in reads), key=lambda p: (len(p[1]), len(p[0])))
        if len(gathered) * 2 > idx.size or len(pieces) > 64:  # mostly irregular: one gather
            pieces, gathered, tr = (("g", 0, idx.size),), idx.reshape(-1).tolist(), False
        g = jnp.asarray(np.asarray(gathered, np.int32)) if gathered else None
        return Take(g, tuple(pieces), tuple(idx.shape), tr)

    @property
    def is_gather(self) -> bool:
        return len(self.pieces) == 1 and self.pieces[0][0] == "g"

    def __call__(self, x):
        """x[idx] for one vector x."""
        if not self.pieces:  # an empty map
            return jnp.zeros(self.shape, x.dtype)
        parts = []
        for kind, a, b, *c in self.pieces:
            if kind == "g":
                parts.append(x[self.gathered[a : a + b]])
            elif b == 0:
                parts.append(jnp.broadcast_to(x[a : a + 1], (c[0],)))
            else:
                parts.append(x[a : a + b * (c[0] - 1) + 1 : b])
        out = jnp.concatenate(parts) if len(parts) > 1 else parts[0]
        if self.transposed:
            return out.reshape(self.shape[::-1]).T
        return out.reshape(self.shape)
