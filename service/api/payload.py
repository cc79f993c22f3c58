"""Request bodies -> numpy rows, with errors that name the field at fault.

Bodies are read with a byte limit (the declared Content-Length and the bytes actually
received both count). JSON rows go through one `np.array` call; only when that fails or
could have coerced something (booleans, strings) are the rows walked in Python to name the
first bad value, so a 100k-number body costs milliseconds.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, NoReturn

import numpy as np
from fastapi import Request

from fpgaas.kernels.errors import BadInput, PayloadTooLarge

WIRE_DTYPE = np.dtype("<f4")  # little-endian float32, whatever the host's byte order
_JSON_FIELDS = ("model", "version", "inputs")


@dataclass(frozen=True)
class JsonPredict:
    model: str | None
    version: str | None
    inputs: np.ndarray  # 2-D, float64 or integer; width and range are checked by the dataplane


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, or PayloadTooLarge (413) as soon as it is known to exceed `limit` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise BadInput(f"Content-Length {declared!r} is not a byte count", field="Content-Length")
        if int(declared) > limit:
            raise PayloadTooLarge(
                f"body of {declared} bytes exceeds the limit of {limit} bytes", field="body"
            )
    chunks: list[bytes] = []
    received = 0
    async for chunk in request.stream():
        received += len(chunk)
        if received > limit:
            raise PayloadTooLarge(f"body exceeds the limit of {limit} bytes", field="body")
        chunks.append(chunk)
    return b"".join(chunks)


def parse_json_predict(body: bytes) -> JsonPredict:
    """Parse `{"model"?, "version"?, "inputs": [[numbers], ...]}`; BadInput names the field."""
    if not body.strip():
        raise BadInput("empty body: send a JSON object with 'inputs'", field="body")
    try:
        doc = json.loads(body, parse_constant=_reject_constant)
    except _NonFiniteConstant as exc:
        raise BadInput(f"{exc.token} is not allowed: inputs must be finite numbers", field="inputs") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BadInput(f"malformed JSON: {exc}", field="body") from exc
    if not isinstance(doc, dict):
        raise BadInput(f"body must be a JSON object, got {_json_type(doc)}", field="body")
    for key in doc:
        if key not in _JSON_FIELDS:
            raise BadInput(f"unknown field {key!r}; expected {', '.join(_JSON_FIELDS)}", field=key)
    if "inputs" not in doc:
        raise BadInput("missing 'inputs': a list of rows of numbers", field="inputs")
    rows = doc["inputs"]
    if not isinstance(rows, list):
        raise BadInput(f"inputs must be a list of rows, got {_json_type(rows)}", field="inputs")
    if not rows:
        raise BadInput("inputs hold no samples: send at least one row", field="inputs")
    return JsonPredict(_name(doc, "model"), _name(doc, "version"), _rows_to_array(rows, body))


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
    # float32 -> Python float is exact, and repr() of it converts back to the same float32.
    answer = {"model": model, "version": version, "device": device, "outputs": outputs.tolist()}
    return json.dumps(answer, separators=(",", ":"), allow_nan=False).encode()


def _name(doc: dict[str, Any], key: str) -> str | None:
    value = doc.get(key)
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool) and key == "version":
        return str(value)
    if not isinstance(value, str) or not value:
        raise BadInput(f"{key} must be a non-empty string, got {_json_type(value)}", field=key)
    return value


def _rows_to_array(rows: list[Any], body: bytes) -> np.ndarray:
    try:
        arr: np.ndarray | None = np.array(rows)
    except (ValueError, TypeError):  # ragged rows
        arr = None
    suspicious = b"true" in body or b"false" in body  # np.array turns booleans mixed with numbers into 1/0
    if arr is None or arr.ndim != 2 or arr.dtype.kind not in "iuf" or suspicious:
        _explain(rows)
    if arr is None or arr.ndim != 2:
        raise BadInput("inputs must be a list of rows of numbers", field="inputs")
    if arr.dtype.kind not in "iuf":  # e.g. integers beyond int64, all checked convertible above
        arr = np.array(rows, dtype=np.float64)
    return arr


def _explain(rows: list[Any]) -> None:
    """Raise BadInput for the first malformed row or value; return if there is none."""
    width = -1
    for i, row in enumerate(rows):
        if not isinstance(row, list):
            _bad(f"inputs[{i}] must be a list of numbers, got {_json_type(row)}", f"inputs[{i}]")
        if width < 0:
            width = len(row)
        elif len(row) != width:
            _bad(f"ragged rows: inputs[{i}] has {len(row)} values, inputs[0] has {width}", f"inputs[{i}]")
        for j, value in enumerate(row):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                _bad(f"inputs[{i}][{j}] is {_json_type(value)}, expected a number", f"inputs[{i}][{j}]")
            if isinstance(value, int):
                try:
                    float(value)
                except OverflowError:
                    _bad(f"inputs[{i}][{j}] is too large for float32", f"inputs[{i}][{j}]")


def _bad(message: str, field: str) -> NoReturn:
    raise BadInput(message, field=field)


class _NonFiniteConstant(ValueError):
    def __init__(self, token: str) -> None:
        super().__init__(token)
        self.token = token


def _reject_constant(token: str) -> NoReturn:
    # Python's json accepts NaN, Infinity and -Infinity, which JSON does not define.
    raise _NonFiniteConstant(token)


def _json_type(value: Any) -> str:
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
