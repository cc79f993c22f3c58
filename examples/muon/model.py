"""The paper's pT regressor: 27 inputs -> QDense 35, 20, 25, 40, 20, 15 (quantized ReLU) -> 1 linear.

Weights and biases use ``quantized_bits(16, 5, alpha=1)`` (hls4ml ``ap_fixed<16,6>``), hidden activations
``quantized_relu(16, 6)`` (``ap_ufixed<16,6>``). The paper also passes the inputs through a quantized ReLU;
it is omitted here because our phi/theta differences and bends are signed and a ReLU would drop the
charge information. Importing this module imports TensorFlow: set ``TF_USE_LEGACY_KERAS=1`` first.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import numpy as np
from numpy.typing import NDArray

from examples.muon.features import N_FEATURES

if TYPE_CHECKING:
    import tf_keras

# The committed, trained model (repository-relative) and its metadata next to it.
DEFAULT_MODEL_PATH: Final = Path(__file__).resolve().parents[2] / "models" / "muon-pt.h5"
HIDDEN_UNITS: Final = (35, 20, 25, 40, 20, 15)
WEIGHT_QUANTIZER: Final = "quantized_bits(16,5,alpha=1)"
ACTIVATION_QUANTIZER: Final = "quantized_relu(16,6)"
INPUT_NAME: Final = "inputs"
OUTPUT_NAME: Final = "output"
# L2 on weights balances the scale between ReLU layers and so keeps the fixed-point accumulators
# (ap_fixed<16,6>, which wrap at +-32) small; the values are the ones the committed model used.
KERNEL_L2: Final = 4e-5
ACTIVITY_L2: Final = 0.0


def dense_name(index: int) -> str:
    """Name of hidden QDense layer ``index`` (1-based)."""
    return f"dense_{index}"


def relu_name(index: int) -> str:
    """Name of the quantized ReLU after hidden layer ``index`` (1-based)."""
    return f"relu_{index}"


def build_model(
    seed: int = 0, kernel_l2: float = KERNEL_L2, activity_l2: float = ACTIVITY_L2
) -> tf_keras.Model:
    """The uncompiled QKeras model; layer names are stable (``dense_1..6``, ``relu_1..6``, ``output``).

    ``kernel_l2`` and ``activity_l2`` are standard Keras L2 penalties on the hidden kernels and on the
    hidden pre-activations (0 disables them).
    """
    import tf_keras
    from qkeras import QActivation, QDense, quantized_bits, quantized_relu

    inputs = tf_keras.Input(shape=(N_FEATURES,), name=INPUT_NAME)
    x = inputs
    for index, units in enumerate(HIDDEN_UNITS, start=1):
        x = QDense(
            units,
            kernel_quantizer=quantized_bits(16, 5, alpha=1),
            bias_quantizer=quantized_bits(16, 5, alpha=1),
            kernel_initializer=tf_keras.initializers.HeNormal(seed=seed + index),
            kernel_regularizer=tf_keras.regularizers.L2(kernel_l2) if kernel_l2 > 0 else None,
            activity_regularizer=tf_keras.regularizers.L2(activity_l2) if activity_l2 > 0 else None,
            name=dense_name(index),
        )(x)
        x = QActivation(quantized_relu(16, 6), name=relu_name(index))(x)
    outputs = QDense(
        1,
        kernel_quantizer=quantized_bits(16, 5, alpha=1),
        bias_quantizer=quantized_bits(16, 5, alpha=1),
        kernel_initializer=tf_keras.initializers.GlorotUniform(seed=seed),
        name=OUTPUT_NAME,
    )(x)
    return tf_keras.Model(inputs=inputs, outputs=outputs, name="muon_pt")


def load_model(path: str | Path = DEFAULT_MODEL_PATH) -> tf_keras.Model:
    """Load a saved muon model (.h5), resolving the QKeras layer and quantizer classes."""
    import tf_keras
    from qkeras.utils import _add_supported_quantized_objects

    custom_objects: dict[str, Any] = {}
    _add_supported_quantized_objects(custom_objects)
    return tf_keras.models.load_model(Path(path), custom_objects=custom_objects, compile=False)


def max_abs_preactivations(model: tf_keras.Model, x: NDArray[np.float32]) -> dict[str, float]:
    """Largest |output| of every QDense layer on ``x``, in float.

    On the FPGA these sums live in ``ap_fixed<16,6>`` accumulators that wrap at +-32, so values
    here must stay well below 32.
    """
    import tf_keras

    dense = [layer for layer in model.layers if layer.__class__.__name__ == "QDense"]
    probe = tf_keras.Model(model.inputs, [layer.output for layer in dense])
    outputs = probe.predict(x, batch_size=8192, verbose=0)
    return {layer.name: float(np.max(np.abs(out))) for layer, out in zip(dense, outputs, strict=True)}
