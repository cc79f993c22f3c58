"""SuperSONIC's autoscaling signal, computed by a real Prometheus scraping a live fpgaas server.

SuperSONIC's KEDA ScaledObject scales Triton servers on the average queue time per model
execution, in ms. After gRPC traffic (waves of 200 concurrent `async_infer` calls, so requests
queue behind device calls), that expression over fpgaas's `nv_inference_*` counters is a finite
positive number: the autoscaler of an unchanged SuperSONIC deployment can read fpgaas.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from pathlib import Path

import tritonclient.grpc.aio as triton_aio
from grpc_live import MODEL, GrpcServer, infer_input, samples

from tests.fixtures.prometheus import running_prometheus

KEDA = "sum(rate(nv_inference_queue_duration_us[30s])) / (sum(rate(nv_inference_exec_count[30s])) * 1000)"


def _traffic(target: str, stop: threading.Event) -> None:
    async def waves() -> None:
        async with triton_aio.InferenceServerClient(target) as client:
            while not stop.is_set():
                await asyncio.gather(
                    *(client.infer(MODEL, [infer_input("input_1", samples(4, seed=i))]) for i in range(200))
                )

    asyncio.run(waves())


def test_keda_queue_time_expression_is_finite_and_positive(grpc_server: GrpcServer, tmp_path: Path) -> None:
    target = grpc_server.url.removeprefix("http://")
    with running_prometheus(tmp_path / "prometheus", [target], scrape_interval="1s") as prometheus:
        stop = threading.Event()
        sender = threading.Thread(target=_traffic, args=(grpc_server.target, stop), daemon=True)
        sender.start()
        try:
            value = math.nan
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                time.sleep(1.0)
                result = prometheus.query(KEDA)
                if result:
                    value = float(result[0]["value"][1])
                    if math.isfinite(value) and value > 0:
                        break
        finally:
            stop.set()
            sender.join(timeout=60)
        assert math.isfinite(value) and value > 0, f"{KEDA} = {value}"
        # The series carry Triton's labels, one per loaded version.
        series = prometheus.query("nv_inference_exec_count")
        assert {(s["metric"]["model"], s["metric"]["version"]) for s in series} == {
            (MODEL, "1"),
            (MODEL, "2"),
        }
