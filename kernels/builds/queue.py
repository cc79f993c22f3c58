"""The job contract: procrastinate's App, the build task's name and arguments, the `BuildQueue` seam.

The task `fpgaas.build` (queue `builds`) takes one argument, `build_id`, the row of
`fpgaas_builds` that says what to build. It is deferred with `lock` and `queueing_lock`
`"<name>/<version>"`, so one (name, version) is never queued twice nor built by two workers at
once, in the same transaction that inserts the row: a build row without its job (or the other
way round) cannot exist. The worker side (`fpgaas.builder.worker`) registers the task's code;
the server only defers by name.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Final, Protocol

import psycopg
from procrastinate import App, PsycopgConnector
from psycopg.rows import dict_row

from fpgaas.kernels.builds import database
from fpgaas.kernels.builds.database import BuildTable
from fpgaas.kernels.builds.errors import Conflict
from fpgaas.kernels.builds.records import BuildOptions, BuildRecord, BuildState, check_name

log = logging.getLogger(__name__)

TASK_NAME: Final = "fpgaas.build"
QUEUE: Final = "builds"
_VERSION_ATTEMPTS: Final = 8  # concurrent uploads without a version each take the next free one


def make_app(conninfo: str) -> App:
    """A procrastinate App on the PostgreSQL at `conninfo` (open it with `open_async`)."""
    return App(connector=PsycopgConnector(conninfo=conninfo, min_size=1, max_size=4))


def lock_of(name: str, version: str) -> str:
    return f"{name}/{version}"


class BuildQueue(Protocol):
    """What the server asks of the build queue."""

    async def submit(
        self,
        name: str,
        version: str | None,
        options: BuildOptions,
        upload: str,
        sha256: str,
        size: int,
        taken: list[str],
    ) -> BuildRecord: ...
    async def get(self, build_id: int) -> BuildRecord: ...
    async def list_builds(self, name: str | None = None) -> list[BuildRecord]: ...
    async def cancel(self, build_id: int) -> BuildRecord: ...


class ProcrastinateQueue:
    """`BuildQueue` on procrastinate; `table` reads the records. Use inside an opened App."""

    def __init__(self, app: App) -> None:
        self.app = app
        self.table = BuildTable(app)

    @classmethod
    async def open(cls, conninfo: str) -> ProcrastinateQueue:
        """Migrate the database (first time) and open the pool; close with `close`."""
        app = make_app(conninfo)
        await database.migrate(conninfo, app)
        await app.open_async()
        return cls(app)

    async def close(self) -> None:
        await self.app.close_async()

    async def submit(
        self,
        name: str,
        version: str | None,
        options: BuildOptions,
        upload: str,
        sha256: str,
        size: int,
        taken: list[str],
    ) -> BuildRecord:
        """Insert the build and defer its job in one transaction. `version` None: the next integer
        after every version taken (`taken`: the store's; the database's are added here).
        Raises Conflict when the (name, version) exists or is being built."""
        check_name(name, "name")
        for attempt in range(_VERSION_ATTEMPTS):
            chosen = version
            if chosen is None:
                numbers = [int(v) for v in [*taken, *await self.table.live_versions(name)] if v.isdigit()]
                chosen = str(max(numbers, default=0) + 1 + attempt)
            check_name(chosen, "version")
            if chosen in taken:
                raise Conflict(f"{name} version {chosen} exists already", field="version")
            try:
                return await self._insert(name, chosen, options, upload, sha256, size)
            except psycopg.errors.UniqueViolation as exc:
                if version is not None:
                    raise Conflict(
                        f"{name} version {chosen} exists already or is being built", field="version"
                    ) from exc
        raise Conflict(f"no free version of {name} after {_VERSION_ATTEMPTS} tries", field="version")

    async def _insert(
        self, name: str, version: str, options: BuildOptions, upload: str, sha256: str, size: int
    ) -> BuildRecord:
        connector: Any = self.app.connector
        lock = lock_of(name, version)
        async with connector.pool.connection() as conn, conn.transaction():
            cursor = conn.cursor(row_factory=dict_row)
            await cursor.execute(
                "INSERT INTO fpgaas_builds (name, version, options, upload, upload_sha256, upload_bytes) "
                "VALUES (%s, %s, %s, %s, %s, %s) RETURNING id",
                (name, version, psycopg.types.json.Jsonb(options.to_json()), upload, sha256, size),
            )
            row = await cursor.fetchone()
            assert row is not None
            build_id = int(row["id"])
            deferrer = self.app.configure_task(TASK_NAME, queue=QUEUE, lock=lock, queueing_lock=lock)
            job = await self.app.job_manager.defer_job_async(
                deferrer.make_new_job(build_id=build_id), connection=conn
            )
            await cursor.execute("UPDATE fpgaas_builds SET job_id = %s WHERE id = %s", (job.id, build_id))
        log.info("build %d of %s version %s queued (job %s)", build_id, name, version, job.id)
        return await self.table.get(build_id)

    async def get(self, build_id: int) -> BuildRecord:
        return await self.table.get(build_id)

    async def list_builds(self, name: str | None = None) -> list[BuildRecord]:
        return await self.table.list_builds(name)

    async def cancel(self, build_id: int) -> BuildRecord:
        """Cancel a queued build at once, or ask the worker of a running one to abort it (its
        tool processes are stopped, its staging directory removed, then it reads cancelled).
        Raises Conflict for a finished build."""
        record = await self.table.get(build_id)
        if record.state.finished:
            raise Conflict(f"build {build_id} is {record.state.value} already", field="build_id")
        manager = self.app.job_manager
        # A queued job is cancelled outright; once a worker holds it, it is asked to abort.
        if record.job_id is not None and not await manager.cancel_job_by_id_async(record.job_id):
            await manager.cancel_job_by_id_async(record.job_id, abort=True)
            return await self.table.get(build_id)
        await self.table.finish(build_id, BuildState.CANCELLED, error="cancelled before it started")
        return await self.table.get(build_id)


async def wait_for(queue: BuildQueue, build_id: int, timeout_s: float, poll_s: float = 0.2) -> BuildRecord:
    """Poll until the build is finished (for callers without a client), or TimeoutError."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        record = await queue.get(build_id)
        if record.state.finished:
            return record
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError(f"build {build_id} is still {record.state.value} after {timeout_s} s")
        await asyncio.sleep(poll_s)
