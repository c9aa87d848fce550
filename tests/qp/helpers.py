"""Planted QPs with known primal-dual solutions (qpax style) for the qp tests.

Pick x*, then for each row an activity (inactive / at lower / at upper /
equality) and a dual y* of matching sign, and derive lo, hi and
q = −P x* − Aᵀ y*. Then (x*, y*) satisfies the KKT conditions exactly.
"""

import numpy as np


def structured_PA(rng, n, m_c, nnz=8, zero_cost_frac=0.2, box_frac=0.7):
    """Diagonal P; A = [one singleton row per variable (and a second for some); m_c coupling rows]."""
    p = rng.uniform(0.1, 2.0, n)
    p[rng.random(n) < zero_cost_frac] = 0.0
    P = np.diag(p)
    rows = []
    for j in range(n):  # simple bounds, scaled arbitrarily
        r = np.zeros(n)
        r[j] = rng.choice([1.0, -2.0, 0.5])
        rows.append(r)
    for j in rng.choice(n, n // 4, replace=False):  # a few second singleton rows
        r = np.zeros(n)
        r[j] = 1.0
        rows.append(r)
    for _ in range(m_c):
        r = np.zeros(n)
        cols = rng.choice(n, nnz, replace=False)
        r[cols] = rng.normal(size=nnz)
        rows.append(r)
    A = np.array(rows)
    return P, A


def dense_PA(rng, n, m, rank=None):
    rank = n if rank is None else rank
    L = rng.normal(size=(n, rank))
    P = L @ L.T / n + (1e-2 * np.eye(n) if rank == n else 0.0)
    A = rng.normal(size=(m, n))
    return P, A


def plant(rng, P, A, eq_rows=None, frac_active=0.3, frac_inf=0.3):
    """One planted instance for (P, A). Returns (q, lo, hi, x*, y*)."""
    m, n = A.shape
    x = rng.normal(size=n)
    Ax = A @ x
    kind = rng.choice(4, size=m, p=[1 - frac_active, frac_active / 2, frac_active / 2, 0.0])
    if eq_rows is not None:
        kind = np.where(eq_rows, 3, kind)
    y = np.zeros(m)
    lo = Ax - rng.uniform(0.1, 2.0, m)
    hi = Ax + rng.uniform(0.1, 2.0, m)
    inact = kind == 0
    lo = np.where(inact & (rng.random(m) < frac_inf), -np.inf, lo)
    hi = np.where(inact & (rng.random(m) < frac_inf), np.inf, hi)
    # at lower: y < 0, lo = Ax (hi may be +inf)
    lo = np.where(kind == 1, Ax, lo)
    hi = np.where((kind == 1) & (rng.random(m) < frac_inf), np.inf, hi)
    y = np.where(kind == 1, -rng.uniform(0.1, 2.0, m), y)
    # at upper: y > 0
    hi = np.where(kind == 2, Ax, hi)
    lo = np.where((kind == 2) & (rng.random(m) < frac_inf), -np.inf, lo)
    y = np.where(kind == 2, rng.uniform(0.1, 2.0, m), y)
    # equality
    lo = np.where(kind == 3, Ax, lo)
    hi = np.where(kind == 3, Ax, hi)
    y = np.where(kind == 3, rng.normal(size=m), y)
    q = -P @ x - A.T @ y
    return q, lo, hi, x, y


def plant_batch(rng, P, A, batch, **kw):
    outs = [plant(rng, P, A, **kw) for _ in range(batch)]
    return tuple(np.stack(v) for v in zip(*outs))


def objective(P, q, x):
    return 0.5 * x @ P @ x + q @ x
