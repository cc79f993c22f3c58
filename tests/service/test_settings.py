"""`Settings`: FPGAAS_* environment variables (PORT too), defaults, and refusal of nonsense."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from fpgaas.service.devices import create_devices
from fpgaas.service.settings import Settings


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("PORT", "FPGAAS_PORT", "FPGAAS_MAX_BATCH", "FPGAAS_DEVICE", "FPGAAS_MODEL_REPOSITORY"):
        monkeypatch.delenv(var, raising=False)


def test_defaults(tmp_path: Path) -> None:
    s = Settings(model_repository=tmp_path)
    assert (s.host, s.port, s.device) == ("127.0.0.1", 8000, "emulated")
    assert (s.max_batch, s.max_delay_us) == (1024, 0)
    assert s.max_queue_rows >= s.max_batch
    assert s.max_body_bytes == 16 * 1024 * 1024
    assert s.model_repository == tmp_path.resolve()


def test_environment_with_prefix_and_plain_port(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FPGAAS_MODEL_REPOSITORY", str(tmp_path))
    monkeypatch.setenv("FPGAAS_MAX_BATCH", "64")
    monkeypatch.setenv("PORT", "9100")  # what `make serve` exports
    s = Settings()
    assert (s.model_repository, s.max_batch, s.port) == (tmp_path.resolve(), 64, 9100)
    monkeypatch.setenv("FPGAAS_PORT", "9200")  # the prefixed name wins
    assert Settings().port == 9200
    assert Settings(port=9300).port == 9300  # explicit arguments (the CLI's flags) win over both


@pytest.mark.parametrize(
    "overrides",
    [
        {"max_batch": 0},
        {"max_delay_us": -1},
        {"max_queue_rows": 0},
        {"max_body_bytes": 10},
        {"device_timeout_s": 0},
        {"port": 70000},
        {"device": "gpu"},
        {"log_level": "loud"},
        {"unknown_knob": 1},
    ],
    ids=lambda o: next(iter(o)),
)
def test_nonsense_is_refused(tmp_path: Path, overrides: dict[str, object]) -> None:
    with pytest.raises(ValidationError) as refused:
        Settings(model_repository=tmp_path, **overrides)  # type: ignore[arg-type]
    assert next(iter(overrides)) in str(refused.value)


def test_a_repository_that_is_not_a_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="not a directory"):
        Settings(model_repository=tmp_path / "missing")
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValidationError, match="not a directory"):
        Settings(model_repository=tmp_path / "file")


def test_the_device_factory_gives_one_emulated_device_by_default(tmp_path: Path) -> None:
    [device] = create_devices(Settings(model_repository=tmp_path))
    try:
        assert (device.info.name, device.info.kind, device.info.healthy) == ("emulated-0", "emulated", True)
    finally:
        device.close()
    assert not device.info.healthy
