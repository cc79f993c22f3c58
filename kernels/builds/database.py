"""fpgaas's own tables beside procrastinate's, and every query on them.

`fpgaas_builds`: one row per build (see `records.BuildRecord`). A partial unique index on
(name, version) over the queued, running and succeeded rows is what makes two uploads of one
(name, version) end in one build and one 409, whatever the timing. `fpgaas_versions`: the
versions an operator unloaded or retired (absent row: wanted); every server replica converges
on it. `migrate` applies procrastinate's schema and these tables once, under an advisory lock
so that servers and workers starting together do not race.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final, LiteralString

import psycopg
from procrastinate import App

from fpgaas.kernels.builds.errors import BuildNotFound
from fpgaas.kernels.builds.records import BuildRecord, BuildState

_MIGRATION_LOCK: Final = 0x6670_6761_6173  # "fpgaas": pg_advisory_lock key

SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS fpgaas_builds (
    id            bigserial PRIMARY KEY,
    name          text NOT NULL,
    version       text NOT NULL,
    state         text NOT NULL DEFAULT 'queued'
                  CHECK (state IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
    options       jsonb NOT NULL,
    upload        text NOT NULL,
    upload_sha256 text NOT NULL,
    upload_bytes  bigint NOT NULL,
    stage         text,
    progress      double precision NOT NULL DEFAULT 0,
    stage_seconds jsonb NOT NULL DEFAULT '{}'::jsonb,
    worker        text,
    attempts      integer NOT NULL DEFAULT 0,
    error         text,
    manifest      jsonb,
    job_id        bigint,
    created_at    timestamptz NOT NULL DEFAULT now(),
    started_at    timestamptz,
    finished_at   timestamptz
);
CREATE UNIQUE INDEX IF NOT EXISTS fpgaas_builds_one_live_version
    ON fpgaas_builds (name, version) WHERE state IN ('queued', 'running', 'succeeded');
CREATE TABLE IF NOT EXISTS fpgaas_versions (
    name       text NOT NULL,
    version    text NOT NULL,
    wanted     boolean NOT NULL,
    retired    boolean NOT NULL DEFAULT false,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (name, version)
);
"""

_COLUMNS: Final = (
    "id, name, version, state, options, upload, upload_sha256, upload_bytes, stage, progress, "
    "stage_seconds, worker, attempts, error, manifest, job_id, created_at, started_at, finished_at"
)


async def migrate(conninfo: str, app: App) -> None:
    """Create procrastinate's schema (if absent) and fpgaas's tables, once per database."""
    async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as conn:
        await conn.execute("SELECT pg_advisory_lock(%s)", (_MIGRATION_LOCK,))
        try:
            cursor = await conn.execute("SELECT to_regclass('procrastinate_jobs') IS NOT NULL")
            row = await cursor.fetchone()
            if not (row and row[0]):
                await conn.execute(app.schema_manager.get_schema())
            await conn.execute(SCHEMA)
        finally:
            await conn.execute("SELECT pg_advisory_unlock(%s)", (_MIGRATION_LOCK,))


# The build metrics' query (`BuildTable.statistics`): per state, how many builds, and for the
# finished ones that started, their duration (started_at -> finished_at, the last attempt)
# counted against each histogram bound (`<=`, Prometheus' `le`) and summed.
_STATISTICS: Final = """
WITH builds AS (
    SELECT state, created_at,
           extract(epoch FROM finished_at - started_at)::double precision AS seconds
    FROM fpgaas_builds
)
SELECT state,
       count(*) AS builds,
       count(seconds) AS timed,
       coalesce(sum(seconds), 0)::double precision AS seconds,
       coalesce(extract(epoch FROM now() - min(created_at)), 0)::double precision AS oldest_s,
       coalesce((SELECT array_agg(n ORDER BY bound) FROM (
           SELECT bound, count(*) FILTER (WHERE b.seconds <= bound) AS n
           FROM builds b, unnest(%(bounds)s::double precision[]) AS bound
           WHERE b.state = builds.state GROUP BY bound) AS per_bound), '{}') AS le_counts
FROM builds GROUP BY state
"""


@dataclass(frozen=True)
class StateStatistics:
    """The builds of one state: how many, and (finished ones that started) their durations."""

    builds: int
    oldest_s: float  # age of the oldest build in this state (from its creation), seconds
    timed: int = 0  # builds with a duration
    seconds: float = 0.0  # their durations' sum
    le_counts: tuple[int, ...] = ()  # per histogram bound: timed builds that took <= it


@dataclass(frozen=True)
class BuildStatistics:
    """`fpgaas_builds` summed up at one moment; states without a build are absent."""

    bounds: tuple[float, ...]
    states: dict[BuildState, StateStatistics] = field(default_factory=dict)

    def of(self, state: BuildState) -> StateStatistics:
        return self.states.get(state, StateStatistics(0, 0.0, le_counts=(0,) * len(self.bounds)))


class BuildTable:
    """Queries on `fpgaas_builds` and `fpgaas_versions` through an open procrastinate App's pool."""

    def __init__(self, app: App) -> None:
        self._connector: Any = app.connector

    async def _all(self, query: LiteralString, **args: Any) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = await self._connector.execute_query_all_async(query, **args)
        return rows

    async def get(self, build_id: int) -> BuildRecord:
        rows = await self._all(f"SELECT {_COLUMNS} FROM fpgaas_builds WHERE id = %(id)s", id=build_id)
        if not rows:
            raise BuildNotFound(f"there is no build {build_id}", field="build_id")
        return BuildRecord.from_row(rows[0])

    async def list_builds(self, name: str | None = None, limit: int = 200) -> list[BuildRecord]:
        rows = await self._all(
            f"SELECT {_COLUMNS} FROM fpgaas_builds WHERE %(name)s::text IS NULL OR name = %(name)s "
            "ORDER BY id DESC LIMIT %(limit)s",
            name=name,
            limit=limit,
        )
        return [BuildRecord.from_row(r) for r in rows]

    async def live_versions(self, name: str) -> list[str]:
        """Versions of `name` queued, running or built (their numbers are taken)."""
        rows = await self._all(
            "SELECT version FROM fpgaas_builds WHERE name = %(name)s "
            "AND state IN ('queued', 'running', 'succeeded')",
            name=name,
        )
        return [r["version"] for r in rows]

    async def succeeded(self) -> list[BuildRecord]:
        rows = await self._all(f"SELECT {_COLUMNS} FROM fpgaas_builds WHERE state = 'succeeded' ORDER BY id")
        return [BuildRecord.from_row(r) for r in rows]

    async def unfinished(self) -> list[BuildRecord]:
        rows = await self._all(
            f"SELECT {_COLUMNS} FROM fpgaas_builds WHERE state IN ('queued', 'running') ORDER BY id"
        )
        return [BuildRecord.from_row(r) for r in rows]

    async def start(self, build_id: int, worker: str) -> BuildRecord | None:
        """Mark a queued (or retried running) build running on `worker`; None if it is finished."""
        rows = await self._all(
            "UPDATE fpgaas_builds SET state = 'running', worker = %(worker)s, attempts = attempts + 1, "
            "started_at = now(), stage = NULL, progress = 0, stage_seconds = '{}'::jsonb, error = NULL "
            f"WHERE id = %(id)s AND state IN ('queued', 'running') RETURNING {_COLUMNS}",
            id=build_id,
            worker=worker,
        )
        return BuildRecord.from_row(rows[0]) if rows else None

    async def requeue(self, build_id: int, why: str) -> None:
        """A running build whose worker stopped or died goes back to queued (its job is retried)."""
        await self._all(
            "UPDATE fpgaas_builds SET state = 'queued', stage = NULL, error = %(why)s "
            "WHERE id = %(id)s AND state = 'running' RETURNING id",
            id=build_id,
            why=why,
        )

    async def stage(
        self, build_id: int, stage: str, progress: float, stage_seconds: dict[str, float]
    ) -> None:
        await self._all(
            "UPDATE fpgaas_builds SET stage = %(stage)s, progress = %(progress)s, "
            "stage_seconds = %(seconds)s WHERE id = %(id)s AND state = 'running' RETURNING id",
            id=build_id,
            stage=stage,
            progress=progress,
            seconds=stage_seconds,
        )

    async def finish(
        self,
        build_id: int,
        state: BuildState,
        *,
        error: str | None = None,
        manifest: dict[str, Any] | None = None,
    ) -> bool:
        """Move a queued or running build to a final state; False if it had one already."""
        rows = await self._all(
            "UPDATE fpgaas_builds SET state = %(state)s, error = %(error)s, manifest = %(manifest)s, "
            "progress = CASE WHEN %(state)s = 'succeeded' THEN 1 ELSE progress END, finished_at = now() "
            "WHERE id = %(id)s AND state IN ('queued', 'running') RETURNING id",
            id=build_id,
            state=state.value,
            error=error,
            manifest=manifest,
        )
        return bool(rows)

    async def statistics(self, bounds: tuple[float, ...]) -> BuildStatistics:
        """Builds per state and finished builds' durations against `bounds` (ascending seconds),
        in one query (an aggregate over the table: what the build metrics export)."""
        rows = await self._all(_STATISTICS, bounds=list(bounds))
        states = {
            BuildState(r["state"]): StateStatistics(
                builds=int(r["builds"]),
                oldest_s=max(0.0, float(r["oldest_s"])),
                timed=int(r["timed"]),
                seconds=float(r["seconds"]),
                le_counts=tuple(int(n) for n in r["le_counts"]) or (0,) * len(bounds),
            )
            for r in rows
        }
        return BuildStatistics(bounds, states)

    async def wanted(self) -> dict[tuple[str, str], tuple[bool, bool]]:
        """(name, version) -> (wanted, retired) for every version an operator changed."""
        rows = await self._all("SELECT name, version, wanted, retired FROM fpgaas_versions")
        return {(r["name"], r["version"]): (r["wanted"], r["retired"]) for r in rows}

    async def want(self, name: str, version: str, wanted: bool, retired: bool = False) -> None:
        await self._all(
            "INSERT INTO fpgaas_versions (name, version, wanted, retired) "
            "VALUES (%(name)s, %(version)s, %(wanted)s, %(retired)s) "
            "ON CONFLICT (name, version) DO UPDATE SET wanted = EXCLUDED.wanted, "
            "retired = EXCLUDED.retired, updated_at = now() RETURNING name",
            name=name,
            version=version,
            wanted=wanted,
            retired=retired,
        )
