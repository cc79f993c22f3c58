"""The distribution: one import name, `fpgaas`, and no test double on the production import path."""

from __future__ import annotations

import ast
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SOURCE_FOLDERS = ("service", "builder", "client", "kernels", "fpgaas")
BARE_NAMES = {"service", "builder", "client", "kernels"}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    out = tmp_path_factory.mktemp("wheel")
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), str(REPO)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    [path] = out.glob("fpgaas-*.whl")
    return zipfile.ZipFile(path)


def test_the_wheel_installs_only_the_fpgaas_package(wheel: zipfile.ZipFile) -> None:
    tops = {name.split("/")[0] for name in wheel.namelist()}
    assert {t for t in tops if not t.endswith(".dist-info")} == {"fpgaas"}
    names = set(wheel.namelist())
    for module in ("client/_sync.py", "service/app.py", "builder/pipeline.py", "kernels/twin.py"):
        assert f"fpgaas/{module}" in names
    assert "fpgaas/kernels/templates/kernel_top.cpp" in names  # package data travels along


def test_no_source_imports_a_bare_top_level_name() -> None:
    offenders = []
    for folder in SOURCE_FOLDERS:
        for path in (REPO / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Call) and getattr(node.func, "attr", "") in (
                    "files",
                    "import_module",
                ):
                    # importlib.resources.files("kernels") and the like name packages in strings
                    roots = [a.value.split(".")[0] for a in node.args[:1] if isinstance(a, ast.Constant)]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    roots = [node.module.split(".")[0]]
                elif isinstance(node, ast.Import):
                    roots = [alias.name.split(".")[0] for alias in node.names]
                else:
                    continue
                offenders += [f"{path.relative_to(REPO)}:{node.lineno}" for r in roots if r in BARE_NAMES]
    assert offenders == []


@pytest.mark.parametrize(
    ("device", "emulation"),
    [
        ("fpgaas.service.devices.pynq", "fpgaas.service.devices.pynq_emulation"),
        ("fpgaas.service.devices.xrt", "fpgaas.service.devices.xrt_emulation"),
    ],
    ids=["pynq", "xrt"],
)
def test_the_emulated_card_is_loaded_only_when_asked_for(device: str, emulation: str) -> None:
    probe = (
        "import sys\n"
        "from fpgaas.service.app import create_app\n"
        f"import {device}\n"
        f"print({emulation!r} in sys.modules)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=False, cwd="/"
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"
