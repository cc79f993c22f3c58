"""Suite-wide set-up: QKeras needs Keras 2 (tf_keras), chosen before TensorFlow is imported; the
session's artifacts are signed with a test key that the servers under test trust."""

from __future__ import annotations

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def pytest_configure() -> None:
    """Refuse to run in an environment where QKeras is shadowed.

    HGQ2 (PyPI `hgq2`) installs its own top-level `qkeras` package (a compatibility shim whose
    `qkeras/quantizers/` directory hides QKeras' `quantizers.py`), so the two cannot share one
    environment: HGQ2 belongs in a venv of its own (Keras 3), never in `.venv`.
    """
    import importlib.util

    spec = importlib.util.find_spec("qkeras")
    if spec is not None and spec.origin is not None:
        shim = os.path.join(os.path.dirname(spec.origin), "quantizers", "__init__.py")
        if os.path.exists(shim):
            import pytest

            raise pytest.UsageError(
                "HGQ2's `qkeras` shim shadows QKeras in this environment "
                f"({os.path.dirname(spec.origin)}): install hgq2 only in a separate Keras 3 venv, "
                "then `pip uninstall hgq2 && pip install --force-reinstall --no-deps qkeras==0.9.0`"
            )


from tests.fixtures.signing import install_test_keys  # noqa: E402  (after the TF variables)

install_test_keys()
