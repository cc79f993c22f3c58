"""Samples/s of the fixed-point engine against hls4ml's C simulation, a compiled batch library
and the float Keras model, on one core, for the paper's muon network (27 -> 35,20,25,40,20,15 -> 1).

    python benchmarks/bench_engine.py [--model models/muon-pt.h5] [--workdir /tmp/bench-engine]

Uses models/muon-pt.h5 when present, else the same shape with random weights (the engine's
cost depends on the shapes and types, not the weight values). Prints a markdown table; each
figure is the best of a few timed repeats (at least ~0.3 s of CPU time each).
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "TF_NUM_INTRAOP_THREADS"):
    os.environ[_var] = "1"
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import argparse  # noqa: E402
import ctypes  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests" / "kernels" / "engine"))

from kernels.engine import FixedPointEngine  # noqa: E402

BATCHES = (1, 64, 1024, 65536)
KERNEL_SRC = """
#include "firmware/myproject.h"
extern "C" void fpgaas_kernel(const float* x, float* y, unsigned int n) {
    for (unsigned int s = 0; s < n; s++) {
        input_t in[FPGAAS_N_IN];
        result_t out[FPGAAS_N_OUT];
        for (int i = 0; i < FPGAAS_N_IN; i++) in[i] = input_t(x[s * FPGAAS_N_IN + i]);
        myproject(in, out);
        for (int j = 0; j < FPGAAS_N_OUT; j++) y[s * FPGAAS_N_OUT + j] = float(out[j]);
    }
}
"""


def _compile_batch_library(hls_dir: Path, n_in: int, n_out: int) -> Callable[[np.ndarray], np.ndarray]:
    """The project + a batch loop with the fpgaas_kernel C ABI, built with g++ -O3."""
    src = hls_dir / "bench_kernel.cpp"
    src.write_text(KERNEL_SRC)
    lib = hls_dir / "libbench_kernel.so"
    subprocess.run(
        [
            "g++",
            "-O3",
            "-std=c++17",
            "-fPIC",
            "-shared",
            "-w",
            f"-I{hls_dir}/firmware/ap_types",
            f"-I{hls_dir}",
            f"-DFPGAAS_N_IN={n_in}",
            f"-DFPGAAS_N_OUT={n_out}",
            str(hls_dir / "firmware" / "myproject.cpp"),
            str(src),
            "-o",
            str(lib),
        ],
        check=True,
        timeout=600,
    )
    fn = ctypes.CDLL(str(lib)).fpgaas_kernel
    fn.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_uint]

    def run(x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=np.float32)
        y = np.empty((x.shape[0], n_out), np.float32)
        fn(x.ctypes.data, y.ctypes.data, x.shape[0])
        return y

    return run


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
    parser.add_argument("--model", type=Path, default=REPO / "models" / "muon-pt.h5")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/bench-engine"))
    parser.add_argument("--budget", type=float, default=2.0, help="seconds per measurement (roughly)")
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})

    import hls_reference
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    rng = np.random.default_rng(0)
    hls_dir = args.workdir / "hls"
    hm, scale = hls_reference.build_qkeras("muon", hls_dir, rng, args.model.parents[1])
    keras_model = hm.config.config["KerasModel"]
    hm.compile()
    source = str(args.model) if args.model.is_file() else "random weights, same shape and types"

    t0 = time.perf_counter()
    engine = FixedPointEngine.from_hls_project(hls_dir)
    build_ms = (time.perf_counter() - t0) * 1e3
    kernel = _compile_batch_library(hls_dir, engine.n_inputs, engine.n_outputs)
    x_all = hls_reference.inputs(engine.n_inputs, max(BATCHES), scale, rng)
    check = x_all[:4096]
    assert np.array_equal(engine.predict(check).view(np.uint32), kernel(check).view(np.uint32))

    contenders: dict[str, Callable[[np.ndarray], object]] = {
        "engine (numpy)": engine.predict,
        "compiled batch library": kernel,
        "hls4ml predict (C sim)": lambda x: hm.predict(x),
        "float Keras model": lambda x: keras_model(x, training=False),
    }
    rates: dict[str, dict[int, float]] = {name: {} for name in contenders}
    for batch in BATCHES:
        x = x_all[:batch]
        for name, fn in contenders.items():
            slow = name.startswith("hls4ml") and batch > 1024
            rates[name][batch] = _rate(fn, x, 0.1 if slow else args.budget)

    print(f"Model: muon regressor 27 -> 35,20,25,40,20,15 -> 1 ({source}); engine built in {build_ms:.0f} ms")
    first_dense = next(d for d in engine.describe() if d["function"] == "dense")
    print(f"Engine plan of the Dense layers: {first_dense['plan']}\n")
    print("| implementation | " + " | ".join(f"batch {b}" for b in BATCHES) + " |")
    print("|---|" + "---:|" * len(BATCHES))
    for name in contenders:
        print(f"| {name} (samples/s) | " + " | ".join(f"{rates[name][b]:,.0f}" for b in BATCHES) + " |")
    for name in contenders:
        if name != "engine (numpy)":
            ratios = [rates["engine (numpy)"][b] / rates[name][b] for b in BATCHES]
            print(f"| engine / {name} | " + " | ".join(f"{r:.2f}x" for r in ratios) + " |")
    per_call = 1e6 / rates["engine (numpy)"][1]
    print(f"\nEngine at batch 1: {per_call:.1f} us per call")


if __name__ == "__main__":
    main()
