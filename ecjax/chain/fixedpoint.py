"""Fixed-point format of the FC-MPC coordinator contract, and the Python mirror of its arithmetic.

A real value x (kW or kWh) travels as the integer q = round(x · scale) (nearest, ties away from
zero), stored as a two's-complement **int32** lane. A vector of length nu is packed as its nu
lanes in big-endian order, 4 bytes each, concatenated (`4·nu` bytes, no padding): the bytes read
as 32-byte words hold 8 lanes each, value 8w + j in bits [224 − 32j, 256 − 32j) of word w.
The default scale 10⁶ gives 1 µW resolution and a range of ±2147.48 kW.

The contract only sees integers. Its committed iterate (MODEL §6, paper Algorithm 2) is, lane by
lane, with w = num/den and 0 ≤ a, b < 2³¹,

    c = ⌊(num·a + (den − num)·b + ⌊den/2⌋) / den⌋          (nearest; ties up for even den)

and θ² = Σ (c − b)², computed exactly (no overflow: each term < 2⁶², the sum < 2²⁵⁶).
`combine` and `theta2` below are the exact mirror. The tolerance enters as κ² = round(κ·scale)².

Optimal convex weights (docs/fcmpc.md): a weight λ_i travels as the integer
q_i = ⌊λ_i·WEIGHT_ONE⌋ (WEIGHT_ONE = 10⁹, whatever the value scale), the vector λ packed like a
value vector (int32 lanes, 4·|P| bytes). The contract accepts it when every q_i >= 0 and
Σ q_i <= WEIGHT_ONE (`check_weights`), and combines prosumer i with num/den = q_i/WEIGHT_ONE
(`combine_weight`: the same rounding as `combine`, q_i = 0 allowed). Rounding each λ_i down keeps
Σ q_i <= WEIGHT_ONE whenever Σ λ_i <= 1 (`weights_to_fixed`).
"""

from __future__ import annotations

import numpy as np

SCALE = 10**6
LANE_BITS = 32
LANE_BYTES = LANE_BITS // 8
INT_MIN = -(2 ** (LANE_BITS - 1))
INT_MAX = 2 ** (LANE_BITS - 1) - 1


class FixedPointRangeError(ValueError):
    """A value does not fit in an int32 lane at the given scale (or is not finite)."""


def _check_scale(scale: int) -> int:
    if not isinstance(scale, (int, np.integer)) or scale <= 0:
        raise ValueError(f"`scale` must be a positive integer, got {scale!r}.")
    return int(scale)


def to_fixed(x, scale: int = SCALE) -> np.ndarray:
    """Encode real values as fixed-point integers (int64 array, values within int32).

    **Arguments:** `x` array-like of reals; `scale` positive integer.
    **Returns:** `round(x · scale)`, ties away from zero.
    **Raises:** `FixedPointRangeError` if a value is not finite or leaves [−2³¹, 2³¹ − 1].
    """
    scale = _check_scale(scale)
    a = np.asarray(x, dtype=np.float64)
    if not np.all(np.isfinite(a)):
        raise FixedPointRangeError("values must be finite.")
    y = a * scale
    q = np.sign(y) * np.floor(np.abs(y) + 0.5)
    if q.size and (q.min() < INT_MIN or q.max() > INT_MAX):
        bad = a.flat[int(np.argmax((q < INT_MIN) | (q > INT_MAX)))]
        raise FixedPointRangeError(
            f"value {bad!r} is outside the int32 range at scale {scale} "
            f"([{INT_MIN / scale}, {INT_MAX / scale}])."
        )
    return q.astype(np.int64)


def from_fixed(q, scale: int = SCALE) -> np.ndarray:
    """Decode fixed-point integers to float64 (`q / scale`)."""
    scale = _check_scale(scale)
    return np.asarray(q, dtype=np.int64).astype(np.float64) / scale


def _as_lanes(q) -> np.ndarray:
    a = np.asarray(q)
    if a.dtype.kind not in "iu":
        raise TypeError(f"fixed-point values must be integers, got dtype {a.dtype}.")
    a = a.astype(np.int64)
    if a.size and (a.min() < INT_MIN or a.max() > INT_MAX):
        raise FixedPointRangeError("integer outside the int32 lane range.")
    return a


def pack(q) -> bytes:
    """Pack integer values as big-endian int32 lanes (4 bytes each, in order)."""
    return _as_lanes(q).reshape(-1).astype(">i4").tobytes()


def unpack(data: bytes, n: int | None = None) -> np.ndarray:
    """Unpack big-endian int32 lanes into an int64 array (inverse of `pack`)."""
    data = bytes(data)
    if len(data) % LANE_BYTES:
        raise ValueError(f"packed data must have a multiple of {LANE_BYTES} bytes, got {len(data)}.")
    if n is not None and len(data) != LANE_BYTES * n:
        raise ValueError(f"expected {LANE_BYTES * n} bytes ({n} values), got {len(data)}.")
    return np.frombuffer(data, dtype=">i4").astype(np.int64)


def encode(x, scale: int = SCALE) -> bytes:
    """`pack(to_fixed(x, scale))`."""
    return pack(to_fixed(x, scale))


def decode(data: bytes, scale: int = SCALE) -> np.ndarray:
    """`from_fixed(unpack(data), scale)`."""
    return from_fixed(unpack(data), scale)


def combine(u_star, u_prev, num: int, den: int) -> np.ndarray:
    """The contract's committed iterate `round(w·u* + (1 − w)·u_prev)`, w = num/den, exactly.

    Both vectors must be non-negative int32 lanes (the contract bounds-checks u*, and every
    committed iterate is a combination of such vectors).
    """
    num, den = int(num), int(den)
    if not 0 < num <= den:
        raise ValueError(f"w = num/den must satisfy 0 < num <= den, got {num}/{den}.")
    a, b = _as_lanes(u_star), _as_lanes(u_prev)
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {a.shape} vs {b.shape}.")
    if (a.size and a.min() < 0) or (b.size and b.min() < 0):
        raise ValueError("combine mirrors the contract's unsigned arithmetic: lanes must be >= 0.")
    # Python integers: num·a may exceed int64 for large den.
    ao, bo = a.astype(object), b.astype(object)
    c = (num * ao + (den - num) * bo + den // 2) // den
    return c.astype(np.int64)


WEIGHT_ONE = 10**9


def weights_to_fixed(lam) -> np.ndarray:
    """Weights λ (reals, on the simplex up to rounding) as the contract's integers
    q_i = ⌊max(λ_i, 0)·WEIGHT_ONE⌋, lowered further (largest first) if their sum still exceeds
    WEIGHT_ONE (a λ whose float sum lies above 1 by rounding)."""
    a = np.asarray(lam, dtype=np.float64).reshape(-1)
    if not np.all(np.isfinite(a)):
        raise FixedPointRangeError("weights must be finite.")
    q = np.floor(np.clip(a, 0.0, 1.0) * WEIGHT_ONE).astype(np.int64)
    excess = int(q.sum()) - WEIGHT_ONE
    while excess > 0:
        k = int(np.argmax(q))
        cut = min(excess, int(q[k]))
        q[k] -= cut
        excess -= cut
    return q


def check_weights(q, n: int) -> None:
    """Raise `ValueError` (named like the contract's error) unless `q` is a weight vector the
    contract accepts: n lanes, each >= 0, Σ <= WEIGHT_ONE."""
    a = _as_lanes(q).reshape(-1)
    if a.size != n:
        raise ValueError(f"BadLength: {a.size} weights, expected {n}.")
    if a.size and a.min() < 0:
        k = int(np.argmin(a))
        raise ValueError(f"NegativeWeight: weight {k} is {int(a[k])}.")
    if int(a.sum()) > WEIGHT_ONE:
        raise ValueError(f"WeightsAboveOne: sum {int(a.sum())} > {WEIGHT_ONE}.")


def combine_weight(u_star, u_prev, q: int) -> np.ndarray:
    """The contract's committed iterate with a proposed weight q/WEIGHT_ONE, 0 <= q <= WEIGHT_ONE:
    `combine` with num = q, den = WEIGHT_ONE (q = 0 keeps u_prev)."""
    q = int(q)
    if not 0 <= q <= WEIGHT_ONE:
        raise ValueError(f"a weight must satisfy 0 <= q <= {WEIGHT_ONE}, got {q}.")
    if q == 0:
        b = _as_lanes(u_prev)
        if _as_lanes(u_star).shape != b.shape:
            raise ValueError("shapes differ.")
        return b.copy()
    return combine(u_star, u_prev, q, WEIGHT_ONE)


def theta2(u_new, u_prev) -> int:
    """θ² = ‖u_new − u_prev‖₂² in fixed-point units squared (exact Python integer)."""
    d = _as_lanes(u_new).astype(object) - _as_lanes(u_prev).astype(object)
    return int(np.sum(d * d)) if d.size else 0


def kappa2(kappa: float, scale: int = SCALE) -> int:
    """Tolerance ϰ (real units) as the contract's ϰ² = round(ϰ·scale)² (integer)."""
    if not (np.isfinite(kappa) and kappa >= 0):
        raise ValueError(f"`kappa` must be finite and >= 0, got {kappa}.")
    k = int(np.floor(kappa * _check_scale(scale) + 0.5))
    return k * k


def theta(theta2_value: int, scale: int = SCALE) -> float:
    """θ in real units from the integer θ²."""
    return float(np.sqrt(float(theta2_value))) / _check_scale(scale)
