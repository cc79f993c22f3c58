"""`fpgaas worker`: builds models from the durable queue (procrastinate on PostgreSQL).

Many workers on many hosts share one database and one artifact store. Each takes `fpgaas.build`
jobs (see `fpgaas.kernels.builds.queue`) and runs every build in a child process
(`fpgaas.builder.build_child`) in its own process group, in the build's staging directory:

- stage events from the child update the build row (stage, progress, per-stage seconds);
- success: the sealed artifact is published into the store by one rename, the row gets the
  manifest; failure: the row gets the error; either way the staging directory is removed;
- cancel (`DELETE /builds/{id}`): procrastinate cancels the task, which stops the child's whole
  process group (the tools with it), removes the staging directory and marks the row cancelled;
- a worker killed outright stops sending heartbeats: every worker looks for jobs whose worker's
  heartbeat is older than `stalled_after_s` and retries them, so another worker builds them
  from the start in a fresh staging directory (what the dead attempt left is removed).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Any

from procrastinate import App, JobContext, RetryStrategy
from procrastinate.job_context import AbortReason
from pydantic import Field

from fpgaas.builder.settings import BuilderSettings
from fpgaas.kernels.artifact import MANIFEST_NAME
from fpgaas.kernels.builds import database
from fpgaas.kernels.builds.database import BuildTable
from fpgaas.kernels.builds.postgres import EmbeddedPostgres
from fpgaas.kernels.builds.queue import QUEUE, TASK_NAME, make_app
from fpgaas.kernels.builds.records import STAGES, BuildRecord, BuildState
from fpgaas.kernels.builds.store import ArtifactStore, DirectoryStore

log = logging.getLogger("fpgaas.builder.worker")

_KILL_GRACE_S = 3.0  # SIGTERM to the build's process group, then SIGKILL


class WorkerShutdown(Exception):
    """The worker stopped (SIGTERM) mid-build: the job goes back to the queue, it is not cancelled."""


class WorkerSettings(BuilderSettings):
    """The worker's settings (`FPGAAS_*`), with the builder's signing settings."""

    database_url: str | None = Field(
        default=None, description="PostgreSQL of the build queue; unset: the embedded one under state_dir"
    )
    model_repository: Path = Field(
        default=Path("model_repository"), description="the artifact store (shared with the servers)"
    )
    worker_name: str = Field(
        default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}", description="shown in GET /builds"
    )
    worker_concurrency: int = Field(default=1, ge=1, le=64, description="builds at once on this worker")
    heartbeat_s: float = Field(default=5.0, gt=0, le=600, description="seconds between heartbeats")
    stalled_after_s: float = Field(
        default=30.0, gt=0, le=86400, description="a job whose worker's heartbeat is older is retried"
    )
    abort_poll_s: float = Field(default=1.0, gt=0, le=600, description="seconds between looks for cancels")

    def conninfo(self) -> str:
        return self.database_url or EmbeddedPostgres(self.state_dir / "postgres").conninfo


class BuildRunner:
    """Runs one build job: the child process, its events, publish or failure, cancel."""

    def __init__(self, table: BuildTable, store: ArtifactStore, settings: WorkerSettings) -> None:
        self._table = table
        self._store = store
        self._settings = settings
        self._context: JobContext | None = None

    async def run(self, build_id: int, context: JobContext | None = None) -> None:
        self._context = context
        record = await self._table.start(build_id, self._settings.worker_name)
        if record is None:
            log.info("build %d is finished already; nothing to do", build_id)
            return
        staging = self._store.staging(build_id)
        log_path = self._store.log_path(build_id)
        with log_path.open("a") as log_file:
            log_file.write(f"== attempt {record.attempts} on worker {self._settings.worker_name}\n")
        log.info(
            "build %d: %s version %s (attempt %d)", build_id, record.name, record.version, record.attempts
        )
        try:
            await self._build(record, staging, log_path)
        finally:
            self._store.discard_staging(build_id)

    async def _build(self, record: BuildRecord, staging: Path, log_path: Path) -> None:
        out = staging / "artifact"
        request = {
            "parent": os.getpid(),
            "model": str(self._store.upload_path(record.upload)),
            "name": record.name,
            "version": record.version,
            "out": str(out),
            "part": record.options.part,
            "platform": record.options.platform,
            "reuse_factor": record.options.reuse_factor,
            "strategy": record.options.strategy,
            "precision": record.options.precision,
        }
        with log_path.open("ab") as log_file:
            child = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "fpgaas.builder.build_child",
                json.dumps(request),
                stdout=asyncio.subprocess.PIPE,
                stderr=log_file,
                stdin=asyncio.subprocess.DEVNULL,
                cwd=staging,
                start_new_session=True,  # its own process group: a cancel stops the tools too
            )
        try:
            outcome, seconds = await self._follow(record, child)
            code = await child.wait()
        except asyncio.CancelledError:
            await _stop(child)
            if self._context is not None and self._context.abort_reason() == AbortReason.SHUTDOWN:
                _append(log_path, "== the worker is stopping: the build goes back to the queue\n")
                await self._table.requeue(record.id, f"worker {self._settings.worker_name} stopped; retrying")
                raise WorkerShutdown(f"worker {self._settings.worker_name} stopped") from None
            await self._table.finish(record.id, BuildState.CANCELLED, error="cancelled while running")
            self._store.discard_upload(record.upload)
            _append(log_path, "== cancelled: the build's processes were stopped and its staging removed\n")
            log.info("build %d cancelled", record.id)
            raise
        if outcome.get("event") == "built" and code == 0:
            await self._publish(record, out, log_path, seconds)
        else:
            error = outcome.get("error") or f"the build process exited with status {code}; see the log"
            _keep_tool_logs(staging, log_path)  # the staging directory, and its logs, go next
            await self._table.finish(record.id, BuildState.FAILED, error=error)
            self._store.discard_upload(record.upload)  # nothing retries a failed build
            _append(log_path, f"== failed: {error}\n")
            log.warning("build %d failed: %s", record.id, error)

    async def _follow(
        self, record: BuildRecord, child: asyncio.subprocess.Process
    ) -> tuple[dict[str, Any], dict[str, float]]:
        """Read the child's events until it closes them; returns the last (built or failed) and
        the seconds of each stage."""
        assert child.stdout is not None
        seconds: dict[str, float] = {}
        last: dict[str, Any] = {}
        async for raw in child.stdout:
            try:
                event = json.loads(raw)
            except ValueError:
                continue
            if event.get("event") == "stage":
                stage = str(event["stage"])
                if event.get("done"):
                    seconds[stage] = float(event["seconds"])
                done = sum(1 for s in STAGES if s in seconds)
                await self._table.stage(record.id, stage, done / len(STAGES), seconds)
            else:
                last = event
        return last, seconds

    async def _publish(
        self, record: BuildRecord, out: Path, log_path: Path, seconds: dict[str, float]
    ) -> None:
        await self._table.stage(record.id, "publish", (len(STAGES) - 1) / len(STAGES), seconds)
        start = time.perf_counter()
        try:
            target = await asyncio.to_thread(self._store.publish, out, record.name, record.version)
            seconds["publish"] = round(time.perf_counter() - start, 3)
            await self._table.stage(record.id, "publish", (len(STAGES) - 1) / len(STAGES), seconds)
        except Exception as exc:
            await self._table.finish(record.id, BuildState.FAILED, error=f"publishing failed: {exc}")
            _append(log_path, f"== failed to publish: {exc}\n")
            return
        manifest = json.loads((target / MANIFEST_NAME).read_text())
        if await self._table.finish(record.id, BuildState.SUCCEEDED, manifest=manifest):
            self._store.discard_upload(record.upload)  # the artifact keeps its own copy
        _append(log_path, f"== succeeded: published {record.name} version {record.version}\n")
        log.info("build %d published %s", record.id, target)


async def _stop(child: asyncio.subprocess.Process) -> None:
    """SIGTERM the child's process group, SIGKILL it after a grace, and reap the child."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.pid, sig)
        try:
            await asyncio.wait_for(child.wait(), _KILL_GRACE_S)
            break
        except asyncio.TimeoutError:
            continue
    with contextlib.suppress(ProcessLookupError):
        os.killpg(child.pid, signal.SIGKILL)  # tools that outlived the child


def _keep_tool_logs(staging: Path, log_path: Path, lines: int = 400) -> None:
    """Copy the tail of each tool log a failed build kept (`<out>.build-logs/`) into the build log."""
    for tool_log in sorted(staging.glob("*.build-logs/*.log")):
        tail = tool_log.read_text(errors="replace").splitlines()[-lines:]
        _append(log_path, f"== {tool_log.name} (last {len(tail)} lines)\n" + "\n".join(tail) + "\n")


def _append(path: Path, text: str) -> None:
    with path.open("a") as f:
        f.write(text)


def register(app: App, table: BuildTable, store: ArtifactStore, settings: WorkerSettings) -> None:
    """Give `app` the code of the build task (the server only knows its name): one `BuildRunner`
    per job, since jobs may run concurrently."""

    @app.task(
        name=TASK_NAME,
        queue=QUEUE,
        pass_context=True,
        retry=RetryStrategy(max_attempts=1000, retry_exceptions={WorkerShutdown}),
    )
    async def build_model(context: JobContext, build_id: int) -> None:
        await BuildRunner(table, store, settings).run(int(build_id), context)


async def retry_stalled(app: App, table: BuildTable, settings: WorkerSettings, interval_s: float) -> None:
    """Forever: put back in the queue every build job whose worker stopped sending heartbeats."""
    while True:
        await asyncio.sleep(interval_s)
        try:
            stalled = await app.job_manager.get_stalled_jobs(
                queue=QUEUE, task_name=TASK_NAME, seconds_since_heartbeat=settings.stalled_after_s
            )
            for job in stalled:
                log.warning("job %s (build %s) lost its worker: retrying it", job.id, job.task_kwargs)
                try:
                    await app.job_manager.retry_job(job)
                except Exception:  # another worker retried it first
                    continue
                await table.requeue(
                    int(str(job.task_kwargs["build_id"])), "its worker stopped sending heartbeats; retrying"
                )
        except Exception:
            log.exception("looking for stalled build jobs failed; trying again")


async def run_worker(settings: WorkerSettings) -> None:
    """Serve build jobs until SIGTERM/SIGINT (running builds are then aborted and retried later)."""
    conninfo = settings.conninfo()
    app = make_app(conninfo)
    await database.migrate(conninfo, app)
    store = DirectoryStore(settings.model_repository)
    async with app.open_async():
        table = BuildTable(app)
        register(app, table, store, settings)
        retrier = asyncio.create_task(retry_stalled(app, table, settings, max(1.0, settings.heartbeat_s)))
        log.info("worker %s: building from %s into %s", settings.worker_name, QUEUE, store.root)
        try:
            await app.run_worker_async(
                queues=[QUEUE],
                name=settings.worker_name,
                concurrency=settings.worker_concurrency,
                update_heartbeat_interval=settings.heartbeat_s,
                stalled_worker_timeout=settings.stalled_after_s,
                abort_job_polling_interval=settings.abort_poll_s,
                shutdown_graceful_timeout=0,
                install_signal_handlers=True,
            )
        finally:
            retrier.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await retrier
