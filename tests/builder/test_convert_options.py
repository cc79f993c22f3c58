"""Build options an upload may give reach hls4ml: strategy, reuse factor, per-layer precision."""

from __future__ import annotations

from pathlib import Path

import pytest

from fpgaas.builder.convert import ConvertOptions, convert
from fpgaas.builder.load import scan_model
from fpgaas.kernels.errors import BadInput
from tests.fixtures.models import make_small_qkeras_model


def test_strategy_reuse_factor_and_layer_precision_reach_the_hls4ml_graph(tmp_path: Path) -> None:
    model = scan_model(make_small_qkeras_model(tmp_path / "small.h5", n_in=4, hidden=(4,)))
    options = ConvertOptions(
        strategy="Resource", reuse_factor=2, layer_precision={"dense_1.result": "fixed<18,8>"}
    )
    graph = convert(model, tmp_path / "hls", options)
    assert graph.config.get_strategy(graph.graph["dense_1"]).lower() == "resource"
    assert graph.graph["dense_1"].get_attr("reuse_factor") == 2
    precision = graph.graph["dense_1"].get_output_variable().type.precision
    assert (precision.width, precision.integer) == (18, 8)

    with pytest.raises(BadInput, match="no such layer") as refused:
        convert(model, tmp_path / "hls2", ConvertOptions(layer_precision={"nope": "fixed<8,2>"}))
    assert refused.value.field == "precision.nope"
