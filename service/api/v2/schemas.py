"""Wire schemas of the Open Inference Protocol's inference request (pydantic, HTTP edge only).

Field names and optionality follow kserve's `required_api.md`; the binary tensor data extension
adds the `binary_data_size`, `binary_data` and `binary_data_output` parameters. Responses are
built as plain dicts (`fpgaas.service.api.v2.metadata` and the infer route).
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictInt, StrictStr


def _scalar_values(parameters: dict[str, Any]) -> dict[str, Any]:
    # $parameter = $string : $string | $number | $boolean
    for key, value in parameters.items():
        if not isinstance(value, (str, int, float, bool)):
            raise ValueError(
                f"parameter {key!r} must be a string, number or boolean, got {type(value).__name__}"
            )
    return parameters


Parameters = Annotated[dict[str, Any], AfterValidator(_scalar_values)]


class _Wire(BaseModel):
    # Unknown fields are ignored, as the spec's extension mechanism expects of a server.
    model_config = ConfigDict(extra="ignore", frozen=True)


class RequestInput(_Wire):
    name: StrictStr
    shape: list[StrictInt]
    datatype: StrictStr
    parameters: Parameters = Field(default_factory=dict)
    data: Any = None  # nested or flat JSON array; absent when sent as binary


class RequestOutput(_Wire):
    name: StrictStr
    parameters: Parameters = Field(default_factory=dict)


class InferenceRequest(_Wire):
    id: StrictStr | None = None
    parameters: Parameters = Field(default_factory=dict)
    inputs: list[RequestInput] = Field(min_length=1)
    outputs: list[RequestOutput] | None = None


def inference_request_schema() -> dict[str, Any]:
    """The JSON Schema of `InferenceRequest` with no `$ref`s, for the OpenAPI document (which
    resolves `#` against itself, where pydantic's `$defs` do not live)."""
    schema = InferenceRequest.model_json_schema()
    inlined: dict[str, Any] = _inlined(schema, schema.get("$defs", {}))
    return inlined


def _inlined(schema: Any, defs: dict[str, Any]) -> Any:
    """`schema` with each `#/$defs/...` reference replaced by its definition."""
    if isinstance(schema, dict):
        if "$ref" in schema:
            return _inlined(defs[schema["$ref"].rsplit("/", 1)[-1]], defs)
        return {k: _inlined(v, defs) for k, v in schema.items() if k != "$defs"}
    if isinstance(schema, list):
        return [_inlined(v, defs) for v in schema]
    return schema
