"""Hostile model files, at the loader: nothing in an uploaded file ever runs, and every refusal is
a 4xx-class error naming the problem (`fpgaas.kernels.model_file.inspect_model_file`, which the
server may call on an upload, and the builder's first stage, which calls it again).

Covers Lambda layers in `.h5` and `.keras` (their payload writes a marker file, which never
appears; a control shows Keras itself would run it), custom and unregistered objects, modules
outside the allow-list, path traversal, zip bombs, nested archives, truncated and oversize files.
"""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from fpgaas.builder import build
from fpgaas.kernels import model_file
from fpgaas.kernels.errors import BadInput, FpgaasError, PayloadTooLarge, UnsafeModel
from fpgaas.kernels.model_file import HDF5_MAGIC, inspect_model_file
from tests.fixtures.keras3_models import Keras3Models, load_unsafely_with_keras3
from tests.fixtures.models import make_lambda_model

Members = dict[str, bytes]


def _members(path: Path) -> Members:
    with zipfile.ZipFile(path) as archive:
        return {info.filename: archive.read(info) for info in archive.infolist()}


def _write_zip(path: Path, members: list[tuple[str, bytes]], compression: int = zipfile.ZIP_DEFLATED) -> Path:
    with zipfile.ZipFile(path, "w", compression=compression) as archive:
        for name, data in members:
            archive.writestr(zipfile.ZipInfo(name), data, compress_type=compression)
    return path


def _with_config(source: Path, target: Path, edit: Callable[[dict[str, Any]], None]) -> Path:
    members = _members(source)
    config = json.loads(members["config.json"])
    edit(config)
    members["config.json"] = json.dumps(config).encode()
    return _write_zip(target, list(members.items()))


def _layer(config: dict[str, Any], name: str) -> dict[str, Any]:
    return next(layer for layer in config["config"]["layers"] if layer["config"]["name"] == name)


def _refused(path: Path, error: type[FpgaasError], match: str) -> FpgaasError:
    with pytest.raises(error, match=match) as caught:
        inspect_model_file(path)
    assert 400 <= caught.value.status_code < 500
    assert caught.value.field == "model"
    return caught.value


# ---- the real thing passes -------------------------------------------------------------------
def test_a_plain_keras3_model_passes_and_lists_its_layers(keras3_models: Keras3Models) -> None:
    summary = inspect_model_file(keras3_models.plain)
    assert summary.format == "keras" and summary.keras_version.startswith("3.")
    assert summary.layers == (
        ("InputLayer", "inputs"),
        ("Dense", "dense_1"),
        ("Activation", "relu_1"),
        ("Dense", "output"),
    )


def test_inspection_imports_neither_keras_nor_tensorflow(
    keras3_models: Keras3Models, tiny_model: Path
) -> None:
    import subprocess
    import sys

    script = (
        "import sys; from pathlib import Path; from fpgaas.kernels.model_file import inspect_model_file; "
        f"inspect_model_file(Path({str(keras3_models.plain)!r})); inspect_model_file(Path({str(tiny_model)!r})); "
        "print(sorted(m for m in ('keras', 'tensorflow', 'tf_keras', 'qkeras', 'hls4ml') if m in sys.modules))"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True
    )
    assert done.stdout.strip() == "[]"


# ---- code in the file ------------------------------------------------------------------------
def test_a_lambda_in_a_keras3_file_is_refused_and_its_code_never_runs(
    keras3_models: Keras3Models, tmp_path: Path
) -> None:
    error = _refused(keras3_models.evil, UnsafeModel, "'evil' is a Lambda layer")
    assert error.status_code == 400
    with pytest.raises(UnsafeModel, match="evil"):
        build(keras3_models.evil, name="evil", out=tmp_path / "out")
    assert not keras3_models.marker.exists()
    assert not (tmp_path / "out").exists()

    # Control: Keras 3 itself, told to trust the file, runs the stored lambda.
    done = load_unsafely_with_keras3(keras3_models.evil)
    assert done.returncode == 0, done.stderr[-2000:]
    assert keras3_models.marker.exists()
    keras3_models.marker.unlink()


def test_a_lambda_in_an_h5_file_is_refused_and_its_code_never_runs(tmp_path: Path) -> None:
    marker = tmp_path / "lambda-ran"
    model = make_lambda_model(tmp_path / "lambda.h5", marker)
    _refused(model, UnsafeModel, "'evil' is a Lambda layer")
    assert not marker.exists()


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    """An edit of the layer `path`'s first segment, then keys into its dict."""
    layer_name, *keys = path.split(".")

    def edit(config: dict[str, Any]) -> None:
        target = _layer(config, layer_name)
        for key in keys[:-1]:
            target = target[key]
        target[keys[-1]] = value

    return edit


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (_set("relu_1.class_name", "TFOpLambda"), "'relu_1' is a TFOpLambda layer"),
        (
            _set("dense_1.registered_name", "my_package>EvilDense"),
            "registered .custom. object 'my_package>EvilDense'",
        ),
        (_set("dense_1.module", "my_package.layers"), "module 'my_package.layers'"),
        (_set("relu_1.class_name", "MyCustomLayer"), "'MyCustomLayer', which is not in the allow-list"),
        (_set("dense_1.config.kernel_initializer.module", "os"), "module 'os'"),
        (
            _set(
                "dense_1.config.kernel_constraint",
                {
                    "module": "builtins",
                    "class_name": "function",
                    "config": "eval",
                    "registered_name": "function",
                },
            ),
            "module 'builtins'",
        ),
        (
            _set(
                "dense_1.config.kernel_initializer",
                {"module": "keras.initializers", "class_name": "__lambda__", "config": {"code": "4wEAAA=="}},
            ),
            "serialized function .'__lambda__'.",
        ),
        (_set("relu_1.config.activation", "__import__('os').system('x')"), "activation"),
        (_set("dense_1.module", "hgq.layers"), "module 'hgq.layers'.*these HGQ2 objects"),
    ],
    ids=[
        "tfoplambda",
        "custom-registered",
        "foreign-layer-module",
        "unknown-class",
        "foreign-initializer-module",
        "builtin-function",
        "bytecode",
        "code-in-activation",
        "hgq-module-on-a-keras-layer",
    ],
)
def test_custom_and_foreign_objects_in_a_keras3_file_are_refused_naming_the_layer(
    keras3_models: Keras3Models, tmp_path: Path, edit: Callable[[dict[str, Any]], None], message: str
) -> None:
    tampered = _with_config(keras3_models.plain, tmp_path / "tampered.keras", edit)
    error = _refused(tampered, UnsafeModel, message)
    assert "layer '" in error.message


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        # A class HGQ2 does not have (or fpgaas does not accept) under an HGQ2 module.
        (_set("dense_1.class_name", "QEinsumDenseBatchnorm"), "module 'hgq.layers.core.dense'"),
        # HGQ2's class name, but registered as someone else's custom object.
        (_set("dense_1.registered_name", "evil>QDense"), "registered name 'evil>QDense'"),
        # An HGQ2-looking module outside the allow-list, nested in a quantizer config.
        (
            _set(
                "dense_1.config.iq_conf.config.bw_mapper",
                {
                    "module": "hgq.utils.evil",
                    "class_name": "Mapper",
                    "config": {},
                    "registered_name": "hgq>Mapper",
                },
            ),
            "module 'hgq.utils.evil'",
        ),
        (_set("dense_1.config.iq_conf.config.ic.module", "os"), "module 'os'"),
        (_set("dense_1.config.activation", "__import__('os').system('x')"), "activation"),
    ],
    ids=[
        "unknown-hgq-class",
        "forged-registered-name",
        "forged-hgq-module",
        "foreign-constraint",
        "code-activation",
    ],
)
def test_forged_objects_in_an_hgq2_file_are_refused_naming_the_layer(
    hgq2_model: Path, tmp_path: Path, edit: Callable[[dict[str, Any]], None], message: str
) -> None:
    tampered = _with_config(hgq2_model, tmp_path / "tampered.keras", edit)
    error = _refused(tampered, UnsafeModel, message)
    assert "layer 'dense_1'" in error.message


# ---- attacks on the reader -------------------------------------------------------------------
@pytest.mark.parametrize(
    "name", ["../../evil.txt", "/etc/cron.d/evil", "assets\\..\\..\\evil", "C:/evil.txt"]
)
def test_path_traversal_in_member_names_is_refused(
    keras3_models: Keras3Models, tmp_path: Path, name: str
) -> None:
    members = [*_members(keras3_models.plain).items(), (name, b"owned")]
    _refused(_write_zip(tmp_path / "traversal.keras", members), UnsafeModel, "path traversal")


def test_a_zip_bomb_is_refused_before_it_is_inflated(keras3_models: Keras3Models, tmp_path: Path) -> None:
    members = _members(keras3_models.plain)
    members["model.weights.h5"] = HDF5_MAGIC + bytes(64 * 1024 * 1024)  # 64 MiB of zeros deflate ~1000x
    bomb = _write_zip(tmp_path / "bomb.keras", list(members.items()))
    assert bomb.stat().st_size < 1024 * 1024
    _refused(bomb, UnsafeModel, "expands .*x.*a zip bomb")


def test_an_archive_over_the_total_size_limit_is_refused(
    keras3_models: Keras3Models, monkeypatch: pytest.MonkeyPatch
) -> None:
    total = sum(len(data) for data in _members(keras3_models.plain).values())
    monkeypatch.setattr(model_file, "MAX_UNCOMPRESSED_BYTES", total - 1)
    _refused(keras3_models.plain, UnsafeModel, f"declares {total} bytes uncompressed")


def test_a_nested_archive_member_is_refused(keras3_models: Keras3Models, tmp_path: Path) -> None:
    inner = io.BytesIO()
    with zipfile.ZipFile(inner, "w") as archive:
        archive.writestr("payload.so", b"\x7fELF")
    members = [*_members(keras3_models.plain).items(), ("inner.zip", inner.getvalue())]
    _refused(_write_zip(tmp_path / "nested.keras", members), UnsafeModel, "'inner.zip' is a nested archive")


def test_an_archive_disguised_as_the_weights_is_refused(keras3_models: Keras3Models, tmp_path: Path) -> None:
    members = _members(keras3_models.plain)
    members["model.weights.h5"] = _members(keras3_models.plain)["model.weights.h5"]
    disguised = io.BytesIO()
    with zipfile.ZipFile(disguised, "w") as archive:
        archive.writestr("model.weights.h5", members["model.weights.h5"])
    members["model.weights.h5"] = disguised.getvalue()
    _refused(_write_zip(tmp_path / "disguised.keras", list(members.items())), UnsafeModel, "nested archive")


def test_unexpected_and_duplicate_members_are_refused(keras3_models: Keras3Models, tmp_path: Path) -> None:
    members = list(_members(keras3_models.plain).items())
    _refused(
        _write_zip(tmp_path / "extra.keras", [*members, ("assets/run.sh", b"#!/bin/sh\n")]),
        UnsafeModel,
        "'assets/run.sh' is not part of a Keras 3 model",
    )
    _refused(
        _write_zip(tmp_path / "twice.keras", [*members, ("config.json", b"{}")]),
        UnsafeModel,
        "appear twice",
    )


def test_a_keras2_archive_or_a_missing_member_is_bad_input(
    keras3_models: Keras3Models, tmp_path: Path
) -> None:
    members = _members(keras3_models.plain)
    old = dict(members, **{"metadata.json": json.dumps({"keras_version": "2.15.0"}).encode()})
    _refused(_write_zip(tmp_path / "old.keras", list(old.items())), BadInput, "must come from Keras 3")
    no_weights = [(n, d) for n, d in members.items() if n != "model.weights.h5"]
    _refused(_write_zip(tmp_path / "noweights.keras", no_weights), BadInput, "must hold model.weights.h5")


@pytest.mark.parametrize("fraction", [0.5, 0.9, 0.999])
def test_a_truncated_keras3_file_is_bad_input(
    keras3_models: Keras3Models, tmp_path: Path, fraction: float
) -> None:
    data = keras3_models.plain.read_bytes()
    cut = tmp_path / "cut.keras"
    cut.write_bytes(data[: int(len(data) * fraction)])
    _refused(cut, BadInput, "truncated")


def test_a_corrupted_weights_member_fails_its_crc(keras3_models: Keras3Models, tmp_path: Path) -> None:
    members = _members(keras3_models.plain)
    stored = _write_zip(tmp_path / "stored.keras", list(members.items()), compression=zipfile.ZIP_STORED)
    data = bytearray(stored.read_bytes())
    at = bytes(data).index(HDF5_MAGIC) + 4096  # inside the weights, past the HDF5 signature
    data[at] ^= 0xFF
    stored.write_bytes(bytes(data))
    _refused(stored, BadInput, "CRC|cannot be read|truncated")


def test_a_truncated_h5_file_is_bad_input(tiny_model: Path, tmp_path: Path) -> None:
    cut = tmp_path / "cut.h5"
    cut.write_bytes(tiny_model.read_bytes()[:2000])
    _refused(cut, BadInput, "truncated")


@pytest.mark.parametrize("which", ["h5", "keras"])
def test_an_oversize_file_is_413_before_it_is_read(
    keras3_models: Keras3Models, tiny_model: Path, which: str
) -> None:
    path = tiny_model if which == "h5" else keras3_models.plain
    with pytest.raises(PayloadTooLarge) as caught:
        inspect_model_file(path, max_bytes=path.stat().st_size - 1)
    assert caught.value.status_code == 413 and caught.value.field == "model"
    assert inspect_model_file(path, max_bytes=path.stat().st_size).format == which


def test_a_file_of_another_kind_is_bad_input(tmp_path: Path) -> None:
    pickle_like = tmp_path / "model.h5"
    pickle_like.write_bytes(b"\x80\x04\x95 cos\nsystem\n")
    _refused(pickle_like, BadInput, "neither a Keras 2 HDF5")
