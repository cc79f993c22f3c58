"""The management API (FastAPI routes; never on the hot path), behind the admin bearer token.

Triton's model-repository extension where it fits (`/v2/repository/...`), plus uploads and builds:

    POST   /models/{name}/versions        multipart upload + build options -> 202, build id, Location
    GET    /builds                         recent builds, newest first (?name=)
    GET    /builds/{id}                    state, stage, progress, per-stage seconds, worker, error, manifest
    GET    /builds/{id}/log                the build log; follows it while the build runs (?follow=false: not)
    DELETE /builds/{id}                    cancel (202 while the worker stops it)
    POST   /v2/repository/models/{m}/load  (?version=) load again (also a refused one)
    POST   /v2/repository/models/{m}/unload (?version=) unload; accepted requests are answered first
    DELETE /models/{name}/versions/{v}     retire: unloaded everywhere, files kept unless ?purge=true

`POST /v2/repository/index` (every version: READY / UNAVAILABLE / LOADING / BUILDING + reason)
needs no token and is the v2 router's, which asks `fpgaas.service.api.repository` as gRPC does.

Load, unload and retire are stored in the database, so every server replica converges on them;
this server answers once it has converged itself.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse, StreamingResponse

from fpgaas.kernels.builds.errors import Conflict
from fpgaas.kernels.builds.records import BuildOptions, BuildRecord, check_name
from fpgaas.kernels.errors import BadInput, FpgaasError, ModelNotFound, NotReady
from fpgaas.kernels.model_file import inspect_model_file
from fpgaas.service.api.upload import Upload, receive_upload
from fpgaas.service.auth import bearer, check_admin
from fpgaas.service.buildservice import BuildService
from fpgaas.service.settings import Settings

_LOG_POLL_S = 0.5
_CONVERGE_TIMEOUT_S = 120.0


def require_admin(request: Request) -> None:
    """401 without a bearer token, 403 with a wrong one (none needed when none is configured)."""
    settings: Settings = request.app.state.settings
    check_admin(settings, bearer(request.headers.get("authorization")))


def get_builds(request: Request) -> BuildService:
    service: BuildService | None = getattr(request.app.state, "builds", None)
    if service is None:
        raise NotReady("the management API is starting")
    return service


Builds = Annotated[BuildService, Depends(get_builds)]
router = APIRouter(tags=["management"], dependencies=[Depends(require_admin)])


def _options(fields: dict[str, str]) -> tuple[str | None, BuildOptions]:
    def integer(key: str) -> int | None:
        if fields.get(key, "") == "":
            return None
        try:
            return int(fields[key])
        except ValueError:
            raise BadInput(f"{key} must be an integer, got {fields[key]!r}", field=key) from None

    precision: dict[str, str] = {}
    if fields.get("precision"):
        try:
            precision = json.loads(fields["precision"])
        except ValueError as exc:
            raise BadInput(f"precision must be a JSON object: {exc}", field="precision") from exc
        if not isinstance(precision, dict) or not all(isinstance(v, str) for v in precision.values()):
            raise BadInput('precision must be a JSON object {"layer": "fixed<16,6>"}', field="precision")
    known = {"version", "part", "platform", "max_batch", "reuse_factor", "strategy", "precision", "sha256"}
    unknown = sorted(set(fields) - known)
    if unknown:
        raise BadInput(
            f"unknown form field(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}", field=unknown[0]
        )
    version = fields.get("version") or None
    options = BuildOptions(
        part=fields.get("part") or None,
        platform=fields.get("platform") or None,
        max_batch=integer("max_batch"),
        reuse_factor=integer("reuse_factor") or 1,
        strategy=fields.get("strategy") or "Latency",
        precision=precision,
        expected_sha256=(fields.get("sha256") or "").lower() or None,
    )
    return version, options


def _inspect(received: Upload, max_bytes: int) -> None:
    try:
        inspect_model_file(received.path, max_bytes=max_bytes)
    except FpgaasError as exc:  # name the file as the user sent it, not the store's key
        exc.message = exc.message.replace(received.path.name, received.filename)
        exc.args = (exc.message,)
        raise


def _view(record: BuildRecord) -> dict[str, Any]:
    return {**record.to_json(), "log": f"/builds/{record.id}/log"}


@router.post("/models/{name}/versions", status_code=202, summary="Upload a model and queue its build")
async def upload(name: str, request: Request, builds: Builds) -> JSONResponse:
    check_name(name, "name")
    settings = builds.settings
    received: Upload = await receive_upload(
        request.headers.get("content-type"),
        request.headers.get("content-length"),
        request.stream(),
        builds.store,
        settings.max_upload_bytes,
    )
    try:
        # Read as data only (no Keras, nothing in the file runs): a Lambda, a custom object, a
        # traversal or a zip bomb is refused here, before anything is queued.
        await asyncio.to_thread(_inspect, received, settings.max_upload_bytes)
        version, options = _options(received.fields)
        if version is not None:
            check_name(version, "version")
        if options.expected_sha256 is not None and options.expected_sha256 != received.sha256:
            raise BadInput(
                f"the upload's sha256 is {received.sha256}, not the expected {options.expected_sha256}",
                field="sha256",
            )
        record = await builds.queue.submit(
            name,
            version,
            options,
            received.key,
            received.sha256,
            received.size,
            taken=builds.store.versions(name),
        )
    except BaseException:
        builds.store.discard_upload(received.key)
        raise
    return JSONResponse(_view(record), status_code=202, headers={"Location": f"/builds/{record.id}"})


@router.get("/builds", summary="Recent builds, newest first")
async def list_builds(builds: Builds, name: str | None = None) -> dict[str, Any]:
    return {"builds": [_view(r) for r in await builds.queue.list_builds(name)]}


@router.get("/builds/{build_id}", summary="One build")
async def get_build(build_id: int, builds: Builds) -> dict[str, Any]:
    return _view(await builds.queue.get(build_id))


@router.delete("/builds/{build_id}", summary="Cancel a queued or running build")
async def cancel_build(build_id: int, builds: Builds) -> JSONResponse:
    record = await builds.queue.cancel(build_id)
    if record.state.finished:  # cancelled in the queue: no worker will read its upload
        builds.store.discard_upload(record.upload)
    return JSONResponse(_view(record), status_code=200 if record.state.finished else 202)


@router.get("/builds/{build_id}/log", summary="The build's log, followed while it runs")
async def build_log(build_id: int, builds: Builds, follow: bool = True) -> StreamingResponse:
    await builds.queue.get(build_id)  # 404 for an unknown build
    path = builds.store.log_path(build_id)

    async def tail() -> AsyncIterator[bytes]:
        offset = 0
        while True:
            finished = (await builds.queue.get(build_id)).state.finished
            if path.exists():
                with path.open("rb") as f:
                    f.seek(offset)
                    chunk = f.read()
                if chunk:
                    offset += len(chunk)
                    yield chunk
            if finished or not follow:
                return
            await asyncio.sleep(_LOG_POLL_S)

    return StreamingResponse(tail(), media_type="text/plain; charset=utf-8")


def _versions(builds: BuildService, model: str, version: str | None) -> list[str]:
    check_name(model, "model")
    present = builds.store.versions(model)
    if version is not None:
        check_name(version, "version")
        if version not in present:
            raise ModelNotFound(f"the repository has no {model} version {version}", field="version")
        return [version]
    if not present:
        raise ModelNotFound(f"the repository has no model {model!r}", field="model")
    return present


async def _converge(builds: BuildService) -> None:
    await asyncio.wait_for(builds.sync.sync(), _CONVERGE_TIMEOUT_S)


@router.post("/v2/repository/models/{model}/load", summary="Load a model (all versions, or ?version=)")
async def load(model: str, builds: Builds, version: Annotated[str | None, Query()] = None) -> dict[str, Any]:
    versions = _versions(builds, model, version)
    wanted = await builds.queue.table.wanted()
    for v in versions:
        if wanted.get((model, v), (True, False))[1]:
            raise Conflict(f"{model} version {v} is retired; upload it as a new version", field="version")
        await builds.queue.table.want(model, v, True)
    builds.sync.forget_refusal(model, version)
    await _converge(builds)
    return {"model": model, "versions": _states(builds, model, versions)}


@router.post("/v2/repository/models/{model}/unload", summary="Unload a model (all versions, or ?version=)")
async def unload(
    model: str, builds: Builds, version: Annotated[str | None, Query()] = None
) -> dict[str, Any]:
    versions = _versions(builds, model, version)
    for v in versions:
        await builds.queue.table.want(model, v, False)
    await _converge(builds)
    return {"model": model, "versions": _states(builds, model, versions)}


@router.delete(
    "/models/{name}/versions/{version}", summary="Retire a version (?purge=true deletes its files)"
)
async def retire(name: str, version: str, builds: Builds, purge: bool = False) -> dict[str, Any]:
    _versions(builds, name, version)
    await builds.queue.table.want(name, version, False, retired=True)
    await _converge(builds)
    purged = purge and await asyncio.to_thread(builds.store.purge, name, version)
    return {"model": name, "version": version, "retired": True, "purged": purged}


def _states(builds: BuildService, model: str, versions: list[str]) -> list[dict[str, str]]:
    by_key = {(s.name, s.version): s for s in builds.sync.states()}
    return [
        {"version": v, "state": by_key[(model, v)].state, "reason": by_key[(model, v)].reason}
        for v in versions
        if (model, v) in by_key
    ]
