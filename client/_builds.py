"""Uploads and builds: `Client.upload(...) -> Build`, `Build.wait()`, `Build.cancel()`, and the
async twins. The routes are the server's management API (they need the admin token, sent as
`headers={"Authorization": "Bearer ..."}` or `token=` on the client).

The progress bar of `wait(progress=True)` is tqdm's when tqdm is installed (`pip install
'fpgaas[progress]'`), else one plain line per stage on stderr: the SDK itself needs only httpx.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Protocol

import httpx

from fpgaas.client._errors import FpgaasClientError
from fpgaas.client._protocol import error_from_response, json_body

FINISHED = frozenset({"succeeded", "failed", "cancelled"})
_OPTION_FIELDS = ("version", "part", "platform", "max_batch", "reuse_factor", "strategy", "sha256")


class BuildFailed(FpgaasClientError):
    """`wait()` on a build that ended failed or cancelled; `info` is its last state."""

    def __init__(self, info: BuildInfo) -> None:
        super().__init__(f"build {info.id} of {info.name} v{info.version} {info.state}: {info.error}")
        self.info = info


@dataclass(frozen=True)
class BuildInfo:
    """One build as `GET /builds/{id}` reports it (durations in seconds)."""

    id: int
    name: str
    version: str
    state: str  # queued, running, succeeded, failed, cancelled
    stage: str | None
    progress: float  # 0..1
    stage_seconds: Mapping[str, float]
    worker: str | None
    attempts: int
    error: str | None
    manifest: Mapping[str, Any] | None
    raw: Mapping[str, Any] = field(repr=False)

    @property
    def finished(self) -> bool:
        return self.state in FINISHED

    @classmethod
    def of(cls, data: Mapping[str, Any]) -> BuildInfo:
        return cls(
            id=int(data["id"]),
            name=str(data["name"]),
            version=str(data["version"]),
            state=str(data["state"]),
            stage=data.get("stage"),
            progress=float(data.get("progress", 0.0)),
            stage_seconds=dict(data.get("stage_seconds") or {}),
            worker=data.get("worker"),
            attempts=int(data.get("attempts", 0)),
            error=data.get("error"),
            manifest=data.get("manifest"),
            raw=data,
        )


def upload_form(options: Mapping[str, Any]) -> dict[str, str]:
    """The form fields of an upload's build options; ValueError names an unknown option."""
    import json

    form: dict[str, str] = {}
    for key, value in options.items():
        if value is None:
            continue
        if key == "precision":
            form[key] = json.dumps(dict(value))
        elif key in _OPTION_FIELDS:
            form[key] = str(value)
        else:
            raise ValueError(
                f"unknown build option {key!r}; known: {', '.join((*_OPTION_FIELDS, 'precision'))}"
            )
    return form


def parse(response: httpx.Response) -> BuildInfo:
    if not response.is_success:
        raise error_from_response(response)
    return BuildInfo.of(json_body(response))


class _Bar(Protocol):
    def show(self, info: BuildInfo) -> None: ...
    def close(self) -> None: ...


class _PlainBar:
    """One line on stderr per stage change (no tqdm installed)."""

    def __init__(self, stream: IO[str]) -> None:
        self._stream = stream
        self._last: tuple[str, str | None] | None = None

    def show(self, info: BuildInfo) -> None:
        if (info.state, info.stage) != self._last:
            self._last = (info.state, info.stage)
            stage = f" {info.stage}" if info.stage else ""
            self._stream.write(f"build {info.id}: {info.state}{stage} ({info.progress:.0%})\n")
            self._stream.flush()

    def close(self) -> None:
        return None


class _TqdmBar:
    def __init__(self, tqdm: Any, info: BuildInfo) -> None:
        self._bar = tqdm(total=100, desc=f"{info.name} v{info.version}", unit="%", leave=True)

    def show(self, info: BuildInfo) -> None:
        self._bar.set_postfix_str(f"{info.state}: {info.stage or '-'}")
        self._bar.update(round(info.progress * 100) - self._bar.n)

    def close(self) -> None:
        self._bar.close()


def progress_bar(info: BuildInfo) -> _Bar:
    try:
        from tqdm import tqdm
    except ImportError:
        return _PlainBar(sys.stderr)
    return _TqdmBar(tqdm, info)


class Build:
    """A build on the server (blocking). Refresh with `refresh()`; `info` is the last state seen."""

    def __init__(self, http: httpx.Client, info: BuildInfo) -> None:
        self._http = http
        self.info = info

    @property
    def id(self) -> int:
        return self.info.id

    def refresh(self) -> BuildInfo:
        self.info = parse(self._http.get(f"/builds/{self.id}"))
        return self.info

    def wait(self, progress: bool = False, timeout: float | None = None, poll_s: float = 1.0) -> BuildInfo:
        """Poll until the build is finished; returns it when it succeeded, raises BuildFailed if
        it failed or was cancelled, TimeoutError after `timeout` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        bar = progress_bar(self.info) if progress else None
        try:
            while True:
                info = self.refresh()
                if bar is not None:
                    bar.show(info)
                if info.finished:
                    break
                if deadline is not None and time.monotonic() > deadline:
                    raise TimeoutError(f"build {self.id} still {info.state} after {timeout} s")
                time.sleep(poll_s)
        finally:
            if bar is not None:
                bar.close()
        if info.state != "succeeded":
            raise BuildFailed(info)
        return info

    def cancel(self) -> BuildInfo:
        """Cancel it (a running build stops within seconds; `wait` then raises BuildFailed)."""
        self.info = parse(self._http.delete(f"/builds/{self.id}"))
        return self.info

    def log(self) -> str:
        """The build log so far."""
        response = self._http.get(f"/builds/{self.id}/log", params={"follow": "false"})
        if not response.is_success:
            raise error_from_response(response)
        return response.text

    def __repr__(self) -> str:
        return f"Build({self.id}, {self.info.name!r} v{self.info.version}, {self.info.state})"


class AsyncBuild:
    """`Build` for `AsyncClient`."""

    def __init__(self, http: httpx.AsyncClient, info: BuildInfo) -> None:
        self._http = http
        self.info = info

    @property
    def id(self) -> int:
        return self.info.id

    async def refresh(self) -> BuildInfo:
        self.info = parse(await self._http.get(f"/builds/{self.id}"))
        return self.info

    async def wait(
        self, progress: bool = False, timeout: float | None = None, poll_s: float = 1.0
    ) -> BuildInfo:
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        bar = progress_bar(self.info) if progress else None
        try:
            while True:
                info = await self.refresh()
                if bar is not None:
                    bar.show(info)
                if info.finished:
                    break
                if deadline is not None and loop.time() > deadline:
                    raise TimeoutError(f"build {self.id} still {info.state} after {timeout} s")
                await asyncio.sleep(poll_s)
        finally:
            if bar is not None:
                bar.close()
        if info.state != "succeeded":
            raise BuildFailed(info)
        return info

    async def cancel(self) -> BuildInfo:
        self.info = parse(await self._http.delete(f"/builds/{self.id}"))
        return self.info

    async def log(self) -> str:
        response = await self._http.get(f"/builds/{self.id}/log", params={"follow": "false"})
        if not response.is_success:
            raise error_from_response(response)
        return response.text

    def __repr__(self) -> str:
        return f"AsyncBuild({self.id}, {self.info.name!r} v{self.info.version}, {self.info.state})"


def upload_request(
    path: Path | str, name: str, options: Mapping[str, Any]
) -> tuple[str, dict[str, str], Path]:
    """The route, form fields and file of an upload (the file is streamed by httpx)."""
    model = Path(path)
    if not model.is_file():
        raise ValueError(f"{model} is not a file")
    return f"/models/{name}/versions", upload_form(options), model
