"""Hot load: every server converges on the versions the artifact store holds and operators want.

A poll, every `repository_poll_s` (default 1 s): the store's directory listing and the database's
`fpgaas_versions` (what was unloaded or retired). A poll rather than LISTEN/NOTIFY because the
store is the truth (an artifact exists once its rename is done, whichever worker did it), a poll
cannot miss an event across a database or server restart, and it costs one directory listing
and one small query a second per server. Several replicas converge on the same set because
they all read the same two sources.

A new version is verified (signature, then hashes), placed on devices and self-checked bit-exact
on each device it will serve from (`fpgaas.service.selfcheck`), in a thread; only then is it
served, and it becomes the model's default only if it is the highest version. A version no
longer wanted is removed: new requests for it get 404, those it accepted are answered, then its
kernels close. A version that fails is remembered as refused (artifacts are immutable) until
it is loaded explicitly again.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from dataclasses import dataclass

from fpgaas.kernels.artifact import Artifact
from fpgaas.kernels.builds.database import BuildTable
from fpgaas.kernels.builds.store import ArtifactStore
from fpgaas.kernels.errors import FpgaasError
from fpgaas.service.batching import BatchPolicy
from fpgaas.service.dataplane import DataPlane
from fpgaas.service.registry import ModelRegistry, Replica
from fpgaas.service.selfcheck import self_check

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class VersionState:
    """A version as `POST /v2/repository/index` reports it."""

    name: str
    version: str
    state: str  # READY, UNAVAILABLE, LOADING or BUILDING
    reason: str


class RepositorySync:
    """The poll loop of one server; `start` in the running loop, `close` at shutdown."""

    def __init__(
        self,
        dataplane: DataPlane,
        registry: ModelRegistry,
        store: ArtifactStore,
        table: BuildTable,
        policy: BatchPolicy,
        max_batch: int,
        poll_s: float,
    ) -> None:
        self._dataplane = dataplane
        self._registry = registry
        self._store = store
        self._table = table
        self._policy = policy
        self._max_batch = max_batch
        self._poll_s = poll_s
        self._loading: set[tuple[str, str]] = set()
        # What the registry refused at start counts as tried: artifacts do not change.
        self.refused: dict[tuple[str, str], str] = {
            (r.path.parent.name, r.path.name): r.reason for r in registry.refused
        }
        self.unwanted: dict[tuple[str, str], str] = {}
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="repository-sync")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            try:
                await self.sync()
            except Exception:
                log.exception("repository sync failed; trying again in %.1f s", self._poll_s)
            await asyncio.sleep(self._poll_s)

    def forget_refusal(self, name: str, version: str | None = None) -> None:
        """An explicit load tries a refused version again."""
        for key in [k for k in self.refused if k[0] == name and version in (None, k[1])]:
            del self.refused[key]

    async def sync(self) -> None:
        """One convergence step (also called by the load/unload routes, to answer when done)."""
        async with self._lock:
            wanted = await self._table.wanted()
            present = set(await asyncio.to_thread(self._store.models))
            self.unwanted = {
                key: ("retired" if retired else "unloaded by an operator")
                for key, (want, retired) in wanted.items()
                if not want or retired
            }
            desired = present - set(self.unwanted)
            loaded = self._dataplane.loaded()
            for name, version in sorted(loaded - desired):
                log.info(
                    "unloading %s version %s (%s)", name, version, self.unwanted.get((name, version), "gone")
                )
                await self._dataplane.remove(name, version)
            missing = sorted(desired - loaded - set(self.refused))
            if missing:
                # An upload's max_batch (rows per device call) caps the server's.
                asked = {(r.name, r.version): r.options.max_batch for r in await self._table.succeeded()}
                for key in missing:
                    await self._load(*key, min(self._max_batch, asked.get(key) or self._max_batch))

    async def _load(self, name: str, version: str, max_batch: int) -> None:
        key = (name, version)
        self._loading.add(key)
        try:
            model = await asyncio.to_thread(
                functools.partial(self._registry.prepare, check=_check),
                self._store.artifact_dir(name, version),
                max_batch,
            )
        except FpgaasError as exc:
            log.error("not serving %s version %s: %s", name, version, exc.message)
            self.refused[key] = exc.message
            return
        finally:
            self._loading.discard(key)
        self._dataplane.add(model, self._policy)

    def states(self) -> list[VersionState]:
        """Every version this server knows of, loaded or not, with its state and why."""
        loaded = self._dataplane.loaded()
        states: dict[tuple[str, str], VersionState] = {}
        for key in self._store.models():
            if key in loaded:
                states[key] = VersionState(*key, "READY", "")
            elif key in self._loading:
                states[key] = VersionState(*key, "LOADING", "verifying, placing and self-checking")
            elif key in self.unwanted:
                states[key] = VersionState(*key, "UNAVAILABLE", self.unwanted[key])
            elif key in self.refused:
                states[key] = VersionState(*key, "UNAVAILABLE", self.refused[key])
            else:
                states[key] = VersionState(*key, "UNAVAILABLE", "not loaded yet")
        for key in loaded - set(states):
            states[key] = VersionState(*key, "READY", "")
        return [states[k] for k in sorted(states)]


def _check(artifact: Artifact, replica: Replica) -> None:
    self_check(artifact, replica.kernel, replica.device.info.name)
