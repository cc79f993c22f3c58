"""The muon pT network's shape, 27 -> 35, 20, 25, 40, 20, 15 -> 1, as a float32 numpy forward pass.

The peers serve this instead of fpgaas's fixed-point kernel: the shape (and so the arithmetic per
row) is the paper's, the weights are random with a fixed seed (the timing does not depend on them).
Needs only numpy, so every peer's virtualenv can import it.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

LAYERS = (27, 35, 20, 25, 40, 20, 15, 1)  # widths: input, six hidden (ReLU), linear output
N_INPUTS = LAYERS[0]
N_OUTPUTS = LAYERS[-1]


@dataclass(frozen=True)
class Network:
    """Dense layers (float32 weights and biases); immutable, so safe to share between threads."""

    weights: tuple[NDArray[np.float32], ...]
    biases: tuple[NDArray[np.float32], ...]

    def forward(self, x: NDArray[np.float32]) -> NDArray[np.float32]:
        """float32 (n, 27) -> float32 (n, 1): ReLU after every layer but the last."""
        h = x
        last = len(self.weights) - 1
        for i, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            h = h @ w + b
            if i < last:
                np.maximum(h, 0.0, out=h)
        return h


def muon_network(seed: int = 0) -> Network:
    """The network with He-scaled normal weights drawn from `seed` (the same on every call)."""
    rng = np.random.default_rng(seed)
    weights = []
    biases = []
    for n_in, n_out in itertools.pairwise(LAYERS):
        weights.append((rng.standard_normal((n_in, n_out)) * np.sqrt(2.0 / n_in)).astype(np.float32))
        biases.append((rng.standard_normal(n_out) * 0.01).astype(np.float32))
    return Network(tuple(weights), tuple(biases))
