"""Serving on cards over HTTP: placement, `/devices`, and card faults seen from a client.

The app is the real one (lifespan, batchers, dataplane) on emulated cards, once through each
card runtime: PYNQ (`device=pynq`, the real `pynq` package over emulated PYNQ cards) and XRT
(`device=xrt`, `PyxrtDevice` over the emulated pyxrt binding). For each fault a card can have (a kernel that never finishes, a failed
DMA sync, an overlay / xclbin that fails to reload) the request in flight gets a 503 with the JSON error
body, never a 500 or a wrong answer; readiness and `/devices` tell the truth while the card is
sick; the card comes back by itself; other cards keep serving throughout. A model placed on two
cards loses no request when one of them fails: the request is retried on the other.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import numpy as np
import pynq
import pytest
from prometheus_client.parser import text_string_to_metric_families
from pydantic import ValidationError

from fpgaas.kernels.artifact import Artifact
from fpgaas.service.devices import xrt_emulation
from fpgaas.service.devices.pynq_emulation import EmulatedCard, Fault, install_emulated_cards
from fpgaas.service.devices.xrt_emulation import EmulatedXrtCard
from fpgaas.service.settings import Settings
from tests.fixtures.signing import reseal

N_INPUTS = 6  # the tiny model of conftest.py: 6 inputs -> 2 outputs
CARDS = 3
TIMEOUT_S = 0.3  # the device deadline of these servers
FOREVER = 10**6  # fault count that outlasts any number of reload attempts


Card = EmulatedCard | EmulatedXrtCard


@pytest.fixture(scope="module", params=["pynq", "xrt"])
def cards(request: pytest.FixtureRequest) -> list[Card]:
    if request.param == "pynq":
        return list(install_emulated_cards(CARDS)[:CARDS])
    return list(xrt_emulation.install_emulated_cards(CARDS)[:CARDS])


@pytest.fixture(autouse=True)
def _healthy_cards(cards: list[Card]) -> Iterator[None]:
    for card in cards:  # emulated cards are process-global: start and end every test clean
        card.clear_faults()
    yield
    for card in cards:
        card.clear_faults()
        card.kernel_latency_s = 0.0


@pytest.fixture(scope="module")
def two_models(tiny_artifact: Artifact, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`tiny` v1 and `other` v1: the same kernel sealed under two names."""
    repo = tmp_path_factory.mktemp("repo-pynq")
    for name in ("tiny", "other"):
        reseal(tiny_artifact, repo / name / "1", name=name, version="1")
    return repo


def card_name(card: Card) -> str:
    if isinstance(card, EmulatedXrtCard):
        return f"xrt-{card.index}"
    return f"pynq-{pynq.Device.devices.index(card)}"


def card_settings(repo: Path, cards: list[Card], placement: dict[str, list[str]]) -> Settings:
    if isinstance(cards[0], EmulatedXrtCard):
        chosen: dict[str, object] = {
            "device": "xrt",
            "xrt_emulated_cards": CARDS,
            "xrt_cards": [c.index for c in cards if isinstance(c, EmulatedXrtCard)],
        }
    else:
        chosen = {
            "device": "pynq",
            "pynq_emulated_cards": CARDS,
            "pynq_cards": [pynq.Device.devices.index(c) for c in cards],
        }
    return Settings(
        model_repository=repo,
        **chosen,  # type: ignore[arg-type]
        placement=placement,
        device_timeout_s=TIMEOUT_S,
        device_probe_s=0.05,
        max_delay_us=0,
    )


def rows(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(0.0, 4.0, size=(n, N_INPUTS)).astype(np.float32)


async def predict(client: httpx.AsyncClient, model: str, x: np.ndarray) -> httpx.Response:
    return await client.post("/predict", json={"model": model, "inputs": x.tolist()})


def assert_answer(
    response: httpx.Response, x: np.ndarray, reference: Callable[[np.ndarray], np.ndarray], device: str
) -> None:
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["device"] == device
    np.testing.assert_array_equal(np.asarray(body["outputs"], dtype=np.float32), reference(x))


def assert_503(response: httpx.Response, code: str) -> str:
    assert response.status_code == 503, response.text
    error = response.json()["error"]
    assert error["code"] == code, error
    return str(error["message"])


async def devices(client: httpx.AsyncClient) -> dict[str, dict[str, object]]:
    listing = (await client.get("/devices")).json()["devices"]
    return {d["name"]: d for d in listing}


async def errors_counted(client: httpx.AsyncClient, model: str, code: str) -> float:
    text = (await client.get("/metrics")).text
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "fpgaas_errors_total" and s.labels == {"model": model, "code": code}:
                return float(s.value)
    return 0.0


async def eventually_ready(client: httpx.AsyncClient, within_s: float = 5.0) -> None:
    """The watcher probes a sick card every 0.05 s; give it a few rounds."""
    deadline = time.monotonic() + within_s
    while (ready := await client.get("/readyz")).status_code != 200:
        assert time.monotonic() < deadline, ready.json()
        await asyncio.sleep(0.05)


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("fault", "code"),
    [("hang", "device_timeout"), ("sync_error", "device_error")],
    ids=["hang", "sync_error"],
)
async def test_a_card_fault_answers_503_and_the_card_serves_again_while_other_cards_serve(
    app_factory, two_models, cards, reference, fault: Fault, code: str
) -> None:
    sick, well = card_name(cards[0]), card_name(cards[1])
    _app, client = await app_factory(card_settings(two_models, cards[:2], {"tiny": [sick], "other": [well]}))
    x = rows(16)
    cards[0].inject(fault)

    async def other_meanwhile() -> tuple[httpx.Response, float]:
        await asyncio.sleep(0.05)  # tiny's call is on its card by now
        started = time.perf_counter()
        return await predict(client, "other", x), time.perf_counter() - started

    failed, (other, other_s) = await asyncio.gather(predict(client, "tiny", x), other_meanwhile())

    assert_503(failed, code)
    assert_answer(other, x, reference, well)
    assert other_s < TIMEOUT_S  # the other card did not wait for the sick one
    # The failing call reloaded the overlay / xclbin: the card is back at once, with right answers.
    assert_answer(await predict(client, "tiny", x), x, reference, sick)
    assert (await client.get("/readyz")).status_code == 200
    card = (await devices(client))[sick]
    assert card["healthy"] is True and "reloaded after" in str(card["detail"])
    assert await errors_counted(client, "tiny", code) == 1


@pytest.mark.asyncio
async def test_a_card_whose_overlay_fails_to_reload_is_reported_until_the_reload_works(
    app_factory, two_models, cards, reference
) -> None:
    sick, well = card_name(cards[0]), card_name(cards[1])
    _app, client = await app_factory(card_settings(two_models, cards[:2], {"tiny": [sick], "other": [well]}))
    x = rows(8)
    cards[0].inject("sync_error")
    cards[0].inject("load_error", FOREVER)

    assert "DMA sync" in assert_503(await predict(client, "tiny", x), "device_error")

    not_ready = await client.get("/readyz")
    assert not_ready.status_code == 503
    reason = not_ready.json()["reason"]
    assert f"device {sick} unhealthy" in reason and "failed to load" in reason and "tiny v1" in reason
    listed = await devices(client)
    assert listed[sick]["healthy"] is False and listed[sick]["models"] == [{"name": "tiny", "version": "1"}]
    assert listed[well]["healthy"] is True and listed[well]["models"] == [{"name": "other", "version": "1"}]
    assert_answer(await predict(client, "other", x), x, reference, well)  # the other card serves on
    assert "failed to load" in assert_503(await predict(client, "tiny", x), "device_error")

    cards[0].clear_faults()  # the card can be programmed again: the watcher's next probe reloads it
    await eventually_ready(client)

    assert_answer(await predict(client, "tiny", x), x, reference, sick)
    assert (await devices(client))[sick]["healthy"] is True
    assert await errors_counted(client, "tiny", "device_error") == 2


@pytest.mark.asyncio
async def test_a_replicated_model_loses_no_request_when_one_card_fails(
    app_factory, one_model_repo, cards, reference
) -> None:
    first, second = card_name(cards[0]), card_name(cards[1])
    _app, client = await app_factory(card_settings(one_model_repo, cards[:2], {"tiny": [first, second]}))
    listed = await devices(client)
    assert [listed[n]["models"] for n in (first, second)] == [[{"name": "tiny", "version": "1"}]] * 2
    x = rows(16, seed=1)
    assert_answer(await predict(client, "tiny", x), x, reference, first)  # idle replicas: the first

    # A hang: the request waits out the deadline on the first card, then the second answers it;
    # a request arriving meanwhile goes straight to the second, the least loaded.
    cards[0].inject("hang")

    async def later() -> httpx.Response:
        await asyncio.sleep(0.05)
        return await predict(client, "tiny", x)

    started = time.perf_counter()
    retried, meanwhile = await asyncio.gather(predict(client, "tiny", x), later())
    assert time.perf_counter() - started >= TIMEOUT_S
    assert_answer(retried, x, reference, second)
    assert_answer(meanwhile, x, reference, second)

    # A card that stays sick: requests go to the healthy replica, and the server stays ready.
    cards[0].inject("sync_error")
    cards[0].inject("load_error", FOREVER)
    assert_answer(await predict(client, "tiny", x), x, reference, second)
    ready = await client.get("/readyz")
    assert ready.status_code == 200 and f"device {first} unhealthy" in ready.json()["reason"]
    assert (await devices(client))[first]["healthy"] is False
    for _ in range(3):
        assert_answer(await predict(client, "tiny", x), x, reference, second)

    cards[0].clear_faults()
    deadline = time.monotonic() + 5.0
    while not (await devices(client))[first]["healthy"]:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    assert_answer(await predict(client, "tiny", x), x, reference, first)  # back in service
    assert await errors_counted(client, "tiny", "device_timeout") == 0  # no client saw an error

    # Both cards failing: one retry, then the error.
    cards[0].inject("sync_error")
    cards[1].inject("sync_error")
    assert_503(await predict(client, "tiny", x), "device_error")
    assert await errors_counted(client, "tiny", "device_error") == 1
    assert_answer(await predict(client, "tiny", x), x, reference, first)


@pytest.mark.asyncio
async def test_a_placement_naming_an_unknown_device_is_refused_at_start(
    app_factory, one_model_repo, cards
) -> None:
    with pytest.raises(ValueError, match=r"placement of model 'tiny' names unknown device\(s\) pynq-99"):
        await app_factory(card_settings(one_model_repo, cards[:2], {"tiny": ["pynq-99"]}))


@pytest.mark.asyncio
async def test_devices_lists_the_emulated_device_and_its_models(app_factory, one_model_repo) -> None:
    _app, client = await app_factory(Settings(model_repository=one_model_repo))
    assert (await client.get("/devices")).json() == {
        "devices": [
            {
                "name": "emulated-0",
                "kind": "emulated",
                "healthy": True,
                "detail": "the kernel's bit-exact CPU twin",
                "models": [{"name": "tiny", "version": "1"}],
                "suspect": None,
            }
        ]
    }


def test_placement_and_cards_are_read_as_json_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FPGAAS_PLACEMENT", '{"muon-pt": ["pynq-0", "pynq-1"]}')
    monkeypatch.setenv("FPGAAS_PYNQ_CARDS", "[0, 2]")
    s = Settings(model_repository=tmp_path)
    assert s.placement == {"muon-pt": ["pynq-0", "pynq-1"]}
    assert s.pynq_cards == [0, 2]
    assert Settings(model_repository=tmp_path, placement={}, pynq_cards=None).pynq_cards is None


@pytest.mark.parametrize(
    "overrides",
    [
        {"placement": {"tiny": []}},
        {"placement": {"tiny": ["pynq-0", "pynq-0"]}},
        {"placement": {"../tiny": ["pynq-0"]}},
        {"placement": {"tiny": ["pynq 0"]}},
        {"pynq_cards": []},
        {"pynq_cards": [0, 0]},
        {"pynq_cards": [-1]},
        {"device_probe_s": 0},
    ],
    ids=lambda o: f"{next(iter(o))}={next(iter(o.values()))}",
)
def test_nonsense_placement_and_cards_are_refused(tmp_path: Path, overrides: dict[str, object]) -> None:
    with pytest.raises(ValidationError) as refused:
        Settings(model_repository=tmp_path, **overrides)  # type: ignore[arg-type]
    assert next(iter(overrides)) in str(refused.value)
