"""Fixed-point encoding, packing, and the Python mirror of the contract's arithmetic."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ecjax.chain import fixedpoint as fp

pytestmark = pytest.mark.chain

LIMIT = fp.INT_MAX / fp.SCALE


@given(st.lists(st.floats(min_value=-LIMIT + 1, max_value=LIMIT - 1, allow_nan=False), min_size=0, max_size=50))
def test_round_trip_within_half_ulp(xs):
    q = fp.to_fixed(xs)
    back = fp.decode(fp.encode(xs))
    assert back.shape == (len(xs),)
    np.testing.assert_array_equal(fp.unpack(fp.pack(q)), q)
    assert np.all(np.abs(back - np.asarray(xs, dtype=float)) <= 0.5 / fp.SCALE + 1e-9 * np.abs(xs))


@given(st.lists(st.integers(min_value=fp.INT_MIN, max_value=fp.INT_MAX), max_size=40))
def test_pack_unpack_integers(qs):
    data = fp.pack(np.array(qs, dtype=np.int64))
    assert len(data) == 4 * len(qs)
    np.testing.assert_array_equal(fp.unpack(data, len(qs)), qs)


def test_negative_values_and_layout():
    q = fp.to_fixed([-1.0, 1.0, -0.0000005, 0.0000005, -2.5e-6])
    np.testing.assert_array_equal(q, [-1_000_000, 1_000_000, -1, 1, -3])  # ties away from zero
    data = fp.pack([-1, 1, 0x12345678])
    assert data == bytes.fromhex("ffffffff" "00000001" "12345678")  # big-endian two's complement


def test_range_bounds():
    assert fp.to_fixed([LIMIT])[0] == fp.INT_MAX
    assert fp.to_fixed([-(2**31) / fp.SCALE])[0] == fp.INT_MIN
    for bad in (LIMIT + 1e-6, -(2**31 + 1) / fp.SCALE, np.inf, np.nan):
        with pytest.raises(fp.FixedPointRangeError):
            fp.to_fixed([0.0, bad])
    with pytest.raises(fp.FixedPointRangeError):
        fp.pack([2**31])
    with pytest.raises(fp.FixedPointRangeError):
        fp.pack([-(2**31) - 1])
    with pytest.raises(TypeError):
        fp.pack(np.array([0.5]))
    with pytest.raises(ValueError):
        fp.unpack(b"\x00" * 5)
    with pytest.raises(ValueError):
        fp.unpack(b"\x00" * 8, 3)
    with pytest.raises(ValueError):
        fp.to_fixed([1.0], scale=0)


def test_other_scale():
    np.testing.assert_array_equal(fp.to_fixed([1.23456], scale=1000), [1235])
    assert fp.from_fixed([1235], scale=1000)[0] == pytest.approx(1.235)


@settings(max_examples=200)
@given(
    st.lists(st.tuples(st.integers(0, 2**31 - 1), st.integers(0, 2**31 - 1)), min_size=1, max_size=20),
    st.integers(1, 2**20),
    st.integers(0, 2**20),
)
def test_combine_is_nearest_rounding(pairs, den, extra):
    num = 1 + extra % den
    a = np.array([x for x, _ in pairs], dtype=np.int64)
    b = np.array([y for _, y in pairs], dtype=np.int64)
    c = fp.combine(a, b, num, den)
    w = Fraction(num, den)
    for ai, bi, ci in zip(a, b, c):
        exact = w * int(ai) + (1 - w) * int(bi)
        assert abs(Fraction(int(ci)) - exact) <= Fraction(1, 2)
        assert min(ai, bi) <= ci <= max(ai, bi)  # convex combination stays within bounds


def test_combine_rejects_bad_inputs():
    with pytest.raises(ValueError):
        fp.combine([1], [2], 0, 3)
    with pytest.raises(ValueError):
        fp.combine([1], [2], 4, 3)
    with pytest.raises(ValueError):
        fp.combine([-1], [2], 1, 3)


def test_theta2_exact_and_kappa2():
    big = np.array([0, 2**31 - 1] * 300, dtype=np.int64)
    zero = np.zeros_like(big)
    assert fp.theta2(big, zero) == 300 * (2**31 - 1) ** 2  # exceeds int64: exact Python int
    assert fp.theta2([3, 0], [0, 4]) == 25
    assert fp.theta(25, scale=1) == 5.0
    assert fp.kappa2(1e-3) == 1000**2
    with pytest.raises(ValueError):
        fp.kappa2(-1.0)
