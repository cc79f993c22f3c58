"""The float64 plan computes the same bits as the int64 layers, for random types and modes.

The int64 layers are checked against ap_types (`test_fixedpoint_vs_cpp`) and the C simulation
(`test_engine_vs_hls4ml`); here hypothesis draws chains whose accumulators keep every product bit
(the plan's domain) with random Q/O modes on the result and activation casts, and compares
`predict` (the plan) with `predict_raw` (always the int64 layers).
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, reject, settings
from hypothesis import strategies as st

from fpgaas.kernels.engine import FixedPointEngine, UnsupportedLayer, parse_type
from fpgaas.kernels.engine.fixedpoint import O_MODES, Q_MODES, to_float32
from fpgaas.kernels.engine.layers import Activation, Dense, Normalize
from fpgaas.kernels.engine.plan import compile_plan

SPECIAL = np.array([np.nan, -np.inf, np.inf, 3.4e38, -3.4e38, 1e-45, -0.0, 2.0**40], dtype=np.float32)


@st.composite
def types(draw: st.DrawFn, lo: int = 2, hi: int = 18, unsigned: bool | None = None) -> str:
    width = draw(st.integers(lo, hi))
    integer = draw(st.integers(-2, width + 2))
    u = draw(st.booleans()) if unsigned is None else unsigned
    q, o = draw(st.sampled_from(Q_MODES)), draw(st.sampled_from(O_MODES))
    return f"ap_{'u' if u else ''}fixed<{width},{integer},{q},{o}>"


@st.composite
def chains(draw: st.DrawFn) -> FixedPointEngine:
    try:
        return _chain(draw)
    except UnsupportedLayer:  # the int64 layers refuse it too (e.g. sums beyond 62 bits)
        reject()


def _chain(draw: st.DrawFn) -> FixedPointEngine:
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    n_in = n_inputs = draw(st.integers(1, 9))
    in_type = parse_type(draw(types()))
    x_type, layers = in_type, []
    for i in range(draw(st.integers(1, 3))):
        if draw(st.integers(0, 4)) == 0:
            s_type, b_type = parse_type(draw(types(2, 10))), parse_type(draw(types(2, 10)))
            scale = rng.integers(s_type.raw_min, s_type.raw_max, n_in, endpoint=True)
            bias = rng.integers(b_type.raw_min, b_type.raw_max, n_in, endpoint=True)
            out = parse_type(draw(types()))
            layers.append(Normalize(f"bn_{i}", x_type, out, s_type, b_type, scale, bias))
            x_type = out
            continue
        n_out = draw(st.integers(1, 9))
        w_type = parse_type(f"ap_fixed<{draw(st.integers(2, 12))},{draw(st.integers(0, 4))}>")
        b_type = parse_type(draw(types(2, 12)))
        # Wide enough for every product bit: the plan's domain (else it must refuse, tested below).
        frac = x_type.frac + w_type.frac + draw(st.integers(0, 3))
        width = min(53, frac + 20)
        acc = parse_type(f"ap_fixed<{width},{width - frac},{draw(st.sampled_from(Q_MODES))},AP_WRAP>")
        w = rng.integers(w_type.raw_min, w_type.raw_max, (n_in, n_out), endpoint=True)
        b = rng.integers(b_type.raw_min, b_type.raw_max, n_out, endpoint=True)
        out = parse_type(draw(st.sampled_from([str(acc), draw(types(4, 24))])))
        layers.append(Dense(f"dense_{i}", x_type, out, w_type, b_type, acc, w, b))
        x_type, n_in = out, n_out
        if draw(st.booleans()):
            act_out = parse_type(draw(types(2, 16)))
            layers.append(Activation(f"act_{i}", draw(st.sampled_from(["relu", "linear"])), x_type, act_out))
            x_type = act_out
    return FixedPointEngine(in_type, layers, n_inputs, n_in)


def _inputs(engine: FixedPointEngine, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    n = 3000
    x = rng.normal(0, 1, (n, engine.n_inputs)) * 10.0 ** rng.uniform(-4, 4, (n, 1))
    ties = (rng.integers(-512, 512, (200, engine.n_inputs)) + 0.5) * 2.0 ** rng.integers(-12, 4, (200, 1))
    special = rng.choice(SPECIAL, (40, engine.n_inputs))
    return np.concatenate([x, ties, special]).astype(np.float32)


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(engine=chains(), seed=st.integers(0, 1000))
def test_plan_equals_the_int64_layers(engine: FixedPointEngine, seed: int) -> None:
    x = _inputs(engine, seed)
    want = to_float32(engine.predict_raw(x), parse_type(engine.describe()[-1]["result"]))
    for rows in (x, x[:1], x[:33]):
        got = engine.predict(rows)
        assert np.array_equal(got.view(np.uint32), want[: len(rows)].view(np.uint32)), (
            engine.path,
            engine.describe(),
        )


def test_most_drawn_chains_take_the_plan() -> None:
    """The comparison above is not vacuous: the drawn chains mostly compile to the float64 plan."""
    paths: list[str] = []

    @settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))
    @given(engine=chains())
    def collect(engine: FixedPointEngine) -> None:
        paths.append(engine.path)

    collect()
    assert sum(p == "float64 plan" for p in paths) > 0.6 * len(paths), paths[:10]


@pytest.mark.parametrize("o_mode", ["AP_SAT", "AP_SAT_SYM", "AP_WRAP", "AP_SAT_ZERO"])
@pytest.mark.parametrize("function", ["relu", "linear"])
def test_clamp_after_a_coarse_input_grid(o_mode: str, function: str) -> None:
    """Regression: an input with frac = -1 gives Dense sums on a grid of 8 LSBs of the result type;
    the saturation to raw 7 leaves that grid, so the next cast (2 fraction bits) must still round
    (hypothesis found 0.4375 where ap_fixed<2,0> gives 0.25)."""
    in_t, out = parse_type("ap_fixed<2,3,AP_TRN,AP_WRAP>"), parse_type(f"ap_fixed<4,0,AP_TRN,{o_mode}>")
    acc, act = parse_type("ap_fixed<21,20,AP_TRN,AP_WRAP>"), parse_type("ap_fixed<2,0,AP_TRN,AP_WRAP>")
    layers = [
        Dense(
            "dense_0",
            in_t,
            out,
            parse_type("ap_fixed<2,0>"),
            parse_type("ap_fixed<4,2>"),
            acc,
            np.array([[1, -1]]),
            np.array([0, 1]),
        ),
        Activation("act_0", function, out, act),
    ]
    engine = FixedPointEngine(in_t, layers, 1, 2)
    x = np.linspace(-20, 20, 401, dtype=np.float32).reshape(-1, 1)
    got = np.empty((len(x), 2), dtype=np.float32)
    compile_plan(in_t, layers, 1).run(x, got)  # the plan itself, not hidden by the engine's self-check
    want = to_float32(engine.predict_raw(x), act)
    assert np.array_equal(got.view(np.uint32), want.view(np.uint32))
    assert engine.path == "float64 plan"
