"""Large JSON bodies against everyone else's latency: parser processes against a worker thread.

    python benchmarks/bench_large_body.py [--repository model_repository] [--out docs/benchmarks]

Starts fpgaas twice, with `FPGAAS_JSON_PARSE_PROCESSES=1` (the default: JSON bodies of 1 MiB or
more are parsed in a parser process) and `=0` (they are parsed on a worker thread, which still
holds the GIL: orjson and pydantic do not release it). Each is pinned to the first core, parser
process included (it inherits the affinity: the worst case, one core shared by everything), and
gets single-row JSON `/predict` requests from wrk (`-t1 -c8`, second core) for `--seconds`, first
alone, then while a client on the second core posts 15 MB JSON `/predict` bodies (50,000 rows)
one after the other. Reports the small requests' rps, p50, p90 and p99, and the large requests'
median time, and writes `<out>/large_body.md`.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.httpbench.cases import MODEL, inputs, predict_json  # noqa: E402
from benchmarks.httpbench.procs import Cores, free_port, running  # noqa: E402
from benchmarks.httpbench.servers import fpgaas_spec  # noqa: E402
from benchmarks.httpbench.wrk import WrkResult, lua_script, run_wrk, wrk_command  # noqa: E402

LARGE_ROWS = 50_000


@dataclass(frozen=True)
class Row:
    setting: str
    load: str
    small: WrkResult
    large_s: tuple[float, ...]


def _large_loop(url: str, body: bytes, stop: threading.Event, times: list[float], core: int) -> None:
    os.sched_setaffinity(0, {core})  # this thread only (Linux: affinity is per thread)
    with httpx.Client(base_url=url, timeout=60) as client:
        while not stop.is_set():
            start = time.perf_counter()
            answer = client.post("/predict", content=body, headers={"content-type": "application/json"})
            if answer.status_code != 200:
                raise SystemExit(f"a large request got {answer.status_code}: {answer.text[:300]}")
            times.append(time.perf_counter() - start)


def _measure(
    url: str, script: Path, seconds: int, core: int, large: bytes | None
) -> tuple[WrkResult, list[float]]:
    argv = ["taskset", "-c", str(core), *wrk_command(url + "/predict", script, 8, seconds, 10)]
    times: list[float] = []
    stop = threading.Event()
    loop = None
    if large is not None:
        loop = threading.Thread(target=_large_loop, args=(url, large, stop, times, core), daemon=True)
        loop.start()
        time.sleep(0.5)
    try:
        result = run_wrk(argv, wall_timeout_s=seconds + 60)
    finally:
        stop.set()
        if loop is not None:
            loop.join(120)
    return result, times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repository", type=Path, default=REPO / "model_repository")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "benchmarks")
    parser.add_argument("--seconds", type=int, default=10)
    args = parser.parse_args()
    cores = Cores.pick()
    small = predict_json(inputs(1, seed=1))
    large = predict_json(inputs(LARGE_ROWS, seed=2)).body
    rows: list[Row] = []
    started = dt.datetime.now(dt.UTC)
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "small.lua"
        (Path(tmp) / "small.body").write_bytes(small.body)
        script.write_text(lua_script(Path(tmp) / "small.body", small.content_type))
        for processes in ("1", "0"):
            spec = fpgaas_spec(
                "fpgaas",
                args.repository,
                "",
                json_parse_processes=processes,
                max_queue_rows=str(4 * LARGE_ROWS),
                max_queue_delay_ms="60000",
            )
            port = free_port()
            with running(
                f"fpgaas-parsers-{processes}",
                spec.argv(port),
                port=port,
                ready_path=spec.ready_path,
                core=cores.server,
                log_dir=Path(tmp),
                env=spec.environment(),
            ) as server:
                setting = "parser process" if processes == "1" else "worker thread"
                for _ in range(3):  # warm-up: the parser process imports, the batcher calibrates
                    httpx.post(
                        server.url + "/predict",
                        content=large,
                        headers={"content-type": small.content_type},
                        timeout=60,
                    )
                _measure(server.url, script, 2, cores.load, None)
                for load, body in (("alone", None), (f"with {LARGE_ROWS:,}-row JSON bodies", large)):
                    result, times = _measure(server.url, script, args.seconds, cores.load, body)
                    rows.append(Row(setting, load, result, tuple(times)))
    lines = [
        "# Large JSON bodies: parser processes against a worker thread",
        "",
        f"`python benchmarks/bench_large_body.py`, {started:%Y-%m-%d %H:%M} UTC, {os.cpu_count()} CPUs; "
        f"fpgaas serving {MODEL} on core {cores.server} (its parser process too), wrk `-t1 -c8` and the "
        f"large-body client on core {cores.load}. Small: single-row JSON `/predict` ({len(small.body)} B); "
        f"large: {LARGE_ROWS:,}-row JSON `/predict` ({len(large) / 1e6:.1f} MB), posted one after another.",
        "",
        "| large JSON parsed on | load | small rps | small p50 ms | small p90 ms | small p99 ms | large requests | large median s |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        w = row.small
        median = f"{statistics.median(row.large_s):.3f}" if row.large_s else "-"
        lines.append(
            f"| {row.setting} | {row.load} | {w.ok_per_s:,.0f} | {w.p50_ms:.2f} | {w.p90_ms:.2f} | {w.p99_ms:.2f} | "
            f"{len(row.large_s)} | {median} |"
        )
    lines += [
        "",
        "Errors (non-2xx and socket errors) of the small requests: "
        + ", ".join(f"{r.setting} {r.load}: {r.small.errors}" for r in rows)
        + ".",
        "",
    ]
    text = "\n".join(lines)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "large_body.md").write_text(text)
    (args.out / "large_body.json").write_text(
        json.dumps(
            [
                {"setting": r.setting, "load": r.load, "small": r.small.__dict__, "large_s": r.large_s}
                for r in rows
            ],
            indent=1,
            default=str,
        )
    )
    print(text)


if __name__ == "__main__":
    main()
