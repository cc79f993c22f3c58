"""Build test networks with hls4ml 1.3.0 and record their C simulation (run as a subprocess).

    python hls_reference.py OUTROOT REPO_ROOT NAME:N_SAMPLES [NAME:N_SAMPLES ...]

writes, per network, OUTROOT/NAME/hls (the compiled hls4ml project), OUTROOT/NAME/x.npy (float32
inputs: in range, far out of range, exact ties) and OUTROOT/NAME/ref.npy (hls4ml's `predict`,
float32). One process builds several networks (TensorFlow is imported once); the "keras3"
network needs its own process because QKeras needs tf_keras while it needs Keras 3.
"""

from __future__ import annotations

import json
import os
import sys
import zlib
from pathlib import Path
from typing import Any

import numpy as np

PART = "xcu250-figd2104-2L-e"
MUON_SHAPE = (27, [35, 20, 25, 40, 20, 15], 1)


def _hls_config(model: Any, default: str, overrides: dict[str, dict[str, str]]) -> dict[str, Any]:
    from hls4ml.converters import KerasModelReader, parse_keras_model
    from hls4ml.utils.config import _get_precision_from_quantizer

    layers, *_ = parse_keras_model(json.loads(model.to_json()), KerasModelReader(model))
    cfg: dict[str, Any] = {
        "Model": {
            "Precision": {"default": default},
            "ReuseFactor": 1,
            "Strategy": "Latency",
            "BramFactor": 1_000_000_000,
            "TraceOutput": False,
        },
        "LayerName": {},
    }
    for layer in layers:
        prec = {}
        for key, qc in layer.items():
            if "quantizer" in key and qc is not None:
                role = key.lower().split("_quantizer")[0]
                role = "result" if role == "activation" else role
                prec[role] = str(_get_precision_from_quantizer(qc) if isinstance(qc, dict) else qc.hls_type)
        prec.update(overrides.get(layer["name"], {}))
        cfg["LayerName"][layer["name"]] = {"Precision": prec}
    return cfg


def _convert_v2(model: Any, outdir: Path, default: str, overrides: dict[str, dict[str, str]]) -> Any:
    from hls4ml.converters import keras_v2_to_hls

    return keras_v2_to_hls(
        {
            "KerasModel": model,
            "OutputDir": str(outdir),
            "ProjectName": "myproject",
            "Backend": "Vitis",
            "IOType": "io_parallel",
            "HLSConfig": _hls_config(model, default, overrides),
            "Part": PART,
            # Weights compiled in from the headers (a top-level "WriteWeightsTxt" key is ignored by
            # hls4ml 1.3.0: only WriterConfig is read, and the C sim then loads .txt files at run time).
            "WriterConfig": {
                "Namespace": None,
                "WriteWeightsTxt": False,
                "WriteTar": False,
                "TBOutputStream": "both",
            },
        }
    )


def _randomize(model: Any, rng: np.random.Generator, scale: float = 0.5) -> None:
    for layer in model.layers:
        weights = layer.get_weights()
        if weights:
            layer.set_weights([rng.normal(0, scale, w.shape).astype(np.float32) for w in weights])


def build_qkeras(name: str, outdir: Path, rng: np.random.Generator, repo: Path) -> tuple[Any, float]:
    """A QKeras/tf_keras network; returns (hls model, typical input scale)."""
    import tf_keras as keras
    from qkeras import QActivation, QDense, quantized_bits, quantized_relu

    inp = keras.layers.Input(shape=(27,) if name == "muon_narrow" else (8,), name="input_1")
    overrides: dict[str, dict[str, str]] = {}
    default = "fixed<16,6>"
    if name == "muon_narrow":
        # The paper's model with every unfixed type at the default ap_fixed<16,6>, accumulators
        # included: each product is truncated before the sum (the engine's correction path).
        saved = repo / "models" / "muon-pt.h5"
        if saved.is_file():
            from qkeras.utils import load_qmodel

            model = load_qmodel(str(saved), compile=False)
            return _convert_v2(model, outdir, default, {}), 4.0
        x = inp
        for i, n in enumerate(MUON_SHAPE[1]):
            q = quantized_bits(16, 5, alpha=1)
            x = QDense(n, kernel_quantizer=q, bias_quantizer=q, name=f"dense_{i}")(x)
            x = QActivation(quantized_relu(16, 6), name=f"relu_{i}")(x)
        q = quantized_bits(16, 5, alpha=1)
        x = QDense(1, kernel_quantizer=q, bias_quantizer=q, name="out")(x)
        scale = 4.0
    elif name == "sat_rnd":
        # Saturating, rounding accumulators and results: the sequential path.
        x = QDense(
            16,
            kernel_quantizer=quantized_bits(10, 2, alpha=1),
            bias_quantizer=quantized_bits(10, 2, alpha=1),
            name="dense_0",
        )(inp)
        x = QActivation(quantized_relu(10, 4), name="relu_0")(x)
        x = QDense(
            8,
            kernel_quantizer=quantized_bits(8, 1, alpha=1),
            bias_quantizer=quantized_bits(8, 1, alpha=1),
            name="dense_1",
        )(x)
        x = QActivation(quantized_relu(8, 3), name="relu_1")(x)
        x = QDense(
            3,
            kernel_quantizer=quantized_bits(12, 3, alpha=1),
            bias_quantizer=quantized_bits(12, 3, alpha=1),
            name="out",
        )(x)
        overrides = {
            "input_1": {"result": "ap_fixed<12,4,AP_RND,AP_SAT>"},
            "dense_0": {
                "accum": "ap_fixed<14,5,AP_RND,AP_SAT>",
                "result": "ap_fixed<12,4,AP_RND_CONV,AP_SAT>",
            },
            "dense_1": {
                "accum": "ap_fixed<12,4,AP_TRN,AP_SAT_SYM>",
                "result": "ap_fixed<10,3,AP_RND_ZERO,AP_SAT_ZERO>",
            },
            "out": {
                "accum": "ap_fixed<18,6,AP_RND_INF,AP_SAT>",
                "result": "ap_fixed<10,4,AP_RND_MIN_INF,AP_WRAP>",
            },
        }
        scale = 3.0
    elif name == "unsigned_wide":
        # Unsigned input, wide accumulators with more fraction bits than the products.
        x = QDense(
            32,
            kernel_quantizer=quantized_bits(8, 1, alpha=1),
            bias_quantizer=quantized_bits(8, 1, alpha=1),
            name="dense_0",
        )(inp)
        x = QActivation(quantized_relu(12, 5), name="relu_0")(x)
        x = QDense(
            32,
            kernel_quantizer=quantized_bits(6, 0, alpha=1),
            bias_quantizer=quantized_bits(6, 0, alpha=1),
            name="dense_1",
        )(x)
        x = QActivation(quantized_relu(9, 4), name="relu_1")(x)
        x = QDense(
            4,
            kernel_quantizer=quantized_bits(14, 4, alpha=1),
            bias_quantizer=quantized_bits(14, 4, alpha=1),
            name="out",
        )(x)
        overrides = {
            "input_1": {"result": "ap_ufixed<12,4,AP_RND,AP_SAT>"},
            "dense_0": {"accum": "ap_fixed<32,12>"},
            "dense_1": {"accum": "ap_fixed<30,10,AP_RND,AP_WRAP>"},
            "out": {"accum": "ap_fixed<40,14>", "result": "ap_fixed<24,10,AP_RND_CONV,AP_SAT>"},
        }
        scale = 6.0
    elif name == "tanh":
        # A layer the engine does not reproduce (a lookup-table activation).
        x = keras.layers.Dense(4, name="dense_0")(inp)
        x = keras.layers.Activation("tanh", name="tanh_0")(x)
        scale = 1.0
    else:  # batchnorm: plain Keras layers, BN first and after an activation (so not fused)
        x = keras.layers.BatchNormalization(name="bn_0")(inp)
        x = keras.layers.Dense(12, name="dense_0")(x)
        x = keras.layers.Activation("relu", name="relu_0")(x)
        x = keras.layers.BatchNormalization(name="bn_1")(x)
        x = keras.layers.Dense(2, name="out")(x)
        default = "fixed<14,5>"
        overrides = {
            "bn_1": {"scale": "ap_fixed<12,3,AP_RND,AP_SAT>", "result": "ap_fixed<16,6,AP_RND,AP_SAT>"}
        }
        scale = 3.0
    model = keras.Model(inp, x)
    _randomize(model, rng)
    if name == "batchnorm":
        for layer in model.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                n = layer.get_weights()[0].shape
                layer.set_weights(
                    [rng.uniform(0.5, 2, n), rng.normal(0, 1, n), rng.normal(0, 1, n), rng.uniform(0.2, 3, n)]
                )
    return _convert_v2(model, outdir, default, overrides), scale


def build_keras3(outdir: Path, rng: np.random.Generator) -> tuple[Any, float]:
    import hls4ml
    import keras

    model = keras.Sequential(
        [
            keras.Input(shape=(5,)),
            keras.layers.Dense(8, activation="relu"),
            keras.layers.Dense(8, activation="relu"),
            keras.layers.Dense(6),
            keras.layers.Activation("linear"),
            keras.layers.Dense(2, activation="relu"),
        ]
    )
    _randomize(model, rng)
    cfg = hls4ml.utils.config_from_keras_model(
        model, granularity="name", default_precision="ap_fixed<12,4,AP_RND,AP_SAT>"
    )
    return hls4ml.converters.convert_from_keras_model(
        model,
        hls_config=cfg,
        output_dir=str(outdir),
        project_name="myproject",
        backend="Vitis",
        io_type="io_parallel",
        part=PART,
        write_weights_txt=False,
    ), 3.0


def build_random(index: int, outdir: Path, rng: np.random.Generator) -> tuple[Any, float]:
    """A random small QKeras MLP with random widths and random types."""
    import tf_keras as keras
    from qkeras import QActivation, QDense, quantized_bits, quantized_relu

    q_modes = [
        "AP_TRN",
        "AP_RND",
        "AP_RND_CONV",
        "AP_TRN_ZERO",
        "AP_RND_ZERO",
        "AP_RND_INF",
        "AP_RND_MIN_INF",
    ]
    o_modes = ["AP_WRAP", "AP_SAT", "AP_SAT_SYM", "AP_SAT_ZERO"]

    def rtype(lo: int, hi: int, unsigned: bool = False) -> str:
        w = int(rng.integers(lo, hi + 1))
        i = int(rng.integers(1, max(2, w - 1)))
        return f"ap_{'u' if unsigned else ''}fixed<{w},{i},{rng.choice(q_modes)},{rng.choice(o_modes)}>"

    n_in = int(rng.integers(2, 10))
    inp = keras.layers.Input(shape=(n_in,), name="input_1")
    x = inp
    overrides: dict[str, dict[str, str]] = {
        "input_1": {"result": rtype(6, 16, unsigned=bool(rng.integers(0, 4) == 0))}
    }
    for i in range(int(rng.integers(1, 4))):
        bits = int(rng.integers(4, 12))
        q = quantized_bits(bits, int(rng.integers(0, 3)), alpha=1)
        x = QDense(int(rng.integers(1, 12)), kernel_quantizer=q, bias_quantizer=q, name=f"dense_{i}")(x)
        overrides[f"dense_{i}"] = {"accum": rtype(8, 28), "result": rtype(6, 18)}
        if rng.integers(0, 3):
            x = QActivation(
                quantized_relu(int(rng.integers(4, 14)), int(rng.integers(1, 5))), name=f"relu_{i}"
            )(x)
    model = keras.Model(inp, x)
    _randomize(model, rng, scale=1.0)
    return _convert_v2(model, outdir, "fixed<16,6>", overrides), 4.0


def inputs(n_inputs: int, n: int, scale: float, rng: np.random.Generator) -> np.ndarray:
    """A quarter each: in range, far out of range (wrap/saturate), exact binary ties, wild mix."""
    q = n // 4
    in_range = rng.normal(0, scale, (q, n_inputs))
    far = rng.normal(0, scale, (q, n_inputs)) * rng.choice([30.0, 1e3, 1e6], size=(q, 1))
    ties = (rng.integers(-(2**14), 2**14, (q, n_inputs)) + 0.5) * rng.choice(
        [2.0**-13, 2.0**-9, 2.0**-5], size=(q, 1)
    )
    mix = rng.normal(0, 1, (n - 3 * q, n_inputs)) * 10.0 ** rng.uniform(-6, 6, (n - 3 * q, n_inputs))
    x = np.concatenate([in_range, far, ties, mix]).astype(np.float32)
    return x[rng.permutation(n)]


def build(name: str, outdir: Path, n: int, repo: Path) -> None:
    """Build one network into outdir (see the module docstring)."""
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    hls_dir = outdir / "hls"
    if name == "keras3":
        hm, scale = build_keras3(hls_dir, rng)
    elif name.startswith("random"):
        hm, scale = build_random(int(name[6:]), hls_dir, rng)
    else:
        hm, scale = build_qkeras(name, hls_dir, rng, repo)
    if name == "tanh":
        hm.write()
        return
    hm.compile()
    n_in = int(np.prod(hm.get_input_variables()[0].shape))
    x = inputs(n_in, n, scale, rng)
    ref = np.asarray(hm.predict(x), dtype=np.float32).reshape(n, -1)
    np.save(outdir / "x.npy", x)
    np.save(outdir / "ref.npy", ref)


def main() -> None:
    root, repo = Path(sys.argv[1]), Path(sys.argv[2])
    jobs = [(arg.split(":")[0], int(arg.split(":")[1])) for arg in sys.argv[3:]]
    if all(name != "keras3" for name, _ in jobs):
        os.environ["TF_USE_LEGACY_KERAS"] = "1"
    elif len(jobs) > 1:
        raise SystemExit("keras3 needs a process of its own")
    for name, n in jobs:
        build(name, root / name, n, repo)


if __name__ == "__main__":
    main()
