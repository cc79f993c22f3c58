"""Stage 1: read a Keras 2 HDF5 model's architecture without executing anything it contains.

The architecture is the JSON in the file's `model_config` attribute, read with h5py; no Keras
object is instantiated here or later (conversion reads the weights with hls4ml's `KerasFileReader`).
Every object in the JSON (layers, nested models, initializers, constraints, quantizers) must be of
an allow-listed class; `Lambda` layers, serialized functions (`function` entries) and objects from
modules other than Keras/QKeras are refused with `UnsafeModel` naming the layer, so a malicious file
cannot make the builder run its code.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import h5py

from fpgaas.kernels.errors import BadInput, UnsafeModel

MODEL_CLASSES: Final = frozenset({"Functional", "Model", "Sequential"})
LAYER_CLASSES: Final = frozenset(
    {
        "InputLayer",
        "Dense",
        "Activation",
        "ReLU",
        "BatchNormalization",
        "Dropout",
        "Flatten",
        "QDense",
        "QActivation",
        "QBatchNormalization",
    }
)
QUANTIZER_CLASSES: Final = frozenset(
    {
        "quantized_bits",
        "quantized_relu",
        "quantized_tanh",
        "quantized_sigmoid",
        "quantized_po2",
        "quantized_relu_po2",
        "binary",
        "ternary",
    }
)
# Plain data objects Keras/QKeras serialize inside layer configs; none carries code.
OBJECT_CLASSES: Final = frozenset(
    {
        "Constant",
        "GlorotNormal",
        "GlorotUniform",
        "HeNormal",
        "HeUniform",
        "Identity",
        "LecunNormal",
        "LecunUniform",
        "Ones",
        "Orthogonal",
        "RandomNormal",
        "RandomUniform",
        "TruncatedNormal",
        "VarianceScaling",
        "Zeros",
        "L1",
        "L2",
        "L1L2",
        "MaxNorm",
        "MinMaxNorm",
        "NonNeg",
        "UnitNorm",
        "Clip",
        "QInitializer",
    }
)
ALLOWED_CLASSES: Final = MODEL_CLASSES | LAYER_CLASSES | QUANTIZER_CLASSES | OBJECT_CLASSES
ALLOWED_MODULE_PREFIXES: Final = ("keras.", "tf_keras.", "qkeras.")
KERAS_ACTIVATIONS: Final = frozenset({"linear", "relu", "sigmoid", "tanh", "softmax", "hard_sigmoid"})
# Keys under which Keras serializes Python code (Lambda bytecode, custom functions).
CODE_KEYS: Final = frozenset({"function", "function_type", "output_shape_type", "output_shape_module"})
# A QKeras quantizer written as a string, e.g. "quantized_relu(16,6)": a name and literal arguments.
_LITERAL = r"\s*(?:[A-Za-z_]\w*\s*=\s*)?(?:-?\d+(?:\.\d+)?(?:[eE]-?\d+)?|True|False|None)\s*"
_QUANTIZER_STRING: Final = re.compile(rf"^(\w+)\s*(?:\(({_LITERAL}(?:,{_LITERAL})*)?\))?$")


@dataclass(frozen=True)
class ScannedModel:
    """A model file whose architecture passed the allow-list scan.

    `architecture` is the decoded `model_config` JSON; `layers` the (class name, layer name) pairs
    in file order. The file itself is only read, never changed.
    """

    path: Path
    architecture: dict[str, Any]
    layers: tuple[tuple[str, str], ...]


def scan_model(path: Path) -> ScannedModel:
    """Read `path`'s architecture and refuse anything that could run code.

    Raises `BadInput` for a missing, corrupt or non-Keras-2 file and `UnsafeModel` naming the
    offending layer for a `Lambda`, a serialized function or a class outside the allow-list.
    """
    architecture = _read_architecture(path)
    if architecture.get("class_name") not in MODEL_CLASSES:
        raise BadInput(
            f"{path.name}: top-level class {architecture.get('class_name')!r} is not a Keras model",
            field="model",
        )
    layers = _layer_configs(architecture)
    for layer in layers:
        _check_layer(layer)
    return ScannedModel(
        path=path,
        architecture=architecture,
        layers=tuple((str(layer.get("class_name")), _layer_name(layer)) for layer in layers),
    )


def _read_architecture(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise BadInput(f"model file {path} does not exist", field="model")
    try:
        with h5py.File(path, mode="r") as h5:
            raw = h5.attrs.get("model_config")
    except OSError as exc:
        raise BadInput(
            f"{path.name} is not a readable HDF5 file ({exc}); fpgaas accepts Keras 2 .h5 models",
            field="model",
        ) from exc
    if raw is None:
        raise BadInput(
            f"{path.name} has no model_config attribute: save the whole model with "
            "model.save('model.h5') (Keras 2 / tf_keras), not only its weights",
            field="model",
        )
    if isinstance(raw, bytes):
        raw = raw.decode("utf-8")
    try:
        architecture = json.loads(raw)
    except (TypeError, ValueError) as exc:
        raise BadInput(f"{path.name}: model_config is not valid JSON: {exc}", field="model") from exc
    if not isinstance(architecture, dict):
        raise BadInput(f"{path.name}: model_config is not a JSON object", field="model")
    return architecture


def _layer_configs(model: dict[str, Any]) -> list[dict[str, Any]]:
    config = model.get("config")
    layers = config.get("layers") if isinstance(config, dict) else config
    if not isinstance(layers, list) or not all(isinstance(layer, dict) for layer in layers):
        raise BadInput("model_config has no list of layers", field="model")
    return layers


def _layer_name(layer: dict[str, Any]) -> str:
    config = layer.get("config")
    name = config.get("name") if isinstance(config, dict) else None
    return str(name or layer.get("name") or "<unnamed>")


def _check_layer(layer: dict[str, Any]) -> None:
    name = _layer_name(layer)
    class_name = layer.get("class_name")
    if class_name == "Lambda":
        raise UnsafeModel(
            f"layer {name!r} is a Lambda layer: loading it would run Python code stored in the file; "
            "replace it with standard Keras/QKeras layers",
            field="model",
        )
    if class_name in MODEL_CLASSES:
        for inner in _layer_configs(layer):
            _check_layer(inner)
        return
    if class_name not in LAYER_CLASSES:
        raise UnsafeModel(
            f"layer {name!r} has class {class_name!r}, which is not in the allow-list "
            f"({', '.join(sorted(LAYER_CLASSES))})",
            field="model",
        )
    _check_value(layer.get("config", {}), name, "config")


def _check_value(value: Any, layer: str, where: str) -> None:
    """Walk a layer config; every nested object must be allow-listed and carry no code."""
    if isinstance(value, list):
        for i, item in enumerate(value):
            _check_value(item, layer, f"{where}[{i}]")
        return
    if not isinstance(value, dict):
        return
    code = sorted(CODE_KEYS & value.keys())
    if code:
        raise UnsafeModel(
            f"layer {layer!r} carries serialized Python code at {where}.{code[0]}", field="model"
        )
    module = value.get("module")
    if module is not None and not str(module).startswith(ALLOWED_MODULE_PREFIXES) and module != "keras":
        raise UnsafeModel(
            f"layer {layer!r} refers to module {module!r} at {where}; only Keras and QKeras objects are allowed",
            field="model",
        )
    if "class_name" in value:
        class_name = value["class_name"]
        if class_name not in ALLOWED_CLASSES:
            raise UnsafeModel(
                f"layer {layer!r} uses class {class_name!r} at {where}, which is not in the allow-list",
                field="model",
            )
    for key, item in value.items():
        if key == "activation" and isinstance(item, str):
            _check_activation_string(item, layer, f"{where}.activation")
        else:
            _check_value(item, layer, f"{where}.{key}")


def _check_activation_string(text: str, layer: str, where: str) -> None:
    # QKeras resolves such strings by name lookup and literal parsing; we accept only names that
    # resolve to known activations/quantizers and purely literal arguments.
    match = _QUANTIZER_STRING.match(text.strip())
    name = match.group(1) if match else None
    if name in KERAS_ACTIVATIONS and "(" not in text:
        return
    if name in QUANTIZER_CLASSES:
        return
    raise UnsafeModel(
        f"layer {layer!r} has activation {text!r} at {where}, which is not a known activation or "
        "quantizer with literal arguments",
        field="model",
    )
