"""Where a request body is parsed: on the event loop, on a thread, or in a parser process.

orjson and pydantic parse with the GIL held, so a worker thread keeps the event loop free only in
name: a 15 MB `/predict` body holds the GIL ~150 ms on one core of our box, and every other
request on the loop (and the device worker threads) waits that long. Bodies of at least
`process_bytes` are therefore parsed in a small pool of parser processes, where they cost another
core's time (or, on a saturated core, a fair share of it) instead of a stall. Smaller bodies are
parsed inline (under `THREAD_BYTES`, where a hand-off costs more than the parse) or on a thread.

The parser functions are the same module-level functions the loop would run
(`parse_json_predict`, `v2.codec.decode`); what they raise on purpose (`FpgaasError`, e.g. a
BadInput naming `inputs[50000][3]`) is carried back and raised here, so a client gets the same
answer from every path. A parser process that dies (killed, out of memory) is replaced and the
body is parsed again on a thread: nothing accepted is lost.

Lifetime: one per app; `start` early in the lifespan (spawns the processes, which import the
parsers while the models load), `ready` before the server reports ready (so that their imports,
~2-4 s of CPU, do not share the serving core with the first requests: measured, a 65,536-row
request took 146 ms instead of 101 ms in the first seconds after /readyz), `close` at its end.
Processes are spawned, never forked, because the server has threads by then.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any, TypeVar

from fpgaas.kernels.errors import FpgaasError

log = logging.getLogger(__name__)

T = TypeVar("T")

THREAD_BYTES = 64 * 1024  # parsing this much JSON takes ~0.3 ms: worth a thread hop beyond


@dataclass(frozen=True)
class _Refusal:
    """A deliberate error raised in a parser process, as data (exceptions with keyword-only
    fields do not survive pickling)."""

    kind: type[FpgaasError]
    message: str
    field: str | None


def _parse_in_child(parse: Callable[..., Any], *args: Any) -> Any:
    try:
        return parse(*args)
    except FpgaasError as exc:
        return _Refusal(type(exc), exc.message, exc.field)


def _ready() -> bool:
    """Run once in each new parser process: imports the parsers before the first large body."""
    import fpgaas.service.api.payload
    import fpgaas.service.api.v2.codec  # noqa: F401

    return True


class BodyParsers:
    """Runs a parser over a request body where it costs the other requests least."""

    def __init__(self, processes: int, process_bytes: int) -> None:
        self._processes = processes
        self._process_bytes = process_bytes
        self._pool: ProcessPoolExecutor | None = None
        self._warming: list[Future[bool]] = []

    def start(self) -> None:
        """Spawn the parser processes (in the background); no-op with 0 processes."""
        if self._processes > 0 and self._pool is None:
            self._pool = self._new_pool()

    async def ready(self, timeout_s: float = 60.0) -> None:
        """Wait until every parser process `start` spawned has imported the parsers. A process that
        does not get there within `timeout_s`, or fails to, is logged; large bodies then wait for
        it or go to a thread (see `run`): the server still starts."""
        warming, self._warming = self._warming, []
        if not warming:
            return
        try:
            async with asyncio.timeout(timeout_s):
                await asyncio.gather(*(asyncio.wrap_future(f) for f in warming))
        except (TimeoutError, BrokenProcessPool, OSError) as exc:
            log.warning(
                "body parser processes not ready (%s); large bodies may wait for them", exc or "timeout"
            )

    def _new_pool(self) -> ProcessPoolExecutor:
        pool = ProcessPoolExecutor(self._processes, mp_context=multiprocessing.get_context("spawn"))
        # One _ready per process: ProcessPoolExecutor spawns a process per task queued, up to its size.
        self._warming = [pool.submit(_ready) for _ in range(self._processes)]
        return pool

    async def run(
        self, parse: Callable[..., T], body: bytes, *args: Any, in_process: Callable[..., T] | None = None
    ) -> T:
        """parse(body, *args), inline, on a thread or in a parser process by len(body);
        `in_process`: the variant a parser process runs instead (whose result costs less to send
        back)."""
        if len(body) < THREAD_BYTES:
            return parse(body, *args)
        pool = self._pool
        if pool is None or len(body) < self._process_bytes:
            return await asyncio.to_thread(parse, body, *args)
        try:
            result = await asyncio.get_running_loop().run_in_executor(
                pool, _parse_in_child, in_process or parse, body, *args
            )
        except BrokenProcessPool:
            log.warning("a body parser process died; replacing it and parsing this body on a thread")
            if self._pool is pool:
                self._pool = self._new_pool()
            return await asyncio.to_thread(parse, body, *args)
        if isinstance(result, _Refusal):
            raise result.kind(result.message, field=result.field)
        return result

    def close(self) -> None:
        """Stop the parser processes; a body still in one is answered by its caller's error."""
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)

    @property
    def pids(self) -> list[int]:
        """Process ids of the parser processes running now (for tests and operators)."""
        pool = self._pool
        processes = getattr(pool, "_processes", None) or {}
        return sorted(int(pid) for pid in processes)
