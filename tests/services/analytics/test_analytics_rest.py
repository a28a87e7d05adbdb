"""The REST API on a tiny codec with the real classifier: good and bad inputs."""

from __future__ import annotations

import base64
import io
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families
from service_fakes import FakeDetection, GatedDetection, sample_result

from services.analytics.rest import BITSTREAM_TYPE, create_app
from services.analytics.schemas import AnalysisResult
from services.analytics.settings import Settings
from transtic.tasks import TaskBackend


@pytest.fixture(scope="module")
def client(module_settings: Settings, backends: list[TaskBackend]) -> Iterator[TestClient]:
    with TestClient(create_app(module_settings, backends=backends)) as c:
        yield c


def metric(client: TestClient, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(client.get("/metrics").text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return 0.0


def error_of(response: Any, status: int, code: str) -> str:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    # RFC 9457 members, the stable code, and the pre-1.0 "error" object kept for old clients
    assert set(body) >= {"type", "title", "status", "detail", "code", "error"}
    assert body["status"] == status and body["code"] == body["error"]["code"] == code
    assert body["type"] == f"urn:transtic:error:{code}"
    assert "Traceback" not in body["detail"]
    return str(body["detail"])


def test_image_upload_multipart_is_coded_then_classified(
    client: TestClient, sample_png: bytes
) -> None:
    before = metric(client, "transtic_analytics_frames_total", task="classification")
    response = client.post(
        "/v1/analyze",
        params={"return_image": "true"},
        files={"file": ("photo.png", sample_png, "image/png")},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["task"] == "classification"
    assert len(body["labels"]) == 3  # top_k of the configured backend
    assert all(0 <= label["score"] <= 1 and label["name"] for label in body["labels"])
    assert body["detections"] == []
    assert body["input"] == {"kind": "image", "content_type": "image/png", "bytes": len(sample_png)}
    # Rate from the real bytes the edge codec produced for this upload.
    coded = body["bitstream_bytes"]
    assert body["bits_per_pixel"] == pytest.approx(coded * 8 / (64 * 64))
    assert body["compression_ratio"] == pytest.approx(len(sample_png) / coded)
    assert body["task_model_id"] == "classification:efficientnet_lite0_imagenet"
    assert body["codec_id"] == "tiny" and len(body["codec_fingerprint"]) == 32
    stages = {"encode_analysis", "parse", "entropy_decode", "synthesis", "task", "total"}
    assert stages <= set(body["timings_ms"])
    decoded = Image.open(io.BytesIO(base64.b64decode(body["image_png_base64"])))
    assert decoded.size == (64, 64)
    after = metric(client, "transtic_analytics_frames_total", task="classification")
    assert after == before + 1


def test_raw_image_body_and_task_choice(client: TestClient, make_png: Callable[..., bytes]) -> None:
    png = make_png(40, 56, seed=3)
    response = client.post(
        "/v1/analyze?task=detection", content=png, headers={"content-type": "image/png"}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["task"] == "detection" and body["labels"] == []
    (det,) = body["detections"]
    assert det["box"] == [14.0, 10.0, 42.0, 30.0] and det["mask"]["size"] == [40, 56]
    assert "image_png_base64" not in body


def test_bitstream_upload(client: TestClient, bitstream: bytes) -> None:
    before = metric(client, "transtic_analytics_bitstream_bytes_total", task="classification")
    response = client.post(
        "/v1/analyze", content=bitstream, headers={"content-type": BITSTREAM_TYPE}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["input"]["kind"] == "bitstream"
    assert body["bitstream_bytes"] == len(bitstream) and body.get("compression_ratio") is None
    assert body["bits_per_pixel"] == pytest.approx(len(bitstream) * 8 / (64 * 64))
    assert "encode_analysis" not in body["timings_ms"]
    after = metric(client, "transtic_analytics_bitstream_bytes_total", task="classification")
    assert after == before + len(bitstream)
    # A bitstream uploaded as a form file is recognised by its magic bytes.
    multipart = client.post(
        "/v1/analyze?task=detection",
        files={"file": ("frame.ttic", bitstream, "application/octet-stream")},
    )
    assert multipart.status_code == 200 and multipart.json()["input"]["kind"] == "bitstream"


@pytest.mark.parametrize(
    ("content", "ctype", "status", "code", "needle"),
    [
        (b"\x00" * 100, BITSTREAM_TYPE, 400, "INVALID_ARGUMENT", "magic"),
        (b"", BITSTREAM_TYPE, 400, "INVALID_ARGUMENT", "empty"),
        (b"random bytes, not a picture" * 10, "image/png", 400, "INVALID_ARGUMENT", "image"),
        (b"{}", "application/json", 415, "UNSUPPORTED_MEDIA_TYPE", "content type"),
        (b"hello", "text/plain", 415, "UNSUPPORTED_MEDIA_TYPE", "multipart/form-data"),
    ],
)
def test_bad_bodies(
    client: TestClient, content: bytes, ctype: str, status: int, code: str, needle: str
) -> None:
    response = client.post("/v1/analyze", content=content, headers={"content-type": ctype})
    assert needle in error_of(response, status, code)


def test_corrupt_and_truncated_bitstreams(client: TestClient, bitstream: bytes) -> None:
    flipped = bytearray(bitstream)
    flipped[len(flipped) // 2] ^= 0x5A
    for bad in (bytes(flipped), bitstream[: len(bitstream) // 2], bitstream[:10]):
        response = client.post("/v1/analyze", content=bad, headers={"content-type": BITSTREAM_TYPE})
        assert "bitstream" in error_of(response, 400, "INVALID_ARGUMENT")
    # The service is still fine afterwards.
    good = client.post("/v1/analyze", content=bitstream, headers={"content-type": BITSTREAM_TYPE})
    assert good.status_code == 200


def test_wrong_weights_is_a_failed_precondition(
    client: TestClient, foreign_bitstream: bytes
) -> None:
    before = metric(client, "transtic_analytics_errors_total", code="FAILED_PRECONDITION")
    response = client.post(
        "/v1/analyze", content=foreign_bitstream, headers={"content-type": BITSTREAM_TYPE}
    )
    message = error_of(response, 409, "FAILED_PRECONDITION")
    # The inventory of held codecs is logged, not told to the client.
    assert "weights" in message and "tiny" not in message
    after = metric(client, "transtic_analytics_errors_total", code="FAILED_PRECONDITION")
    assert after == before + 1


def test_unknown_task_and_bad_quality(client: TestClient, sample_png: bytes) -> None:
    headers = {"content-type": "image/png"}
    response = client.post("/v1/analyze?task=captioning", content=sample_png, headers=headers)
    assert "captioning" in error_of(response, 400, "INVALID_ARGUMENT")
    response = client.post("/v1/analyze?quality=7", content=sample_png, headers=headers)
    assert "quality" in error_of(response, 400, "INVALID_ARGUMENT")
    response = client.post("/v1/analyze?quality=-1", content=sample_png, headers=headers)
    assert "quality" in error_of(response, 400, "INVALID_ARGUMENT")


def test_missing_task_weights_name_the_file(client: TestClient, sample_png: bytes) -> None:
    response = client.post(
        "/v1/analyze?task=segmentation", content=sample_png, headers={"content-type": "image/png"}
    )
    message = error_of(response, 503, "UNAVAILABLE")
    assert "maskrcnn_resnet50_fpn_coco-bf2d0c1e.pth" in message
    models = client.get("/v1/models").json()["models"]
    seg = next(m for m in models if m["kind"] == "task" and m["task"] == "segmentation")
    assert seg["ready"] is False and "maskrcnn_resnet50_fpn_coco" in seg["detail"]


def test_too_large_body(client: TestClient, module_settings: Settings) -> None:
    big = b"\x89PNG" + b"\x00" * module_settings.max_upload_bytes
    response = client.post("/v1/analyze", content=big, headers={"content-type": "image/png"})
    assert "limit" in error_of(response, 413, "PAYLOAD_TOO_LARGE")

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted while reading
        for _ in range(4):
            yield b"\x00" * (module_settings.max_upload_bytes // 3)

    response = client.post("/v1/analyze", content=chunks(), headers={"content-type": "image/png"})
    error_of(response, 413, "PAYLOAD_TOO_LARGE")


def test_multipart_without_file_field(client: TestClient, sample_png: bytes) -> None:
    response = client.post("/v1/analyze", files={"image": ("x.png", sample_png, "image/png")})
    assert "'file'" in error_of(response, 400, "INVALID_ARGUMENT")


def test_models_health_and_docs(client: TestClient) -> None:
    info = client.get("/v1/models").json()
    assert info["device"] == "cpu" and info["default_task"] == "classification"
    assert info["tasks"] == ["classification", "detection", "segmentation"]
    kinds = {(m["kind"], m["task"]): m for m in info["models"]}
    assert kinds[("codec", "")]["ready"] and kinds[("codec", "")]["id"] == "tiny"
    assert kinds[("codec", "")]["precision"] in ("float32", "bfloat16")  # "auto", resolved
    assert kinds[("task", "classification")]["ready"]
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json() == {"status": "ready"}
    assert "/v1/analyze" in client.get("/openapi.json").json()["paths"]
    docs = client.get("/docs")
    assert docs.status_code == 200 and "cdn" not in docs.text.lower()
    assert "/docs-assets/swagger-ui-bundle.js" in docs.text
    assert client.get("/docs-assets/swagger-ui-bundle.js").status_code == 200
    page = client.get("/")
    assert page.status_code == 200 and "result-canvas" in page.text
    assert client.get("/static/app.js").status_code == 200
    error_of(client.get("/v1/nothing"), 404, "NOT_FOUND")


def test_metrics_exposition(client: TestClient, bitstream: bytes) -> None:
    client.post("/v1/analyze", content=bitstream, headers={"content-type": BITSTREAM_TYPE})
    text = client.get("/metrics").text
    for name in (
        "transtic_analytics_frames_total",
        "transtic_analytics_bitstream_bytes_total",
        "transtic_analytics_bits_per_pixel_bucket",
        "transtic_analytics_queue_depth",
        "transtic_analytics_batch_size_bucket",
        "transtic_analytics_errors_total",
        "transtic_analytics_request_seconds_bucket",
    ):
        assert name in text
    for stage in ("parse", "entropy_decode", "synthesis", "task", "queue"):
        assert metric(client, "transtic_analytics_stage_seconds_count", stage=stage) >= 1


def test_streams_endpoints(client: TestClient) -> None:
    store = client.app.state.runtime.store  # type: ignore[attr-defined]
    result = sample_result(task="classification", bits_per_pixel=0.1, num_bytes=20)
    for seq in range(5):
        store.put("rest-cam", seq, "classification", result.to_json())
    streams = client.get("/v1/streams").json()["streams"]
    cam = next(s for s in streams if s["stream_id"] == "rest-cam")
    assert cam["frames_stored"] == 5 and cam["latest"]["sequence"] == 4
    assert AnalysisResult.model_validate(cam["latest"]["result"]) == result
    page = client.get("/v1/streams/rest-cam/frames", params={"since": 1, "limit": 2}).json()
    assert [f["sequence"] for f in page["frames"]] == [2, 3] and page["next_since"] == 3
    rest = client.get("/v1/streams/rest-cam/frames", params={"since": 3}).json()
    assert [f["sequence"] for f in rest["frames"]] == [4]
    error_of(client.get("/v1/streams/nope/frames"), 404, "NOT_FOUND")
    error_of(client.get("/v1/streams/rest-cam/frames?limit=0"), 400, "INVALID_ARGUMENT")


def test_full_queue_gives_429_with_retry_after(
    make_settings: Callable[..., Settings], bitstream: bytes
) -> None:
    backend = GatedDetection()
    with TestClient(create_app(make_settings(max_queue=1), backends=[backend])) as c:
        runtime = c.app.state.runtime  # type: ignore[attr-defined]
        busy = runtime.submit_bitstream(bitstream, "detection", api="test")
        assert backend.entered.wait(30)  # the worker is held: one more fits the queue
        queued = runtime.submit_bitstream(bitstream, "detection", api="test")
        headers = {"content-type": BITSTREAM_TYPE}
        response = c.post("/v1/analyze?task=detection", content=bitstream, headers=headers)
        assert "queue is full" in error_of(response, 429, "RESOURCE_EXHAUSTED")
        assert response.headers["retry-after"] == "1"
        backend.gate.set()
        assert busy.result(30).result.task == queued.result(30).result.task == "detection"
        assert c.post("/v1/analyze?task=detection", content=bitstream, headers=headers).is_success


def test_no_codec_means_not_ready(
    make_settings: Callable[..., Settings], sample_png: bytes
) -> None:
    settings = make_settings(codec_checkpoint=None, use_shipped_weights=False)
    with TestClient(create_app(settings, backends=[FakeDetection()])) as c:
        message = error_of(c.get("/readyz"), 503, "UNAVAILABLE")
        assert "TRANSTIC_ANALYTICS_CODEC_CHECKPOINT" in message
        headers = {"content-type": "image/png"}
        response = c.post("/v1/analyze?task=detection", content=sample_png, headers=headers)
        assert "no codec is loaded" in error_of(response, 503, "UNAVAILABLE")


def test_frames_from_many_requests_share_a_batch(
    make_settings: Callable[..., Settings], bitstream: bytes
) -> None:
    backend = GatedDetection()
    with TestClient(create_app(make_settings(max_batch_size=4), backends=[backend])) as c:
        runtime = c.app.state.runtime  # type: ignore[attr-defined]
        busy = runtime.submit_bitstream(bitstream, "detection", api="test")
        assert backend.entered.wait(30)
        waiting = [runtime.submit_bitstream(bitstream, "detection", api="s") for _ in range(3)]
        assert metric(c, "transtic_analytics_queue_depth") == 3
        backend.gate.set()
        for future in [busy, *waiting]:
            assert future.result(30).result.task == "detection"
        assert backend.batches == [1, 3]
        assert metric(c, "transtic_analytics_batch_size_count") == 2
        assert metric(c, "transtic_analytics_batch_size_sum") == 4
        assert metric(c, "transtic_analytics_queue_depth") == 0
