"""Vectorized, bit-exact models of Xilinx `ap_fixed` / `ap_ufixed` / `ap_int` / `ap_uint` conversions.

A value of type `FixedType` is held as the signed integer count of its LSB in an int64 array
(value = raw * 2**-frac). Every function here is pure (no state), so thread-safe.

Semantics follow the `ap_types` headers shipped with hls4ml 1.3.0:

* fixed -> fixed (`operator=`), double -> fixed (`ap_fixed_base(double)`): take the exact value,
  quantize it to the target LSB with the Q mode, then apply the O mode to the integer.
* `ap_int<W>` as a target truncates toward zero (`to_ap_int_base`, C-native) and wraps, so it
  is modelled as `ap_fixed<W, W, AP_TRN_ZERO, AP_WRAP>`.
* fixed -> float (`to_float`) rounds once, half to even: exactly int64 -> float64 -> float32 while
  the raw value stays below 2**53 (guaranteed by `MAX_WIDTH`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from fpgaas.kernels.engine.errors import UnsupportedLayer

Q_MODES = ("AP_TRN", "AP_TRN_ZERO", "AP_RND", "AP_RND_ZERO", "AP_RND_INF", "AP_RND_MIN_INF", "AP_RND_CONV")
O_MODES = ("AP_WRAP", "AP_SAT", "AP_SAT_ZERO", "AP_SAT_SYM")
# Raw values and every intermediate the engine forms stay below 2**62 in int64; types wider than
# this would need more than one machine word, which hls4ml's dense nets never generate.
MAX_WIDTH = 53

_FIXED_RE = re.compile(
    r"^ap_(u?)fixed<\s*(-?\d+)\s*,\s*(-?\d+)\s*(?:,\s*(AP_\w+)\s*)?(?:,\s*(AP_\w+)\s*)?(?:,\s*(\d+)\s*)?>$"
)
_INT_RE = re.compile(r"^ap_(u?)int<\s*(\d+)\s*>$")


@dataclass(frozen=True)
class FixedType:
    """An HLS arbitrary-precision type: `width` bits, `integer` of them left of the point."""

    width: int
    integer: int
    signed: bool
    q_mode: str = "AP_TRN"
    o_mode: str = "AP_WRAP"
    sat_bits: int = 0
    spelling: str = ""
    is_int: bool = False  # ap_int / ap_uint: their double/float constructors differ (see from_double)

    @property
    def frac(self) -> int:
        """Number of fractional bits (negative when the LSB weighs more than 1)."""
        return self.width - self.integer

    @property
    def raw_min(self) -> int:
        return -(1 << (self.width - 1)) if self.signed else 0

    @property
    def raw_max(self) -> int:
        return (1 << (self.width - 1)) - 1 if self.signed else (1 << self.width) - 1

    @property
    def max_abs(self) -> int:
        """Largest |raw| a value of this type can have."""
        return max(-self.raw_min, self.raw_max)

    def __str__(self) -> str:
        return self.spelling or (
            f"ap_{'' if self.signed else 'u'}fixed<{self.width},{self.integer},{self.q_mode},{self.o_mode}>"
        )


def parse_type(text: str) -> FixedType:
    """Parse a C++ spelling such as `ap_ufixed<16,6,AP_RND_CONV,AP_SAT,0>` or `ap_int<8>`."""
    spelling = " ".join(text.split())
    m = _FIXED_RE.match(spelling)
    if m:
        unsigned, w, i, q, o, n = m.groups()
        t = FixedType(int(w), int(i), not unsigned, q or "AP_TRN", o or "AP_WRAP", int(n or 0), spelling)
    else:
        m = _INT_RE.match(spelling)
        if not m:
            raise UnsupportedLayer(f"type {spelling!r} is not an ap_fixed/ap_ufixed/ap_int/ap_uint")
        w = int(m.group(2))
        t = FixedType(w, w, not m.group(1), "AP_TRN_ZERO", "AP_WRAP", 0, spelling, is_int=True)
    if t.q_mode not in Q_MODES:
        raise UnsupportedLayer(f"quantization mode {t.q_mode} of {spelling} is not supported")
    if t.o_mode not in O_MODES:
        raise UnsupportedLayer(f"overflow mode {t.o_mode} of {spelling} is not supported")
    if t.o_mode == "AP_WRAP" and t.sat_bits != 0:
        raise UnsupportedLayer(f"AP_WRAP with {t.sat_bits} saturation bits ({spelling}) is not supported")
    if not 1 <= t.width <= MAX_WIDTH:
        raise UnsupportedLayer(f"width of {spelling} is outside 1..{MAX_WIDTH}")
    return t


def check_int_target(src_integer_bits: int, t: FixedType, where: str) -> None:
    """Refuse fixed -> ap_int casts whose source has no integer bit.

    `ap_fixed_base::to_ap_int_base` leaves its result unset for integer widths <= 0, so the
    C simulation's bits are not defined by the value there.
    """
    if t.is_int and src_integer_bits <= 0:
        raise UnsupportedLayer(f"{where}: cast to {t} from a type with {src_integer_bits} integer bits")


def round_shift(v: np.ndarray, shift: np.ndarray | int, q_mode: str) -> np.ndarray:
    """Quantize v * 2**-shift (shift >= 1, |v| < 2**62) to an integer with the given Q mode."""
    shift = np.asarray(shift, dtype=np.int64)
    if np.any(shift > 61):
        # |v| / 2**shift < 1/2 then: every mode only looks at the sign and "nonzero below half",
        # which the smallest nonzero value of the same sign reproduces.
        big = shift > 61
        v = np.where(big, np.sign(v), v)
        shift = np.where(big, 61, shift)
    floor = v >> shift
    if q_mode == "AP_TRN":
        return floor
    rem = v & ((np.int64(1) << shift) - 1)
    half = np.int64(1) << (shift - 1)
    if q_mode == "AP_TRN_ZERO":
        up = (rem != 0) & (v < 0)
    elif q_mode == "AP_RND":
        up = rem >= half
    elif q_mode == "AP_RND_MIN_INF":
        up = rem > half
    elif q_mode == "AP_RND_INF":
        up = (rem > half) | ((rem == half) & (v >= 0))
    elif q_mode == "AP_RND_ZERO":
        up = (rem > half) | ((rem == half) & (v < 0))
    else:  # AP_RND_CONV: ties to even
        up = (rem > half) | ((rem == half) & ((floor & 1) == 1))
    return floor + up


def overflow(q: np.ndarray, t: FixedType) -> np.ndarray:
    """Apply t's overflow mode to exact integers q (in t's LSB); returns raw values of t."""
    lo, hi = t.raw_min, t.raw_max
    if t.o_mode == "AP_WRAP":
        if not t.signed:
            return q & np.int64((1 << t.width) - 1)
        # Sign-extend from bit width-1: numpy's int64 left shift drops the high bits.
        up = np.int64(64 - t.width)
        return (q << up) >> up
    if t.o_mode == "AP_SAT":
        return np.clip(q, lo, hi)
    if t.o_mode == "AP_SAT_SYM":
        # Underflow sets raw_min | 1: -raw_max, except for a 1-bit signed type (-1 | 1 == -1).
        return np.clip(q, -hi if t.signed and t.width > 1 else lo, hi)
    return np.where((q < lo) | (q > hi), 0, q)  # AP_SAT_ZERO


def requantize(v: np.ndarray, frac: int, t: FixedType, bounds: tuple[int, int] | None = None) -> np.ndarray:
    """Cast exact integers v (value v * 2**-frac) to type t: quantize then overflow.

    `bounds` (min, max of v, when known from its type) lets an exact no-op cast return v itself.
    The caller guarantees |v| * 2**max(0, t.frac - frac) < 2**62.
    """
    v = np.asarray(v, dtype=np.int64)
    d = t.frac - frac
    if d == 0 and bounds is not None and t.raw_min <= bounds[0] and bounds[1] <= t.raw_max:
        return v
    q = v << np.int64(d) if d >= 0 else round_shift(v, -d, t.q_mode)
    return overflow(q, t)


def from_double(x: np.ndarray, t: FixedType) -> np.ndarray:
    """`t(double)` elementwise, including out-of-range, infinite and NaN inputs (as ap_fixed does)."""
    x = np.asarray(x, dtype=np.float64)
    finite = np.isfinite(x)
    neg = np.signbit(x)
    mant, exp = np.frexp(np.where(finite, x, 0.5))
    # x = m * 2**(exp - 53) with m an integer, 2**52 <= |m| < 2**53 (or 0).
    m = (mant * float(1 << 53)).astype(np.int64)
    k = exp.astype(np.int64) - 53 + t.frac
    # ap_fixed reads inf/NaN as (1.f) * 2**1024 of the stored sign: beyond every type's range.
    m = np.where(finite, m, np.where(neg, -(1 << 52), 1 << 52))
    k = np.where(finite, k, 1024 - 52 + t.frac)
    left = k >= 0
    if t.o_mode == "AP_WRAP":
        # (m << k) mod 2**width: the bits of m above width - k are shifted out anyway.
        keep = np.clip(t.width - k, 0, 62)
        low = m & ((np.int64(1) << keep) - 1)
        q_left = np.where(k < t.width, low << np.clip(k, 0, 62), 0)
    else:
        # |m| >= 2**52, so any k > 9 already overflows every type up to MAX_WIDTH bits.
        q_left = m << np.clip(k, 0, 9)
    q_right = round_shift(m, np.where(left, 1, -k), t.q_mode)
    return overflow(_int_quirk(x, np.where(left, q_left, q_right), t), t)


def _int_quirk(x: np.ndarray, q: np.ndarray, t: FixedType) -> np.ndarray:
    """`ap_int_base(double)` and `(float)` truncate |x| and negate, but give -(-1) = 1 for -0.5 < x < 0."""
    if not t.is_int:
        return q
    return np.where((x < 0) & (x > -0.5), 1, q)


_FAST_LIMIT = float(1 << 52)


def from_float32(x: np.ndarray, t: FixedType) -> np.ndarray:
    """`t(float)` elementwise: as `from_double`, with a fast path for float32 inputs.

    x * 2**frac is exact in float64 for a float32 x, and so are the +-0.5 steps below while
    |x * 2**frac| < 2**52 (a float32 has 24 significant bits); other elements take `from_double`.
    """
    y = np.asarray(x, dtype=np.float32).astype(np.float64)
    y *= 2.0**t.frac
    big = ~(np.abs(y) < _FAST_LIMIT)  # also NaN
    if big.any():
        y[big] = 0.0
    q = t.q_mode
    if q == "AP_TRN":
        r = np.floor(y)
    elif q == "AP_RND":
        r = np.floor(y + 0.5)
    elif q == "AP_RND_CONV":
        r = np.rint(y)
    elif q == "AP_TRN_ZERO":
        r = np.trunc(y)
    elif q == "AP_RND_MIN_INF":
        r = np.ceil(y - 0.5)
    elif q == "AP_RND_INF":
        r = np.copysign(np.floor(np.abs(y) + 0.5), y)
    else:  # AP_RND_ZERO
        r = np.copysign(np.ceil(np.abs(y) - 0.5), y)
    out = r.astype(np.int64)
    if big.any():
        # from_double's results are in range already, so the overflow below leaves them alone.
        out[big] = from_double(np.asarray(x, dtype=np.float32)[big].astype(np.float64), t)
    return overflow(_int_quirk(y, out, t), t)


def to_float32(raw: np.ndarray, t: FixedType) -> np.ndarray:
    """`float(value)` elementwise (`ap_fixed_base::to_float`: one round-half-to-even)."""
    return (np.asarray(raw, dtype=np.int64).astype(np.float64) * 2.0 ** (-t.frac)).astype(np.float32)
