"""Keras 3 (`.keras`) models through hls4ml's Keras 3 front end, in a child process.

hls4ml 1.3.0's Keras 3 parser (`parse_keras_v3_model`) needs an instantiated `keras.Model`, while
the builder process runs QKeras on tf_keras (`TF_USE_LEGACY_KERAS=1`, which TensorFlow reads once,
at import). So the Keras 3 model is loaded and parsed in a child process with that variable unset
and the TensorFlow backend, and only data crosses back: the hls4ml layer list as JSON, its numpy
arrays as an `.npz` read with `allow_pickle=False` (never a pickle, so a subverted child cannot
run code in the builder). The parent builds the hls4ml `ModelGraph` from that layer list exactly
as it does for Keras 2 (`fpgaas.builder.convert`).

The child only ever sees a file that `fpgaas.kernels.model_file.inspect_model_file` accepted (built-in
layers only, no Lambda, no custom objects), and loads it with Keras' `safe_mode=True` as a second
guard. DA fallback (da4ml) is off: an unsupported layer is an error, not a different design.

Run as `python -m fpgaas.builder.keras3 MODEL.keras OUT_DIR`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Final

import numpy as np

from fpgaas.kernels.errors import BadInput, BuildError

LAYERS_JSON: Final = "layers.json"
ARRAYS_NPZ: Final = "arrays.npz"
ERROR_JSON: Final = "error.json"
TIMEOUT_S: Final = 900.0  # importing TensorFlow alone takes 5-40 s on a busy 2-core host
_ARRAY: Final = "__ndarray__"
_TUPLE: Final = "__tuple__"


def parse_in_child(
    model: Path, work: Path, *, log: Path
) -> tuple[list[dict[str, Any]], list[str], list[str]]:
    """(layer list, input layer names, output layer names) of the `.keras` file `model`, from
    hls4ml's Keras 3 parser in a child process. `work` is an empty scratch directory; the child's
    output goes to `log`. Raises BadInput when hls4ml cannot parse the model, BuildError naming
    `log` when the child fails otherwise."""
    work.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
    env["KERAS_BACKEND"] = "tensorflow"
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env["CUDA_VISIBLE_DEVICES"] = ""  # the parse is symbolic; never probe for a GPU
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as fh:
        try:
            done = subprocess.run(
                [sys.executable, "-m", "fpgaas.builder.keras3", str(model), str(work)],
                stdout=fh,
                stderr=subprocess.STDOUT,
                env=env,
                timeout=TIMEOUT_S,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise BuildError(
                f"the Keras 3 parse did not finish within {TIMEOUT_S:.0f} s", log=str(log)
            ) from exc
    error_file = work / ERROR_JSON
    if error_file.is_file():
        error = json.loads(error_file.read_text())
        raise BadInput(f"hls4ml cannot convert {model.name}: {error['message']}", field="model")
    if done.returncode != 0 or not (work / LAYERS_JSON).is_file():
        raise BuildError(
            f"the Keras 3 parse of {model.name} exited with status {done.returncode}", log=str(log)
        )
    document = json.loads((work / LAYERS_JSON).read_text())
    with np.load(work / ARRAYS_NPZ, allow_pickle=False) as npz:
        arrays = {key: npz[key] for key in npz.files}
    layers = _decode(document["layers"], arrays)
    return layers, list(document["inputs"]), list(document["outputs"])


def _encode(value: Any, arrays: dict[str, np.ndarray]) -> Any:
    """JSON-able form of an hls4ml layer attribute; arrays go to `arrays`. Anything else (an
    object) cannot cross the process boundary and is an error."""
    if isinstance(value, np.ndarray):
        key = f"a{len(arrays)}"
        arrays[key] = value
        return {_ARRAY: key}
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, tuple):
        return {_TUPLE: [_encode(v, arrays) for v in value]}
    if isinstance(value, list):
        return [_encode(v, arrays) for v in value]
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        return {k: _encode(v, arrays) for k, v in value.items()}
    raise TypeError(f"hls4ml layer attribute of type {type(value).__name__} is not plain data")


def _decode(value: Any, arrays: dict[str, np.ndarray]) -> Any:
    if isinstance(value, list):
        return [_decode(v, arrays) for v in value]
    if isinstance(value, dict):
        if set(value) == {_ARRAY}:
            return arrays[value[_ARRAY]]
        if set(value) == {_TUPLE}:
            return tuple(_decode(v, arrays) for v in value[_TUPLE])
        return {k: _decode(v, arrays) for k, v in value.items()}
    return value


def _child(model: Path, out: Path) -> int:
    import keras
    from hls4ml.converters.keras_v3_to_hls import parse_keras_v3_model

    if not keras.__version__.startswith("3"):
        print(f"expected Keras 3, found keras {keras.__version__}", file=sys.stderr)
        return 3
    loaded = keras.saving.load_model(model, compile=False, safe_mode=True)
    try:
        layers, inputs, outputs, _shapes = parse_keras_v3_model(
            loaded, allow_da_fallback=False, allow_v2_fallback=True
        )
    except (KeyError, ValueError, TypeError, AssertionError, NotImplementedError) as exc:
        (out / ERROR_JSON).write_text(json.dumps({"message": repr(exc)}))
        return 2
    arrays: dict[str, np.ndarray] = {}
    document = {"layers": _encode(layers, arrays), "inputs": list(inputs), "outputs": list(outputs)}
    np.savez(out / ARRAYS_NPZ, **arrays)
    (out / LAYERS_JSON).write_text(json.dumps(document))
    return 0


if __name__ == "__main__":
    sys.exit(_child(Path(sys.argv[1]), Path(sys.argv[2])))
