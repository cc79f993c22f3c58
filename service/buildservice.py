"""What the management API holds while the server runs: the build queue, the artifact store and
the repository sync, and the build-queue metrics. Opened by the app's lifespan when `settings.management` is on.

The database is `settings.database_url`, or the embedded PostgreSQL under `state_dir` (which
`fpgaas serve --embedded` / `fpgaas db start` started); the store is the model repository.
"""

from __future__ import annotations

from dataclasses import dataclass

from fpgaas.kernels.builds.postgres import EmbeddedPostgres
from fpgaas.kernels.builds.queue import ProcrastinateQueue
from fpgaas.kernels.builds.store import DirectoryStore
from fpgaas.service.batching import BatchPolicy
from fpgaas.service.build_metrics import BuildMetrics
from fpgaas.service.dataplane import DataPlane
from fpgaas.service.hotload import RepositorySync
from fpgaas.service.registry import ModelRegistry
from fpgaas.service.settings import Settings


def conninfo(settings: Settings) -> str:
    return settings.database_url or EmbeddedPostgres(settings.state_dir / "postgres").conninfo


@dataclass
class BuildService:
    settings: Settings
    queue: ProcrastinateQueue
    store: DirectoryStore
    sync: RepositorySync
    metrics: BuildMetrics  # appended to `/metrics`, read from the builds table at each scrape

    @classmethod
    async def open(
        cls, settings: Settings, dataplane: DataPlane, registry: ModelRegistry, policy: BatchPolicy
    ) -> BuildService:
        queue = await ProcrastinateQueue.open(conninfo(settings))
        store = DirectoryStore(settings.model_repository)
        sync = RepositorySync(
            dataplane, registry, store, queue.table, policy, settings.max_batch, settings.repository_poll_s
        )
        # Once before the first request: versions unloaded or retired by an operator (which the
        # repository scan at start loaded like any other) are dropped before anything is served.
        await sync.sync()
        sync.start()
        return cls(settings, queue, store, sync, BuildMetrics(queue.table))

    async def close(self) -> None:
        await self.sync.close()
        await self.queue.close()
