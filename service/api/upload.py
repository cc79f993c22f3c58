"""A model upload read from the request stream: multipart/form-data, never held whole in memory.

The request body is fed chunk by chunk to python-multipart's streaming parser. The part named
`file` goes straight to a fresh file in the artifact store (sha256 computed on the way); every
other part is a small text field (at most `_MAX_FIELD_BYTES`). Bytes are counted as they arrive,
so an upload over `max_bytes` is refused with 413 as soon as it crosses the limit (or at once,
when its Content-Length says so) without reading the rest. On any refusal the partial file is
removed: a refused upload leaves nothing behind.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Final

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header

from fpgaas.kernels.builds.records import UPLOAD_SUFFIXES
from fpgaas.kernels.builds.store import ArtifactStore
from fpgaas.kernels.errors import BadInput, PayloadTooLarge, UnsupportedMediaType

FILE_FIELD: Final = "file"
_MAX_FIELD_BYTES: Final = 64 * 1024
_MAX_FIELDS: Final = 32
# A file's first bytes: HDF5's superblock signature (.h5) and a zip local header (.keras).
_MAGIC: Final = {".h5": b"\x89HDF\r\n\x1a\n", ".keras": b"PK\x03\x04"}


@dataclass
class Upload:
    """The uploaded file (in the store under `key`) and the form's text fields."""

    key: str
    path: Path
    filename: str
    sha256: str
    size: int
    fields: dict[str, str] = field(default_factory=dict)


class _Form:
    """python-multipart callbacks: one file part into the store, text parts into `fields`."""

    def __init__(self, store: ArtifactStore) -> None:
        self._store = store
        self.fields: dict[str, str] = {}
        self.upload: Upload | None = None
        self._header_field = bytearray()
        self._header_value = bytearray()
        self._headers: dict[str, str] = {}
        self._name: str | None = None
        self._text = bytearray()
        self._file: IO[bytes] | None = None
        self._hash = hashlib.sha256()
        self._head = b""

    def callbacks(self) -> dict[str, object]:
        return {
            "on_part_begin": self._part_begin,
            "on_header_field": lambda d, s, e: self._header_field.extend(d[s:e]),
            "on_header_value": lambda d, s, e: self._header_value.extend(d[s:e]),
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished,
            "on_part_data": self._part_data,
            "on_part_end": self._part_end,
        }

    def _part_begin(self) -> None:
        self._headers, self._name, self._text = {}, None, bytearray()

    def _header_end(self) -> None:
        self._headers[self._header_field.decode("latin-1").lower()] = self._header_value.decode("latin-1")
        self._header_field.clear()
        self._header_value.clear()

    def _headers_finished(self) -> None:
        disposition, params = parse_options_header(self._headers.get("content-disposition", ""))
        if disposition != b"form-data" or b"name" not in params:
            raise BadInput(
                "every multipart part needs Content-Disposition: form-data; name=...", field="body"
            )
        self._name = params[b"name"].decode("utf-8", "replace")
        if self._name == FILE_FIELD:
            if self.upload is not None:
                raise BadInput("send one model file", field=FILE_FIELD)
            filename = Path(params.get(b"filename", b"").decode("utf-8", "replace")).name
            suffix = Path(filename).suffix.lower()
            if suffix not in UPLOAD_SUFFIXES:
                raise BadInput(
                    f"the model file must be .h5 (Keras 2 / QKeras) or .keras (Keras 3), got {filename!r}",
                    field=FILE_FIELD,
                )
            key, path = self._store.new_upload(suffix)
            self.upload = Upload(key, path, filename, "", 0)
            self._file = path.open("xb")
        elif len(self.fields) >= _MAX_FIELDS:
            raise BadInput(f"at most {_MAX_FIELDS} form fields", field=self._name)

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        chunk = data[start:end]
        if self._file is not None:
            if len(self._head) < 8:
                self._head += chunk[: 8 - len(self._head)]
            self._hash.update(chunk)
            self._file.write(chunk)
            assert self.upload is not None
            self.upload.size += len(chunk)
        else:
            self._text.extend(chunk)
            if len(self._text) > _MAX_FIELD_BYTES:
                raise BadInput(
                    f"form field {self._name!r} is over {_MAX_FIELD_BYTES} bytes", field=self._name
                )

    def _part_end(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
            assert self.upload is not None
            self.upload.sha256 = self._hash.hexdigest()
            suffix = self.upload.path.suffix
            if not self._head.startswith(_MAGIC[suffix]):
                kind = "an HDF5" if suffix == ".h5" else "a zip (.keras)"
                raise BadInput(f"{self.upload.filename!r} is not {kind} file", field=FILE_FIELD)
        elif self._name is not None:
            try:
                self.fields[self._name] = self._text.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise BadInput(f"form field {self._name!r} is not UTF-8", field=self._name) from exc

    def discard(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        if self.upload is not None:
            self._store.discard_upload(self.upload.key)


async def receive_upload(
    content_type: str | None,
    content_length: str | None,
    body: AsyncIterator[bytes],
    store: ArtifactStore,
    max_bytes: int,
) -> Upload:
    """Stream the multipart `body` into the store; raises BadInput (400), PayloadTooLarge (413) or
    UnsupportedMediaType (415), having removed whatever it had written."""
    ctype, params = parse_options_header(content_type or "")
    if ctype != b"multipart/form-data" or not params.get(b"boundary"):
        raise UnsupportedMediaType(
            "upload the model as multipart/form-data (curl -F file=@model.h5)", field="Content-Type"
        )
    if content_length is not None and content_length.isdigit() and int(content_length) > max_bytes:
        raise PayloadTooLarge(
            f"the upload is {content_length} bytes, over the limit of {max_bytes}", field="body"
        )
    form = _Form(store)
    parser = MultipartParser(params[b"boundary"], form.callbacks())  # type: ignore[arg-type]
    received = 0
    try:
        async for chunk in body:
            received += len(chunk)
            if received > max_bytes:
                raise PayloadTooLarge(f"the upload is over the limit of {max_bytes} bytes", field="body")
            parser.write(chunk)
        parser.finalize()
        if form.upload is None:
            raise BadInput(f"no model file: send it as the form field {FILE_FIELD!r}", field=FILE_FIELD)
        if form.upload.sha256 == "":
            raise BadInput("the upload ended inside the model file (truncated)", field=FILE_FIELD)
    except BaseException as exc:
        form.discard()
        if isinstance(exc, BadInput):
            raise
        if isinstance(exc, FormParserError):
            raise BadInput(f"malformed multipart body: {exc}", field="body") from exc
        raise
    form.upload.fields = form.fields
    return form.upload
