"""Request bodies -> numpy rows, with errors that name the field at fault.

JSON is parsed with orjson, which refuses NaN/Infinity, nesting deeper than 1024 and numbers
that overflow a double; rows go through one `np.array` call, and only when that fails or could
have coerced something (booleans, strings) are they walked in Python to name the first bad
value, so a 100k-number body costs milliseconds. `Content-Encoding` (gzip, deflate) is undone
with the same byte limit as the body, without ever holding more than the limit inflated.
Pure functions; thread-safe (large bodies are parsed on a worker thread).
"""

from __future__ import annotations

import time
import zlib
from dataclasses import dataclass
from typing import Any, NoReturn

import numpy as np
import orjson

from fpgaas.kernels.errors import BadInput, PayloadTooLarge, UnsupportedMediaType

WIRE_DTYPE = np.dtype("<f4")  # little-endian float32, whatever the host's byte order
JSON = "application/json"
OCTET_STREAM = "application/octet-stream"
_JSON_FIELDS = ("model", "version", "inputs")
# zlib's window bits: gzip framing, and zlib framing (HTTP's "deflate").
_WBITS = {"gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}


@dataclass(frozen=True)
class JsonPredict:
    model: str | None
    version: str | None
    inputs: np.ndarray  # 2-D, float64 or integer; width and range are checked by the dataplane


def media_type(content_type: str | None, default: str = JSON) -> str:
    """`Content-Type` without parameters, lower case; `default` when absent."""
    if not content_type:
        return default
    return content_type.split(";", 1)[0].strip().lower()


def require_media_type(content_type: str, allowed: tuple[str, ...]) -> None:
    if content_type not in allowed:
        raise UnsupportedMediaType(
            f"unsupported Content-Type {content_type!r}: send {' or '.join(allowed)}", field="Content-Type"
        )


def inflate(body: bytes, encoding: str | None, limit: int) -> bytes:
    """Undo a request's `Content-Encoding`, refusing (413) any body that inflates past `limit`
    bytes and (415) encodings other than gzip, deflate and identity."""
    name = (encoding or "").strip().lower()
    if name in ("", "identity"):
        return body
    wbits = _WBITS.get(name)
    if wbits is None:
        raise UnsupportedMediaType(
            f"unsupported Content-Encoding {encoding!r}: send gzip, deflate or none", field="Content-Encoding"
        )
    inflater = zlib.decompressobj(wbits)
    try:
        plain = inflater.decompress(body, limit + 1)
    except zlib.error as exc:
        raise BadInput(f"body is not valid {name} data: {exc}", field="Content-Encoding") from exc
    if len(plain) > limit:
        raise PayloadTooLarge(f"body inflates past the limit of {limit} bytes", field="body")
    if not inflater.eof:
        raise BadInput(f"body is truncated {name} data", field="Content-Encoding")
    return plain


_NON_FINITE = (b"-Infinity", b"Infinity", b"NaN")  # Python's json extensions, not JSON


def load_json(body: bytes, field: str = "body", numbers_field: str = "body") -> Any:
    """Parse JSON text; BadInput for anything orjson refuses, naming `numbers_field` when the
    culprit is a NaN or Infinity token (numbers must be finite) and `field` otherwise."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        near = bytes(body[max(exc.pos - 1, 0) : exc.pos + 9])
        token = next((t for t in _NON_FINITE if near.startswith(t) or near[1:].startswith(t)), None)
        if token is not None:
            message = f"{token.decode()} is not allowed: numbers must be finite"
            raise BadInput(message, field=numbers_field) from exc
        raise BadInput(f"malformed JSON: {exc}", field=field) from exc


def parse_json_predict(body: bytes) -> JsonPredict:
    """Parse `{"model"?, "version"?, "inputs": [[numbers], ...]}`; BadInput names the field."""
    if not body.strip():
        raise BadInput("empty body: send a JSON object with 'inputs'", field="body")
    doc = load_json(body, numbers_field="inputs")
    if not isinstance(doc, dict):
        raise BadInput(f"body must be a JSON object, got {json_type(doc)}", field="body")
    for key in doc:
        if key not in _JSON_FIELDS:
            raise BadInput(f"unknown field {key!r}; expected {', '.join(_JSON_FIELDS)}", field=key)
    if "inputs" not in doc:
        raise BadInput("missing 'inputs': a list of rows of numbers", field="inputs")
    rows = doc["inputs"]
    if not isinstance(rows, list):
        raise BadInput(f"inputs must be a list of rows, got {json_type(rows)}", field="inputs")
    if not rows:
        raise BadInput("inputs hold no samples: send at least one row", field="inputs")
    suspicious = b"true" in body or b"false" in body  # np.array turns booleans mixed with numbers into 1/0
    return JsonPredict(_name(doc, "model"), _name(doc, "version"), _rows_to_array(rows, suspicious))


def parse_binary_rows(body: bytes, n_inputs: int) -> np.ndarray:
    """Raw little-endian float32 rows -> (n, n_inputs) view of `body` (read-only)."""
    row_bytes = WIRE_DTYPE.itemsize * n_inputs
    if not body:
        raise BadInput("empty body: send at least one row of little-endian float32", field="body")
    if len(body) % row_bytes:
        raise BadInput(
            f"body of {len(body)} bytes is not whole rows: each row is {n_inputs} little-endian "
            f"float32 = {row_bytes} bytes",
            field="body",
        )
    return np.frombuffer(body, dtype=WIRE_DTYPE).reshape(-1, n_inputs)


def encode_json_answer(model: str, version: str, device: str, outputs: np.ndarray) -> bytes:
    # orjson writes each float32 in its shortest form, which parses back (through a double, too:
    # 53 >= 2*24 + 2 bits, so no double rounding) to the same float32.
    answer = {"model": model, "version": version, "device": device, "outputs": outputs}
    return orjson.dumps(answer, option=orjson.OPT_SERIALIZE_NUMPY)


def refuse_booleans(values: Any, field: str) -> None:
    """Raise BadInput at the first boolean in nested lists of `values` (JSON true/false)."""
    stack: list[tuple[Any, str]] = [(values, field)]
    while stack:
        value, where = stack.pop()
        if isinstance(value, bool):
            _bad(f"{where} is a boolean, expected a number", where)
        if isinstance(value, list):
            stack.extend((v, f"{where}[{i}]") for i, v in enumerate(value))


def _name(doc: dict[str, Any], key: str) -> str | None:
    value = doc.get(key)
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool) and key == "version":
        return str(value)
    if not isinstance(value, str) or not value:
        raise BadInput(f"{key} must be a non-empty string, got {json_type(value)}", field=key)
    return value


_CHUNK_ROWS = 4096  # rows converted per np.array call of a large body


def _rows_to_array(rows: list[Any], suspicious: bool) -> np.ndarray:
    try:
        arr: np.ndarray | None = _convert(rows)
    except (ValueError, TypeError, OverflowError):  # ragged rows
        arr = None
    if arr is None or arr.ndim != 2 or arr.dtype.kind not in "iuf" or suspicious:
        _explain(rows)
    if arr is None or arr.ndim != 2:
        raise BadInput("inputs must be a list of rows of numbers", field="inputs")
    if arr.dtype.kind not in "iuf":  # e.g. integers beyond int64, all checked convertible above
        arr = np.array(rows, dtype=np.float64)
    return arr


def _convert(rows: list[Any]) -> np.ndarray:
    """np.array(rows), in chunks for a large body: np.array holds the GIL for the whole list,
    and the pause between chunks lets the event loop thread serve the other requests."""
    if len(rows) <= _CHUNK_ROWS:
        return np.array(rows)
    parts = []
    for start in range(0, len(rows), _CHUNK_ROWS):
        parts.append(np.array(rows[start : start + _CHUNK_ROWS]))
        time.sleep(0)  # releases the GIL (this runs on a worker thread)
    if len({p.dtype for p in parts}) > 1 or len({p.shape[1:] for p in parts}) > 1:
        return np.array(rows)  # mixed int/float chunks or ragged: let numpy decide for the whole
    return np.concatenate(parts)


def _explain(rows: list[Any]) -> None:
    """Raise BadInput for the first malformed row or value; return if there is none."""
    width = -1
    for i, row in enumerate(rows):
        if not isinstance(row, list):
            _bad(f"inputs[{i}] must be a list of numbers, got {json_type(row)}", f"inputs[{i}]")
        if width < 0:
            width = len(row)
        elif len(row) != width:
            _bad(f"ragged rows: inputs[{i}] has {len(row)} values, inputs[0] has {width}", f"inputs[{i}]")
        for j, value in enumerate(row):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                _bad(f"inputs[{i}][{j}] is {json_type(value)}, expected a number", f"inputs[{i}][{j}]")
            if isinstance(value, int):
                try:
                    float(value)
                except OverflowError:
                    _bad(f"inputs[{i}][{j}] is too large for float32", f"inputs[{i}][{j}]")


def _bad(message: str, field: str) -> NoReturn:
    raise BadInput(message, field=field)


def json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, str):
        return f"a string ({value[:20]!r})"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "a list"
    return type(value).__name__
