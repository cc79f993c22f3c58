"""HTTP benchmark: fpgaas against a bare-ASGI ceiling, naive FastAPI and KServe, in one run.

    python benchmarks/bench_http.py [--quick] [--out docs/benchmarks] [--note TEXT]...

Starts every server itself, each on a free 127.0.0.1 port pinned to the first CPU core, and drives
it with wrk (`-t1 -cN`, N in 1, 8, 64, 256) pinned to the second; every point is a warm-up run then
a measured run, in three rounds that each go through every server (default 2 s + 3 s, later rounds
1 s + 3 s; the round with the median p50 is reported, with every round's p50; `--quick`: one round
of 1 s + 1 s, about 3 minutes in all; full: about 20 minutes; a first run adds ~1 minute to create
the KServe virtualenv). Servers (see `httpbench/servers.py`):

    fpgaas          `fpgaas serve`, emulated device (the CPU twin of the kernel), default settings
    fpgaas-pynq     the same with FPGAAS_DEVICE=pynq FPGAAS_PYNQ_EMULATED_CARDS=2
    bare-asgi       benchmarks/peers/bare_asgi.py: raw ASGI + uvicorn(httptools, uvloop) + orjson
    fastapi-naive   benchmarks/peers/naive_fastapi.py: FastAPI + pydantic + numpy per request
    kserve          benchmarks/peers/kserve_server.py: KServe's ModelServer, in .venv-kserve
                    (created with python3 -m venv + pip on first run; if that fails, the report says why)

Cases: single-row JSON `/predict`, single-row v2 JSON infer, single-row binary `/predict`, and a
1,024-row binary request; each server runs those it speaks. fpgaas also answers KServe v2 over
gRPC (Triton's ModelInfer, what SONIC sends) on its gRPC port: a single row and the same 1,024
rows in `raw_input_contents`, driven by h2load (nghttp2's C HTTP/2 load generator, `httpbench/h2load.py`;
wrk speaks HTTP/1.1 only): N streams in flight on one connection, as one gRPC channel, on wrk's core. Then 65,536-row binary requests (an
httpx loop, c=1) against fpgaas (max_batch 1024, and a second instance with FPGAAS_MAX_BATCH=65536),
fpgaas-pynq and bare-asgi, next to the engine's own samples/s measured in this process on the
server's core. Writes `<out>/http.md` (tables, targets PASS/MISS, notes) and `<out>/http.png`, and
prints the markdown. Every server is stopped (SIGTERM, then SIGKILL) before it returns, also on errors.
"""

from __future__ import annotations

import os

# The engine measured in this process gets one BLAS thread, like the single-core server; the
# servers get the environment as it was (see _SERVER_ENV).
_SERVER_ENV = dict(os.environ)
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import datetime as dt  # noqa: E402
import shlex  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Sequence  # noqa: E402
from contextlib import ExitStack  # noqa: E402
from pathlib import Path  # noqa: E402

import httpx  # noqa: E402
import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.httpbench import environment, h2load  # noqa: E402
from benchmarks.httpbench.cases import MODEL, Case, inputs, is_grpc, make_cases, predict_binary  # noqa: E402
from benchmarks.httpbench.measure import (  # noqa: E402
    BigRun,
    LoadPlan,
    Point,
    big_requests,
    engine_samples_per_s,
    first_problem,
    grpc_first_problem,
    measure_grpc_point,
    measure_point,
    median_round,
)
from benchmarks.httpbench.procs import Cores, Server, ServerError, free_port, running  # noqa: E402
from benchmarks.httpbench.report import Run, markdown, plot  # noqa: E402
from benchmarks.httpbench.servers import (  # noqa: E402
    BARE,
    FPGAAS,
    FPGAAS_BIG,
    FPGAAS_PYNQ,
    KSERVE,
    ServerSpec,
    all_specs,
    ensure_kserve_venv,
    fpgaas_spec,
)
from benchmarks.httpbench.targets import evaluate  # noqa: E402
from benchmarks.httpbench.wrk import lua_script  # noqa: E402

CONCURRENCY = (1, 8, 64, 256)
BIG_ROWS = 65536


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 s warm-up + 1 s per point, 3 large requests")
    parser.add_argument("--warmup", type=int, default=None, help="warm-up seconds per point (default 2)")
    parser.add_argument("--duration", type=int, default=None, help="measured seconds per round (default 3)")
    parser.add_argument(
        "--rounds",
        type=int,
        default=None,
        help="interleaved rounds per point, the median one reported (default 3; --quick: 1)",
    )
    parser.add_argument("--concurrency", type=int, nargs="+", default=list(CONCURRENCY))
    parser.add_argument("--servers", nargs="+", default=None, help="a subset of the servers (default: all)")
    parser.add_argument("--big-requests", type=int, default=None, help="65,536-row requests per server (10)")
    parser.add_argument("--repository", type=Path, default=REPO / "model_repository")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "benchmarks", help="where http.md/png go")
    parser.add_argument("--note", action="append", default=[], help="a note for http.md (repeatable)")
    args = parser.parse_args(argv)
    args.warmup = args.warmup if args.warmup is not None else (1 if args.quick else 2)
    args.duration = args.duration if args.duration is not None else (1 if args.quick else 3)
    args.rounds = args.rounds if args.rounds is not None else (1 if args.quick else 3)
    args.big_requests = args.big_requests if args.big_requests is not None else (3 if args.quick else 10)
    if args.duration < 1 or args.warmup < 0 or args.rounds < 1 or min(args.concurrency) < 1:
        parser.error(
            "--duration >= 1, --warmup >= 0 (whole seconds, as wrk takes them), --rounds >= 1 and "
            "--concurrency >= 1"
        )
    return args


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def start(
    spec: ServerSpec, stack: ExitStack, cores: Cores, logs: Path, unavailable: dict[str, str]
) -> Server | None:
    """Start `spec` for the rest of `stack`; on failure record why in `unavailable` and return None."""
    port = free_port()
    log(f"starting {spec.name} on 127.0.0.1:{port} (core {cores.server})")
    try:
        return stack.enter_context(
            running(
                spec.name,
                spec.argv(port),
                port=port,
                ready_path=spec.ready_path,
                core=cores.server,
                log_dir=logs,
                env={**_SERVER_ENV, **spec.env},
                cwd=REPO,
            )
        )
    except (ServerError, OSError) as exc:
        unavailable[spec.name] = f"did not start: {str(exc).strip()[-400:]}".replace("\n", " ")
        log(f"  {unavailable[spec.name]}")
        return None


def v2_input_name(url: str) -> str:
    """The model's input tensor name, from fpgaas's v2 model metadata."""
    response = httpx.get(f"{url}/v2/models/{MODEL}", timeout=10.0)
    response.raise_for_status()
    return str(response.json()["inputs"][0]["name"])


def write_scripts(cases: dict[str, Case], work: Path) -> dict[str, Path]:
    """One wrk Lua script per case, reading its body from a file next to it."""
    scripts = {}
    for case in cases.values():
        body = work / f"{case.name}.body"
        if is_grpc(case):  # h2load sends the framed message as the request body itself
            body.write_bytes(h2load.grpc_frame(case.body))
            scripts[case.name] = body
            continue
        body.write_bytes(case.body)
        script = work / f"{case.name}.lua"
        script.write_text(lua_script(body, case.content_type))
        scripts[case.name] = script
    return scripts


def run_matrix(
    servers: dict[str, Server],
    specs: dict[str, ServerSpec],
    cases: dict[str, Case],
    plan: LoadPlan,
    concurrency: Sequence[int],
    work: Path,
) -> list[Point]:
    """Every (c, case, server) point, interleaved so that drifts in machine load hit all servers alike."""
    scripts = write_scripts(cases, work)
    broken: dict[tuple[str, str], str] = {}
    for name, server in servers.items():
        for case_name in specs[name].cases:
            case = cases[case_name]
            if is_grpc(case):
                problem = grpc_first_problem(specs[name].grpc_target, case)
            else:
                problem = first_problem(server, case)
            if problem:
                broken[(name, case_name)] = f"wrong answer: {problem}"
                log(f"  {name} {case_name}: {problem}")
    points = []
    for c in concurrency:
        rounds: dict[tuple[str, str], list[Point]] = {}
        for k in range(plan.rounds):
            round_plan = plan.round(k)
            for case in cases.values():
                for name, server in servers.items():
                    if case.name not in specs[name].cases:
                        continue
                    if (name, case.name) in broken:  # wrong before any load: one point, no rounds
                        if k == 0:
                            rounds[(case.name, name)] = [
                                Point(name, case.name, c, problem=broken[(name, case.name)])
                            ]
                        continue
                    if is_grpc(case):
                        target = specs[name].grpc_target
                        point = measure_grpc_point(
                            server, target, case, scripts[case.name], c, round_plan, _model(specs[name])
                        )
                    else:
                        point = measure_point(
                            server, case, scripts[case.name], c, round_plan, _model(specs[name])
                        )
                    rounds.setdefault((case.name, name), []).append(point)
                    log(_progress(point, f"round {k + 1}/{plan.rounds}"))
        points += [median_round(measured) for measured in rounds.values()]
    return points


def _model(spec: ServerSpec) -> str | None:
    """The model whose fpgaas metrics are read around a run; None for a peer without them."""
    return MODEL if spec.has_metrics else None


def _progress(p: Point, when: str) -> str:
    if p.wrk is None:
        return f"  {p.server:16} {p.case:12} c={p.connections:<4} {when} not measured: {p.problem}"
    w = p.wrk
    batch = f" rows/call {p.counters.rows_per_call:.1f}" if p.counters and p.counters.rows_per_call else ""
    cpu = f" cpu/request {p.server_cpu_us:.0f} µs" if p.server_cpu_us is not None else ""
    return (
        f"  {p.server:16} {p.case:12} c={p.connections:<4} {when} {w.ok_per_s:9,.0f} rps  p50 {w.p50_ms:7.3f} ms"
        f"  p99 {w.p99_ms:7.3f} ms  errors {w.errors}{cpu}{batch}"
    )


def run_big(
    servers: dict[str, Server],
    stack: ExitStack,
    args: argparse.Namespace,
    cores: Cores,
    work: Path,
    unavailable: dict[str, str],
) -> tuple[list[BigRun], float | None, str]:
    """65,536-row requests on each fpgaas and bare-asgi, then the engine's own rate."""
    x = inputs(BIG_ROWS, seed=2)
    case = predict_binary(x, "binary-65536")
    spec = fpgaas_spec(
        FPGAAS_BIG, args.repository, "fpgaas serve, FPGAAS_MAX_BATCH=65536", max_batch=str(BIG_ROWS)
    )
    big_server = start(spec, stack, cores, work, unavailable) if FPGAAS in servers else None
    targets = [
        (FPGAAS, "max_batch 1024"),
        (FPGAAS_BIG, "max_batch 65536"),
        (FPGAAS_PYNQ, "max_batch 1024"),
        (BARE, "numpy float32"),
    ]
    everyone = {**servers, **({FPGAAS_BIG: big_server} if big_server else {})}
    runs = []
    for name, label in targets:
        if name in everyone:
            model = MODEL if name.startswith(FPGAAS) else None
            runs.append(big_requests(everyone[name], label, case, args.big_requests, model))
            log(
                f"  {name} ({label}) 65,536 rows: {runs[-1].samples_per_s or 0:,.0f} samples/s {runs[-1].problem}"
            )
    artifact = _latest_version(args.repository / MODEL)
    rate = engine_samples_per_s(artifact, x.astype(np.float32), max(3, args.big_requests), cores.server)
    note = f"{artifact.relative_to(REPO) if artifact.is_relative_to(REPO) else artifact}, core {cores.server}"
    log(f"  engine in this process: {rate:,.0f} samples/s")
    return runs, rate, note


def _latest_version(model_dir: Path) -> Path:
    versions = [d for d in model_dir.iterdir() if (d / "manifest.json").is_file()]
    if not versions:
        raise SystemExit(f"no built model in {model_dir}: run `make model` first")
    return max(versions, key=lambda d: (d.name.isdigit(), int(d.name) if d.name.isdigit() else 0, d.name))


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    t0 = time.monotonic()
    started = dt.datetime.now().astimezone().isoformat(timespec="seconds")
    cores = Cores.pick()
    os.sched_setaffinity(0, {cores.load})  # this process (httpx, parsing) stays off the servers' core
    environment.ensure_tool("wrk", "wrk")
    environment.ensure_tool(h2load.H2LOAD, h2load.DEBIAN_PACKAGE)
    load_before = os.getloadavg()
    work = Path(tempfile.mkdtemp(prefix="bench-http-"))
    unavailable: dict[str, str] = {}
    wanted = set(args.servers) if args.servers else None
    kserve_python = None
    if wanted is None or KSERVE in wanted:
        log("checking the KServe virtualenv (created on first run)")
        kserve_python, why = ensure_kserve_venv(work / "kserve-install.log")
        if why:
            unavailable[KSERVE] = why
    specs = {
        s.name: s for s in all_specs(args.repository, kserve_python) if wanted is None or s.name in wanted
    }
    plan = LoadPlan(
        args.warmup,
        args.duration,
        load_core=cores.load,
        settle_s=0.5 if args.quick else 1.0,
        rounds=args.rounds,
    )
    with ExitStack() as stack:
        servers = {
            name: s for name, spec in specs.items() if (s := start(spec, stack, cores, work, unavailable))
        }
        if FPGAAS not in servers:
            raise SystemExit(f"fpgaas did not start: {unavailable.get(FPGAAS, 'not selected')}")
        cases = make_cases(v2_input_name(servers[FPGAAS].url))
        points = run_matrix(servers, specs, cases, plan, args.concurrency, work)
        big, engine_rate, engine_note = run_big(servers, stack, args, cores, work, unavailable)
    wall_s = time.monotonic() - t0
    run = Run(
        command=shlex.join(
            ["python", "benchmarks/bench_http.py", *(argv if argv is not None else sys.argv[1:])]
        ),
        started=started,
        wall_s=wall_s,
        quick=args.quick,
        environment=environment.describe(cores, kserve_python, load_before, os.getloadavg()),
        cores=cores,
        plan=plan,
        concurrency=tuple(args.concurrency),
        servers={n: (specs[n].description, specs[n].cases) for n in servers},
        unavailable=unavailable,
        cases=cases,
        points=tuple(points),
        big=tuple(big),
        engine_rate=engine_rate,
        engine_note=engine_note,
        notes=tuple(environment.notes(cores, points, args.note)),
    )
    targets = evaluate(run.points, run.big, run.engine_rate, list(cases), run.concurrency)
    text = markdown(run, targets)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "http.md").write_text(text)
    plot(run, args.out / "http.png")
    print(text)
    log(
        f"wrote {args.out / 'http.md'} and {args.out / 'http.png'} in {wall_s / 60:.1f} min (server logs: {work})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
