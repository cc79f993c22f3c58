"""The directory ArtifactStore: a staging directory never becomes an artifact, versions are
immutable, purge removes a sealed (read-only) tree, upload keys cannot leave the store."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from fpgaas.kernels.builds.errors import Conflict
from fpgaas.kernels.builds.store import DirectoryStore
from fpgaas.kernels.errors import ArtifactError
from tests.fixtures.builds import shared_small_build


def test_publish_moves_only_a_sealed_artifact_and_never_over_a_version(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    built = shared_small_build(tmp_path_factory).artifact
    store = DirectoryStore(tmp_path / "store")

    half = store.staging(1) / "artifact"
    shutil.copytree(built.path, half, ignore=shutil.ignore_patterns("manifest.json"))
    with pytest.raises(ArtifactError):
        store.publish(half, "small", "1")
    assert store.models() == [] and not (tmp_path / "store" / "small" / "1").exists()

    whole = store.staging(2) / "artifact"
    shutil.copytree(built.path, whole)
    assert store.publish(whole, "small", "1") == tmp_path / "store" / "small" / "1"
    assert store.models() == [("small", "1")] and not whole.exists()

    again = store.staging(3) / "artifact"
    shutil.copytree(built.path, again)
    with pytest.raises(Conflict):
        store.publish(again, "small", "1")

    store.discard_staging(1)
    store.discard_staging(3)
    assert store.purge("small", "1") and store.models() == []
    assert not store.purge("small", "1")


def test_upload_keys_stay_inside_the_store(tmp_path: Path) -> None:
    store = DirectoryStore(tmp_path)
    key, path = store.new_upload(".h5")
    assert path.parent == tmp_path / ".fpgaas" / "uploads" and path.name == key
    for bad in ("../x.h5", ".hidden", "a/b.h5"):
        with pytest.raises(ValueError):
            store.upload_path(bad)
