"""Ruiz equilibration of (P, A), computed once on the host (OSQP §5.1).

The scaled problem is

    P̄ = c D P D,   q̄ = c D q,   Ā = E A D,   lō = E lo,   hī = E hi,

with diagonal D (n) and E (m) from Ruiz iterations on the KKT matrix
[[P, Aᵀ], [A, 0]] and a cost scale c from P alone (q varies per sample, so it
cannot enter a scaling the batch shares). Applying the scaling to one
sample's (q, lo, hi) costs O(n + m). Diagonal P stays diagonal and a
singleton row of A stays a singleton row.
"""

import numpy as np

MIN_SCALING = 1e-4
MAX_SCALING = 1e4


def _limit(v):
    v = np.where(v < MIN_SCALING, 1.0, v)  # OSQP: zero columns are left unscaled
    return np.clip(v, MIN_SCALING, MAX_SCALING)


def ruiz(P: np.ndarray, A: np.ndarray, iters: int = 10):
    """Ruiz equilibration.

    **Arguments:**
    - `P`: (n, n) numpy array, symmetric PSD.
    - `A`: (m, n) numpy array.
    - `iters`: number of Ruiz sweeps (0 disables scaling).

    **Returns:** `(D, E, c)`: column scale (n,), row scale (m,), cost scale (float).
    """
    n, m = P.shape[0], A.shape[0]
    D = np.ones(n)
    E = np.ones(m)
    c = 1.0
    Ps, As = P.copy(), A.copy()
    for _ in range(iters):
        col_x = np.maximum(np.abs(Ps).max(axis=0, initial=0.0), np.abs(As).max(axis=0, initial=0.0))
        col_y = np.abs(As).max(axis=1, initial=0.0)
        dx = 1.0 / np.sqrt(_limit(col_x))
        dy = 1.0 / np.sqrt(_limit(col_y))
        D *= dx
        E *= dy
        Ps = dx[:, None] * Ps * dx[None, :]
        As = dy[:, None] * As * dx[None, :]
    if iters > 0:
        mean_col = np.abs(Ps).max(axis=0, initial=0.0).mean() if n else 0.0
        c = 1.0 / float(_limit(np.array([mean_col]))[0])
    return D, E, c
