"""Web hardening: security headers everywhere, no CDN pages, /docs with keys, no leaks."""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Callable
from pathlib import Path

import grpc
from fastapi.testclient import TestClient
from security_helpers import GOOD_KEY, analytics_server
from service_fakes import TinyDetection

from services.analytics.rest import BITSTREAM_TYPE, create_app
from services.analytics.settings import Settings
from services.common.errors import redact_paths
from services.generated.transtic.v1 import api_pb2, api_pb2_grpc

HEADERS = {
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
}


def check_headers(response, *, https: bool = False) -> None:  # type: ignore[no-untyped-def]
    for name, value in HEADERS.items():
        assert response.headers.get(name) == value, (response.url, name)
    policy = response.headers["content-security-policy"]
    assert "default-src 'self'" in policy and "frame-ancestors 'none'" in policy
    assert ("strict-transport-security" in response.headers) is https


def test_every_response_carries_the_security_headers(
    analytics_settings: Callable[..., Settings],
) -> None:
    app = create_app(analytics_settings(api_keys=[GOOD_KEY]), backends=[TinyDetection()])
    with TestClient(app) as client:
        for path, status in [
            ("/", 200),
            ("/static/app.js", 200),
            ("/healthz", 200),
            ("/v1/models", 401),
            ("/nowhere", 401),  # unknown paths need a key too: no probing without one
            ("/openapi.json", 200),
        ]:
            response = client.get(path)
            assert response.status_code == status, path
            check_headers(response)
    with TestClient(app, base_url="https://testserver") as client:
        check_headers(client.get("/healthz"), https=True)


def test_docs_work_with_keys_on_and_load_nothing_from_elsewhere(
    analytics_settings: Callable[..., Settings],
) -> None:
    app = create_app(analytics_settings(api_keys=[GOOD_KEY]), backends=[TinyDetection()])
    with TestClient(app) as client:
        key = {"authorization": f"Bearer {GOOD_KEY}"}
        assert client.get("/redoc", headers=key).status_code == 404
        assert client.get("/redoc").status_code == 401  # not public any more
        page = client.get("/docs")
        assert page.status_code == 200
        assert not re.search(r"""(src|href)=["']https?://""", page.text)
        for asset in re.findall(r"""(?:src|href)=["'](/docs-assets/[^"']+)""", page.text):
            assert client.get(asset).status_code == 200, asset  # no 401 without a key
        # The page's one inline script is allowed by its hash, and nothing else inline.
        (script,) = re.findall(r"<script>(.*?)</script>", page.text, re.DOTALL)
        digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
        policy = page.headers["content-security-policy"]
        assert (
            f"'sha256-{digest}'" in policy
            and "'unsafe-inline'" not in policy.split("script-src")[1].split(";")[0]
        )


def test_paths_are_cut_from_client_messages() -> None:
    assert redact_paths("cannot read /var/lib/transtic/weights/x.pth") == "cannot read x.pth"
    assert redact_paths("see https://example.org/a/b") == "see https://example.org/a/b"


def test_no_server_paths_or_inventory_reach_a_client(
    analytics_settings: Callable[..., Settings],
    codec_checkpoint: Path,
    foreign_bitstream: bytes,
) -> None:
    settings = analytics_settings()
    hidden = [str(codec_checkpoint.parent), str(settings.weights_cache_dir), str(settings.db_path)]
    with TestClient(create_app(settings, backends=[TinyDetection()])) as client:
        models = client.get("/v1/models")
        assert models.status_code == 200
        refused = client.post(
            "/v1/analyze", content=foreign_bitstream, headers={"content-type": BITSTREAM_TYPE}
        )
        assert refused.status_code == 409
        runtime = client.app.state.runtime  # type: ignore[attr-defined]
        held = runtime.hub.codecs[0]
        assert held.fingerprint not in refused.text and held.id not in refused.text
        for text in (models.text, refused.text):
            assert not any(path in text for path in hidden), text
    with analytics_server(settings, start=True) as (port, _):
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        info = api_pb2_grpc.AnalyticsStub(channel).GetInfo(api_pb2.GetInfoRequest(), timeout=30)
        channel.close()
    for model in info.models:
        assert not any(path in model.detail for path in hidden), model.detail
