"""The client SDK (transtic.client) against real HTTP servers on 127.0.0.1: typed answers,
API keys, error codes, retries honouring Retry-After, and the async twin."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.responses import JSONResponse
from http_helpers import serve_in_thread

from services.analytics.rest import create_app
from services.analytics.settings import Settings
from transtic.client import (
    NO_RETRY,
    AnalyticsClient,
    AsyncAnalyticsClient,
    ClientError,
    RetryPolicy,
)

pytestmark = pytest.mark.integration
KEY = "k" * 40


@pytest.fixture(scope="module")
def analytics_url(
    codec_checkpoint: Any, tmp_path_factory: pytest.TempPathFactory, stored_result: dict[str, Any]
) -> Iterator[str]:
    from service_fakes import FakeDetection

    settings = Settings(
        codec_checkpoint=str(codec_checkpoint),
        host="127.0.0.1",
        device="cpu",
        db_path=tmp_path_factory.mktemp("db") / "frames.db",
        weights_cache_dir=tmp_path_factory.mktemp("weights"),
        default_task="detection",
        api_keys=[KEY],
    )
    app = create_app(settings, backends=[FakeDetection()])
    with serve_in_thread(app) as port:
        for sequence in range(3):
            app.state.runtime.store.put("sdk-cam", sequence, "detection", stored_result)
        yield f"http://127.0.0.1:{port}"


def test_typed_answers_with_a_key(analytics_url: str, bitstream: bytes, sample_png: bytes) -> None:
    with AnalyticsClient(analytics_url, api_key=KEY) as client:
        coded = client.analyze(bitstream)
        assert coded.input.kind == "bitstream" and coded.detections[0].label == "thing"
        assert coded.bitstream_bytes == len(bitstream) and coded.compression_ratio is None
        image = client.analyze(sample_png, content_type="image/png", return_image=True)
        assert image.input.kind == "image" and image.image_png_base64
        assert [m.kind for m in client.models().models].count("codec") == 1
        assert [f.sequence for f in client.iter_frames("sdk-cam")] == [0, 1, 2]
        assert client.streams().streams[0].stream_id == "sdk-cam"
        assert client.ready()
        with pytest.raises(ClientError) as missing:
            client.frames("no-such-cam")
    assert (missing.value.status, missing.value.code) == (404, "NOT_FOUND")


def test_missing_key_is_refused(analytics_url: str) -> None:
    with AnalyticsClient(analytics_url) as client, pytest.raises(ClientError) as refused:
        client.models()
    assert (refused.value.status, refused.value.code) == (401, "UNAUTHENTICATED")


def test_async_client(analytics_url: str, bitstream: bytes) -> None:
    async def run() -> tuple[str, list[int]]:
        async with AsyncAnalyticsClient(analytics_url, api_key=KEY) as client:
            result = await client.analyze(bitstream)
            frames = [f.sequence async for f in client.iter_frames("sdk-cam", since=0)]
            return result.task, frames

    assert asyncio.run(run()) == ("detection", [1, 2])


def busy_app(refusals: int, status: int, retry_after: str | None) -> tuple[FastAPI, list[float]]:
    """Refuses the first ``refusals`` calls the way the service does when overloaded."""
    import time

    app, calls = FastAPI(), []

    @app.get("/v1/models")
    def models() -> Any:
        calls.append(time.monotonic())
        if len(calls) <= refusals:
            headers = {"Retry-After": retry_after} if retry_after is not None else {}
            body = {"type": "urn:x", "title": "t", "status": status, "detail": "busy",
                    "code": "RESOURCE_EXHAUSTED" if status == 429 else "UNAVAILABLE"}  # fmt: skip
            return JSONResponse(body, status, headers=headers)
        return {"device": "cpu", "default_task": "x", "tasks": [], "qualities": [], "models": []}

    return app, calls


@pytest.mark.parametrize("status", [429, 503])
def test_retries_honour_retry_after(status: int) -> None:
    app, calls = busy_app(2, status, "1")
    with serve_in_thread(app) as port, AnalyticsClient(f"http://127.0.0.1:{port}") as client:
        assert client.models().device == "cpu"
    assert len(calls) == 3
    # Each retry waited for the server's Retry-After (1 s), not the 0.2 s backoff.
    assert all(later - earlier >= 0.9 for earlier, later in zip(calls, calls[1:], strict=False))


def test_gives_up_after_its_attempts() -> None:
    app, calls = busy_app(10, 429, "0")
    policy = RetryPolicy(attempts=3, base_delay_s=0.01)
    with serve_in_thread(app) as port:
        url = f"http://127.0.0.1:{port}"
        with AnalyticsClient(url, retry=policy) as client, pytest.raises(ClientError) as busy:
            client.models()
        assert busy.value.code == "RESOURCE_EXHAUSTED" and busy.value.retry_after_s == 0
        assert len(calls) == 3
        with AnalyticsClient(url, retry=NO_RETRY) as client, pytest.raises(ClientError):
            client.models()
        assert len(calls) == 4


def test_backoff_grows_and_is_capped() -> None:
    policy = RetryPolicy(base_delay_s=1.0, max_delay_s=5.0)
    delays: list[Callable[[], float]] = [lambda a=a: policy.delay(a, None) for a in range(6)]
    firsts = [d() for d in delays]
    assert 0.5 <= firsts[0] <= 1.0 and 2.0 <= firsts[2] <= 4.0 and firsts[5] == 5.0
    assert policy.delay(0, 3.0) == 3.0 and policy.delay(0, 60.0) == 5.0
