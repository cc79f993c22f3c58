"""`FloatPlan`: the whole layer chain compiled to a few in-place float64 numpy calls per layer.

Every value the network forms is a dyadic rational (an integer count of some power-of-two LSB).
float64 holds such a value exactly while the count stays below 2**53, and multiplying by a power
of two is exact, so a fixed-point network can run on float64 arrays without any loss provided

* every Dense product sum (and every prefix of it, in any order) is proven from the types and the
  weights to stay below 2**53 units of its finest LSB: then one BLAS matmul is exact, whatever
  order or FMA use the BLAS picks;
* every Q mode is applied with a float rounding function that is exact on such values
  (floor, ceil, trunc, rint, the +-0.5 steps of `fixedpoint.from_float32`);
* every O mode is applied with clamping (SAT*) or an exact float modulo (WRAP), and skipped when
  the bounds carried from layer to layer prove it a no-op.

Scale factors (a change of LSB) and the +1/2 of round-half-up are folded into the weights and
biases of the producing layer, and the bias rides in the matmul (a ones column), so each hidden
layer of the served muon model costs one BLAS call, one `rint` and a max/min clamp. `compile_plan` refuses (returns the reason) what it cannot prove:
products truncated to a narrow `accum_t` (the engine's correction path), saturating accumulators
that might saturate, ap_int targets, bounds beyond 2**51. Rows are processed in chunks of
2,048 through all layers so the two alternating buffers stay in L2.

Thread-safety: a plan is immutable; scratch buffers live in a `threading.local`, one set per
thread and batch size, so any number of threads may call `run` at once.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from fpgaas.kernels.engine.fixedpoint import FixedType, from_float32, requantize
from fpgaas.kernels.engine.layers import Activation, Dense, Layer, Normalize

Op = Callable[[np.ndarray], object]  # in place on a float64 array; the result is ignored
# An op bound to its constants' shape: `(width,)` rows for one row of `width` values, where
# numpy's ufuncs take a same-shape operand ~0.25 µs faster per call than a 0-d one (a single-row
# request makes ~30 such calls), or None for 0-d constants, which keep a batch's ufunc loops
# contiguous (a row would broadcast and cut them into `width`-long pieces, 2x slower at 1,024 rows).
OpFactory = Callable[[int | None], Op]
_EXACT = 1 << 51  # margin below float64's 2**53 for the +-0.5 steps and the wrap's + 2**(W-1)
_BIG, _BIG_SQUARES = 2.0**50, 2.0**100
_CHUNK = 2048  # rows per pass through all layers: the ping-pong buffers then stay in L2
_CACHED_SHAPES = 4  # batch sizes whose buffers a thread keeps
_SMALL_WRAP = 128  # elements up to which the wrap uses np.mod: exact, fewer calls, but ~30 ns per element
# numpy's clip ufunc: min(max(v, lo), hi) in one call (`np.clip` adds ~1.5 µs of Python around it).
_CLIP: np.ufunc = np.core.umath.clip  # type: ignore[attr-defined]  # not in numpy's stubs


def _row(value: float, width: int | None) -> np.ndarray:
    """One float64 constant as a (width,) row, or 0-d for width None (see `OpFactory`)."""
    return np.asarray(float(value)) if width is None else np.full(width, float(value))


class NotPlannable(Exception):
    """The chain needs something float64 cannot prove exact (the message says what)."""


@dataclass
class _Step:
    """One producer (input scaling, matmul + bias, or x*scale + bias) and the in-place ops after it."""

    kind: str  # "input", "dense", "normalize"
    n_out: int
    weight: np.ndarray | None  # dense (n_in, n_out) / normalize (n_out,) float64, folded scale
    bias: np.ndarray | None  # (n_out,) float64, folded scale and rounding offset
    ops: list[OpFactory]


class _Stage:
    """Bookkeeping while compiling one producer's cast chain.

    The buffer holds value * 2**exp. While no op has been emitted yet, `exp` and `offset` are free:
    they end up folded into the producer's constants.
    """

    def __init__(self, exp: int, lo: Fraction, hi: Fraction, frac_bits: int) -> None:
        self.exp, self.lo, self.hi, self.frac_bits = exp, lo, hi, frac_bits
        self.start_exp = exp
        self.offset = Fraction(0)  # added by the producer, in buffer units
        self.ops: list[OpFactory] = []
        self.producer_exp: int | None = None  # the buffer scale the producer writes (fixed by the first op)

    def _emit(self, op: OpFactory) -> None:
        if not self.ops:
            self.producer_exp = self.exp
        self.ops.append(op)

    def rescale(self, exp: int) -> None:
        if exp == self.exp:
            return
        k = exp - self.exp
        if self.ops:
            self._emit(_scale_op(2.0**k))
        else:
            self.offset *= Fraction(2) ** k  # still the producer's, so in the new units
        self.lo, self.hi = self.lo * Fraction(2) ** k, self.hi * Fraction(2) ** k
        self.exp, self.frac_bits = exp, self.frac_bits - k

    def cast(self, t: FixedType, relu: bool, where: str) -> None:
        """Append `t(max(v, 0) if relu else v)` (quantize with t's Q mode, then its O mode)."""
        if t.is_int:
            raise NotPlannable(f"{where}: cast to {t} (ap_int rounding is not modelled in float64)")
        self.rescale(t.frac)
        big = max(abs(self.lo), abs(self.hi)) + 1
        if big * 2 ** max(self.frac_bits, 1) >= _EXACT:
            raise NotPlannable(f"{where}: values before the cast to {t} may exceed 2**52 LSBs")
        if self.frac_bits > 0:
            self._round(t.q_mode)
            self.lo, self.hi = Fraction(math.floor(self.lo)), Fraction(math.ceil(self.hi))
            self.frac_bits = 0
        lo, hi = t.raw_min, t.raw_max
        if t.o_mode == "AP_SAT_SYM" and t.signed and t.width > 1:
            lo = -hi
        needs_relu = relu and self.lo < 0
        if relu:
            self.lo, self.hi = max(self.lo, Fraction(0)), max(self.hi, Fraction(0))
        if lo <= self.lo and self.hi <= hi:
            if needs_relu:
                self._clamp(0, None)
            return
        if t.o_mode in ("AP_SAT", "AP_SAT_SYM"):
            low = max(lo, 0) if relu else lo
            clamp_lo = low if self.lo < low or needs_relu else None
            clamp_hi = hi if self.hi > hi else None
            self._clamp(clamp_lo, clamp_hi)
            if clamp_hi is not None or clamp_lo:
                # A clamp to a nonzero integer bound leaves values on the unit grid only: a
                # coarser one (frac_bits < 0, after a rescale to a finer LSB) no longer holds.
                self.frac_bits = max(self.frac_bits, 0)
            self.lo, self.hi = max(self.lo, Fraction(lo)), min(self.hi, Fraction(hi))
            return
        if needs_relu:
            self._clamp(0, None)
        if t.o_mode == "AP_SAT_ZERO":
            self._emit(_sat_zero_op(lo, hi))
            self.lo, self.hi = (
                max(min(self.lo, Fraction(0)), Fraction(lo)),
                min(max(self.hi, Fraction(0)), Fraction(hi)),
            )
            return
        self._emit(_wrap_op(t))
        # Subtracting multiples of 2**width keeps only a grid of 2**min(width, -frac_bits).
        self.frac_bits = max(self.frac_bits, -t.width)
        self.lo, self.hi = Fraction(lo), Fraction(hi)

    def _clamp(self, lo: int | None, hi: int | None) -> None:
        if lo is not None or hi is not None:
            self._emit(_clamp_op(lo, hi))

    def _round(self, q_mode: str) -> None:
        """Round to an integer as `fixedpoint.from_float32` does (each step exact, see there)."""
        if q_mode in ("AP_RND", "AP_RND_MIN_INF") and not self.ops:
            # Half up (AP_RND) / half down (AP_RND_MIN_INF): fold the +-1/2 into the producer.
            self.offset += Fraction(1, 2) if q_mode == "AP_RND" else Fraction(-1, 2)
            self._emit(_FLOOR if q_mode == "AP_RND" else _CEIL)
            return
        self._emit(_ROUNDERS[q_mode])

    def fold(self, bound: Fraction, grid: Fraction) -> tuple[Fraction, Fraction]:
        """(scale, offset) the producer applies: its exact sum, |sum| <= bound in units of `grid`
        at the stage's starting scale, times `scale` plus `offset` must stay exact in float64."""
        exp = self.exp if self.producer_exp is None else self.producer_exp
        scale = Fraction(2) ** (exp - self.start_exp)
        finest = min(grid * scale, Fraction(1, 2)) if self.offset else grid * scale
        if (bound * scale + abs(self.offset)) / finest >= _EXACT:
            raise NotPlannable(f"a product sum may exceed 2**52 of its LSB ({float(bound):.3g} units)")
        return scale, self.offset


def _fixed(op: Op) -> OpFactory:
    """An op without constants, the same at every width."""
    return lambda width: op


def _scale_op(factor: float) -> OpFactory:
    def make(width: int | None) -> Op:
        row = _row(factor, width)
        return lambda v: np.multiply(v, row, out=v)

    return make


def _clamp_op(lo: int | None, hi: int | None) -> OpFactory:
    def make(width: int | None) -> Op:
        low = _row(-math.inf if lo is None else lo, width)
        high = _row(math.inf if hi is None else hi, width)
        if width is not None:  # one call where per-call overhead is all there is
            return lambda v: _CLIP(v, low, high, out=v)
        # A batch: numpy's maximum and minimum are SIMD loops, its clip is not (6% of a
        # 1,024-row call).
        if lo is None:
            return lambda v: np.minimum(v, high, out=v)
        if hi is None:
            return lambda v: np.maximum(v, low, out=v)

        def clamp(v: np.ndarray) -> None:
            np.maximum(v, low, out=v)
            np.minimum(v, high, out=v)

        return clamp

    return make


def _sat_zero_op(lo: int, hi: int) -> OpFactory:
    def make(width: int | None) -> Op:
        low, high = _row(lo, width), _row(hi, width)
        return lambda v: np.copyto(v, 0.0, where=(v < low) | (v > high))

    return make


def _shifted_op(shift: float, rounder: Op) -> OpFactory:
    """v + shift, then `rounder` (half up: + 1/2 then floor; half down: - 1/2 then ceil)."""

    def make(width: int | None) -> Op:
        row = _row(shift, width)

        def shifted(v: np.ndarray) -> None:
            np.add(v, row, out=v)
            rounder(v)

        return shifted

    return make


def _half_away(v: np.ndarray) -> None:
    np.copysign(np.floor(np.abs(v) + 0.5), v, out=v)


def _half_zero(v: np.ndarray) -> None:
    np.copysign(np.ceil(np.abs(v) - 0.5), v, out=v)


_FLOOR: OpFactory = _fixed(lambda v: np.floor(v, out=v))
_CEIL: OpFactory = _fixed(lambda v: np.ceil(v, out=v))
_ROUNDERS: dict[str, OpFactory] = {
    "AP_TRN": _FLOOR,
    "AP_RND": _shifted_op(0.5, lambda v: np.floor(v, out=v)),
    "AP_RND_CONV": _fixed(lambda v: np.rint(v, out=v)),
    "AP_TRN_ZERO": _fixed(lambda v: np.trunc(v, out=v)),
    "AP_RND_MIN_INF": _shifted_op(-0.5, lambda v: np.ceil(v, out=v)),
    "AP_RND_INF": _fixed(_half_away),
    "AP_RND_ZERO": _fixed(_half_zero),
}
# The last op of a network's output: a rounding step can leave -0.0 where C's float(0) is +0.0.
_PLUS_ZERO: OpFactory = _fixed(lambda v: np.add(v, 0.0, out=v))


def _wrap_op(t: FixedType) -> OpFactory:
    """Integer-valued v (|v| < 2**51) modulo 2**width into t's raw range.

    v - 2**W * floor((v + c) / 2**W), c = 2**(W-1) if signed else 0: every step is exact for
    |v| < 2**51 (sums of integers below 2**53, scaling by powers of two, floor).
    """

    def make(width: int | None) -> Op:
        modulus, inverse = _row(2.0**t.width, width), _row(2.0**-t.width, width)
        c = _row(2.0 ** (t.width - 1) if t.signed else 0.0, width)

        def wrap(v: np.ndarray) -> None:
            if v.size <= _SMALL_WRAP:  # fewer calls; numpy's float mod is exact but slow per element
                v += c
                np.mod(v, modulus, out=v)
                v -= c
                return
            k = np.add(v, c)
            k *= inverse
            np.floor(k, out=k)
            k *= modulus
            v -= k

        return wrap

    return make


class FloatPlan:
    """The compiled chain. `run` maps float32 (n, n_in) to float32 (n, n_out), bit-exact.

    Every buffer carries a trailing column of ones and every Dense weight matrix a bias row and
    a (0, ..., 0, 1) column: one BLAS call computes x @ W + b and regenerates the ones column.
    """

    def __init__(self, input_type: FixedType, steps: list[_Step], n_in: int) -> None:
        self._input_type = input_type
        self._steps = tuple(steps)
        self._width = max(s.n_out for s in steps[1:]) + 1
        self._weights: list[np.ndarray] = []
        self._biases: list[np.ndarray] = []
        self._ops_on_ones: list[bool] = []
        # Per step, the ops bound for batches (0-d constants) and for a single row ((width,) rows).
        self._ops: list[tuple[Op, ...]] = []
        self._row_ops: list[tuple[Op, ...]] = []
        self._row_scale = _row(float(np.asarray(steps[0].weight)), n_in)
        for k, step in enumerate(steps):
            if step.kind == "dense":
                assert step.weight is not None and step.bias is not None
                w = np.zeros((step.weight.shape[0] + 1, step.n_out + 1))
                w[:-1, :-1], w[-1, :-1], w[-1, -1] = step.weight, step.bias, 1.0
                self._weights.append(w)
                self._biases.append(np.zeros(0))
            elif step.kind == "normalize":
                assert step.weight is not None and step.bias is not None
                self._weights.append(np.append(step.weight, 1.0))
                self._biases.append(np.append(step.bias, 0.0))
            else:
                self._weights.append(np.asarray(step.weight))
                self._biases.append(np.zeros(0))
            # The ops may run over the ones column too (contiguous, faster) when they keep 1 at 1.
            probe = np.ones((1, 1))
            for make in step.ops:
                make(None)(probe)
            on_ones = k > 0 and probe[0, 0] == 1.0
            self._ops_on_ones.append(on_ones)
            self._ops.append(tuple(make(None) for make in step.ops))
            self._row_ops.append(tuple(make(step.n_out + on_ones) for make in step.ops))
        self._local = threading.local()

    def run(self, x: np.ndarray, out: np.ndarray) -> None:
        """Write the outputs for float32 x (n, n_in) into float32 out (n, n_out)."""
        for start in range(0, x.shape[0], _CHUNK):
            stop = min(x.shape[0], start + _CHUNK)
            self._run_chunk(x[start:stop], out[start:stop])

    def _work(self, m: int) -> _Work:
        """The buffers and calls for m rows, this thread's own (two buffers alternate in memory)."""
        cache: dict[int, _Work] | None = getattr(self._local, "cache", None)
        if cache is None:
            cache = self._local.cache = {}
        found = cache.get(m)
        if found is not None:
            return found
        if len(cache) >= _CACHED_SHAPES:
            cache.pop(next(iter(cache)))
        flats = (np.empty(m * self._width), np.empty(m * self._width))
        bufs: list[np.ndarray] = [
            np.ones((m, self._steps[0].n_out + 1))
        ]  # its ones column is written once, here
        for k, step in enumerate(self._steps[1:]):
            bufs.append(flats[k % 2][: m * (step.n_out + 1)].reshape(m, step.n_out + 1))
        if m == 1:  # vectors: numpy's per-call overhead is lower for 1-D operands
            bufs = [b.reshape(-1) for b in bufs]
        ops = self._row_ops if m == 1 else self._ops
        layers = tuple(
            _LayerWork(
                self._steps[k].kind == "dense",
                bufs[k - 1],
                self._weights[k],
                self._biases[k],
                bufs[k],
                bufs[k] if self._ops_on_ones[k] else bufs[k][..., :-1],
                ops[k],
            )
            for k in range(1, len(self._steps))
        )
        scale = self._row_scale if m == 1 else self._weights[0]
        work = _Work(bufs[0][..., :-1], scale, ops[0], bufs[0].reshape(-1), layers, bufs[-1][..., :-1])
        cache[m] = work
        return work

    def _run_chunk(self, x: np.ndarray, out: np.ndarray) -> None:
        work = self._work(x.shape[0])
        if x.shape[0] == 1:
            x = x.reshape(-1)
        h = work.inputs
        np.multiply(x, work.scale, out=h, dtype=np.float64)
        # The sum of squares of scaled float32 values (and the ones) cannot overflow float64:
        # below 2**100 it proves every |h| < 2**50, where the ops are exact; else the few large,
        # infinite or NaN elements are converted by `from_float32` itself.
        bad = None
        flat = work.flat
        if not np.dot(flat, flat) < _BIG_SQUARES:
            bad = ~(np.abs(h) < _BIG)
            h[bad] = 0.0
        for op in work.input_ops:
            op(h)
        if bad is not None:
            h[bad] = from_float32(np.asarray(x, dtype=np.float32)[bad], self._input_type)
        for layer in work.layers:
            if layer.dense:
                np.dot(layer.source, layer.weight, out=layer.result)
            else:
                np.multiply(layer.source, layer.weight, out=layer.result)
                np.add(layer.result, layer.bias, out=layer.result)
            target = layer.target
            for op in layer.ops:
                op(target)
        out[...] = work.outputs  # the last step leaves values (exp 0): one float64 -> float32 rounding


@dataclass(frozen=True)
class _LayerWork:
    """One producer step over the buffers of one batch size: result = f(source), then the ops
    on `target` (the result, or all of it but its ones column)."""

    dense: bool
    source: np.ndarray
    weight: np.ndarray
    bias: np.ndarray
    result: np.ndarray
    target: np.ndarray
    ops: tuple[Op, ...]


@dataclass(frozen=True)
class _Work:
    """Everything `FloatPlan` touches for one batch size, built once per thread and size."""

    inputs: np.ndarray  # (m, n_in) of the first buffer, whose last column holds ones
    scale: np.ndarray  # 2**frac of the input type, the inputs' factor
    input_ops: tuple[Op, ...]  # the input type's cast
    flat: np.ndarray  # the whole first buffer, flat (the finiteness proof)
    layers: tuple[_LayerWork, ...]
    outputs: np.ndarray  # the last buffer without its ones column


def compile_plan(input_type: FixedType, layers: list[Layer], n_inputs: int) -> FloatPlan:
    """Compile the chain, or raise `NotPlannable` with the first reason it cannot be proven exact."""
    steps = [_input_step(input_type, n_inputs)]
    lo, hi, exp = Fraction(input_type.raw_min), Fraction(input_type.raw_max), input_type.frac
    i = 0
    while i < len(layers):
        layer = layers[i]
        follower = layers[i + 1] if i + 1 < len(layers) else None
        activation = follower if isinstance(follower, Activation) else None
        last = i + (2 if activation is not None else 1) >= len(layers)
        if isinstance(layer, Dense):
            step, lo, hi, exp = _dense_step(layer, activation, lo, hi, exp, last)
        elif isinstance(layer, Normalize):
            step, lo, hi, exp = _normalize_step(layer, activation, lo, hi, exp, last)
        else:
            raise NotPlannable(f"{layer.name}: an activation that follows no Dense or Normalize layer")
        steps.append(step)
        i += 2 if activation is not None else 1
    if len(steps) < 2:
        raise NotPlannable("no Dense or Normalize layer")
    return FloatPlan(input_type, steps, n_inputs)


def _input_step(t: FixedType, n_inputs: int) -> _Step:
    """`t(float)`: h = x * 2**frac (exact for every float32), rounded, then t's O mode.

    Exact while |h| < 2**50 (see `fixedpoint.from_float32`); `FloatPlan` converts the other
    elements (huge, inf, NaN) with `from_float32` itself.
    """
    if t.is_int:
        raise NotPlannable(f"input type {t} is an ap_int")
    ops: list[OpFactory] = [_ROUNDERS[t.q_mode]]
    lo, hi = t.raw_min, t.raw_max
    if t.o_mode == "AP_WRAP":
        ops.append(_wrap_op(t))
    elif t.o_mode == "AP_SAT_ZERO":
        ops.append(_sat_zero_op(lo, hi))
    else:
        stage = _Stage(0, Fraction(0), Fraction(0), 0)
        stage._clamp(-hi if t.o_mode == "AP_SAT_SYM" and t.signed and t.width > 1 else lo, hi)
        ops += stage.ops
    return _Step("input", n_inputs, np.asarray(2.0**t.frac), np.zeros(0), ops)


def _dense_step(
    layer: Dense, activation: Activation | None, lo: Fraction, hi: Fraction, exp: int, last: bool
) -> tuple[_Step, Fraction, Fraction, int]:
    acc = layer.accum_type
    shift = layer.in_type.frac + layer.weight_type.frac - acc.frac
    if shift > 0:
        raise NotPlannable(f"{layer.name}: accum_t {acc} drops {shift} bits of every product")
    _check_input(layer, lo, hi, exp)
    w_acc = layer.weights.astype(object) * (1 << -shift)  # accum_t LSBs per input LSB, exact ints
    b_acc = requantize(layer.bias, layer.bias_type.frac, acc).astype(object)
    col = np.abs(w_acc).sum(axis=0) * int(max(-lo, hi)) + np.abs(b_acc)
    bound = Fraction(int(max(col, default=0)))
    # Every product and partial sum is within +-bound: then accum_t's O mode never acts.
    if not (acc.raw_min <= -bound and bound <= acc.raw_max) and acc.o_mode != "AP_WRAP":
        raise NotPlannable(f"{layer.name}: accum_t {acc} may saturate")
    stage = _Stage(acc.frac, -bound, bound, 0)
    stage.cast(acc, False, layer.name)
    stage.cast(layer.out_type, False, layer.name)
    _activation(stage, activation, last)
    scale, offset = stage.fold(bound, Fraction(1))
    weight = np.array([[float(Fraction(int(w)) * scale) for w in row] for row in w_acc], dtype=np.float64)
    bias = np.array([float(Fraction(int(b)) * scale + offset) for b in b_acc], dtype=np.float64)
    step = _Step("dense", layer.n_out, weight.reshape(layer.n_in, layer.n_out), bias, stage.ops)
    return step, stage.lo, stage.hi, stage.exp


def _normalize_step(
    layer: Normalize, activation: Activation | None, lo: Fraction, hi: Fraction, exp: int, last: bool
) -> tuple[_Step, Fraction, Fraction, int]:
    _check_input(layer, lo, hi, exp)
    f_prod = layer.in_type.frac + layer.scale_type.frac
    frac = max(f_prod, layer.bias_type.frac)
    s = layer.scale.astype(object) * (1 << (frac - f_prod))
    b = layer.bias.astype(object) * (1 << (frac - layer.bias_type.frac))
    bound = Fraction(int(max(np.abs(s) * int(max(-lo, hi)) + np.abs(b), default=0)))
    stage = _Stage(frac, -bound, bound, 0)
    stage.cast(layer.out_type, False, layer.name)
    _activation(stage, activation, last)
    scale, offset = stage.fold(bound, Fraction(1))
    weight = np.array([float(Fraction(int(v)) * scale) for v in s], dtype=np.float64)
    bias = np.array([float(Fraction(int(v)) * scale + offset) for v in b], dtype=np.float64)
    return _Step("normalize", len(s), weight, bias, stage.ops), stage.lo, stage.hi, stage.exp


def _check_input(layer: Dense | Normalize, lo: Fraction, hi: Fraction, exp: int) -> None:
    t = layer.in_type
    if exp != t.frac or lo < t.raw_min or hi > t.raw_max:
        raise NotPlannable(f"internal: the input of {layer.name} is not in raw {t} units")


def _activation(stage: _Stage, activation: Activation | None, last: bool) -> None:
    if activation is not None:
        stage.cast(activation.out_type, activation.function == "relu", activation.name)
    if last:
        # The network's output as a value (exp 0), folded into the constants when no op followed.
        stage.rescale(0)
        if stage.ops:
            stage.ops.append(_PLUS_ZERO)
