"""The default muon pT model (models/muon-pt.h5) builds, and its emulation equals hls4ml's C simulation."""

from __future__ import annotations

import numpy as np
import pytest

from fpgaas.kernels.twin import KernelLibrary
from tests.builder.test_build import samples
from tests.fixtures.builds import BuiltModel, shared_muon_build


@pytest.fixture(scope="module")
def muon(tmp_path_factory: pytest.TempPathFactory) -> BuiltModel:
    return shared_muon_build(tmp_path_factory)


def test_the_muon_model_builds_with_the_papers_layer_sizes_and_types(muon: BuiltModel) -> None:
    m = muon.artifact.manifest
    assert (m.inputs[0].shape, m.outputs[0].shape) == ((27,), (1,))
    dense = [layer for layer in m.layers if layer.class_name == "Dense"]
    assert len(dense) == 7
    assert all(layer.types["weight"] == "ap_fixed<16,6>" for layer in dense)
    relus = [layer for layer in m.layers if layer.class_name == "Activation"]
    assert [layer.types["result"] for layer in relus] == ["ap_ufixed<16,6,AP_RND_CONV,AP_SAT,0>"] * 6


def test_muon_emulation_equals_hls4ml_predict_bit_for_bit(muon: BuiltModel) -> None:
    x = samples(2048, 27, seed=7)
    expected = np.asarray(muon.reference.predict(x), dtype=np.float32).reshape(len(x), 1)
    got = KernelLibrary.from_artifact(muon.artifact).run(x)
    assert np.array_equal(got, expected)
    assert len(np.unique(got)) > 200
