"""Uploaded model files, read as data only: what is in them, and whether fpgaas will build them.

Two formats, told apart by their first bytes (not their names):

- Keras 2 / QKeras HDF5 (`.h5`): the architecture is the JSON in the file's `model_config`
  attribute, read with h5py.
- Keras 3 (`.keras`): a zip holding `config.json`, `metadata.json` and `model.weights.h5`, read
  with `zipfile` and `json`. The zip is checked before anything is decompressed: member names
  (no path traversal, no duplicates, only those three members), encryption, compression methods,
  the declared total size and each member's compression ratio (zip bombs); then each member is
  read with a bound, checked for what it must be (JSON, HDF5) and for archives nested in it.

No Keras, TensorFlow or model code is imported or run here, so the server may call
`inspect_model_file` on an upload before queueing it, and the builder calls it before converting.
Every object in the architecture (layers, nested models, initializers, constraints, quantizers,
dtype policies) must be of an allow-listed class from an allow-listed module; `Lambda` and
`TFOpLambda` layers, serialized functions or bytecode, custom or registered objects and anything
from another module are refused with `UnsafeModel` naming the layer. Malformed, truncated or
unsupported files are `BadInput`; files over the size limit are `PayloadTooLarge`.
"""

from __future__ import annotations

import json
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Final

from fpgaas.kernels.errors import BadInput, PayloadTooLarge, UnsafeModel

HDF5_MAGIC: Final = b"\x89HDF\r\n\x1a\n"
ZIP_MAGIC: Final = b"PK\x03\x04"
FORMAT_H5: Final = "h5"
FORMAT_KERAS: Final = "keras"

# ---- allow-lists ---------------------------------------------------------------------------
MODEL_CLASSES: Final = frozenset({"Functional", "Model", "Sequential"})
KERAS_LAYER_CLASSES: Final = frozenset(
    {"InputLayer", "Dense", "Activation", "ReLU", "BatchNormalization", "Dropout", "Flatten"}
)
QKERAS_LAYER_CLASSES: Final = frozenset({"QDense", "QActivation", "QBatchNormalization"})
LAYER_CLASSES: Final = KERAS_LAYER_CLASSES | QKERAS_LAYER_CLASSES
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
        "DTypePolicy",  # Keras 3: a layer's dtype, e.g. {"name": "float32"}
        "__keras_tensor__",  # Keras 3: a reference to another layer's output in inbound_nodes
    }
)
ALLOWED_CLASSES: Final = MODEL_CLASSES | LAYER_CLASSES | QUANTIZER_CLASSES | OBJECT_CLASSES
# Keras 2 files name modules loosely (QKeras writes "qkeras", tf_keras "keras.src...").
H5_MODULE_PREFIXES: Final = ("keras.", "tf_keras.", "qkeras.")
# Keras 3 files name the public module of each built-in object exactly.
KERAS3_MODULES: Final = frozenset(
    {
        "keras",
        "keras.layers",
        "keras.initializers",
        "keras.regularizers",
        "keras.constraints",
        "keras.src.models.functional",
        "keras.src.models.sequential",
        "keras.models",
    }
)
# HGQ2 (Keras 3) objects, as HGQ2 0.2.0 writes them: (module, class name); each must carry the
# registered name "hgq>" + class name. Parsed under the Keras 3 interpreter, where HGQ2 lives.
HGQ2_OBJECTS: Final = frozenset(
    {
        ("hgq.layers.core.dense", "QDense"),
        ("hgq.quantizer.config", "QuantizerConfig"),
        ("hgq.constraints", "MinMax"),
        ("hgq.regularizers", "MonoL1"),
    }
)
HGQ2_LAYER_CLASSES: Final = frozenset({"QDense"})
KERAS_ACTIVATIONS: Final = frozenset({"linear", "relu", "sigmoid", "tanh", "softmax", "hard_sigmoid"})
CODE_CLASSES: Final = frozenset({"Lambda", "TFOpLambda", "SlicingOpLambda", "__lambda__", "function"})
# Keys under which Keras serializes Python code (Lambda bytecode, custom functions).
CODE_KEYS: Final = frozenset(
    {"function", "function_type", "output_shape_type", "output_shape_module", "code"}
)
_LITERAL = r"\s*(?:[A-Za-z_]\w*\s*=\s*)?(?:-?\d+(?:\.\d+)?(?:[eE]-?\d+)?|True|False|None)\s*"
_QUANTIZER_STRING: Final = re.compile(rf"^(\w+)\s*(?:\(({_LITERAL}(?:,{_LITERAL})*)?\))?$")

# ---- .keras archive limits -----------------------------------------------------------------
KERAS_CONFIG: Final = "config.json"
KERAS_METADATA: Final = "metadata.json"
KERAS_WEIGHTS: Final = "model.weights.h5"
KERAS_MEMBERS: Final = frozenset({KERAS_CONFIG, KERAS_METADATA, KERAS_WEIGHTS})
MAX_JSON_BYTES: Final = 16 * 1024 * 1024  # config.json / metadata.json, uncompressed
MAX_UNCOMPRESSED_BYTES: Final = 1024 * 1024 * 1024  # all members together, as declared and as read
MAX_RATIO: Final = 100.0  # uncompressed / compressed, per member (weights compress ~1.1x, JSON ~10x)
_RATIO_FLOOR_BYTES: Final = 1024 * 1024  # members smaller than this may compress better (JSON)
_NESTED_MAGICS: Final = (
    (ZIP_MAGIC, "a zip archive"),
    (b"PK\x05\x06", "a zip archive"),
    (b"\x1f\x8b", "a gzip stream"),
    (b"BZh", "a bzip2 stream"),
    (b"\xfd7zXZ\x00", "an xz stream"),
    (b"7z\xbc\xaf\x27\x1c", "a 7z archive"),
    (b"\x28\xb5\x2f\xfd", "a zstd stream"),
)
_CHUNK: Final = 1 << 20


@dataclass(frozen=True)
class ModelSummary:
    """What an uploaded model file holds, once it passed every check.

    `format` is "h5" (Keras 2 / QKeras) or "keras" (Keras 3); `architecture` the decoded model
    config (`model_config` or `config.json`); `layers` (class name, layer name) in file order;
    `keras_version` as the file records it ("" when it does not); `size_bytes` the file's size.
    """

    path: Path
    format: str
    architecture: dict[str, Any]
    layers: tuple[tuple[str, str], ...]
    keras_version: str
    size_bytes: int


def inspect_model_file(path: Path, *, max_bytes: int | None = None) -> ModelSummary:
    """Check the model file at `path` without running anything in it; see the module docstring.

    Cheap (no TensorFlow): it reads the architecture JSON and walks the archive. Raises
    `PayloadTooLarge` over `max_bytes`, `BadInput` for a missing, truncated, corrupt or unknown
    file, `UnsafeModel` (naming the layer or member) for anything that could run code or attack
    the reader. Every error has `field="model"`.
    """
    path = Path(path)
    if not path.is_file():
        raise BadInput(f"model file {path} does not exist", field="model")
    size = path.stat().st_size
    if max_bytes is not None and size > max_bytes:
        raise PayloadTooLarge(
            f"{path.name} is {size} bytes, more than the limit of {max_bytes}", field="model"
        )
    with path.open("rb") as fh:
        head = fh.read(8)
    if head.startswith(HDF5_MAGIC):
        architecture, version = _read_h5_architecture(path)
        fmt = FORMAT_H5
    elif head.startswith(ZIP_MAGIC):
        architecture, version = _read_keras_archive(path)
        fmt = FORMAT_KERAS
    else:
        raise BadInput(
            f"{path.name} is neither a Keras 2 HDF5 (.h5) nor a Keras 3 (.keras) model file",
            field="model",
        )
    layers = check_architecture(architecture, path.name, keras3=fmt == FORMAT_KERAS)
    return ModelSummary(
        path=path,
        format=fmt,
        architecture=architecture,
        layers=layers,
        keras_version=version,
        size_bytes=size,
    )


# ---- Keras 2 HDF5 --------------------------------------------------------------------------
def _read_h5_architecture(path: Path) -> tuple[dict[str, Any], str]:
    import h5py  # imported here: the .keras path and the error classes need no HDF5 library

    try:
        with h5py.File(path, mode="r") as h5:
            raw = h5.attrs.get("model_config")
            version = h5.attrs.get("keras_version", "")
    except OSError as exc:
        raise BadInput(
            f"{path.name} is not a readable HDF5 file ({exc}); it may be truncated", field="model"
        ) from exc
    if raw is None:
        raise BadInput(
            f"{path.name} has no model_config attribute: save the whole model with "
            "model.save('model.h5') (Keras 2 / tf_keras), not only its weights",
            field="model",
        )
    version = version.decode("utf-8", "replace") if isinstance(version, bytes) else str(version)
    return _decode_json(raw, f"{path.name}: model_config"), version


# ---- Keras 3 zip ---------------------------------------------------------------------------
def _read_keras_archive(path: Path) -> tuple[dict[str, Any], str]:
    try:
        with zipfile.ZipFile(path) as archive:
            infos = archive.infolist()
            _check_members(infos, path.name)
            config = _read_json_member(archive, KERAS_CONFIG, path.name)
            metadata = (
                _read_json_member(archive, KERAS_METADATA, path.name)
                if KERAS_METADATA in archive.namelist()
                else {}
            )
            _check_weights_member(archive, path.name)
    except zipfile.BadZipFile as exc:
        raise BadInput(
            f"{path.name} is not a readable .keras (zip) file: {exc}; it may be truncated", field="model"
        ) from exc
    except (EOFError, OSError, RuntimeError, NotImplementedError) as exc:
        raise BadInput(f"{path.name}: the .keras archive cannot be read: {exc}", field="model") from exc
    version = metadata.get("keras_version", "") if isinstance(metadata, dict) else ""
    if not str(version).startswith("3"):
        raise BadInput(
            f"{path.name}: metadata.json says keras_version {version!r}; a .keras file must come from Keras 3",
            field="model",
        )
    return config, str(version)


def _check_members(infos: list[zipfile.ZipInfo], filename: str) -> None:
    names = [info.filename for info in infos]
    for name in names:
        pure = PurePosixPath(name)
        if (
            name.startswith(("/", "\\"))
            or "\\" in name
            or "\x00" in name
            or ".." in pure.parts
            or re.match(r"^[A-Za-z]:", name)
        ):
            raise UnsafeModel(
                f"{filename}: archive member {name!r} is a path traversal (absolute path, '..', "
                "backslash or drive letter)",
                field="model",
            )
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise UnsafeModel(f"{filename}: archive members appear twice: {duplicates}", field="model")
    for info in infos:
        if info.filename not in KERAS_MEMBERS:
            nested = info.filename.lower().endswith((".zip", ".keras", ".tar", ".gz", ".tgz", ".7z", ".xz"))
            raise UnsafeModel(
                f"{filename}: archive member {info.filename!r} is "
                + ("a nested archive" if nested else "not part of a Keras 3 model")
                + f"; a .keras file holds only {', '.join(sorted(KERAS_MEMBERS))}",
                field="model",
            )
        if info.flag_bits & 0x1:
            raise BadInput(f"{filename}: archive member {info.filename!r} is encrypted", field="model")
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise BadInput(
                f"{filename}: archive member {info.filename!r} uses compression method "
                f"{info.compress_type}; Keras writes stored or deflated members",
                field="model",
            )
        ratio = info.file_size / max(info.compress_size, 1)
        if info.file_size > _RATIO_FLOOR_BYTES and ratio > MAX_RATIO:
            raise UnsafeModel(
                f"{filename}: archive member {info.filename!r} expands {ratio:.0f}x "
                f"({info.compress_size} -> {info.file_size} bytes), beyond {MAX_RATIO:.0f}x: a zip bomb",
                field="model",
            )
    total = sum(info.file_size for info in infos)
    if total > MAX_UNCOMPRESSED_BYTES:
        raise UnsafeModel(
            f"{filename}: the archive declares {total} bytes uncompressed, more than "
            f"{MAX_UNCOMPRESSED_BYTES}: a zip bomb or not a model",
            field="model",
        )
    if KERAS_CONFIG not in names:
        raise BadInput(f"{filename}: a .keras file must hold {KERAS_CONFIG}", field="model")
    if KERAS_WEIGHTS not in names:
        raise BadInput(f"{filename}: a .keras file must hold {KERAS_WEIGHTS}", field="model")


def _read_bounded(archive: zipfile.ZipFile, name: str, limit: int, filename: str) -> bytes:
    """A member's bytes, never more than `limit` (zipfile stops at the declared size and checks
    the CRC at the end, so a member that lies about its size or was cut is an error)."""
    info = archive.getinfo(name)
    if info.file_size > limit:
        raise UnsafeModel(
            f"{filename}: archive member {name!r} is {info.file_size} bytes, more than {limit}", field="model"
        )
    with archive.open(info) as member:
        data = member.read(limit + 1)
    if len(data) > limit:
        raise UnsafeModel(f"{filename}: archive member {name!r} is larger than {limit} bytes", field="model")
    return data


def _nested_archive(head: bytes) -> str | None:
    for magic, what in _NESTED_MAGICS:
        if head.startswith(magic):
            return what
    if len(head) >= 262 and head[257:262] == b"ustar":
        return "a tar archive"
    return None


def _read_json_member(archive: zipfile.ZipFile, name: str, filename: str) -> dict[str, Any]:
    data = _read_bounded(archive, name, MAX_JSON_BYTES, filename)
    nested = _nested_archive(data[:512])
    if nested:
        raise UnsafeModel(
            f"{filename}: archive member {name!r} is {nested} (a nested archive)", field="model"
        )
    return _decode_json(data, f"{filename}: {name}")


def _check_weights_member(archive: zipfile.ZipFile, filename: str) -> None:
    """model.weights.h5 must be HDF5; it is read to the end so that a cut or altered member fails
    its CRC here, not in the builder."""
    info = archive.getinfo(KERAS_WEIGHTS)
    read = 0
    with archive.open(info) as member:
        head = member.read(512)
        nested = _nested_archive(head)
        if nested:
            raise UnsafeModel(
                f"{filename}: archive member {KERAS_WEIGHTS!r} is {nested} (a nested archive)", field="model"
            )
        if not head.startswith(HDF5_MAGIC):
            raise BadInput(f"{filename}: archive member {KERAS_WEIGHTS!r} is not an HDF5 file", field="model")
        read = len(head)
        while chunk := member.read(_CHUNK):
            read += len(chunk)
            if read > MAX_UNCOMPRESSED_BYTES:
                raise UnsafeModel(f"{filename}: {KERAS_WEIGHTS!r} expands past the size limit", field="model")


# ---- the architecture allow-list (both formats) --------------------------------------------
def _decode_json(raw: Any, what: str) -> dict[str, Any]:
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise BadInput(f"{what} is not UTF-8 text: {exc}", field="model") from exc
    try:
        value = json.loads(raw)
    except (TypeError, ValueError, RecursionError) as exc:
        raise BadInput(f"{what} is not valid JSON: {exc}", field="model") from exc
    if not isinstance(value, dict):
        raise BadInput(f"{what} is not a JSON object", field="model")
    return value


def check_architecture(
    architecture: dict[str, Any], filename: str, *, keras3: bool
) -> tuple[tuple[str, str], ...]:
    """Refuse anything outside the allow-list; returns (class name, layer name) per layer."""
    if architecture.get("class_name") not in MODEL_CLASSES:
        raise BadInput(
            f"{filename}: top-level class {architecture.get('class_name')!r} is not a Keras model",
            field="model",
        )
    if keras3:
        _check_keras3_identity(architecture, "the model", "model")
    layers = _layer_configs(architecture)
    for layer in layers:
        _check_layer(layer, keras3=keras3)
    return tuple((str(layer.get("class_name")), _layer_name(layer)) for layer in layers)


def _layer_configs(model: dict[str, Any]) -> list[dict[str, Any]]:
    config = model.get("config")
    layers = config.get("layers") if isinstance(config, dict) else config
    if not isinstance(layers, list) or not all(isinstance(layer, dict) for layer in layers):
        raise BadInput("the model config has no list of layers", field="model")
    return layers


def _layer_name(layer: dict[str, Any]) -> str:
    config = layer.get("config")
    name = config.get("name") if isinstance(config, dict) else None
    return str(name or layer.get("name") or "<unnamed>")


def _check_keras3_identity(value: dict[str, Any], layer: str, where: str) -> None:
    """A Keras 3 object names its module and, for registered (custom) objects, a registered name."""
    module = value.get("module")
    registered = value.get("registered_name")
    class_name = value.get("class_name")
    if (module, class_name) in HGQ2_OBJECTS:
        if registered != f"hgq>{class_name}":
            raise UnsafeModel(
                f"layer {layer!r} names HGQ2's {class_name!r} with registered name {registered!r} at "
                f"{where}; HGQ2 registers it as 'hgq>{class_name}'",
                field="model",
            )
        return
    if module is not None and module not in KERAS3_MODULES:
        hint = (
            " and these HGQ2 objects: " + ", ".join(sorted(f"{m}.{c}" for m, c in HGQ2_OBJECTS))
            if str(module).startswith("hgq")
            else ""
        )
        raise UnsafeModel(
            f"layer {layer!r} refers to module {module!r} at {where}; only built-in Keras 3 objects "
            f"are allowed{hint}",
            field="model",
        )
    if registered is not None and registered != class_name:
        raise UnsafeModel(
            f"layer {layer!r} uses the registered (custom) object {registered!r} at {where}; "
            "custom objects would run code from the file's author",
            field="model",
        )


def _check_layer(layer: dict[str, Any], *, keras3: bool) -> None:
    name = _layer_name(layer)
    class_name = layer.get("class_name")
    if class_name in CODE_CLASSES:
        raise UnsafeModel(
            f"layer {name!r} is a {class_name} layer: loading it would run Python code stored in the file; "
            "replace it with standard Keras layers",
            field="model",
        )
    if keras3:
        _check_keras3_identity(layer, name, "layer")
    if class_name in MODEL_CLASSES:
        for inner in _layer_configs(layer):
            _check_layer(inner, keras3=keras3)
        return
    if not keras3:
        allowed = LAYER_CLASSES
    elif str(layer.get("module")).startswith("hgq."):
        allowed = HGQ2_LAYER_CLASSES
    else:
        allowed = KERAS_LAYER_CLASSES
    if class_name not in allowed:
        raise UnsafeModel(
            f"layer {name!r} has class {class_name!r}, which is not in the allow-list "
            f"({', '.join(sorted(allowed))})",
            field="model",
        )
    for key, value in layer.items():
        if key not in ("class_name", "module", "registered_name"):
            _check_value(value, name, key, keras3=keras3)


def _check_value(value: Any, layer: str, where: str, *, keras3: bool) -> None:
    """Walk a layer's entries; every nested object must be allow-listed and carry no code."""
    if isinstance(value, list):
        for i, item in enumerate(value):
            _check_value(item, layer, f"{where}[{i}]", keras3=keras3)
        return
    if not isinstance(value, dict):
        return
    code = sorted(CODE_KEYS & value.keys())
    if code:
        raise UnsafeModel(
            f"layer {layer!r} carries serialized Python code at {where}.{code[0]}", field="model"
        )
    if keras3:
        _check_keras3_identity(value, layer, where)
    else:
        module = value.get("module")
        if module is not None and not str(module).startswith(H5_MODULE_PREFIXES) and module != "keras":
            raise UnsafeModel(
                f"layer {layer!r} refers to module {module!r} at {where}; only Keras and QKeras objects "
                "are allowed",
                field="model",
            )
    if "class_name" in value:
        class_name = value["class_name"]
        if class_name in CODE_CLASSES:
            raise UnsafeModel(
                f"layer {layer!r} carries a serialized function ({class_name!r}) at {where}", field="model"
            )
        if class_name not in ALLOWED_CLASSES and not (
            keras3 and (value.get("module"), class_name) in HGQ2_OBJECTS
        ):
            raise UnsafeModel(
                f"layer {layer!r} uses class {class_name!r} at {where}, which is not in the allow-list",
                field="model",
            )
    for key, item in value.items():
        if key == "activation" and isinstance(item, str):
            _check_activation_string(item, layer, f"{where}.activation", keras3=keras3)
        else:
            _check_value(item, layer, f"{where}.{key}", keras3=keras3)


def _check_activation_string(text: str, layer: str, where: str, *, keras3: bool) -> None:
    # QKeras resolves such strings by name lookup and literal parsing; Keras 3 by name only.
    match = _QUANTIZER_STRING.match(text.strip())
    name = match.group(1) if match else None
    if name in KERAS_ACTIVATIONS and "(" not in text:
        return
    if not keras3 and name in QUANTIZER_CLASSES:
        return
    raise UnsafeModel(
        f"layer {layer!r} has activation {text!r} at {where}, which is not a known activation"
        + ("" if keras3 else " or quantizer with literal arguments"),
        field="model",
    )
