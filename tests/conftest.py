"""Suite-wide set-up: QKeras needs Keras 2 (tf_keras), chosen before TensorFlow is imported."""

from __future__ import annotations

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
