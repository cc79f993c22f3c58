"""`FixedPointEngine`: an hls4ml network evaluated bit-exactly on whole batches with numpy."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from fpgaas.kernels.engine.errors import UnsupportedLayer
from fpgaas.kernels.engine.fixedpoint import FixedType, from_float32, to_float32
from fpgaas.kernels.engine.hls_project import HlsProject, LayerCall, ReadText, read_disk, read_project
from fpgaas.kernels.engine.layers import Activation, Dense, Layer, Normalize
from fpgaas.kernels.engine.plan import FloatPlan, NotPlannable, compile_plan

_DENSE_KERNEL = "nnet::DenseLatency<data_T, res_T, CONFIG_T>"
_MULT_PRODUCT = "nnet::product::mult<x_T, y_T>"
# Samples per pass through the network: the per-layer temporaries then stay in cache.
_CHUNK = 1024


class FixedPointEngine:
    """The network of one hls4ml project, computing the same bits as its C simulation.

    Built once from the generated project text; immutable afterwards, so `predict` may be called
    from any number of threads at once. No hls4ml or TensorFlow import is needed.
    """

    def __init__(self, input_type: FixedType, layers: list[Layer], n_inputs: int, n_outputs: int) -> None:
        self._input_type = input_type
        self._layers = tuple(layers)
        self._n_inputs = n_inputs
        self._n_outputs = n_outputs
        self._plan: FloatPlan | None = None
        try:
            self._plan = compile_plan(input_type, list(layers), n_inputs)
            self._path = "float64 plan"
        except NotPlannable as exc:
            self._path = f"int64 layers ({exc})"
        if self._plan is not None:
            # Defence in depth: the plan's exactness proof is checked against the reference int64
            # layers on a probe batch; on any difference the reference layers serve.
            x = _probe_inputs(input_type, n_inputs)
            got = np.empty((x.shape[0], n_outputs), dtype=np.float32)
            self._plan.run(x, got)
            want = to_float32(self.predict_raw(x), self._layers[-1].out_type)
            bad = int(np.count_nonzero(got.view(np.uint32) != want.view(np.uint32)))
            if bad:
                self._plan = None
                self._path = f"int64 layers (the float64 plan failed its self-check on {bad} outputs)"

    @classmethod
    def from_hls_project(
        cls, hls_dir: Path, project_name: str = "myproject", read: ReadText = read_disk
    ) -> FixedPointEngine:
        """Build from an hls4ml io_parallel project directory (the artifact's `hls/`), its files
        read with `read` (see `hls_project.ReadText`); nothing is read after this returns.

        Raises `UnsupportedLayer` naming the first layer, type or construct it cannot reproduce.
        """
        project = read_project(Path(hls_dir), project_name, read)
        if len(project.inputs) != 1 or len(project.outputs) != 1:
            raise UnsupportedLayer(f"{project_name} has {len(project.inputs)} inputs; the engine takes one")
        (in_type_name, var, n_inputs), (out_type_name, out_var, n_outputs) = (
            project.inputs[0],
            project.outputs[0],
        )
        layers: list[Layer] = []
        for call in project.calls:
            if call.args[0] != var:
                raise UnsupportedLayer(
                    f"layer {call.comment or call.function} does not read {var}: not a chain"
                )
            layers.append(_build_layer(project, call))
            var = call.args[1]
        if var != out_var:
            raise UnsupportedLayer(f"the last layer writes {var}, not the output {out_var}")
        input_type = project.resolve(in_type_name)
        if layers[0].in_type != input_type or layers[-1].out_type != project.resolve(out_type_name):
            raise UnsupportedLayer("the port types differ from the first/last layer types")
        return cls(input_type, layers, n_inputs, n_outputs)

    @property
    def n_inputs(self) -> int:
        return self._n_inputs

    @property
    def n_outputs(self) -> int:
        return self._n_outputs

    @property
    def path(self) -> str:
        """How `predict` computes: "float64 plan", or "int64 layers (<why not the plan>)"."""
        return self._path

    def predict(self, x: np.ndarray) -> np.ndarray:
        """float32 (n, n_inputs) -> float32 (n, n_outputs), as `fpgaas_kernel` computes it.

        Other float dtypes are first rounded to float32, as the kernel's C ABI would.
        """
        if self._plan is None:
            return to_float32(self.predict_raw(x), self._layers[-1].out_type)
        x = np.asarray(x, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != self._n_inputs:
            raise ValueError(f"expected shape (n, {self._n_inputs}), got {x.shape}")
        out = np.empty((x.shape[0], self._n_outputs), dtype=np.float32)
        self._plan.run(x, out)
        return out

    def predict_into(self, x: np.ndarray, out: np.ndarray) -> None:
        """`predict` written into `out`, float32 (n, n_outputs), for x float32 (n, n_inputs)
        (both checked by the caller): the serving path, without an answer array per call."""
        if self._plan is None:
            out[...] = self.predict(x)
        else:
            self._plan.run(x, out)

    def predict_raw(self, x: np.ndarray) -> np.ndarray:
        """Like `predict` but returns int64 (n, n_outputs): the result type's raw LSB counts.

        Always computed by the int64 layers (the reference the float64 plan is checked against).
        """
        x = np.asarray(x, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != self._n_inputs:
            raise ValueError(f"expected shape (n, {self._n_inputs}), got {x.shape}")
        out = np.empty((x.shape[0], self._n_outputs), dtype=np.int64)
        for start in range(0, x.shape[0], _CHUNK):
            # The bridge converts each float with `input_t(float)`, i.e. exactly through double.
            h = from_float32(np.ascontiguousarray(x[start : start + _CHUNK].T), self._input_type)
            for layer in self._layers:
                h = layer.run(h)
            out[start : start + _CHUNK] = h.T
        return out

    def describe(self) -> list[dict[str, Any]]:
        """One dict per layer: function, Keras name, the HLS types and (Dense) the compute plan."""
        return [layer.describe() for layer in self._layers]


def _probe_inputs(t: FixedType, n_inputs: int, rows: int = 2048) -> np.ndarray:
    """Deterministic inputs across every scale: the input type's grid and edges, ties, specials."""
    rng = np.random.default_rng(20261122)
    lsb = 2.0 ** (-t.frac)
    grid = rng.integers(t.raw_min, t.raw_max, (rows // 4, n_inputs), endpoint=True) * lsb
    ties = (rng.integers(-512, 512, (rows // 4, n_inputs)) + 0.5) * 2.0 ** rng.integers(
        -12, 4, (rows // 4, 1)
    )
    wide = rng.normal(0.0, 1.0, (rows // 2 - 8, n_inputs)) * 10.0 ** rng.uniform(-4, 4, (rows // 2 - 8, 1))
    special = np.array([np.nan, -np.inf, np.inf, 3.4e38, -3.4e38, 1e-45, -0.0, 0.0])[:, None]
    return np.concatenate([grid, ties, wide, np.repeat(special, n_inputs, axis=1)]).astype(np.float32)


def _check_struct(project: HlsProject, struct: str, base: str, call: LayerCall) -> dict[str, str]:
    cfg = project.config(struct)
    if project.config_bases[struct] != base:
        raise UnsupportedLayer(f"{call.comment}: {struct} derives from nnet::{project.config_bases[struct]}")
    if cfg.get("io_type", "nnet::io_parallel") != "nnet::io_parallel":
        raise UnsupportedLayer(f"{call.comment}: io_type {cfg['io_type']} (only io_parallel)")
    return cfg


def _build_layer(project: HlsProject, call: LayerCall) -> Layer:
    name = call.comment or call.function
    if len(call.template_args) != 3:
        raise UnsupportedLayer(f"{name}: nnet::{call.function} with template arguments {call.template_args}")
    data_t, res_t, struct = call.template_args
    in_type, out_type = project.resolve(data_t), project.resolve(res_t)
    if call.function in ("relu", "linear") and len(call.args) == 2:
        _check_struct(project, struct, "activ_config", call)
        return Activation(name, call.function, in_type, out_type)
    if call.function == "dense" and len(call.args) == 4:
        cfg = _check_struct(project, struct, "dense_config", call)
        if cfg.get("strategy") != "nnet::latency" or cfg.get("kernel") != _DENSE_KERNEL:
            raise UnsupportedLayer(f"{name}: dense strategy {cfg.get('strategy')} (only the latency kernel)")
        if cfg.get("product") != _MULT_PRODUCT:
            raise UnsupportedLayer(f"{name}: product {cfg.get('product')} (only nnet::product::mult)")
        n_in, n_out = int(cfg["n_in"]), int(cfg["n_out"])
        w_type, w = project.array(call.args[2], n_in * n_out)
        b_type, b = project.array(call.args[3], n_out)
        if w_type != project.config_type(struct, "weight_t") or b_type != project.config_type(
            struct, "bias_t"
        ):
            raise UnsupportedLayer(f"{name}: weight arrays are declared with other types than {struct}")
        return Dense(
            name,
            in_type,
            out_type,
            w_type,
            b_type,
            project.config_type(struct, "accum_t"),
            w.reshape(n_in, n_out),
            b,
        )
    if call.function == "normalize" and len(call.args) == 4:
        cfg = _check_struct(project, struct, "batchnorm_config", call)
        # n_filt is declared unsigned: -1 reads back as 2**32 - 1 (one scale per input).
        if cfg.get("n_filt") not in ("-1", str(2**32 - 1)) or cfg.get("product") != _MULT_PRODUCT:
            raise UnsupportedLayer(f"{name}: batchnorm with n_filt={cfg.get('n_filt')}, {cfg.get('product')}")
        n = int(cfg["n_in"])
        s_type, s = project.array(call.args[2], n)
        b_type, b = project.array(call.args[3], n)
        if s_type != project.config_type(struct, "scale_t") or b_type != project.config_type(
            struct, "bias_t"
        ):
            raise UnsupportedLayer(f"{name}: scale/bias arrays are declared with other types than {struct}")
        return Normalize(name, in_type, out_type, s_type, b_type, s, b)
    raise UnsupportedLayer(f"{name}: nnet::{call.function} is not supported by the fixed-point engine")
