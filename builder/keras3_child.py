"""The Keras 3 child: load a `.keras` file and run hls4ml's Keras 3 parser on it.

Run by path, not as `-m fpgaas...`: `PYTHON builder/keras3_child.py MODEL.keras OUT_DIR`. It needs
only the standard library, numpy, Keras 3 and hls4ml (and HGQ2 for HGQ2 models), never fpgaas
itself, so it runs under a separate Keras 3 interpreter (`.venv-keras3`, where HGQ2 may live
without shadowing QKeras in `.venv`) with nothing of this project installed there.

It writes `layers.json` (the layer list, arrays replaced by references) and `arrays.npz` (the
arrays, read back with `allow_pickle=False`), or `error.json` (`{"kind", "message"}`): kind
"model" when hls4ml cannot convert the model, "environment" when this interpreter lacks a package
the model needs. `fpgaas.builder.keras3` is the parent side.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path
from typing import Any, Final

LAYERS_JSON: Final = "layers.json"
ARRAYS_NPZ: Final = "arrays.npz"
ERROR_JSON: Final = "error.json"
ARRAY_KEY: Final = "__ndarray__"
TUPLE_KEY: Final = "__tuple__"
# A backend present in the interpreter: .venv-keras3 carries JAX, .venv TensorFlow.
_BACKENDS: Final = ("jax", "tensorflow")


def encode(value: Any, arrays: dict[str, Any]) -> Any:
    """JSON-able form of an hls4ml layer attribute; arrays go to `arrays`. Anything else (an
    object) cannot cross the process boundary and is an error."""
    import numpy as np

    if isinstance(value, np.ndarray):
        key = f"a{len(arrays)}"
        arrays[key] = value
        return {ARRAY_KEY: key}
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, tuple):
        return {TUPLE_KEY: [encode(v, arrays) for v in value]}
    if isinstance(value, list):
        return [encode(v, arrays) for v in value]
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        return {k: encode(v, arrays) for k, v in value.items()}
    raise TypeError(f"hls4ml layer attribute of type {type(value).__name__} is not plain data")


def _error(out: Path, kind: str, message: str) -> int:
    (out / ERROR_JSON).write_text(json.dumps({"kind": kind, "message": message}))
    return 2


def _uses_hgq(model: Path) -> bool:
    import zipfile

    with zipfile.ZipFile(model) as archive:
        return '"hgq.' in archive.read("config.json").decode("utf-8")


def main(model: Path, out: Path) -> int:
    if "KERAS_BACKEND" not in os.environ:
        found = [b for b in _BACKENDS if importlib.util.find_spec(b) is not None]
        os.environ["KERAS_BACKEND"] = found[0] if found else _BACKENDS[0]
    import numpy as np

    missing = [m for m in ("keras", "hls4ml") if importlib.util.find_spec(m) is None]
    if _uses_hgq(model) and importlib.util.find_spec("hgq") is None:
        missing.append("hgq (PyPI hgq2)")
    if missing:
        return _error(
            out,
            "environment",
            f"{sys.executable} lacks {', '.join(missing)} (make install creates .venv-keras3)",
        )
    import keras

    if not keras.__version__.startswith("3"):
        return _error(out, "environment", f"{sys.executable} has keras {keras.__version__}, not Keras 3")
    if importlib.util.find_spec("hgq") is not None:
        import hgq  # noqa: F401  (registers HGQ2's layers and quantizers with Keras)
    from hls4ml.converters.keras_v3_to_hls import parse_keras_v3_model

    loaded = keras.saving.load_model(model, compile=False, safe_mode=True)
    try:
        layers, inputs, outputs, _shapes = parse_keras_v3_model(
            loaded, allow_da_fallback=False, allow_v2_fallback=True
        )
    except (KeyError, ValueError, TypeError, AssertionError, NotImplementedError) as exc:
        return _error(out, "model", repr(exc))
    arrays: dict[str, Any] = {}
    document = {"layers": encode(layers, arrays), "inputs": list(inputs), "outputs": list(outputs)}
    np.savez(out / ARRAYS_NPZ, **arrays)
    (out / LAYERS_JSON).write_text(json.dumps(document))
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]), Path(sys.argv[2])))
