"""Service fixtures: one tiny QKeras model built once per session by the real builder
(hls4ml + g++), and model repositories assembled from copies of that artifact.

A second model name is the same kernel re-sealed under another manifest name (cheaper than a
second 15 s build); a tampered copy has one byte of its emulation library changed.
"""

from __future__ import annotations

import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import httpx
import numpy as np
import pytest
import pytest_asyncio
from fastapi import FastAPI

from fpgaas.kernels.artifact import Artifact, load_artifact
from fpgaas.service.app import create_app
from fpgaas.service.settings import Settings
from tests.fixtures.signing import reseal

# The tiny model's widths (test modules repeat them: tests/ is not a package).
N_INPUTS = 6
N_OUTPUTS = 2

# A forged kernel library: it exports the kernel ABI, so only its constructor tells it apart.
_PAYLOAD = r"""
#include <cstdio>
__attribute__((constructor)) static void payload() {
    std::FILE* f = std::fopen(MARKER, "w");
    if (f) { std::fputs("the forged library ran", f); std::fclose(f); }
}
extern "C" void fpgaas_kernel(const float*, float* y, unsigned int n) {
    for (unsigned int i = 0; i < 2 * n; ++i) y[i] = 42.0f;
}
"""


def _tiny_qkeras_model(path: Path) -> Path:
    import tf_keras as keras
    from qkeras import QActivation, QDense, quantized_bits, quantized_relu

    keras.utils.set_random_seed(11)
    q = quantized_bits(16, 6, alpha=1)
    inputs = keras.layers.Input(shape=(N_INPUTS,))
    x = QDense(8, kernel_quantizer=q, bias_quantizer=q, name="dense_0")(inputs)
    x = QActivation(quantized_relu(16, 6), name="relu_0")(x)
    outputs = QDense(N_OUTPUTS, kernel_quantizer=q, bias_quantizer=q, name="out")(x)
    keras.Model(inputs, outputs).save(path)
    return path


@pytest.fixture(scope="session")
def tiny_artifact(tmp_path_factory: pytest.TempPathFactory) -> Artifact:
    """`tiny` version 1: 6 float32 inputs -> 2 float32 outputs, built by `fpgaas.builder.build`."""
    from fpgaas.builder import build

    work = tmp_path_factory.mktemp("service-build")
    return build(_tiny_qkeras_model(work / "tiny.h5"), name="tiny", out=work / "tiny" / "1", version="1")


def install(artifact: Artifact, repository: Path, name: str, version: str) -> Path:
    """Copy `artifact` into `<repository>/<name>/<version>`, re-sealed under that name and version
    and re-signed with the session's test key (which the servers under test trust)."""
    return reseal(artifact, repository / name / version, name=name, version=version)


def tamper(artifact_dir: Path) -> None:
    """Flip one byte of the emulation library, as a corrupted disk or a meddler would."""
    lib = artifact_dir / "emulation" / "libkernel.so"
    lib.chmod(0o644)
    data = bytearray(lib.read_bytes())
    data[len(data) // 2] ^= 0xFF
    lib.write_bytes(bytes(data))


@pytest.fixture(scope="module")
def payload(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(forged library, the marker file its constructor writes); the marker does not exist yet."""
    work = tmp_path_factory.mktemp("payload")
    source, library, marker = work / "payload.cpp", work / "libkernel.so", work / "MARKER"
    source.write_text(_PAYLOAD)
    subprocess.run(
        ["g++", "-shared", "-fPIC", f'-DMARKER="{marker}"', "-o", str(library), str(source)],
        check=True,
        capture_output=True,
    )
    return library, marker


@pytest.fixture(scope="session")
def one_model_repo(tiny_artifact: Artifact, tmp_path_factory: pytest.TempPathFactory) -> Path:
    repo = tmp_path_factory.mktemp("repo-one")
    install(tiny_artifact, repo, "tiny", "1")
    return repo


@pytest.fixture(scope="session")
def multi_model_repo(tiny_artifact: Artifact, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tiny v1 and v2, other v1, and broken v1 (tampered: must be refused)."""
    repo = tmp_path_factory.mktemp("repo-multi")
    install(tiny_artifact, repo, "tiny", "1")
    install(tiny_artifact, repo, "tiny", "2")
    install(tiny_artifact, repo, "other", "1")
    tamper(install(tiny_artifact, repo, "broken", "1"))
    return repo


@pytest.fixture(scope="session")
def reference(tiny_artifact: Artifact) -> Callable[[np.ndarray], np.ndarray]:
    """The kernel's CPU twin, run directly: what every served answer must equal bit for bit."""
    from fpgaas.kernels.twin import KernelLibrary

    library = KernelLibrary.from_artifact(load_artifact(tiny_artifact.path))
    run: Callable[[np.ndarray], np.ndarray] = library.run
    return run


@pytest_asyncio.fixture
async def app_factory() -> AsyncIterator[Callable[[Settings], Awaitable[tuple[FastAPI, httpx.AsyncClient]]]]:
    """Start apps (lifespan included) for a test; every one is shut down (drained) afterwards."""
    from contextlib import AsyncExitStack

    async with AsyncExitStack() as stack:

        async def start(settings: Settings) -> tuple[FastAPI, httpx.AsyncClient]:
            app = create_app(settings)
            await stack.enter_async_context(app.router.lifespan_context(app))
            client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://fpgaas.test")
            await stack.enter_async_context(client)
            return app, client

        yield start
