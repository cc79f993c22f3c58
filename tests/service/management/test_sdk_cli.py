"""The SDK and the CLI against a live server: upload, wait with progress, list, cancel (sync and async)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from fpgaas.cli import main
from fpgaas.client import AsyncClient, BuildFailed, Client, ServerError
from tests.fixtures.management import ADMIN_TOKEN, AUTH, Stack


def test_upload_wait_list_and_cancel_through_the_sdk_and_the_cli(
    stack: Stack, small_h5: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with stack.server() as server:

        async def queue_then_cancel() -> None:  # no worker yet: the build waits in the queue
            async with AsyncClient(server.url, headers=AUTH) as client:
                build = await client.upload(small_h5, name="sdk-async", max_batch=32)
                assert (build.info.state, build.info.version) == ("queued", "1")
                assert (await build.cancel()).state == "cancelled"
                with pytest.raises(BuildFailed, match="cancelled"):
                    await build.wait(poll_s=0.1)
                assert [b.id for b in await client.builds("sdk-async")] == [build.id]

        asyncio.run(queue_then_cancel())

        stack.worker("w1")
        code = main(
            [
                "upload",
                str(small_h5),
                "--name",
                "sdk-cli",
                "--max-batch",
                "16",
                "--wait",
                "--url",
                server.url,
                "--token",
                ADMIN_TOKEN,
            ]
        )
        out, err = capsys.readouterr()
        assert code == 0, err
        assert "succeeded" in out and "compile (g++)" in err  # the progress bar names the stages

        with Client(server.url, headers=AUTH) as client:
            builds = client.builds()
            assert [(b.info.name, b.info.state) for b in builds] == [
                ("sdk-cli", "succeeded"),
                ("sdk-async", "cancelled"),
            ]
            done = client.build(builds[0].id).wait()
            assert done.manifest is not None and done.manifest["version"] == "1"
            assert "succeeded: published sdk-cli version 1" in builds[0].log()
            with pytest.raises(ServerError) as taken:
                client.upload(small_h5, name="sdk-cli", version="1")
            assert (taken.value.status_code, taken.value.code) == (409, "conflict")

        assert main(["builds", "--url", server.url, "--token", ADMIN_TOKEN]) == 0
        listing = capsys.readouterr().out.splitlines()
        assert listing[0].split()[:4] == ["ID", "MODEL", "VERSION", "STATE"]
        assert [line.split()[1:4] for line in listing[1:]] == [
            ["sdk-cli", "1", "succeeded"],
            ["sdk-async", "1", "cancelled"],
        ]
        assert main(["builds", "--url", server.url, "--token", "wrong"]) == 2
