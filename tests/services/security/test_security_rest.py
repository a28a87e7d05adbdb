"""REST: API keys, per-client rate limits, body size limits and CORS."""

from __future__ import annotations

import asyncio
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi.testclient import TestClient
from pydantic import ValidationError
from security_helpers import GOOD_KEY, OTHER_KEY, WRONG_KEY, Pki
from service_fakes import TinyDetection, analyze_scope

from services.analytics.rest import create_app
from services.analytics.runtime import Runtime
from services.analytics.server import http_tls_options
from services.analytics.settings import Settings

ORIGIN = "https://ops.example.com"


@contextmanager
def client(settings: Settings) -> Iterator[TestClient]:
    """The app on a runtime that was never started: the guard answers before any model."""
    runtime = Runtime(settings, backends=[TinyDetection()])
    try:
        with TestClient(create_app(settings, runtime)) as c:
            yield c
    finally:
        runtime.close()


def error_code(response: Any, status: int) -> str:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["status"] == status and body["code"] == body["error"]["code"]
    return str(body["code"])


@pytest.fixture
def secured(analytics_settings: Callable[..., Settings]) -> Iterator[TestClient]:
    with client(analytics_settings(api_keys=[GOOD_KEY, OTHER_KEY])) as c:
        yield c


def test_without_keys_configured_the_api_is_open(
    analytics_settings: Callable[..., Settings],
) -> None:
    with client(analytics_settings()) as c:
        assert c.get("/v1/models").status_code == 200
        assert c.get("/v1/streams").status_code == 200


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": f"Bearer {WRONG_KEY}"},
        {"X-API-Key": WRONG_KEY},
        {"Authorization": f"Basic {GOOD_KEY}"},
        {"Authorization": "Bearer"},
        {"Authorization": f"Bearer {GOOD_KEY[:-1]}"},
    ],
)
def test_missing_or_wrong_key_is_401(secured: TestClient, headers: dict[str, str]) -> None:
    for request in (
        lambda: secured.get("/v1/models", headers=headers),
        lambda: secured.get("/v1/streams/x/frames", headers=headers),
        lambda: secured.post("/v1/analyze", content=b"x", headers=headers),
        lambda: secured.get("/no/such/path", headers=headers),  # no route map leaks out
    ):
        response = request()
        assert error_code(response, 401) == "UNAUTHENTICATED"
        assert response.headers["www-authenticate"].startswith("Bearer")
        assert GOOD_KEY not in response.text


@pytest.mark.parametrize("header", ["Authorization", "X-API-Key"])
def test_right_key_is_accepted(secured: TestClient, header: str) -> None:
    for key in (GOOD_KEY, OTHER_KEY):
        value = f"Bearer {key}" if header == "Authorization" else key
        assert secured.get("/v1/models", headers={header: value}).status_code == 200
    assert secured.get("/v1/models", headers={"Authorization": f"bearer  {GOOD_KEY}"}).is_success


def test_probes_page_and_metrics_stay_open(secured: TestClient) -> None:
    assert secured.get("/healthz").status_code == 200
    assert secured.get("/readyz").status_code == 503  # not started: not ready, but no 401
    assert secured.get("/").status_code == 200
    assert secured.get("/static/app.js").status_code == 200
    assert secured.get("/openapi.json").status_code == 200
    metrics = secured.get("/metrics")
    assert metrics.status_code == 200
    secured.get("/v1/models")  # refused: counted
    assert (
        'transtic_analytics_errors_total{code="UNAUTHENTICATED",codec="unknown",'
        'quality="unknown",task="unknown"} 1.0' in secured.get("/metrics").text
    )


def test_metrics_can_require_the_key(analytics_settings: Callable[..., Settings]) -> None:
    with client(analytics_settings(api_keys=[GOOD_KEY], metrics_require_auth=True)) as c:
        assert error_code(c.get("/metrics"), 401) == "UNAUTHENTICATED"
        assert c.get("/metrics", headers={"X-API-Key": GOOD_KEY}).status_code == 200
        assert c.get("/healthz").status_code == 200


def test_rate_limit_per_client(analytics_settings: Callable[..., Settings]) -> None:
    settings = analytics_settings(
        api_keys=[GOOD_KEY, OTHER_KEY], rate_limit_per_s=0.5, rate_limit_burst=2
    )
    good = {"Authorization": f"Bearer {GOOD_KEY}"}
    with client(settings) as c:
        assert c.get("/v1/models", headers=good).status_code == 200
        assert c.get("/v1/streams", headers=good).status_code == 200
        response = c.get("/v1/models", headers=good)
        assert error_code(response, 429) == "RESOURCE_EXHAUSTED"
        assert int(response.headers["retry-after"]) >= 1
        # Another key is another client; probes are never limited.
        assert c.get("/v1/models", headers={"X-API-Key": OTHER_KEY}).status_code == 200
        for _ in range(5):
            assert c.get("/healthz").status_code == 200
        # Without a valid key the client is its address: guesses use up its own budget.
        assert c.get("/v1/models").status_code == 401
        assert c.get("/v1/models").status_code == 401
        assert c.get("/v1/models").status_code == 429


def test_rate_limit_can_be_switched_off(analytics_settings: Callable[..., Settings]) -> None:
    with client(analytics_settings(rate_limit_per_s=0, rate_limit_burst=1)) as c:
        assert all(c.get("/v1/streams").status_code == 200 for _ in range(5))


def test_declared_oversize_body_is_refused_before_reading(
    analytics_settings: Callable[..., Settings],
) -> None:
    settings = analytics_settings(max_upload_bytes=4096)
    runtime = Runtime(settings, backends=[TinyDetection()])
    app = create_app(settings, runtime)
    received: list[int] = []

    async def receive() -> dict[str, Any]:
        received.append(1)
        return {"type": "http.request", "body": b"\0" * 1024, "more_body": True}

    status = asyncio.run(_call(app, receive, {"content-length": "5000"}))
    runtime.close()
    assert status == 413 and received == []


def test_chunked_upload_is_cut_off_at_the_limit(
    analytics_settings: Callable[..., Settings],
) -> None:
    """No Content-Length: the body is counted as it streams in, never buffered whole."""
    limit, chunk = 64 * 1024, 8 * 1024
    settings = analytics_settings(max_upload_bytes=limit)
    runtime = Runtime(settings, backends=[TinyDetection()])
    app = create_app(settings, runtime)
    received: list[int] = []

    async def receive() -> dict[str, Any]:
        # A body of 8x the limit: the app must stop reading once it passed the limit
        # (an app that buffered first would read it all, then refuse it).
        received.append(chunk)
        more = sum(received) < 8 * limit
        return {"type": "http.request", "body": b"\0" * chunk, "more_body": more}

    status = asyncio.run(_call(app, receive, {}))
    runtime.close()
    assert status == 413
    assert sum(received) <= limit + chunk


async def _call(app: Any, receive: Any, headers: dict[str, str]) -> int:
    scope = analyze_scope(query=b"", content_type="image/png", headers=headers)
    statuses: list[int] = []

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    await app(scope, receive, send)
    return statuses[0]


def test_cors_is_off_by_default(analytics_settings: Callable[..., Settings]) -> None:
    with client(analytics_settings()) as c:
        response = c.get("/v1/models", headers={"Origin": ORIGIN})
        assert response.status_code == 200
        assert not [h for h in response.headers if h.lower().startswith("access-control-")]
        preflight = c.options(
            "/v1/models",
            headers={"Origin": ORIGIN, "Access-Control-Request-Method": "GET"},
        )
        assert "access-control-allow-origin" not in preflight.headers


def test_cors_allows_only_the_listed_origins(
    analytics_settings: Callable[..., Settings],
) -> None:
    with client(analytics_settings(cors_origins=[ORIGIN], api_keys=[GOOD_KEY])) as c:
        preflight = c.options(
            "/v1/analyze",
            headers={
                "Origin": ORIGIN,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization",
            },
        )
        assert preflight.status_code == 200
        assert preflight.headers["access-control-allow-origin"] == ORIGIN
        assert "authorization" in preflight.headers["access-control-allow-headers"].lower()
        ok = c.get("/v1/models", headers={"Origin": ORIGIN, "X-API-Key": GOOD_KEY})
        assert ok.headers["access-control-allow-origin"] == ORIGIN
        # A refusal still carries CORS headers, so the browser page can show the reason.
        denied = c.get("/v1/models", headers={"Origin": ORIGIN})
        assert denied.status_code == 401
        assert denied.headers["access-control-allow-origin"] == ORIGIN
        other = c.get(
            "/v1/models", headers={"Origin": "https://evil.example", "X-API-Key": GOOD_KEY}
        )
        assert "access-control-allow-origin" not in other.headers


@pytest.mark.parametrize("origins", [["*"], ["ops.example.com"]])
def test_cors_wildcards_and_bare_hosts_are_refused(
    analytics_settings: Callable[..., Settings], origins: list[str]
) -> None:
    with pytest.raises(ValidationError, match="cors_origins"):
        analytics_settings(cors_origins=origins)


@pytest.mark.integration
def test_rest_over_https(analytics_settings: Callable[..., Settings], pki: Pki) -> None:
    settings = analytics_settings(
        http_tls=True, api_keys=[GOOD_KEY], **pki.server_settings(mutual=True)
    )
    runtime = Runtime(settings, backends=[TinyDetection()])
    config = uvicorn.Config(
        create_app(settings, runtime),
        host="127.0.0.1",
        port=0,
        log_level="warning",
        **http_tls_options(settings),
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            assert time.monotonic() < deadline and thread.is_alive(), "server did not start"
            time.sleep(0.05)
        port = server.servers[0].sockets[0].getsockname()[1]
        trusted = ssl.create_default_context(cafile=str(pki.ca))
        with httpx.Client(verify=trusted, timeout=10) as https:
            assert https.get(f"https://127.0.0.1:{port}/healthz").status_code == 200
            models = https.get(
                f"https://127.0.0.1:{port}/v1/models", headers={"X-API-Key": GOOD_KEY}
            )
            assert models.status_code == 200
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=10)
        untrusted = ssl.create_default_context(cafile=str(pki.rogue_ca))
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"https://127.0.0.1:{port}/healthz", verify=untrusted, timeout=10)
    finally:
        server.should_exit = True
        thread.join(30)
        runtime.close()


def test_https_needs_a_certificate(analytics_settings: Callable[..., Settings]) -> None:
    with pytest.raises(ValidationError, match="http_tls"):
        analytics_settings(http_tls=True)
