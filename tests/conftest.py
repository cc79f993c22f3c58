"""Suite-wide set-up: QKeras needs Keras 2 (tf_keras), chosen before TensorFlow is imported; the
session's artifacts are signed with a test key that the servers under test trust. The Keras 3 model
files (plain Keras 3 and HGQ2) are written once per session for the builder and management tests."""

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


from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from tests.fixtures.hgq2_models import write_hgq2_model  # noqa: E402
from tests.fixtures.keras3_models import Keras3Models, write_keras3_models  # noqa: E402
from tests.fixtures.signing import install_test_keys  # noqa: E402  (after the TF variables)

install_test_keys()


@pytest.fixture(scope="session")
def keras3_models(tmp_path_factory: pytest.TempPathFactory) -> Keras3Models:
    """plain.keras (6 -> 8 -> 2, Dense/relu) and lambda.keras, written once by Keras 3."""
    work = tmp_path_factory.mktemp("keras3")
    marker = work / "lambda-ran"
    return write_keras3_models(work / "models", marker)


@pytest.fixture(scope="session")
def hgq2_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """hgq2.keras (6 -> 8 -> 2, HGQ2 QDense/relu), written once by HGQ2 in the Keras 3 venv; a skip
    naming HGQ2 where the Keras 3 interpreter lacks it."""
    return write_hgq2_model(tmp_path_factory.mktemp("hgq2") / "hgq2.keras")
