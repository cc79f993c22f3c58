"""Verified bytes in a sealed anonymous file: how a server hands code from an artifact to a loader.

`verify_artifact` hashes every file of an artifact, but a loader given a path opens that path
again later, and by then someone who can write to the model repository may have put other
bytes there (an ELF constructor runs the moment dlopen maps it). So code is never loaded by its
path in the artifact: `seal_artifact_file` reads the file once, checks its sha256 against the
verified manifest (`Artifact.read_verified`), and writes those bytes into an anonymous
`memfd_create` file sealed against writing, growing and shrinking; loaders (dlopen, PYNQ,
XRT) get its `/proc/self/fd/N` path, which names those bytes and nothing else for as long as
the `SealedFile` is open.

Linux only (memfd_create, /proc): elsewhere `seal` raises ArtifactError saying so rather than
falling back to loading by path.

`sealed_file(path)` finds the open `SealedFile` behind such a path, with the artifact and file
it was sealed from: the emulated cards use it to run the verified artifact an xclbin came from,
since a sealed copy has no artifact directory beside it. Thread-safe.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import threading
import weakref
from pathlib import PurePosixPath
from types import TracebackType
from typing import Final

from fpgaas.kernels.artifact import Artifact
from fpgaas.kernels.errors import ArtifactError

_FD_DIR: Final = "/proc/self/fd"
# Nothing may change the bytes once written, nor loosen the seals.
_SEALS: Final = (
    getattr(fcntl, "F_SEAL_WRITE", 0)
    | getattr(fcntl, "F_SEAL_GROW", 0)
    | getattr(fcntl, "F_SEAL_SHRINK", 0)
    | getattr(fcntl, "F_SEAL_SEAL", 0)
)

_open_lock = threading.Lock()
_open: weakref.WeakValueDictionary[str, SealedFile] = weakref.WeakValueDictionary()


class SealedFile:
    """An anonymous, sealed, in-memory copy of some bytes, reachable at `path`.

    Lifetime: from `seal` until `close` (or the end of the `with` block). Close it only once
    nothing will open `path` again; a library dlopen()ed from it stays mapped after the close
    (the mapping holds the memory), but dlopen recognizes libraries by path, so a closed fd
    number reused by a later `SealedFile` would make dlopen hand back the earlier library:
    `fpgaas.kernels.twin` therefore never closes the files it loads libraries from.
    """

    def __init__(
        self, fd: int, sha256: str, artifact: Artifact | None = None, relative: str | None = None
    ) -> None:
        self.fd = fd
        self.sha256 = sha256
        self.artifact = artifact  # the verified artifact the bytes were read from, if any
        self.relative = relative  # their path in that artifact
        self._closed = False

    @property
    def path(self) -> str:
        """What to give a loader that takes a file name; valid until `close`."""
        return f"{_FD_DIR}/{self.fd}"

    def close(self) -> None:
        """Release the file (idempotent)."""
        with _open_lock:
            if self._closed:
                return
            self._closed = True
            if _open.get(self.path) is self:
                del _open[self.path]
        os.close(self.fd)

    def __enter__(self) -> SealedFile:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def seal(
    data: bytes, name: str, *, artifact: Artifact | None = None, relative: str | None = None
) -> SealedFile:
    """`data` in a new sealed anonymous file named `name` (the name is only a label in /proc)."""
    memfd_create = getattr(os, "memfd_create", None)
    if memfd_create is None or not os.path.isdir(_FD_DIR):
        raise ArtifactError(
            f"cannot load {name}: this platform has no memfd_create and /proc/self/fd, which the "
            "server needs to load exactly the verified bytes (Linux); it does not load by path"
        )
    try:
        fd = memfd_create(name, os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    except OSError as exc:
        raise ArtifactError(f"cannot load {name}: memfd_create failed: {exc.strerror}") from exc
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        if _SEALS:
            fcntl.fcntl(fd, fcntl.F_ADD_SEALS, _SEALS)
    except OSError as exc:
        os.close(fd)
        raise ArtifactError(f"cannot load {name}: writing its sealed copy failed: {exc.strerror}") from exc
    sealed = SealedFile(fd, hashlib.sha256(data).hexdigest(), artifact, relative)
    with _open_lock:
        _open[sealed.path] = sealed
    return sealed


def seal_artifact_file(artifact: Artifact, relative: str) -> SealedFile:
    """The verified bytes of `relative` in `artifact`, sealed (raises ArtifactIntegrityError when
    the file no longer matches the verified manifest)."""
    data = artifact.read_verified(relative)
    return seal(
        data,
        f"fpgaas:{artifact.manifest.name}:{PurePosixPath(relative).name}",
        artifact=artifact,
        relative=relative,
    )


def sealed_file(path: str | os.PathLike[str]) -> SealedFile | None:
    """The open `SealedFile` whose `path` this is, or None (an ordinary file, or one closed)."""
    with _open_lock:
        return _open.get(os.fspath(path))
