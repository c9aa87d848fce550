"""Planted QPs with known primal-dual solutions, and an independent KKT check, for the qp tests.

Planting (qpax style): pick x*, then give every row of A a *kind* (free, one-sided lower or
upper, two-sided box, equality) and an activity (inactive, at its lower side, at its upper
side), a dual y* of matching sign (OSQP convention: y > 0 at an active upper side, y < 0 at
an active lower side, any sign on an equality), derive lo, hi from A x*, and finally

    q = −P x* − Aᵀ y*,

so (x*, y*) satisfies the KKT conditions of  min ½xᵀPx + qᵀx  s.t.  lo <= Ax <= hi  exactly
and ½x*ᵀPx* + qᵀx* is the optimal value.

`kkt_numpy` is written from the KKT conditions with numpy only (it does not use
`ecjax.qp.kkt`), so the two can check each other.
"""

import numpy as np

# row kinds: (lo side, hi side, activity)
KINDS = (
    "free",  # -inf <= a x <= inf                       y = 0
    "lo_active",  # a x >= lo, hi = inf, active          y < 0
    "lo_inactive",  # a x >= lo, hi = inf, slack          y = 0
    "hi_active",  # a x <= hi, lo = -inf, active         y > 0
    "hi_inactive",
    "box_lo_active",  # lo <= a x <= hi, at lo             y < 0
    "box_hi_active",  # at hi                              y > 0
    "box_inactive",
    "eq",  # a x = lo = hi                               y any sign
)


# --------------------------------------------------------------------------- structures
def structured_PA(rng, n, m_c, nnz=6, zero_cost_frac=0.2, free_cols=0, p_min=0.1):
    """Diagonal P and an A made like the agent QP's: one singleton (bound) row per variable,
    a second one for a few, then `m_c` coupling rows with `nnz` nonzeros each.

    The last `free_cols` columns have zero cost and no singleton row (like the battery
    energies eb of the agent QP: only coupling rows bound them).
    """
    p = rng.uniform(p_min, 2.0, n)
    p[rng.random(n) < zero_cost_frac] = 0.0
    bounded = n - free_cols
    p[bounded:] = 0.0
    rows = []
    for j in range(bounded):
        r = np.zeros(n)
        r[j] = rng.choice([1.0, -2.0, 0.5])
        rows.append(r)
    for j in rng.choice(bounded, bounded // 4, replace=False):
        r = np.zeros(n)
        r[j] = 1.0
        rows.append(r)
    for k in range(m_c):
        r = np.zeros(n)
        cols = rng.choice(n, nnz, replace=False)
        if free_cols:  # every free column sits in some coupling row
            cols[0] = bounded + k % free_cols
            cols = np.unique(cols)
        r[cols] = rng.normal(size=cols.size)
        rows.append(r)
    return np.diag(p), np.array(rows)


def dense_PA(rng, n, m, rank=None):
    """Dense (non-diagonal) PSD P of the given rank and a dense A."""
    rank = n if rank is None else rank
    L = rng.normal(size=(n, rank))
    P = L @ L.T / n + (1e-2 * np.eye(n) if rank == n else 0.0)
    return P, rng.normal(size=(m, n))


# --------------------------------------------------------------------------- planting
def assign_kinds(rng, m, kinds=KINDS, weights=None):
    """Row kinds: every kind of `kinds` at least once (if m allows), the rest drawn."""
    kinds = np.asarray(kinds)
    out = rng.choice(kinds, size=m, p=weights)
    k = min(m, kinds.size)
    out[rng.choice(m, k, replace=False)] = kinds[:k]
    return out


def plant(rng, P, A, kinds=None, eq_rows=None):
    """One planted instance for (P, A).

    **Arguments:**
    - `kinds`: (m,) array of names from `KINDS`; drawn by `assign_kinds` if None.
    - `eq_rows`: optional (m,) bool, rows forced to be equalities.

    **Returns:** `(q, lo, hi, x*, y*, kinds)`.
    """
    m, n = A.shape
    kinds = assign_kinds(rng, m) if kinds is None else np.asarray(kinds).copy()
    if eq_rows is not None:
        kinds[np.asarray(eq_rows)] = "eq"
    x = rng.normal(size=n)
    ax = A @ x
    gap_lo = rng.uniform(0.1, 2.0, m)
    gap_hi = rng.uniform(0.1, 2.0, m)
    mag = rng.uniform(0.1, 2.0, m)
    lo = np.full(m, -np.inf)
    hi = np.full(m, np.inf)
    y = np.zeros(m)
    for r, kd in enumerate(kinds):
        if kd == "lo_active":
            lo[r], y[r] = ax[r], -mag[r]
        elif kd == "lo_inactive":
            lo[r] = ax[r] - gap_lo[r]
        elif kd == "hi_active":
            hi[r], y[r] = ax[r], mag[r]
        elif kd == "hi_inactive":
            hi[r] = ax[r] + gap_hi[r]
        elif kd == "box_lo_active":
            lo[r], hi[r], y[r] = ax[r], ax[r] + gap_hi[r], -mag[r]
        elif kd == "box_hi_active":
            lo[r], hi[r], y[r] = ax[r] - gap_lo[r], ax[r], mag[r]
        elif kd == "box_inactive":
            lo[r], hi[r] = ax[r] - gap_lo[r], ax[r] + gap_hi[r]
        elif kd == "eq":
            lo[r] = hi[r] = ax[r]
            y[r] = rng.choice([-1.0, 1.0]) * mag[r]
        elif kd != "free":
            raise ValueError(f"unknown row kind {kd!r}")
    q = -P @ x - A.T @ y
    return q, lo, hi, x, y, kinds


def plant_batch(rng, P, A, batch, kinds=None, **kw):
    """`batch` planted instances sharing (P, A) (and `kinds`, if given)."""
    outs = [plant(rng, P, A, kinds=kinds, **kw) for _ in range(batch)]
    return tuple(np.stack(v) for v in zip(*outs))


def objective(P, q, x):
    return 0.5 * x @ P @ x + q @ x


def active_rows_independent(A, y, tol=1e-9):
    """Whether y* is the unique multiplier: the rows with y* != 0 are linearly independent
    (with strict complementarity, that is LICQ on the active set)."""
    act = A[np.abs(y) > tol]
    return act.shape[0] == 0 or np.linalg.matrix_rank(act) == act.shape[0]


# --------------------------------------------------------------------------- KKT, numpy only
def kkt_numpy(P, q, A, lo, hi, x, y):
    """KKT residuals of (x, y) from the definitions, in numpy:

    - `prim`: largest bound violation  max(lo − a x, a x − hi, 0),
    - `stat`: ‖P x + q + Aᵀ y‖∞,
    - `sign`: largest multiplier of the wrong sign (y > 0 needs a finite hi, y < 0 a finite lo),
    - `compl`: largest |y_r|·distance of a x to the side that y_r presses on.
    """
    P, q, A, lo, hi, x, y = (np.asarray(v, np.float64) for v in (P, q, A, lo, hi, x, y))
    ax = A @ x
    with np.errstate(invalid="ignore"):
        viol = np.maximum(np.maximum(lo - ax, ax - hi), 0.0)
    prim = float(np.max(np.nan_to_num(viol, nan=0.0), initial=0.0))
    stat = float(np.max(np.abs(P @ x + q + A.T @ y), initial=0.0))
    wrong = np.where(np.isinf(hi), np.maximum(y, 0.0), 0.0) + np.where(np.isinf(lo), np.maximum(-y, 0.0), 0.0)
    sign = float(np.max(wrong, initial=0.0))
    d_hi = np.where(np.isfinite(hi), np.abs(np.where(np.isfinite(hi), hi, 0.0) - ax), 0.0)
    d_lo = np.where(np.isfinite(lo), np.abs(ax - np.where(np.isfinite(lo), lo, 0.0)), 0.0)
    compl = float(np.max(np.maximum(y, 0.0) * d_hi + np.maximum(-y, 0.0) * d_lo, initial=0.0))
    return {"prim": prim, "stat": stat, "sign": sign, "compl": compl}
