"""Uploads that would run code are refused at the door, before anything is queued (live server)."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.fixtures.management import AUTH, Stack, upload
from tests.fixtures.models import make_lambda_model


def test_a_lambda_in_an_h5_upload_is_a_400_and_nothing_runs_or_stays(stack: Stack, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    model = make_lambda_model(tmp_path / "evil.h5", marker)
    with stack.server() as server:
        refused = upload(server.url, model, "evil")
        assert refused.status_code == 400, refused.text
        error = refused.json()["error"]
        assert error["code"] == "unsafe_model" and "evil" in error["message"]
        assert not marker.exists()
        assert stack.uploads() == []
        assert httpx.get(f"{server.url}/builds", headers=AUTH).json()["builds"] == []
