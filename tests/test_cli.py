"""The `fpgaas` command: `build` makes an artifact and says what a Vitis host must run; bad input fails cleanly."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from fpgaas.kernels.artifact import load_artifact
from tests.fixtures.models import make_small_qkeras_model

REPO = Path(__file__).resolve().parents[1]


def fpgaas(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fpgaas", *args], cwd=REPO, capture_output=True, text=True, timeout=600
    )


def test_build_writes_a_verified_artifact_and_prints_the_vitis_commands(tmp_path: Path) -> None:
    model = make_small_qkeras_model(tmp_path / "m.h5", n_in=3, hidden=(2,), seed=4)
    out = tmp_path / "repo" / "m" / "1"
    done = fpgaas("build", str(model), "--name", "m", "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert f"built m v1 into {out}" in done.stdout
    assert "v++ -c -t hw" in done.stdout and "v++ -l -t hw" in done.stdout
    assert load_artifact(out).manifest.binaries.xclbin is None


def test_build_of_a_missing_model_fails_with_a_message(tmp_path: Path) -> None:
    done = fpgaas("build", str(tmp_path / "absent.h5"), "--name", "m", "--out", str(tmp_path / "out"))
    assert done.returncode == 1
    assert "does not exist" in done.stderr


def test_serve_refuses_a_repository_that_is_not_a_directory(tmp_path: Path) -> None:
    done = fpgaas("serve", "--repository", str(tmp_path / "nowhere"), "--port", "1")
    assert done.returncode == 2
    assert "invalid settings: model_repository" in done.stderr and "is not a directory" in done.stderr
