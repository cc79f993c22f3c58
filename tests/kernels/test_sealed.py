"""Sealed files: verified bytes in an anonymous memory file that nothing can change afterwards."""

from __future__ import annotations

import os

import pytest

from fpgaas.kernels.errors import ArtifactError
from fpgaas.kernels.sealed import seal, sealed_file


def test_a_sealed_file_holds_the_bytes_and_refuses_every_change() -> None:
    with seal(b"verified bytes", "demo") as sealed:
        with open(sealed.path, "rb") as fh:
            assert fh.read() == b"verified bytes"
        # Even through its /proc path, which anyone allowed to open this process's fds could use.
        with pytest.raises(PermissionError), open(sealed.path, "r+b") as fh:
            fh.write(b"other")
            fh.flush()
        with pytest.raises(PermissionError):
            os.ftruncate(sealed.fd, 0)
        assert sealed_file(sealed.path) is sealed
    assert sealed_file(sealed.path) is None


def test_without_memfd_create_nothing_is_loaded_and_the_error_says_why(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delattr(os, "memfd_create")
    with pytest.raises(ArtifactError, match=r"no memfd_create .* it does not load by path"):
        seal(b"verified bytes", "demo")
