"""Stage 1: the model scan reads the architecture only and refuses anything that would run code."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import h5py
import pytest

from fpgaas.builder import build
from fpgaas.builder.load import scan_model
from fpgaas.kernels.errors import BadInput, UnsafeModel
from tests.fixtures.models import make_lambda_model

Edit = Callable[[dict[str, Any]], None]


def _rewrite_config(source: Path, target: Path, edit: Edit) -> Path:
    target.write_bytes(source.read_bytes())
    with h5py.File(target, "r+") as h5:
        arch = json.loads(h5.attrs["model_config"])
        edit(arch)
        h5.attrs["model_config"] = json.dumps(arch)
    return target


def _layer(arch: dict[str, Any], name: str) -> dict[str, Any]:
    return next(layer for layer in arch["config"]["layers"] if layer["config"]["name"] == name)


def test_a_qkeras_model_passes_the_scan_and_lists_its_layers(tiny_model: Path) -> None:
    scanned = scan_model(tiny_model)
    assert scanned.layers == (
        ("InputLayer", "inputs"),
        ("QDense", "dense_1"),
        ("QActivation", "relu_1"),
        ("QDense", "output"),
    )


def test_a_lambda_layer_is_refused_by_name_and_its_code_never_runs(tmp_path: Path) -> None:
    marker = tmp_path / "lambda-ran"
    model = make_lambda_model(tmp_path / "lambda.h5", marker)

    with pytest.raises(UnsafeModel, match="'evil' is a Lambda layer"):
        scan_model(model)
    with pytest.raises(UnsafeModel, match="evil"):
        build(model, name="evil", out=tmp_path / "out")

    assert not marker.exists()
    assert not (tmp_path / "out").exists()
    # Control: Keras itself would have run the stored lambda while loading the file.
    import tf_keras

    tf_keras.models.load_model(model, compile=False)
    assert marker.exists()


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda a: _layer(a, "relu_1").__setitem__("class_name", "MyCustomLayer"), "'MyCustomLayer'"),
        (
            lambda a: _layer(a, "relu_1")["config"].__setitem__("activation", "__import__('os').system('x')"),
            "activation",
        ),
        (lambda a: _layer(a, "dense_1")["config"]["kernel_initializer"].__setitem__("module", "os"), "'os'"),
        (
            lambda a: _layer(a, "dense_1")["config"].__setitem__(
                "kernel_constraint", {"class_name": "function", "config": "evil", "module": "__main__"}
            ),
            "__main__",
        ),
        (
            lambda a: _layer(a, "dense_1")["config"].__setitem__("function", ["4wEAAA=="]),
            "serialized Python code",
        ),
    ],
    ids=["unknown-class", "code-in-activation-string", "foreign-module", "function-object", "bytecode"],
)
def test_objects_outside_the_allow_list_are_refused_naming_the_layer(
    tiny_model: Path,
    tmp_path: Path,
    edit,
    message: str,
) -> None:
    tampered = _rewrite_config(tiny_model, tmp_path / "tampered.h5", edit)
    with pytest.raises(UnsafeModel, match=message) as caught:
        scan_model(tampered)
    assert "layer '" in str(caught.value)
    assert caught.value.status_code == 400


def test_a_corrupt_file_is_bad_input(tiny_model: Path, tmp_path: Path) -> None:
    corrupt = tmp_path / "corrupt.h5"
    corrupt.write_bytes(tiny_model.read_bytes()[:300])
    with pytest.raises(BadInput, match="not a readable HDF5 file") as caught:
        scan_model(corrupt)
    assert caught.value.field == "model"


def test_a_weights_only_file_is_bad_input(tiny_model: Path, tmp_path: Path) -> None:
    weights_only = tmp_path / "weights.h5"
    weights_only.write_bytes(tiny_model.read_bytes())
    with h5py.File(weights_only, "r+") as h5:
        del h5.attrs["model_config"]
    with pytest.raises(BadInput, match="no model_config"):
        scan_model(weights_only)


def test_a_missing_file_is_bad_input(tmp_path: Path) -> None:
    with pytest.raises(BadInput, match="does not exist"):
        build(tmp_path / "nope.h5", name="nope", out=tmp_path / "out")
