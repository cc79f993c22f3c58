"""An HGQ2 net (QDense + relu per hidden layer, a linear QDense out) saved as a Keras 3 `.keras` file.

Run by path under the Keras 3 interpreter, which has HGQ2 (`make install` creates `.venv-keras3`; the
builder image carries it as FPGAAS_KERAS3_PYTHON):

    .venv-keras3/bin/python examples/hgq2/qdense.py hgq2.keras --n-in 6 --hidden 8 --n-out 2
    fpgaas build hgq2.keras --name hgq2

Weights get per-weight (kbi) bit widths and saturate; activations are kif and wrap, as HGQ2's own
examples do. The weights are untrained (seeded): the file exercises the builder, not physics.
"""

from __future__ import annotations

import argparse
import os


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", help="the .keras file to write")
    p.add_argument("--n-in", type=int, default=6)
    p.add_argument("--hidden", type=int, nargs="*", default=[8], help="units of each hidden layer")
    p.add_argument("--n-out", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    # Before Keras is imported: HGQ2 runs on JAX (the Keras 3 venv has no TensorFlow).
    os.environ.setdefault("KERAS_BACKEND", "jax")
    import keras
    from hgq.config import LayerConfigScope, QuantizerConfigScope
    from hgq.layers import QDense

    keras.utils.set_random_seed(args.seed)
    with (
        QuantizerConfigScope(place="all", default_q_type="kbi", overflow_mode="SAT_SYM"),
        QuantizerConfigScope(place="datalane", default_q_type="kif", overflow_mode="WRAP"),
        LayerConfigScope(enable_ebops=False),
    ):
        inputs = keras.Input(shape=(args.n_in,), name="inputs")
        x = inputs
        for i, units in enumerate(args.hidden, start=1):
            x = QDense(units, activation="relu", name=f"dense_{i}")(x)
        outputs = QDense(args.n_out, name="output")(x)
        keras.Model(inputs, outputs, name="hgq2").save(args.out)


if __name__ == "__main__":
    main()
