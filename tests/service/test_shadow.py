"""Shadow verification: sampled device calls recomputed on the CPU twin catch a card that
computes wrong bits, never delay an answer, and never accuse a healthy card.

The cards are emulated pyxrt cards driven by `PyxrtDevice`; a marginal card flips the lowest bit
of the first output of one row in every 10,000 it computes (`flip_one_bit_every`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from fpgaas.kernels.artifact import Artifact
from fpgaas.service.devices import xrt_emulation
from fpgaas.service.devices.xrt import PyxrtDevice, XrtOptions
from fpgaas.service.devices.xrt_emulation import EmulatedXrtCard
from fpgaas.service.metrics import ServiceMetrics
from fpgaas.service.settings import Settings
from fpgaas.service.shadow import ShadowChecker, ShadowedDevice, ShadowPolicy, with_shadow

N_INPUTS = 6
ROWS = 10_000  # rows per device call here: the marginal card corrupts one row of each
CARDS = 2


@pytest.fixture(scope="module")
def cards() -> list[EmulatedXrtCard]:
    return xrt_emulation.install_emulated_cards(CARDS)[:CARDS]


@pytest.fixture(autouse=True)
def _healthy_cards(cards: list[EmulatedXrtCard]) -> Iterator[None]:
    for card in cards:
        card.clear_faults()
    yield
    for card in cards:
        card.clear_faults()


@pytest.fixture(scope="module")
def x() -> np.ndarray:
    return np.random.default_rng(7).normal(0.0, 8.0, size=(ROWS, N_INPUTS)).astype(np.float32)


def metric(metrics: ServiceMetrics, name: str, device: str = "xrt-0") -> float:
    for family in metrics.registry.collect():
        for s in family.samples:
            if s.name == name and s.labels == {"model": "tiny", "device": device}:
                return float(s.value)
    return 0.0


def shadowed(
    policy: ShadowPolicy, artifact: Artifact
) -> tuple[ShadowedDevice, ShadowChecker, ServiceMetrics]:
    metrics = ServiceMetrics(CollectorRegistry())
    devices = with_shadow([PyxrtDevice(xrt_emulation, 0, options=XrtOptions(buffer_sets=2))], policy, metrics)
    device = devices[0]
    assert isinstance(device, ShadowedDevice)
    return device, device._checker, metrics


def test_at_fraction_one_the_first_call_with_a_flipped_bit_is_caught_and_logged(
    cards, tiny_artifact: Artifact, x: np.ndarray, caplog: pytest.LogCaptureFixture
) -> None:
    device, checker, metrics = shadowed(ShadowPolicy(fraction=1.0, cpu_budget=64.0), tiny_artifact)
    kernel = device.load(tiny_artifact, max_batch=ROWS)
    cards[0].flip_one_bit_every(ROWS)

    with caplog.at_level(logging.ERROR, logger="fpgaas.service.shadow"):
        y, _ = kernel.run(x)
        checker.drain()

    assert metric(metrics, "fpgaas_shadow_checked_rows_total") == ROWS
    assert metric(metrics, "fpgaas_shadow_mismatched_rows_total") == 1
    info = device.info
    assert (
        info.suspect is not None
        and "1 of 10000 rows of tiny" in info.suspect
        and "first row 9999" in info.suspect
    )
    assert info.healthy  # the default policy keeps serving
    assert "rows [9999]" in caplog.text and "differ from the CPU twin" in caplog.text
    assert y.shape == (ROWS, 2)  # the caller got the card's answer: the check never holds it back
    device.close()


def test_at_the_default_fraction_a_card_wrong_in_every_call_is_caught_within_one_window(
    cards, tiny_artifact: Artifact, x: np.ndarray
) -> None:
    policy = ShadowPolicy(cpu_budget=64.0)  # fraction 1 %: one call in each window of 100 is checked
    device, checker, metrics = shadowed(policy, tiny_artifact)
    kernel = device.load(tiny_artifact, max_batch=ROWS)
    cards[0].flip_one_bit_every(ROWS)
    out = np.empty((ROWS, 2), dtype=np.float32)

    calls = 0
    while device.info.suspect is None:
        assert calls < 100, "no check in the first window of 100 calls"
        kernel.run_into(x, out)
        calls += 1
        checker.drain()

    assert metric(metrics, "fpgaas_shadow_checked_rows_total") == ROWS  # exactly one call checked
    assert metric(metrics, "fpgaas_shadow_mismatched_rows_total") == 1
    device.close()


def test_sampling_is_seeded_and_checks_exactly_one_call_per_window(cards, tiny_artifact: Artifact) -> None:
    picks = []
    for _ in range(2):
        device, checker, metrics = shadowed(
            ShadowPolicy(fraction=0.1, seed=3, cpu_budget=64.0), tiny_artifact
        )
        kernel = device.load(tiny_artifact, max_batch=8)
        chosen = []
        for call in range(50):
            before = metric(metrics, "fpgaas_shadow_checked_rows_total")
            kernel.run(np.full((8, N_INPUTS), call, dtype=np.float32))
            checker.drain()
            if metric(metrics, "fpgaas_shadow_checked_rows_total") > before:
                chosen.append(call)
        picks.append(chosen)
        device.close()

    assert picks[0] == picks[1]  # the same seed picks the same calls
    assert [c // 10 for c in picks[0]] == [0, 1, 2, 3, 4]  # one in each window of 10


def test_a_healthy_card_never_reports_a_mismatch_over_a_million_rows(cards, tiny_artifact: Artifact) -> None:
    device, checker, metrics = shadowed(ShadowPolicy(fraction=1.0, cpu_budget=64.0), tiny_artifact)
    kernel = device.load(tiny_artifact, max_batch=50_000)
    rng = np.random.default_rng(11)
    out = np.empty((50_000, 2), dtype=np.float32)

    for _ in range(20):  # 20 calls of 50,000 rows: 10^6 rows, over the whole fixed-point range
        kernel.run_into(rng.normal(0.0, 16.0, size=(50_000, N_INPUTS)).astype(np.float32), out)
        checker.drain()

    assert metric(metrics, "fpgaas_shadow_checked_rows_total") == 1_000_000
    assert metric(metrics, "fpgaas_shadow_mismatched_rows_total") == 0
    assert device.info.suspect is None
    device.close()


def test_over_the_cpu_budget_calls_are_dropped_and_counted_never_waited_for(
    cards, tiny_artifact: Artifact, x: np.ndarray
) -> None:
    device, checker, metrics = shadowed(
        ShadowPolicy(fraction=1.0, cpu_budget=1e-6, burst_s=0.0), tiny_artifact
    )
    kernel = device.load(tiny_artifact, max_batch=ROWS)

    for _ in range(20):
        kernel.run(x)
    checker.drain()

    checked = metric(metrics, "fpgaas_shadow_checked_rows_total")
    dropped = metric(metrics, "fpgaas_shadow_dropped_calls_total")
    assert checked <= 2 * ROWS  # the first check spends the budget; later calls are dropped
    assert dropped >= 18 and checked / ROWS + dropped == 20
    device.close()


def test_fraction_zero_wraps_nothing(cards) -> None:
    devices = [PyxrtDevice(xrt_emulation, 0)]
    assert with_shadow(devices, ShadowPolicy(fraction=0.0), ServiceMetrics(CollectorRegistry())) == devices


# --- seen from a client ---------------------------------------------------------------------
def settings(repo: Path, policy: str, placement: dict[str, list[str]]) -> Settings:
    return Settings(
        model_repository=repo,
        device="xrt",
        xrt_emulated_cards=CARDS,
        xrt_cards=[0, 1],
        placement=placement,
        shadow_fraction=1.0,
        shadow_cpu_budget=64.0,
        shadow_mismatch_policy=policy,  # type: ignore[arg-type]
        device_probe_s=0.05,
        max_batch=ROWS,
    )


async def predict(client: httpx.AsyncClient, x: np.ndarray) -> httpx.Response:
    return await client.post("/predict", json={"model": "tiny", "inputs": x.tolist()})


async def until_suspect(client: httpx.AsyncClient, name: str) -> dict[str, object]:
    for _ in range(200):
        listed = {d["name"]: d for d in (await client.get("/devices")).json()["devices"]}
        if listed[name]["suspect"]:
            return listed[name]
        await asyncio.sleep(0.01)
    raise AssertionError(f"{name} never became suspect")


@pytest.mark.asyncio
async def test_a_suspect_card_is_shown_in_devices_named_in_readyz_and_counted(
    app_factory, one_model_repo, cards, x: np.ndarray
) -> None:
    _app, client = await app_factory(settings(one_model_repo, "keep-serving", {"tiny": ["xrt-0"]}))
    cards[0].flip_one_bit_every(ROWS)

    assert (await predict(client, x)).status_code == 200
    card = await until_suspect(client, "xrt-0")

    assert card["healthy"] is True and "differing from the CPU twin" in str(card["suspect"])
    ready = await client.get("/readyz")
    assert ready.status_code == 200 and "device xrt-0 suspect" in ready.json()["reason"]
    assert (await predict(client, x[:4])).status_code == 200  # keep-serving: it still answers
    text = (await client.get("/metrics")).text
    samples = {
        (s.name, s.labels.get("device")): s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
        if s.name.startswith("fpgaas_shadow_")
    }
    assert samples[("fpgaas_shadow_mismatched_rows_total", "xrt-0")] >= 1
    assert samples[("fpgaas_shadow_checked_rows_total", "xrt-0")] >= ROWS


@pytest.mark.asyncio
async def test_the_drain_policy_moves_requests_to_the_other_replica(
    app_factory, one_model_repo, cards, x: np.ndarray
) -> None:
    _app, client = await app_factory(settings(one_model_repo, "drain", {"tiny": ["xrt-0", "xrt-1"]}))
    cards[0].flip_one_bit_every(ROWS)

    first = await predict(client, x)  # idle replicas: the first card answers, and is checked
    assert first.status_code == 200 and first.json()["device"] == "xrt-0"
    card = await until_suspect(client, "xrt-0")

    assert card["healthy"] is False and "drained" in str(card["suspect"])
    for _ in range(3):
        answer = await predict(client, x[:16])
        assert answer.status_code == 200 and answer.json()["device"] == "xrt-1"
    ready = await client.get("/readyz")
    assert ready.status_code == 200 and "device xrt-0 unhealthy" in ready.json()["reason"]
