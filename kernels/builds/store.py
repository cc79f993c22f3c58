"""The `ArtifactStore` seam: where uploads, staging directories, build logs and artifacts live.

`DirectoryStore` is a directory (a shared volume when servers and workers run on several hosts):
artifacts at `<root>/<name>/<version>/` (the server's model repository), and its own working
files under `<root>/.fpgaas/` (a hidden name the repository skips): `uploads/<key>`,
`staging/<build id>/`, `logs/<build id>.log`. A build works in its staging directory and
`publish` moves the sealed artifact into place with one rename on the same file system, so a
reader sees no artifact or a whole one, and a staging directory is never served. An object
store would implement the same methods (publish = upload, then write the manifest last).
"""

from __future__ import annotations

import os
import shutil
import stat
import uuid
from pathlib import Path
from typing import Protocol

from fpgaas.kernels.artifact import MANIFEST_NAME, load_artifact
from fpgaas.kernels.builds.errors import Conflict
from fpgaas.kernels.builds.records import check_name

WORK_DIR = ".fpgaas"


class ArtifactStore(Protocol):
    def new_upload(self, suffix: str) -> tuple[str, Path]: ...
    def upload_path(self, key: str) -> Path: ...
    def discard_upload(self, key: str) -> None: ...
    def staging(self, build_id: int) -> Path: ...
    def discard_staging(self, build_id: int) -> None: ...
    def log_path(self, build_id: int) -> Path: ...
    def publish(self, built: Path, name: str, version: str) -> Path: ...
    def exists(self, name: str, version: str) -> bool: ...
    def artifact_dir(self, name: str, version: str) -> Path: ...
    def versions(self, name: str) -> list[str]: ...
    def models(self) -> list[tuple[str, str]]: ...
    def purge(self, name: str, version: str) -> bool: ...


class DirectoryStore:
    """An `ArtifactStore` in the directory `root` (made if missing). Safe for many processes:
    every write goes to a fresh name, and publishing is one atomic rename."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root).absolute()
        self._work = self.root / WORK_DIR
        for sub in ("uploads", "staging", "logs"):
            (self._work / sub).mkdir(parents=True, exist_ok=True)

    def new_upload(self, suffix: str) -> tuple[str, Path]:
        """A fresh key and the path to write the upload to (nothing exists there yet)."""
        key = f"{uuid.uuid4().hex}{suffix}"
        return key, self.upload_path(key)

    def upload_path(self, key: str) -> Path:
        if "/" in key or key.startswith("."):
            raise ValueError(f"{key!r} is not an upload key")
        return self._work / "uploads" / key

    def discard_upload(self, key: str) -> None:
        self.upload_path(key).unlink(missing_ok=True)

    def staging(self, build_id: int) -> Path:
        """An empty staging directory for the build (what a dead attempt left there is removed)."""
        path = self._work / "staging" / str(int(build_id))
        _remove_tree(path)
        path.mkdir()
        return path

    def discard_staging(self, build_id: int) -> None:
        _remove_tree(self._work / "staging" / str(int(build_id)))

    def log_path(self, build_id: int) -> Path:
        return self._work / "logs" / f"{int(build_id)}.log"

    def publish(self, built: Path, name: str, version: str) -> Path:
        """Move the sealed artifact directory `built` (inside a staging directory) to
        `<root>/<name>/<version>`; refuses an unsealed one and an existing version (Conflict)."""
        check_name(name, "name")
        check_name(version, "version")
        load_artifact(built)  # sealed and whole: every file matches the manifest
        target = self.artifact_dir(name, version)
        target.parent.mkdir(exist_ok=True)
        # Moving a directory to another parent rewrites its "..": a sealed (read-only) artifact
        # needs its owner's write bit for that moment, unless we are root.
        mode = stat.S_IMODE(os.stat(built).st_mode)
        os.chmod(built, mode | stat.S_IWUSR)
        try:
            os.rename(built, target)  # atomic; fails if target exists and is not empty
        except OSError as exc:
            os.chmod(built, mode)
            if target.exists():
                raise Conflict(f"{name} version {version} exists already", field="version") from exc
            raise
        os.chmod(target, mode)
        return target

    def exists(self, name: str, version: str) -> bool:
        return (self.artifact_dir(name, version) / MANIFEST_NAME).is_file()

    def artifact_dir(self, name: str, version: str) -> Path:
        return self.root / check_name(name, "name") / check_name(version, "version")

    def versions(self, name: str) -> list[str]:
        model = self.root / name
        if name.startswith(".") or not model.is_dir():
            return []
        return sorted(p.name for p in model.iterdir() if (p / MANIFEST_NAME).is_file())

    def models(self) -> list[tuple[str, str]]:
        return [
            (model.name, version)
            for model in sorted(self.root.iterdir())
            if model.is_dir() and not model.name.startswith(".")
            for version in self.versions(model.name)
        ]

    def purge(self, name: str, version: str) -> bool:
        """Delete a version's files; False if there were none."""
        target = self.artifact_dir(name, version)
        if not target.exists():
            return False
        # Rename first: readers never see a half-deleted artifact.
        doomed = self._work / "staging" / f"purge-{uuid.uuid4().hex}"
        os.chmod(target, stat.S_IRWXU)  # a read-only directory cannot move to another parent
        os.rename(target, doomed)
        _remove_tree(doomed)
        return True


def _remove_tree(path: Path) -> None:
    """rmtree of a tree whose directories may be read-only (a sealed artifact's are)."""
    if not path.exists():
        return
    for directory, _dirs, _files in os.walk(path):
        os.chmod(directory, stat.S_IRWXU)
    shutil.rmtree(path)
