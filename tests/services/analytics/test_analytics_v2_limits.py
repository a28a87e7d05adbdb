"""Limits of the Open Inference Protocol (V2) and Triton control routes: a refused request
does no work, per-request limits on images and predicted cost, hostile JSON and headers
are 400s, bodies are refused by their size before they are read, and /v2 is in the API
document."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from PIL import Image
from service_fakes import FakeDetection

from services.analytics.rest import create_app
from services.analytics.runtime import Runtime
from services.analytics.settings import Settings

HEADER = "Inference-Header-Content-Length"
INFER = "/v2/models/detection/infer"


def v2_body(items: list[bytes]) -> bytes:
    """A JSON inference request with one BYTES input of ``items`` (base64, as the JSON
    form of this service takes them)."""
    data = [base64.b64encode(item).decode() for item in items]
    request = {
        "inputs": [{"name": "INPUT", "datatype": "BYTES", "shape": [len(data)], "data": data}]
    }
    return json.dumps(request).encode()


def png_of(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), "grey").save(buffer, format="PNG")
    return buffer.getvalue()


class GatedDetection(FakeDetection):
    """FakeDetection that holds each batch until the test opens the gate."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.gate = threading.Event()
        self.entered = threading.Event()

    def _predict(self, images: list[Any]) -> list[dict[str, Any]]:
        self.entered.set()
        self.gate.wait(60)
        return super()._predict(images)


@pytest.fixture
def client(make_settings: Callable[..., Settings]) -> Iterator[TestClient]:
    settings = make_settings(v2_max_images=4, v2_max_request_pixels=4 * 256 * 256)
    with TestClient(create_app(settings, backends=[FakeDetection()])) as c:
        yield c


def test_a_request_refused_for_a_full_queue_processes_no_image(
    make_settings: Callable[..., Settings], sample_png: bytes
) -> None:
    backend = GatedDetection()
    settings = make_settings(max_queue=4, max_batch_size=1, v2_max_images=4)
    runtime = Runtime(settings, backends=[backend])
    runtime.start()
    try:
        with TestClient(create_app(settings, runtime)) as client:
            # One image held in the task by the gate, two more queued behind it: the
            # queue has 2 free slots of 4.
            from transtic.images import decode_image_bytes

            image = decode_image_bytes(sample_png)
            held = [runtime.submit_image(image, "detection", None, api="test")]
            assert backend.entered.wait(60)
            held += [runtime.submit_image(image, "detection", None, api="test") for _ in "ab"]
            refused = client.post(INFER, content=v2_body([sample_png] * 3))
            assert refused.status_code == 429, refused.text
            assert int(refused.headers["retry-after"]) >= 1
            backend.gate.set()
            for future in held:
                future.result(60)
    finally:
        backend.gate.set()
        runtime.close()
    # Only the three images queued before it were ever run through the task.
    assert sum(backend.batches) == 3


def test_more_images_than_the_limit_is_refused_before_any_work(
    client: TestClient, sample_png: bytes
) -> None:
    refused = client.post(INFER, content=v2_body([sample_png] * 5))
    assert refused.status_code == 413 and "4 images" in refused.json()["error"]
    assert client.post(INFER, content=v2_body([sample_png] * 4)).status_code == 200


def test_predicted_cost_over_the_limit_is_refused(client: TestClient) -> None:
    # 300x300 is coded as 512x512 = 4 x 256x256: two of them predict twice the limit.
    big = png_of(300, 300)
    refused = client.post(INFER, content=v2_body([big, big]))
    assert refused.status_code == 413, refused.text
    assert str(4 * 256 * 256) in refused.json()["error"]
    assert client.post(INFER, content=v2_body([big])).status_code == 200


def nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


@pytest.mark.parametrize(
    "path",
    [
        INFER,
        "/v2/repository/index",
        "/v2/repository/models/detection/load",
        "/v2/repository/models/detection/unload",
    ],
)
def test_json_nested_1000_deep_is_a_bad_request(client: TestClient, path: str) -> None:
    body = b'{"inputs": ' + nested(1000) + b"}"
    reply = client.post(path, content=body)
    assert reply.status_code == 400, reply.text
    assert "nested" in reply.json()["error"]


# Header values arrive as Latin-1: b"\xb2" is "\u00b2", which str.isdigit() accepts.
@pytest.mark.parametrize("length", ["\u00b2", "1\u00b9", "-1", "+5", "1_0", "99999999"])
def test_header_length_must_be_ascii_digits_within_the_body(
    client: TestClient, sample_png: bytes, length: str
) -> None:
    body = v2_body([sample_png])
    reply = client.post(INFER, content=body, headers={HEADER: length.encode("latin-1")})
    assert reply.status_code == 400, reply.text


def test_content_length_with_non_ascii_digits_is_a_bad_request(client: TestClient) -> None:
    reply = client.post("/v2/repository/index", content=b"{}", headers={"content-length": b"\xb2"})
    assert reply.status_code == 400, reply.text


def post_chunks(
    app: Any, path: str, chunks: int, chunk: bytes, headers: list[tuple[bytes, bytes]]
) -> tuple[int, int]:
    """POST a body of ``chunks`` x ``chunk`` straight to the ASGI app, as a server streams
    it (the TestClient would read all of it first): (status, bytes the app pulled)."""
    pulled, status = 0, 0
    total = chunks * len(chunk)

    async def receive() -> dict[str, Any]:
        nonlocal pulled
        if pulled >= total:
            return {"type": "http.disconnect"}
        pulled += len(chunk)
        return {"type": "http.request", "body": chunk, "more_body": pulled < total}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"test"), *headers],
        "client": ("127.0.0.1", 50000),
        "server": ("test", 80),
    }
    asyncio.run(app(scope, receive, send))
    return status, pulled


@pytest.fixture
def started_app(start_runtime: Callable[..., Runtime]) -> Any:
    runtime = start_runtime()
    return create_app(runtime.settings, runtime)


@pytest.mark.parametrize("path", ["/v2/repository/index", "/v2/repository/models/detection/load"])
def test_control_routes_stop_reading_a_chunked_body_at_their_limit(
    started_app: Any, path: str
) -> None:
    chunk = b" " * 65536
    status, pulled = post_chunks(started_app, path, 3200, chunk, [])  # 200 MiB of whitespace
    assert status == 413
    assert pulled <= 2 * len(chunk)  # the 64 KiB limit and the chunk that crossed it


def test_control_routes_refuse_a_declared_size_before_reading(started_app: Any) -> None:
    declared = [(b"content-length", str(2 * 65536).encode())]
    status, pulled = post_chunks(started_app, "/v2/repository/index", 2, b" " * 65536, declared)
    assert (status, pulled) == (413, 0)


def test_v2_routes_are_in_the_api_document(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    for path in (
        "/v2",
        "/v2/health/live",
        "/v2/health/ready",
        "/v2/models/{name}",
        "/v2/models/{name}/ready",
        "/v2/models/{name}/infer",
        "/v2/models/{name}/versions/{version}/infer",
        "/v2/repository/index",
        "/v2/repository/models/{name}/load",
        "/v2/repository/models/{name}/unload",
    ):
        assert path in paths, path
