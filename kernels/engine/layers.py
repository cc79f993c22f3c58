"""Bit-exact batch kernels for the hls4ml layers the engine supports.

Each layer maps raw int64 values of its input type, shape (n_in, n) -- features first, the batch
contiguous, so every numpy pass runs over long rows -- to raw int64 values of its result type,
shape (n_out, n). Layers are immutable after construction (thread-safe).

Dense follows `nnet::dense_latency` exactly: every product `x * w` (exact, type
`ap_fixed<Wx+Ww, Ix+Iw>`) is cast to `accum_t`, the accumulator starts at `(accum_t)bias`, the
products are added in input order with `accum_t`'s overflow mode after each `+=`, and the sum is
cast to the result type. The fast path gets the same bits from one float64 BLAS matmul plus a
16-bit correction for the truncated product bits; `plan` says which path a layer uses and why.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from fpgaas.kernels.engine.errors import UnsupportedLayer
from fpgaas.kernels.engine.fixedpoint import FixedType, check_int_target, overflow, requantize, round_shift

_EXACT_F64 = 1 << 53
_EXACT_I64 = 1 << 62
# Q modes whose rounding commutes with adding integers: floor((p + k) / 2**s) for a constant k.
_SHIFT_INVARIANT_K = {"AP_TRN": 0, "AP_RND": 1, "AP_RND_MIN_INF": 2}
# Elements of the (n_in, n_out, n) elementwise buffers of the slow paths, per chunk.
_BUFFER_ELEMENTS = 1 << 18


class Layer(Protocol):
    """What the engine chains: raw (n_in, n) in the input type -> raw (n_out, n) in the result type."""

    @property
    def name(self) -> str: ...

    @property
    def in_type(self) -> FixedType: ...

    @property
    def out_type(self) -> FixedType: ...

    def run(self, x: np.ndarray) -> np.ndarray: ...

    def describe(self) -> dict[str, Any]: ...


def _bounds(t: FixedType) -> tuple[int, int]:
    return t.raw_min, t.raw_max


@dataclass(frozen=True)
class Activation:
    """`nnet::relu` (`res = data > 0 ? data : 0`) or `nnet::linear` (`res = data`), cast to res_T."""

    name: str
    function: str  # "relu" or "linear"
    in_type: FixedType
    out_type: FixedType

    def __post_init__(self) -> None:
        check_int_target(self.in_type.integer, self.out_type, self.name)

    def run(self, x: np.ndarray) -> np.ndarray:
        if self.function == "linear":
            return requantize(x, self.in_type.frac, self.out_type, _bounds(self.in_type))
        # res_T(0) is 0 for every type, so clamping first and casting after is the same.
        x = np.maximum(x, 0)
        return requantize(x, self.in_type.frac, self.out_type, (0, max(0, self.in_type.raw_max)))

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "function": self.function,
            "input": str(self.in_type),
            "result": str(self.out_type),
        }


@dataclass(frozen=True)
class Normalize:
    """`nnet::normalize` (n_filt = -1): res = x * scale + bias, exact, then cast to res_T."""

    name: str
    in_type: FixedType
    out_type: FixedType
    scale_type: FixedType
    bias_type: FixedType
    scale: np.ndarray  # raw, shape (n,)
    bias: np.ndarray  # raw, shape (n,)

    def __post_init__(self) -> None:
        f_prod = self.in_type.frac + self.scale_type.frac
        frac = max(f_prod, self.bias_type.frac)
        bound = (self.in_type.max_abs * int(np.abs(self.scale).max(initial=0)) << (frac - f_prod)) + (
            int(np.abs(self.bias).max(initial=0)) << (frac - self.bias_type.frac)
        )
        if bound << max(0, self.out_type.frac - frac) >= _EXACT_I64:
            raise UnsupportedLayer(f"{self.name}: x*scale+bias needs more than 62 bits")
        sum_integer = max(self.in_type.integer + self.scale_type.integer, self.bias_type.integer) + 1
        check_int_target(sum_integer, self.out_type, self.name)

    def run(self, x: np.ndarray) -> np.ndarray:
        f_prod = self.in_type.frac + self.scale_type.frac
        frac = max(f_prod, self.bias_type.frac)
        v = (x * self.scale[:, None]) << (frac - f_prod)
        v += self.bias[:, None] << (frac - self.bias_type.frac)
        return requantize(v, frac, self.out_type)

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "function": "normalize",
            "input": str(self.in_type),
            "scale": str(self.scale_type),
            "bias": str(self.bias_type),
            "result": str(self.out_type),
            "n_in": int(self.scale.size),
        }


@dataclass(frozen=True)
class Dense:
    """`nnet::dense` with the latency strategy and `nnet::product::mult`."""

    name: str
    in_type: FixedType
    out_type: FixedType
    weight_type: FixedType
    bias_type: FixedType
    accum_type: FixedType
    weights: np.ndarray  # raw, shape (n_in, n_out)
    bias: np.ndarray  # raw, shape (n_out,)
    plan: str = field(init=False)
    _fast: _FastDense | None = field(init=False, repr=False)
    _b_acc: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        acc = self.accum_type
        check_int_target(self.in_type.integer + self.weight_type.integer, acc, self.name)
        check_int_target(acc.integer, self.out_type, self.name)
        check_int_target(self.bias_type.integer, acc, self.name)
        shift = self.in_type.frac + self.weight_type.frac - acc.frac  # product LSBs dropped by the cast
        b_acc = requantize(self.bias, self.bias_type.frac, acc)
        wabs = np.abs(self.weights).astype(object)  # Python ints: the bounds below may exceed int64
        xmax = self.in_type.max_abs
        if xmax * int(wabs.max(initial=0)) << max(0, -shift) >= _EXACT_I64:
            raise UnsupportedLayer(f"{self.name}: products need more than 62 bits")
        prod_bound = (xmax * wabs >> shift) + 1 if shift > 0 else xmax * wabs << -shift
        col_bound = max(prod_bound.sum(axis=0) + np.abs(b_acc).astype(object), default=0)
        if col_bound << max(0, shift) >= _EXACT_I64:
            raise UnsupportedLayer(f"{self.name}: the accumulator sum needs more than 62 bits")
        # Overflow of products or partial sums is order-independent only under AP_WRAP; other
        # modes take the fast path only when the types prove no partial sum can leave accum_t.
        safe = acc.o_mode == "AP_WRAP" or (acc.signed and col_bound <= acc.raw_max)
        matmul_bound = max((xmax * wabs << max(0, -shift)).sum(axis=0), default=0) + (
            col_bound << max(0, shift)
        )
        fast: _FastDense | None = None
        if not safe:
            plan = "sequential: accum_t may saturate, products added one by one"
        elif shift > 0 and acc.q_mode not in _SHIFT_INVARIANT_K:
            plan = f"elementwise: products rounded with {acc.q_mode}"
        elif shift > 16 or self.weights.shape[0] * ((1 << max(shift, 0)) - 1) >= 1 << 32:
            plan = "elementwise: too many dropped product bits for the 16-bit correction"
        else:
            blas = matmul_bound < _EXACT_F64
            fast = _FastDense(self.weights, b_acc, shift, acc, blas)
            plan = ("blas-float64" if blas else "int64-matmul") + (
                f" + {shift}-bit correction" if shift > 0 else ""
            )
        object.__setattr__(self, "plan", plan)
        object.__setattr__(self, "_fast", fast)
        object.__setattr__(self, "_b_acc", b_acc)

    @property
    def n_in(self) -> int:
        return int(self.weights.shape[0])

    @property
    def n_out(self) -> int:
        return int(self.weights.shape[1])

    def run(self, x: np.ndarray) -> np.ndarray:
        acc = self._fast.run(x) if self._fast is not None else self._reference_order(x)
        return requantize(acc, self.accum_type.frac, self.out_type, _bounds(self.accum_type))

    def _reference_order(self, x: np.ndarray) -> np.ndarray:
        """dense_latency's order of operations, vectorized over the batch and outputs only."""
        acc_t = self.accum_type
        shift = self.in_type.frac + self.weight_type.frac - acc_t.frac
        n = x.shape[1]
        chunk = max(1, _BUFFER_ELEMENTS // (self.n_in * self.n_out))
        out = np.empty((self.n_out, n), dtype=np.int64)
        for start in range(0, n, chunk):
            p = x[:, None, start : start + chunk] * self.weights[:, :, None]
            q = round_shift(p, shift, acc_t.q_mode) if shift > 0 else p << -shift
            q = overflow(q, acc_t)  # mult[] is an accum_t array
            if acc_t.o_mode == "AP_WRAP":
                acc = overflow(q.sum(axis=0) + self._b_acc[:, None], acc_t)
            else:
                acc = np.broadcast_to(self._b_acc[:, None], q.shape[1:])
                for i in range(self.n_in):
                    acc = overflow(acc + q[i], acc_t)
            out[:, start : start + chunk] = acc
        return out

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "function": "dense",
            "input": str(self.in_type),
            "weight": str(self.weight_type),
            "bias": str(self.bias_type),
            "accum": str(self.accum_type),
            "result": str(self.out_type),
            "n_in": self.n_in,
            "n_out": self.n_out,
            "plan": self.plan,
        }


class _FastDense:
    """Sum over inputs of round((x*w + k) / 2**s), plus (accum_t)bias, wrapped to accum_t.

    With P = sum x*w (one matmul, exact) and R = sum((x*w + k) mod 2**s), the sum of the
    rounded products is (P + n_in*k - R) / 2**s; (x*w + k) mod 2**s depends only on the low s bits
    of x and w, so R comes from cheap wrapping uint16 lanes.
    """

    def __init__(
        self, weights: np.ndarray, b_acc: np.ndarray, shift: int, acc: FixedType, blas: bool
    ) -> None:
        n_in = weights.shape[0]
        if shift < 0:  # accum_t keeps more fraction bits than the product has: scale w once
            weights, shift = weights << -shift, 0
        self.shift, self.acc, self.blas = shift, acc, blas
        self.k = 0
        if shift > 0:
            which = _SHIFT_INVARIANT_K[acc.q_mode]
            self.k = 0 if which == 0 else (1 << (shift - 1)) - (which == 2)
        w_t = np.ascontiguousarray(weights.T)
        self.w_t = w_t.astype(np.float64) if blas else w_t
        s = shift
        const = (b_acc.astype(np.int64) << s) + n_in * self.k
        self.const = (const.astype(np.float64) if blas else const)[:, None]
        self.mask = (1 << s) - 1
        self.sum_dtype = np.uint16 if n_in * self.mask < 1 << 16 else np.uint32
        self.w_low = (weights & self.mask).astype(np.uint16)[:, :, None]
        # The correction buffer (n_in, n_out, chunk) of uint16 should stay in L2.
        self.chunk = max(64, (1 << 18) // max(1, weights.size))

    def run(self, x: np.ndarray) -> np.ndarray:
        s = self.shift
        xm = x.astype(np.float64) if self.blas else x
        p = self.w_t @ xm
        p += self.const
        if s > 0:
            p -= self._residues(x)
        acc: np.ndarray = p.astype(np.int64) if self.blas else p  # int64 either way
        if self.acc.o_mode == "AP_WRAP" and self.acc.signed and 64 - self.acc.width - s >= 0:
            # floor(acc / 2**s) wrapped to accum_t in two shifts (acc is a multiple of 2**s).
            acc <<= np.int64(64 - self.acc.width - s)
            acc >>= np.int64(64 - self.acc.width)
            return acc
        acc >>= np.int64(s)
        return overflow(acc, self.acc)

    def _residues(self, x: np.ndarray) -> np.ndarray:
        n_in, n_out = self.w_low.shape[:2]
        n = x.shape[1]
        x_low = np.empty(x.shape, dtype=np.uint16)
        np.bitwise_and(x, self.mask, out=x_low, casting="unsafe")
        out = np.empty((n_out, n), dtype=self.sum_dtype)
        buf = np.empty((n_in, n_out, min(self.chunk, n)), dtype=np.uint16)
        mask, k = np.uint16(self.mask), np.uint16(self.k)
        for start in range(0, n, self.chunk):
            stop = min(n, start + self.chunk)
            b = buf[:, :, : stop - start]
            np.multiply(x_low[:, None, start:stop], self.w_low, out=b)  # wraps mod 2**16: low bits exact
            if self.k:
                np.add(b, k, out=b)
            np.bitwise_and(b, mask, out=b)
            np.add.reduce(b, axis=0, dtype=self.sum_dtype, out=out[:, start:stop])
        return out
