"""The artifact contract: a sealed directory whose every file is checked against manifest.json."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from fpgaas.kernels.artifact import (
    MANIFEST_NAME,
    Binaries,
    LayerTypes,
    Manifest,
    TensorSpec,
    load_artifact,
    write_manifest,
)
from fpgaas.kernels.errors import ArtifactError, ArtifactIntegrityError

FILES = {
    "model/model.h5": b"\x89HDF\r\n\x1a\n model bytes",
    "hls/firmware/myproject.cpp": b"void myproject() {}\n",
    "hls/firmware/weights/w2.h": b"weight2_t w2[4] = {0, 1, 2, 3};\n",
    "emulation/libkernel.so": b"\x7fELF library",
    "logs/gxx.log": b"$ g++ ...\n",
}


def manifest() -> Manifest:
    return Manifest(
        name="demo",
        version="3",
        created="2025-01-01T00:00:00+00:00",
        kernel_name="fpgaas_kernel",
        project_name="myproject",
        inputs=(TensorSpec("input_1", (27,), "float32", "ap_fixed<16,6>"),),
        outputs=(TensorSpec("layer4_out", (1,), "float32", "ap_fixed<37,17>"),),
        layers=(LayerTypes("dense_1", "Dense", {"weight": "ap_fixed<16,6>", "accum": "ap_fixed<38,18>"}),),
        part="xcu250-figd2104-2L-e",
        platform="xilinx_u250_gen3x16_xdma_4_1_202210_1",
        backend="Vitis",
        io_type="io_parallel",
        source_model="model/model.h5",
        toolchain={"hls4ml": "1.3.0", "g++": "g++ 12", "v++": "absent", "python": "3.11", "fpgaas": "0.1.0"},
        binaries=Binaries("emulation/libkernel.so", None, "v++ not on PATH", ["v++ -c ...", "v++ -l ..."]),
    )


@pytest.fixture
def sealed(tmp_path: Path) -> Path:
    root = tmp_path / "artifact"
    for relative, content in FILES.items():
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_bytes(content)
    write_manifest(root, manifest())
    return root


def _writable(path: Path) -> Path:
    path.chmod(path.stat().st_mode | stat.S_IWUSR)
    return path


def test_a_written_artifact_loads_back_with_the_same_manifest_and_file_hashes(sealed: Path) -> None:
    artifact = load_artifact(sealed)
    expected = manifest()
    assert artifact.manifest.files.keys() == FILES.keys()
    assert Manifest(**{**artifact.manifest.__dict__, "files": {}}) == expected
    assert artifact.emulation_library == sealed / "emulation/libkernel.so"
    assert artifact.xclbin is None
    assert artifact.manifest.inputs[0].width == 27


@pytest.mark.parametrize("relative", sorted(FILES))
def test_a_flipped_byte_in_any_file_fails_verification_naming_it(sealed: Path, relative: str) -> None:
    path = _writable(sealed / relative)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(ArtifactIntegrityError, match="sha256 mismatch") as caught:
        load_artifact(sealed)
    assert relative in str(caught.value)


def test_an_extra_file_fails_verification(sealed: Path) -> None:
    (sealed / "emulation" / "intruder.so").write_bytes(b"not listed")
    with pytest.raises(ArtifactIntegrityError, match=r"unlisted.*intruder"):
        load_artifact(sealed)


def test_a_missing_file_fails_verification(sealed: Path) -> None:
    (sealed / "logs/gxx.log").unlink()
    with pytest.raises(ArtifactIntegrityError, match=r"missing.*gxx\.log"):
        load_artifact(sealed)


def test_a_symbolic_link_is_refused(sealed: Path) -> None:
    (sealed / "hls" / "link.cpp").symlink_to(sealed / "hls/firmware/myproject.cpp")
    with pytest.raises(ArtifactError, match="no symbolic links"):
        load_artifact(sealed)


def test_a_sealed_artifact_is_read_only_and_cannot_be_sealed_again(sealed: Path) -> None:
    assert all(not p.stat().st_mode & stat.S_IWUSR for p in sealed.rglob("*") if p.is_file())
    before = (sealed / MANIFEST_NAME).read_bytes()
    with pytest.raises(ArtifactError, match="immutable"):
        write_manifest(sealed, manifest())
    assert (sealed / MANIFEST_NAME).read_bytes() == before


def test_an_edited_manifest_is_detected_through_the_hashes_it_lists(sealed: Path) -> None:
    path = _writable(sealed / MANIFEST_NAME)
    data = json.loads(path.read_text())
    data["files"]["model/model.h5"] = "0" * 64
    path.write_text(json.dumps(data))
    with pytest.raises(ArtifactIntegrityError, match=r"model/model\.h5"):
        load_artifact(sealed)


def test_an_unknown_schema_version_is_refused(sealed: Path) -> None:
    path = _writable(sealed / MANIFEST_NAME)
    data = json.loads(path.read_text())
    data["schema_version"] = 99
    path.write_text(json.dumps(data))
    with pytest.raises(ArtifactError, match="schema_version 99"):
        load_artifact(sealed)


def test_read_verified_gives_the_bytes_the_manifest_vouches_for(sealed: Path) -> None:
    artifact = load_artifact(sealed)
    assert artifact.read_verified("emulation/libkernel.so") == FILES["emulation/libkernel.so"]


def test_read_verified_refuses_a_file_changed_since_verification_naming_it(sealed: Path) -> None:
    artifact = load_artifact(sealed)
    library = sealed / "emulation/libkernel.so"
    library.chmod(0o644)
    library.write_bytes(b"\x7fELF another library")

    with pytest.raises(ArtifactIntegrityError, match="changed after the artifact was verified") as caught:
        artifact.read_verified("emulation/libkernel.so")

    assert caught.value.reason == "hash_mismatch" and str(library) in caught.value.message


def test_read_verified_refuses_a_link_planted_since_verification_and_unlisted_files(sealed: Path) -> None:
    artifact = load_artifact(sealed)
    library = sealed / "emulation/libkernel.so"
    library.unlink()
    library.symlink_to(sealed / "logs/gxx.log")

    with pytest.raises(ArtifactIntegrityError, match="after verification") as linked:
        artifact.read_verified("emulation/libkernel.so")
    with pytest.raises(ArtifactIntegrityError, match="not listed") as unlisted:
        artifact.read_verified("emulation/other.so")

    assert linked.value.reason == unlisted.value.reason == "missing_file"
