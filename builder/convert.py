"""Stage 2: convert a scanned model with hls4ml and write the HLS project.

A Keras 3 `.keras` model goes through hls4ml's Keras 3 parser in a child process
(`fpgaas.builder.keras3`) and comes back as hls4ml's layer list; from there on both formats share
the code below. For Keras 2 / QKeras:

The architecture comes from `fpgaas.builder.load.scan_model` and the weights from the same file through
hls4ml's `KerasFileReader`, so no Keras model is instantiated. hls4ml 1.3.0 would pick its Keras 3
front end from the installed `keras`, so the Keras 2 parser (`parse_keras_model`) is called directly
and the per-layer configuration is built the way hls4ml's `config_from_keras_model(granularity="name")`
builds it: every configurable type `auto` (hls4ml infers it), except the types QKeras quantizers fix.
"""

from __future__ import annotations

import contextlib
import io
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from fpgaas.builder.keras3 import parse_in_child
from fpgaas.builder.load import FORMAT_KERAS, ScannedModel
from fpgaas.kernels.errors import BadInput, BuildError

PROJECT_NAME: Final = "myproject"
BACKEND: Final = "Vitis"
IO_TYPE: Final = "io_parallel"
STRATEGY: Final = "Latency"
DEFAULT_PART: Final = "xcu250-figd2104-2L-e"  # Alveo U250


@dataclass(frozen=True)
class ConvertOptions:
    """hls4ml settings; the defaults are the fpgaas defaults (Alveo U250, 200 MHz)."""

    part: str = DEFAULT_PART
    clock_period_ns: float = 5.0
    default_precision: str = "fixed<16,6>"
    reuse_factor: int = 1
    strategy: str = STRATEGY  # hls4ml's "Latency" or "Resource"
    # Per-layer overrides: "<layer>" sets every type of that layer, "<layer>.<role>" one of them
    # (e.g. "dense_1.weight"); values are hls4ml precisions such as "fixed<18,8>".
    layer_precision: Mapping[str, str] = field(default_factory=dict)


def hls_config(layer_list: list[dict[str, Any]], options: ConvertOptions) -> dict[str, Any]:
    """The HLSConfig for `layer_list` (from `parse_keras_model`), one LayerName entry per layer."""
    import hls4ml
    from hls4ml.utils.config import _get_precision_from_quantizer

    backend = hls4ml.backends.get_backend(BACKEND)
    names: dict[str, Any] = {}
    for layer in layer_list:
        layer_cls = backend.create_layer_class(hls4ml.model.layers.layer_map[layer["class_name"]])
        entry: dict[str, Any] = {"Precision": {}}
        for attr in layer_cls.expected_attributes:
            if not attr.configurable:
                continue
            if isinstance(attr, hls4ml.model.attributes.TypeAttribute):
                role = attr.name[:-2] if attr.name.endswith("_t") else attr.name
                entry["Precision"][role] = "auto" if attr.default is None else str(attr.default)
            elif attr.name == "reuse_factor":
                entry[attr.config_name] = options.reuse_factor
        for key, quantizer in layer.items():
            if "quantizer" not in key or quantizer is None:
                continue
            role = key.lower().split("_quantizer")[0]
            role = "result" if role == "activation" else role
            # hls4ml's rule: QActivation quantizers arrive as config dicts, QDense ones as objects.
            precision = (
                _get_precision_from_quantizer(quantizer)
                if isinstance(quantizer, dict)
                else quantizer.hls_type
            )
            entry["Precision"][role] = str(precision)
        names[layer["name"]] = entry
    for key, precision in options.layer_precision.items():
        layer_name, _, role = key.partition(".")
        if layer_name not in names:
            raise BadInput(
                f"precision override for {layer_name!r}: the model has no such layer "
                f"(its layers: {', '.join(names)})",
                field=f"precision.{key}",
            )
        roles = names[layer_name]["Precision"]
        if role and role not in roles:
            raise BadInput(
                f"layer {layer_name!r} has no {role!r} type (it has {', '.join(roles) or 'none'})",
                field=f"precision.{key}",
            )
        for r in [role] if role else list(roles):
            roles[r] = precision
    return {
        "Model": {
            "Precision": {"default": options.default_precision},
            "ReuseFactor": options.reuse_factor,
            "Strategy": options.strategy,
            "BramFactor": 1_000_000_000,
            "TraceOutput": False,
        },
        "LayerName": names,
    }


def convert(model: ScannedModel, hls_dir: Path, options: ConvertOptions, *, log: Path | None = None) -> Any:
    """Convert `model` and write the hls4ml project into `hls_dir`; returns the hls4ml ModelGraph.

    hls4ml's console output goes to `log` when given. Weights are compiled in from headers
    (`WriteWeightsTxt` off), so the firmware needs no files at run time.
    """
    import hls4ml
    from hls4ml.converters.keras_v2_to_hls import KerasFileReader, parse_keras_model
    from hls4ml.model import ModelGraph

    if model.format == FORMAT_KERAS:
        # Keras 3: hls4ml's Keras 3 parser, in a child process (see fpgaas.builder.keras3).
        keras3_log = (hls_dir.parent / "logs" / "keras3.log") if log is None else log.with_name("keras3.log")
        with tempfile.TemporaryDirectory(prefix="fpgaas-keras3-") as scratch:
            layer_list, input_layers, output_layers = parse_in_child(
                model.path, Path(scratch), log=keras3_log
            )
    chatter = io.StringIO()
    try:
        with contextlib.redirect_stdout(chatter):
            if model.format != FORMAT_KERAS:
                reader = KerasFileReader({"KerasH5": str(model.path)})
                layer_list, input_layers, output_layers, _ = parse_keras_model(model.architecture, reader)
            config = hls4ml.backends.get_backend(BACKEND).create_initial_config(
                part=options.part,
                clock_period=options.clock_period_ns,
                io_type=IO_TYPE,
                write_weights_txt=False,
            )
            config.update(
                {
                    "Backend": BACKEND,
                    "OutputDir": str(hls_dir),
                    "ProjectName": PROJECT_NAME,
                    "HLSConfig": hls_config(layer_list, options),
                }
            )
            graph = ModelGraph.from_layer_list(config, layer_list, input_layers, output_layers)
            graph.write()
    except BadInput:  # a build option the model cannot take, already named
        _save(log, chatter)
        raise
    except (KeyError, ValueError, TypeError, AssertionError) as exc:
        _save(log, chatter)
        raise BadInput(f"hls4ml cannot convert {model.path.name}: {exc!r}", field="model") from exc
    except Exception as exc:
        # hls4ml raises bare Exception for unsupported layers; translate it here, at the boundary.
        _save(log, chatter)
        raise BuildError(
            f"hls4ml conversion of {model.path.name} failed: {exc}", log=None if log is None else str(log)
        ) from exc
    _save(log, chatter)
    return graph


def _save(log: Path | None, chatter: io.StringIO) -> None:
    if log is not None:
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text(chatter.getvalue())
