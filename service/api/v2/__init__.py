"""The Open Inference Protocol (KServe v2) front end: `router` serves the `/v2` routes.

routes     the REST routes, thin over `fpgaas.service.dataplane.DataPlane`
schemas    pydantic models of the inference request (the HTTP edge)
codec      the binary tensor data extension (JSON header + raw tensor bytes)
datatypes  protocol datatypes -> the kernel's float32
tensors    named tensors <-> kernel rows for one model
metadata   server/model metadata, Triton's model configuration
infer      `POST .../infer`, a hot route served before FastAPI (`fpgaas.service.api.front`)
"""

from __future__ import annotations

from fpgaas.service.api.v2.routes import router

__all__ = ["router"]
