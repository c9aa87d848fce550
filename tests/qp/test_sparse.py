"""Products with the sparse matrix formats of `sparse.Mat` against dense numpy.

The segmented-diagonal segmented-diagonal form must give M x and Mᵀ y exactly as the dense matrix does, for
MPC-like patterns (block rows per time step, shifted diagonals), random patterns, empty rows
and columns, and the real agent QP's coupling rows; `sparse_format` must fall back to ELL where
the runs are short.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ecjax import ocp
from ecjax.community import paper_case
from ecjax.qp import IPM, prepare, sparse
from ecjax.weights import CostWeights


def _mpc_like(rng, horizon=12, row_kinds=4, col_kinds=7):
    """Rows (kind, k), columns (kind, k); each row kind couples a few column kinds at k and,
    for some, the previous step k − 1 (dynamics); some entries zeroed (a run cut in two)."""
    M = np.zeros((row_kinds * horizon, col_kinds * horizon))
    for r in range(row_kinds):
        for c in rng.choice(col_kinds, size=rng.integers(1, col_kinds), replace=False):
            for shift in (0, 1) if rng.random() < 0.3 else (0,):
                for k in range(shift, horizon):
                    M[r * horizon + k, c * horizon + k - shift] = rng.normal()
    M[rng.integers(0, M.shape[0]), :] = 0.0  # an empty row
    M[:, rng.integers(0, M.shape[1])] = 0.0  # an empty column
    return M


def _random_sparse(rng, r, c, density):
    return np.where(rng.random((r, c)) < density, rng.normal(size=(r, c)), 0.0)


def _rebuilt(mat, transpose=False):
    """M (or Mᵀ) written densely from its segmented-diagonal blocks: every entry placed exactly once."""
    blocks, vals = (mat.c_blocks, mat.c_vals) if transpose else (mat.r_blocks, mat.r_vals)
    vals = iter(vals)
    r, c = mat.shape[::-1] if transpose else mat.shape
    out = np.zeros((r, c))
    hit = np.zeros((r, c), int)
    for a, P, L, terms in blocks:
        for s, sp, J, sj in terms:
            V = np.asarray(next(vals)).reshape(P, J, L)
            for p_ in range(P):
                for j in range(J):
                    rows = a + p_ * L + np.arange(L)
                    cols = s + p_ * sp + j * sj + np.arange(L)
                    assert cols[-1] < c
                    out[rows, cols] += V[p_, j]
                    hit[rows, cols] += V[p_, j] != 0
    assert hit.max(initial=0) <= 1
    return out


def _check(M, fmt):
    rng = np.random.default_rng(1)
    mat = sparse.Mat.build(M, fmt, jnp.float64)
    X = rng.normal(size=(5, M.shape[1]))
    Y = rng.normal(size=(5, M.shape[0]))
    mv = np.asarray(jax.jit(jax.vmap(mat.mv))(jnp.asarray(X)))
    rmv = np.asarray(jax.jit(jax.vmap(mat.rmv))(jnp.asarray(Y)))
    np.testing.assert_allclose(mv, X @ M.T, rtol=0, atol=1e-13 * max(1.0, np.abs(M).sum()))
    np.testing.assert_allclose(rmv, Y @ M, rtol=0, atol=1e-13 * max(1.0, np.abs(M).sum()))
    return mat


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("fmt", ["diagonal", "gather", "dense"])
def test_mpc_like_products_match_dense(seed, fmt):
    M = _mpc_like(np.random.default_rng(seed))
    _check(M, fmt)


@pytest.mark.parametrize("shape,density", [((1, 1), 1.0), ((1, 9), 0.5), ((9, 1), 0.5), ((13, 29), 0.2), ((40, 17), 0.6)])
def test_random_products_match_dense(shape, density):
    M = _random_sparse(np.random.default_rng(sum(shape)), *shape, density)
    M[0, 0] = 1.5  # at least one nonzero
    _check(M, "diagonal")
    _check(M, "gather")


def test_zero_matrix_products_are_zero():
    _check(np.zeros((6, 4)), "diagonal")


def test_sparse_format_picks_diagonals_only_for_long_runs():
    rng = np.random.default_rng(0)
    mpc = _mpc_like(rng, horizon=24, row_kinds=3, col_kinds=6)
    assert sparse.sparse_format(mpc) == "diagonal"
    scattered = _random_sparse(rng, 300, 400, 0.02)  # ~2400 entries in runs of ~1
    assert sparse.sparse_format(scattered) == "gather"
    mat = _check(scattered, "sparse")
    assert mat.fmt == "gather"


@pytest.mark.parametrize("central", [False, True])
def test_mpc_qp_coupling_rows(central):
    """The paper case's agent QP: its coupling rows take the segmented-diagonal form in the interior-point
    operator, the blocks hold every entry of the scaled rows exactly once, in a few terms. The
    centralized QP's (125 blocks: one per prosumer and row kind) keep ELL: compiling that many
    kernels per product costs more than the gathers do."""
    c = paper_case(0)
    w = CostWeights()
    structure = ocp.centralized_structure(c, 24, w) if central else ocp.agent_structure(c, 24, w)
    op = prepare(structure.P.toarray(), structure.A.toarray(), IPM())
    if central:
        assert op.A.C.fmt == "gather" and op.kkt.C.fmt == "gather"
        return
    assert op.A.C.fmt == "diagonal" and op.kkt.C.fmt == "diagonal"
    Ab = np.asarray(op.A_orig)[np.asarray(op.perm)] * np.asarray(op.E)[:, None] * np.asarray(op.D)[None, :]
    C = Ab[op.A_rows.m_s :]
    np.testing.assert_array_equal(_rebuilt(op.A.C), C)
    np.testing.assert_array_equal(_rebuilt(op.A.C, transpose=True), C.T)
    # the community's size shows in the windows, not in the number of terms
    n_terms = sum(len(t) for *_, t in op.A.C.r_blocks) + sum(len(t) for *_, t in op.A.C.c_blocks)
    assert n_terms <= 40 and len(op.A.C.r_blocks) + len(op.A.C.c_blocks) <= 16, n_terms
    _check(C, "diagonal")
