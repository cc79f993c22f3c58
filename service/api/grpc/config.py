"""Triton's `ModelConfig` of a loaded model version, and the statistics messages, built once per
call from the dataplane's description; the HTTP `/config` and `/stats` routes render the same
messages as JSON, so both protocols always agree.

The configuration says what a Triton client reads:

    name, platform ("hls4ml_<backend>"), backend "fpgaas", max_batch_size (rows per device call)
    input / output       name, data_type (TYPE_FP32), dims (per sample; the batch axis is implied)
    dynamic_batching     max_queue_delay_microseconds = FPGAAS_MAX_DELAY_US (0: an idle card
                         starts at once, rows arriving meanwhile form the next batch)
    instance_group       one entry per card holding the version: name = the device name,
                         kind KIND_MODEL, count 1
    version_policy       the loaded versions; parameters: device, part, xclbin_status

KIND_MODEL because Triton defines it as an instance placed by the backend itself on a device
Triton does not manage: an FPGA card is neither KIND_GPU (which clients read as a CUDA device
index in `gpus`) nor KIND_CPU (the emulated cards run on the CPU, but a real card does not).
The device kind of each card is in `parameters` instead.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import json_format
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from fpgaas.service.api.grpc.protos import model_config_pb2, service_pb2
from fpgaas.service.api.v2 import metadata
from fpgaas.service.api.v2.tensors import protocol_datatype
from fpgaas.service.dataplane import ModelMetadata, TensorMetadata
from fpgaas.service.statistics import Duration, ModelStatistics

_INT64_TYPES = {
    FieldDescriptor.TYPE_INT64,
    FieldDescriptor.TYPE_UINT64,
    FieldDescriptor.TYPE_SINT64,
    FieldDescriptor.TYPE_FIXED64,
    FieldDescriptor.TYPE_SFIXED64,
}


def _tensor(t: TensorMetadata, kind: type[Any]) -> Any:
    data_type = model_config_pb2.DataType.Value(f"TYPE_{protocol_datatype(t)}")
    return kind(name=t.name, data_type=data_type, dims=list(t.shape))


def model_config(model: ModelMetadata, max_delay_us: int) -> model_config_pb2.ModelConfig:
    """The ModelConfig of one loaded version (see the module docstring)."""
    config = model_config_pb2.ModelConfig(
        name=model.name,
        platform=metadata.platform(model),
        backend=metadata.BACKEND,
        max_batch_size=model.max_batch,
        input=[_tensor(t, model_config_pb2.ModelInput) for t in model.inputs],
        output=[_tensor(t, model_config_pb2.ModelOutput) for t in model.outputs],
        dynamic_batching=model_config_pb2.ModelDynamicBatching(max_queue_delay_microseconds=max_delay_us),
        instance_group=[
            model_config_pb2.ModelInstanceGroup(
                name=card.name, kind=model_config_pb2.ModelInstanceGroup.KIND_MODEL, count=1
            )
            for card in (model.replicas or (model.device,))
        ],
    )
    config.version_policy.specific.versions.extend(int(v) for v in model.versions if v.isdigit())
    for key, value in (
        ("device", model.device.name),
        ("device_kinds", ",".join(card.kind for card in (model.replicas or (model.device,)))),
        ("part", model.part),
        ("xclbin_status", model.xclbin_status),
    ):
        config.parameters[key].string_value = value
    return config


def _duration(d: Duration) -> service_pb2.StatisticDuration:
    return service_pb2.StatisticDuration(count=d.count, ns=d.ns)


def model_statistics(s: ModelStatistics) -> service_pb2.ModelStatistics:
    """Triton's ModelStatistics message of one version."""
    return service_pb2.ModelStatistics(
        name=s.name,
        version=s.version,
        last_inference=s.last_inference_ms,
        inference_count=s.inference_count,
        execution_count=s.execution_count,
        inference_stats=service_pb2.InferStatistics(
            success=_duration(s.success),
            fail=_duration(s.fail),
            queue=_duration(s.queue),
            compute_input=_duration(s.compute_input),
            compute_infer=_duration(s.compute_infer),
            compute_output=_duration(s.compute_output),
            cache_hit=_duration(Duration()),
            cache_miss=_duration(Duration()),
        ),
        batch_stats=[
            service_pb2.InferBatchStatistics(
                batch_size=b.batch_size,
                compute_input=_duration(b.compute_input),
                compute_infer=_duration(b.compute_infer),
                compute_output=_duration(b.compute_output),
            )
            for _, b in sorted(s.batches.items())
        ],
    )


def as_json(message: Message) -> dict[str, Any]:
    """A message as Triton's HTTP endpoints write it: proto field names, every field, and 64-bit
    integers as JSON numbers (protobuf's JSON mapping writes them as strings; Triton does not)."""
    out = json_format.MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )
    _numbers(message, out)
    return out


def _numbers(message: Message, out: dict[str, Any]) -> None:
    for fd in message.DESCRIPTOR.fields:
        if fd.name not in out:
            continue
        value = getattr(message, fd.name)
        if fd.type in _INT64_TYPES:
            out[fd.name] = [int(v) for v in out[fd.name]] if _repeated(fd) else int(out[fd.name])
        elif fd.type == FieldDescriptor.TYPE_MESSAGE:
            entry = fd.message_type
            if entry.GetOptions().map_entry:
                value_fd = entry.fields_by_name["value"]
                for key, item in value.items():
                    if value_fd.type == FieldDescriptor.TYPE_MESSAGE:
                        _numbers(item, out[fd.name][str(key)])
                    elif value_fd.type in _INT64_TYPES:
                        out[fd.name][str(key)] = int(out[fd.name][str(key)])
            elif _repeated(fd):
                for item, item_out in zip(value, out[fd.name], strict=True):
                    _numbers(item, item_out)
            else:
                _numbers(value, out[fd.name])


def _repeated(fd: FieldDescriptor) -> bool:
    return bool(fd.label == FieldDescriptor.LABEL_REPEATED)
