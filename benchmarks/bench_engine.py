"""Samples/s of the fixed-point engine on the served muon artifact, on one core, against hls4ml's
C simulation, the artifact's own emulation library and the float Keras model.

    python benchmarks/bench_engine.py [--artifact model_repository/muon-pt/1] [--model models/muon-pt.h5]

Without `--artifact` the model is built with `fpgaas.builder.build` into a temp dir (as `make model`
does). The hls4ml reference is a second conversion of the same model with the builder's options,
compiled by hls4ml. Prints a markdown table; each figure is the best of a few timed repeats of
at least ~0.3 s of CPU time each, in one process pinned to one CPU with every thread pool at 1.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "TF_NUM_INTRAOP_THREADS"):
    os.environ[_var] = "1"
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import argparse  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests" / "kernels" / "engine"))

from fpgaas.kernels.artifact import load_artifact  # noqa: E402
from fpgaas.kernels.engine import FixedPointEngine  # noqa: E402
from fpgaas.kernels.twin import KernelLibrary  # noqa: E402

BATCHES = (1, 64, 1024, 65536)
ENGINE = "engine (numpy)"
C_SIM = "hls4ml predict (C sim)"


def _rate(fn: Callable[[np.ndarray], object], x: np.ndarray, budget_s: float) -> float:
    """Best samples per CPU-second over repeats of ~0.3 s each.

    CPU time of this (single-threaded, pinned) process, not wall time: the figures then do not
    depend on what else the machine runs.
    """
    start = time.process_time()
    fn(x)
    once = max(time.process_time() - start, 1e-6)
    inner = max(1, int(0.3 / once))
    best = 0.0
    deadline = time.process_time() + budget_s
    for _ in range(5):
        t0 = time.process_time()
        for _ in range(inner):
            fn(x)
        best = max(best, inner * len(x) / max(time.process_time() - t0, 1e-6))
        if time.process_time() > deadline:
            break
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--artifact", type=Path, help="a built artifact dir (default: build one)")
    parser.add_argument("--model", type=Path, default=REPO / "models" / "muon-pt.h5")
    parser.add_argument("--budget", type=float, default=2.0, help="seconds per measurement (roughly)")
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})

    import hls_reference
    import tensorflow as tf
    from qkeras.utils import load_qmodel

    from fpgaas.builder import build
    from fpgaas.builder.convert import ConvertOptions, convert
    from fpgaas.builder.load import scan_model

    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    work = Path(tempfile.mkdtemp(prefix="bench-engine-"))
    if args.artifact is None:
        artifact = build(args.model, name="muon-pt", out=work / "artifact", log=lambda _line: None)
    else:
        artifact = load_artifact(args.artifact)
    reference = convert(scan_model(args.model), work / "reference-hls", ConvertOptions())
    reference.compile()
    keras_model = load_qmodel(str(args.model), compile=False)

    t0 = time.perf_counter()
    engine = FixedPointEngine.from_hls_project(artifact.path / "hls")
    build_ms = (time.perf_counter() - t0) * 1e3
    library = KernelLibrary.from_artifact(artifact)
    x_all = hls_reference.inputs(engine.n_inputs, max(BATCHES), 4.0, np.random.default_rng(0))
    check = x_all[:4096]
    assert np.array_equal(engine.predict(check).view(np.uint32), library.run(check).view(np.uint32))
    ref_check = np.asarray(reference.predict(check), dtype=np.float32).reshape(len(check), -1)
    assert np.array_equal(engine.predict(check).view(np.uint32), ref_check.view(np.uint32))

    contenders: dict[str, Callable[[np.ndarray], object]] = {
        ENGINE: engine.predict,
        "compiled library (emulation/libkernel.so)": library.run,
        C_SIM: lambda x: reference.predict(x),
        "float Keras model": lambda x: keras_model(x, training=False),
    }
    rates: dict[str, dict[int, float]] = {name: {} for name in contenders}
    for batch in BATCHES:
        x = np.ascontiguousarray(x_all[:batch])
        for name, fn in contenders.items():
            slow = name == C_SIM and batch > 1024
            rates[name][batch] = _rate(fn, x, 0.1 if slow else args.budget)

    print(f"Artifact: {artifact.path} ({args.model.name}); engine built in {build_ms:.0f} ms")
    print(
        f"Engine path: {engine.path}; Dense plans: {sorted({d['plan'] for d in engine.describe() if 'plan' in d})}\n"
    )
    print("| implementation | " + " | ".join(f"batch {b}" for b in BATCHES) + " |")
    print("|---|" + "---:|" * len(BATCHES))
    for name in contenders:
        print(f"| {name} (samples/s) | " + " | ".join(f"{rates[name][b]:,.0f}" for b in BATCHES) + " |")
    for name in contenders:
        if name != C_SIM:
            ratios = [rates[name][b] / rates[C_SIM][b] for b in BATCHES]
            print(f"| {name} / C sim | " + " | ".join(f"{r:.2f}x" for r in ratios) + " |")
    print(f"\nEngine at batch 1: {1e6 / rates[ENGINE][1]:.1f} us per call")


if __name__ == "__main__":
    main()
