"""Request and error metrics carry the served model (codec, quality, task) as labels, with
values only from the loaded model set: garbage requests count as "unknown"."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from service_fakes import FAIL_WIDTH, analytics_grpc

from services.analytics.rest import BITSTREAM_TYPE, create_app
from services.analytics.settings import Settings
from services.generated.transtic.v1 import api_pb2, api_pb2_grpc
from transtic.tasks import TaskBackend

MODEL_LABELS = ("codec", "quality", "task")
# Two codecs at two qualities, each tuned for another task: every label differs.
CLASSIFY = {"codec": "tiny", "quality": "1", "task": "classification"}
DETECT = {"codec": "other", "quality": "2", "task": "detection"}
UNKNOWN = {"codec": "unknown", "quality": "unknown", "task": "unknown"}


@pytest.fixture(scope="module")
def served(
    codec_checkpoint: Path,
    other_codec_checkpoint: Path,
    backends: list[TaskBackend],
    make_analytics_settings: Callable[..., Settings],
) -> Iterator[tuple[TestClient, api_pb2_grpc.AnalyticsStub]]:
    settings = make_analytics_settings(
        codec_checkpoint=None,
        codec_checkpoints={
            "classification:1": str(codec_checkpoint),
            "detection:2": str(other_codec_checkpoint),
        },
        max_batch_delay_ms=2.0,
    )
    with (
        analytics_grpc(settings, backends) as server,
        TestClient(create_app(settings, server.runtime)) as client,
    ):
        yield client, api_pb2_grpc.AnalyticsStub(server.channel)


def samples(client: TestClient) -> list[tuple[str, dict[str, str], float]]:
    text = client.get("/metrics").text
    return [
        (s.name, dict(s.labels), float(s.value))
        for family in text_string_to_metric_families(text)
        for s in family.samples
    ]


def value(client: TestClient, name: str, **labels: str) -> float:
    return sum(
        v
        for n, have, v in samples(client)
        if n == name and all(have.get(k) == want for k, want in labels.items())
    )


def label_values(client: TestClient) -> dict[str, set[str]]:
    """Every value each model label takes in the analytics metrics."""
    found: dict[str, set[str]] = {label: set() for label in MODEL_LABELS}
    for name, labels, _ in samples(client):
        if name.startswith("transtic_analytics_"):
            for label in MODEL_LABELS:
                if label in labels:
                    found[label].add(labels[label])
    return found


def test_requests_are_counted_per_codec_quality_and_task(
    served: tuple[TestClient, api_pb2_grpc.AnalyticsStub], make_png: Callable[..., bytes]
) -> None:
    client, _ = served
    for labels in (CLASSIFY, DETECT):
        response = client.post(
            "/v1/analyze",
            params={"task": labels["task"], "quality": labels["quality"]},
            content=make_png(32, 48),
            headers={"content-type": "image/png"},
        )
        assert response.status_code == 200, response.text
        assert response.json()["codec_id"] == labels["codec"]
    for labels in (CLASSIFY, DETECT):
        assert value(client, "transtic_analytics_frames_total", api="rest", **labels) == 1
        latency = "transtic_analytics_request_seconds_count"
        assert value(client, latency, api="rest", **labels) == 1
    # Each model is counted under its own labels only, never under the other's.
    mixed = {**CLASSIFY, "quality": DETECT["quality"]}
    assert value(client, "transtic_analytics_frames_total", **mixed) == 0


def test_a_failing_model_counts_its_errors_under_its_labels(
    served: tuple[TestClient, api_pb2_grpc.AnalyticsStub], make_png: Callable[..., bytes]
) -> None:
    client, _ = served
    before = value(client, "transtic_analytics_errors_total", **DETECT)
    response = client.post(
        "/v1/analyze",
        params={"task": "detection", "quality": "2"},
        content=make_png(32, FAIL_WIDTH),  # the fake detector fails on this width
        headers={"content-type": "image/png"},
    )
    assert response.status_code >= 500
    assert value(client, "transtic_analytics_errors_total", **DETECT) == before + 1


def test_grpc_requests_carry_the_labels_of_the_codec_the_stream_names(
    served: tuple[TestClient, api_pb2_grpc.AnalyticsStub], bitstream: bytes
) -> None:
    client, stub = served
    stub.Analyze(api_pb2.AnalyzeRequest(bitstream=bitstream), timeout=60)
    assert value(client, "transtic_analytics_frames_total", api="grpc", **CLASSIFY) == 1
    assert value(client, "transtic_analytics_request_seconds_count", api="grpc", **CLASSIFY) == 1
    # A known codec but a task the service does not offer: the codec is known, the task not.
    with pytest.raises(grpc.RpcError) as caught:
        stub.Analyze(api_pb2.AnalyzeRequest(bitstream=bitstream, task="juggling"), timeout=60)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    half_known = {"codec": "tiny", "quality": "1", "task": "unknown"}
    assert value(client, "transtic_analytics_errors_total", **half_known) == 1


@pytest.mark.parametrize(
    ("params", "body", "content_type"),
    [
        ({"task": "<script>alert(1)</script>", "quality": "7"}, b"\x89PNG garbage", "image/png"),
        ({"task": "x" * 300}, b"TTIC" + b"\xff" * 64, BITSTREAM_TYPE),
        ({"quality": "9"}, b"not an image", "image/jpeg"),
        ({"task": "detection\nquality=1"}, None, "image/png"),  # a good image, a bad task
    ],
)
def test_garbage_requests_create_no_new_label_values(
    served: tuple[TestClient, api_pb2_grpc.AnalyticsStub],
    make_png: Callable[..., bytes],
    params: dict[str, str],
    body: bytes | None,
    content_type: str,
) -> None:
    client, _ = served
    # Both models have been served once, so their label values exist already.
    for labels in (CLASSIFY, DETECT):
        client.post(
            "/v1/analyze",
            params={"task": labels["task"], "quality": labels["quality"]},
            content=make_png(32, 32),
            headers={"content-type": "image/png"},
        )
    known = label_values(client)
    before = value(client, "transtic_analytics_errors_total", **UNKNOWN)
    response = client.post(
        "/v1/analyze",
        params=params,
        content=body if body is not None else make_png(32, 32),
        headers={"content-type": content_type},
    )
    assert 400 <= response.status_code < 500, response.text
    assert value(client, "transtic_analytics_errors_total", **UNKNOWN) == before + 1
    after = label_values(client)
    assert after == {label: values | {"unknown"} for label, values in known.items()}
    allowed = {"tiny", "other", "1", "2", "classification", "detection", "unknown"}
    assert set().union(*after.values()) <= allowed
