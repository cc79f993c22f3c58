"""The gRPC front end: KServe v2 over gRPC with Triton's extensions (`inference.GRPCInferenceService`),
what CMSSW's SONIC (`TritonClient`), perf_analyzer and tritonclient[grpc] speak.

    protos    the generated messages and stubs (tritonclient's, no build step)
    codec     ModelInferRequest <-> float32 rows, as v2 REST converts them
    config    ModelConfig and ModelStatistics messages (the HTTP routes render them as JSON)
    servicer  the RPCs, thin over `DataPlane`
    server    `GrpcFront`: grpc.aio server, health checking, reflection, start/stop

Errors are classified by `fpgaas.service.api.errors` and rendered by its `grpc_status`.
"""

from __future__ import annotations

from fpgaas.service.api.grpc.server import GrpcFront

__all__ = ["GrpcFront"]
