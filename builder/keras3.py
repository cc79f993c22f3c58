"""Keras 3 (`.keras`) models through hls4ml's Keras 3 front end, in a child process.

hls4ml 1.3.0's Keras 3 parser (`parse_keras_v3_model`) needs an instantiated `keras.Model`, while
the builder process runs QKeras on tf_keras (`TF_USE_LEGACY_KERAS=1`, which TensorFlow reads once,
at import). So the Keras 3 model is loaded and parsed in a child process
(`fpgaas/builder/keras3_child.py`, run by path) with that variable unset, and only data crosses
back: the hls4ml layer list as JSON, its numpy arrays as an `.npz` read with `allow_pickle=False`
(never a pickle, so a subverted child cannot run code in the builder). The parent builds the
hls4ml `ModelGraph` from that layer list exactly as it does for Keras 2 (`fpgaas.builder.convert`).

The child runs under `BuilderSettings.keras3_interpreter()`: the project's `.venv-keras3` when it
exists (Keras 3 on JAX, hls4ml and HGQ2, which cannot live in `.venv` because PyPI `hgq2` installs
a `qkeras` shim over QKeras), else this interpreter. An interpreter lacking what the model needs
(HGQ2 for an HGQ2 model) is a BuildError naming it, never a silent fallback.

The child only ever sees a file that `fpgaas.kernels.model_file.inspect_model_file` accepted
(allow-listed Keras 3 and HGQ2 objects only, no Lambda, no custom objects), and loads it with Keras'
`safe_mode=True` as a second guard. DA fallback (da4ml) is off: an unsupported layer is an error,
not a different design.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any, Final

import numpy as np

from fpgaas.builder import keras3_child
from fpgaas.builder.keras3_child import ARRAY_KEY, ARRAYS_NPZ, ERROR_JSON, LAYERS_JSON, TUPLE_KEY
from fpgaas.kernels.errors import BadInput, BuildError

TIMEOUT_S: Final = 900.0  # importing TensorFlow or JAX alone takes 5-40 s on a busy 2-core host
CHILD_SCRIPT: Final = Path(keras3_child.__file__)


def parse_in_child(
    model: Path, work: Path, *, log: Path, python: Path | None = None
) -> tuple[list[dict[str, Any]], list[str], list[str]]:
    """(layer list, input layer names, output layer names) of the `.keras` file `model`, from
    hls4ml's Keras 3 parser in a child process run by `python` (default: the builder settings'
    Keras 3 interpreter). `work` is an empty scratch directory; the child's output goes to `log`.
    Raises BadInput when hls4ml cannot parse the model, BuildError naming `log` when the child
    fails otherwise or its interpreter lacks a package the model needs."""
    if python is None:
        from fpgaas.builder.settings import BuilderSettings

        python = BuilderSettings().keras3_interpreter()
    if not os.access(python, os.X_OK):
        raise BuildError(
            f"the Keras 3 interpreter {python} does not exist (make install creates .venv-keras3)"
        )
    work.mkdir(parents=True, exist_ok=True)
    # The child picks its Keras backend from what its interpreter has (JAX, else TensorFlow).
    env = {
        k: v for k, v in os.environ.items() if k not in ("TF_USE_LEGACY_KERAS", "KERAS_BACKEND", "PYTHONPATH")
    }
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env["CUDA_VISIBLE_DEVICES"] = ""  # the parse is symbolic; never probe for a GPU
    env["JAX_PLATFORMS"] = "cpu"
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as fh:
        try:
            done = subprocess.run(
                [str(python), str(CHILD_SCRIPT), str(model), str(work)],
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
        if error.get("kind") == "environment":
            raise BuildError(f"cannot parse {model.name}: {error['message']}", log=str(log))
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


def _decode(value: Any, arrays: dict[str, np.ndarray]) -> Any:
    if isinstance(value, list):
        return [_decode(v, arrays) for v in value]
    if isinstance(value, dict):
        if set(value) == {ARRAY_KEY}:
            return arrays[value[ARRAY_KEY]]
        if set(value) == {TUPLE_KEY}:
            return tuple(_decode(v, arrays) for v in value[TUPLE_KEY])
        return {k: _decode(v, arrays) for k, v in value.items()}
    return value
