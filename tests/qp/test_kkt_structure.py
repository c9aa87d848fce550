"""The structured Newton solve of the interior-point method against dense numpy.

`blocktri` (reverse Cuthill-McKee blocking and the block Thomas recursion) and `normal`
(the quasi-definite reduction of `normal.py`) are checked against `numpy.linalg.solve` on the
same matrices written densely, for random patterns, random row weights spanning 24 orders of
magnitude, and the real agent and centralized QPs of random communities.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.sparse as sp

from ecjax import fcmpc, ocp
from ecjax.layout import AgentLayout
from ecjax.qp import IPM, blocktri, normal, prepare, schur
from ecjax.weights import CostWeights
from helpers_community import random_case


def _banded_pattern(u, band, rng, density=0.5):
    M = np.zeros((u, u))
    for i in range(u):
        for j in range(max(0, i - band), i + 1):
            if i == j or rng.random() < density:
                M[i, j] = M[j, i] = 1.0
    p = rng.permutation(u)  # hide the band: analyse must find it again
    return M[np.ix_(p, p)]


@pytest.mark.parametrize("u,band,seed", [(1, 0, 0), (7, 2, 1), (40, 3, 2), (61, 5, 3), (30, 29, 4)])
def test_blocking_is_block_tridiagonal_and_solves(u, band, seed):
    rng = np.random.default_rng(seed)
    pat = _banded_pattern(u, band, rng)
    order, bs, nb = blocktri.analyse(sp.csr_matrix(pat))
    assert sorted(order[order < u].tolist()) == list(range(u))
    assert nb * bs >= u
    # a quasi-definite matrix on that pattern: [[H, B'], [B, -G]] after a random split
    M = pat * rng.normal(size=(u, u))
    M = 0.5 * (M + M.T)
    neg = rng.random(u) < 0.4
    d = np.where(neg, -1.0, 1.0) * (np.abs(M).sum(1) + 1.0)  # diagonally dominant blocks
    M[np.diag_indices(u)] = d
    rows, cols = np.nonzero(np.tril(pat))
    slot, mirror, where = blocktri.block_slots(order, bs, nb, u, rows, cols)
    flat = np.zeros((2 * nb - 1) * bs * bs)
    flat[slot] = M[rows, cols]
    flat[mirror] = M[rows, cols]
    for p in np.nonzero(order == u)[0]:
        b, o = divmod(p, bs)
        flat[b * bs * bs + o * bs + o] = 1.0
    D = jnp.asarray(flat[: nb * bs * bs].reshape(nb, bs, bs))
    L = jnp.asarray(flat[nb * bs * bs :].reshape(nb - 1, bs, bs))
    rhs = rng.normal(size=u)
    padded = np.zeros(nb * bs)
    padded[where] = rhs
    x = blocktri.solve(blocktri.factor(D, L), jnp.asarray(padded.reshape(nb, bs))).reshape(-1)
    x = np.asarray(x)[where]
    np.testing.assert_allclose(x, np.linalg.solve(M, rhs), rtol=1e-9, atol=1e-9)


def _dense_augmented(op, d):
    """[[Kd, Cᵀ], [C, −diag(1/d_c)]] of the scaled, bound-merged problem (rows [I; C]), dense."""
    Ab = np.asarray(op.A_orig)[np.asarray(op.perm)] * np.asarray(op.E)[:, None] * np.asarray(op.D)[None, :]
    C = Ab[op.A_rows.m_s :]  # the coupling rows; the bound rows of the merged problem are I
    n = op.n
    Kd = np.diag(np.asarray(op.P) + d[:n])
    dc = d[n:]
    return np.block([[Kd, C.T], [C, -np.diag(1.0 / dc)]]), n


@pytest.mark.parametrize("r", [0.0, 1e-3])  # MODEL's cost, and ugb, ev regularized
@pytest.mark.parametrize("n,seed,central", [(3, 1, False), (6, 2, True), (15, 3, False), (15, 4, True)])
def test_normal_solve_matches_dense(n, seed, central, r):
    c, _, stage = random_case(n, seed)
    w = CostWeights(r_ugb=r, r_ev=r)
    structure = ocp.agent_structure(c, 24, w) if central is False else ocp.centralized_structure(c, 24, w)
    # template bounds as the controller passes them: the dynamics rows are equalities
    lo, hi = (None, None) if central else fcmpc._template_bounds(c, 24, ocp.AgentRows(AgentLayout(c.n, 24)))
    op = prepare(structure.P.toarray(), structure.A.toarray(), IPM(), lo=lo, hi=hi)
    rng = np.random.default_rng(seed)
    d = 10.0 ** rng.uniform(-8, 8, op.mb)  # barrier weights of inactive ... active/equality rows
    fac = normal.factor(op.kkt, op.A, op.P, jnp.asarray(d), 0.0, 0.0)
    r_ = rng.normal(size=op.n)
    t = rng.normal(size=op.A.m_c)
    dx, v = normal.solve(op.kkt, fac, jnp.asarray(r_), jnp.asarray(t))
    K, _ = _dense_augmented(op, d)
    ref = np.linalg.solve(K, np.concatenate([r_, t]))
    got = np.concatenate([np.asarray(dx), np.asarray(v)])
    # backward error of the structured solve, relative to the matrix and solution sizes
    resid = K @ got - np.concatenate([r_, t])
    assert np.abs(resid).max() <= 1e-8 * (np.abs(K).max() * np.abs(got).max() + np.abs(r_).max())
    np.testing.assert_allclose(got[: op.n], ref[: op.n], rtol=1e-5, atol=1e-7 * np.abs(ref).max())
    # the structure is what makes it cheap: small blocks, not one dense block
    assert op.kkt.bs <= (16 if not central else 64 if n < 15 else 192)
    # the agent QP's coupling rows fall apart by time step: with every input curved, two-level
    # elimination (schur.py, a recursion over the states only); with inputs without curvature
    # (MODEL's ugb, ev) the dynamics leave weak columns free and the quasi-definite system is factored directly.
    # The paper case's centralized problem ties the rows of all prosumers of a step together
    if not central:
        assert isinstance(op.kkt, schur.SchurKKT if r > 0 else normal.NormalKKT)
        assert op.kkt.bs <= (4 if r > 0 else 16)
    elif n == 15:
        assert isinstance(op.kkt, normal.NormalKKT)


def test_schur_form_only_where_the_dynamics_fix_the_weak_columns():
    """The Schur complement's equality part is singular on a weak column that the dynamics
    leave free (an input without curvature): forced on such a QP, the two-level solve loses
    every digit, which is why `NormalKKT.build` does not take it there."""
    c, _, _ = random_case(6, 2)
    structure = ocp.agent_structure(c, 24, CostWeights())  # r_ugb = r_ev = 0
    lo, hi = fcmpc._template_bounds(c, 24, ocp.AgentRows(AgentLayout(c.n, 24)))
    op = prepare(structure.P.toarray(), structure.A.toarray(), IPM(), lo=lo, hi=hi)
    assert isinstance(op.kkt, normal.NormalKKT)
    C = np.asarray(op.A_orig)[np.asarray(op.perm)] * np.asarray(op.E)[:, None] * np.asarray(op.D)[None, :]
    C = C[op.A_rows.m_s :]
    weak = (np.asarray(op.P) < IPM().weak_p) & (C != 0).any(axis=0)
    forced = schur.SchurKKT.build(C, weak, schur.MAX_BLOCK, jnp.float64)
    rng = np.random.default_rng(0)
    worst = 0.0
    for _ in range(5):
        d = 10.0 ** rng.uniform(-8, 8, op.mb) * (rng.random(op.mb) < 0.7)
        r_, t = rng.normal(size=op.n), rng.normal(size=op.A.m_c)
        K, _ = _dense_augmented(op, np.maximum(d, 1e-300))
        Kreg = K + np.diag(np.concatenate([np.full(op.n, 1e-10), np.full(op.A.m_c, -1e-10)]))
        ref = np.linalg.solve(Kreg, np.concatenate([r_, t]))[: op.n]
        for kkt, bound in ((op.kkt, 1e-6), (forced, None)):
            fac = normal.factor(kkt, op.A, op.P, jnp.asarray(d), 1e-10, 1e-10)
            dx, _ = normal.solve(kkt, fac, jnp.asarray(r_), jnp.asarray(t))
            err = np.abs(np.asarray(dx) - ref).max() / np.abs(ref).max()
            if bound is not None:
                assert err <= bound, err
            else:
                worst = max(worst, err)
    assert worst > 1e-2, worst  # the forced Schur form is far off on some weights


def test_structure_is_shared_by_jit_and_vmap():
    c, _, _ = random_case(3, 1)
    structure = ocp.agent_structure(c, 24, CostWeights())
    op = prepare(structure.P.toarray(), structure.A.toarray(), IPM())
    rng = np.random.default_rng(0)
    d = jnp.asarray(10.0 ** rng.uniform(-4, 4, (3, op.mb)))
    r = jnp.asarray(rng.normal(size=(3, op.n)))
    t = jnp.asarray(rng.normal(size=(3, op.A.m_c)))

    def one(d, r, t):
        return normal.solve(op.kkt, normal.factor(op.kkt, op.A, op.P, d, 0.0, 0.0), r, t)

    batched = jax.jit(jax.vmap(one))(d, r, t)
    for k in range(3):
        single = one(d[k], r[k], t[k])
        # equal up to rounding (batched and single products may sum in another order; the
        # unregularized system with weights over 8 decades amplifies that to ~1e-10)
        np.testing.assert_allclose(np.asarray(batched[0][k]), np.asarray(single[0]), rtol=1e-8, atol=1e-10)
