"""`Take` (strided gathers) against plain indexing, for structured and irregular index maps."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ecjax.qp.take import Take


def _maps(rng):
    n = 60
    yield np.arange(n)  # one run
    yield np.full(17, n - 1)  # one index repeated (a padding entry)
    yield np.concatenate([np.full(30, n - 1), np.arange(3, 40, 2), rng.integers(0, n, 7), np.arange(5)])
    yield np.arange(48).reshape(12, 4)  # row-major runs
    yield np.arange(48).reshape(4, 12).T  # a column-major map: one run read transposed
    yield np.where(rng.random((9, 5)) < 0.3, n - 1, np.arange(45).reshape(9, 5))  # runs with pads
    yield rng.integers(0, n, (11, 3))  # irregular: one gather
    yield np.array([7])
    yield np.arange(10)[::-1]  # decreasing: gathered
    yield np.zeros((0, 3), np.int64)  # empty (a QP without coupling rows)


@pytest.mark.parametrize("k", range(10))
def test_take_matches_indexing(k):
    rng = np.random.default_rng(k)
    idx = list(_maps(np.random.default_rng(0)))[k]
    t = Take.build(idx)
    X = jnp.asarray(rng.normal(size=(5, 60)))
    got = np.asarray(jax.jit(jax.vmap(t))(X))
    np.testing.assert_array_equal(got, np.asarray(X)[:, idx])


def test_structured_maps_take_slices():
    assert not Take.build(np.arange(48).reshape(4, 12).T).is_gather
    t = Take.build(np.arange(48).reshape(4, 12).T)
    assert t.gathered is None and t.transposed
    assert Take.build(np.random.default_rng(0).integers(0, 60, (11, 3))).is_gather
    mixed = Take.build(np.concatenate([np.full(30, 59), np.array([4, 9, 1]), np.arange(20)]))
    assert [p[0] for p in mixed.pieces] == ["s", "g", "s"] and mixed.gathered.shape == (3,)
