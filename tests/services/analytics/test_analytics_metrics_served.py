"""What the analytics service serves on /metrics, read with Prometheus's own parser: the
names and labels docs/deployment.md documents, one label name per dimension, and every
API's requests timed, failed ones too."""

from __future__ import annotations

import base64
import shutil
import subprocess
from collections.abc import Callable, Iterator

import grpc
import pytest
from documented_metrics import documented, served
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from service_fakes import InProcessAnalytics, analytics_grpc

from services.analytics.rest import create_app
from services.analytics.settings import Settings
from services.generated.transtic.v1 import api_pb2, api_pb2_grpc
from transtic.tasks import TaskBackend

LATENCY = "transtic_analytics_request_seconds_count"


@pytest.fixture(scope="module")
def service(
    module_settings: Settings, backends: list[TaskBackend]
) -> Iterator[tuple[TestClient, InProcessAnalytics]]:
    with (
        analytics_grpc(module_settings, backends) as server,
        TestClient(create_app(module_settings, server.runtime)) as client,
    ):
        yield client, server


def count(client: TestClient, name: str, **labels: str) -> float:
    return sum(
        sample.value
        for family in text_string_to_metric_families(client.get("/metrics").text)
        for sample in family.samples
        if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items())
    )


def v2_body(data: bytes) -> dict[str, object]:
    element = base64.b64encode(data).decode()
    return {"inputs": [{"name": "INPUT", "shape": [1], "datatype": "BYTES", "data": [element]}]}


def use_every_api(
    client: TestClient, stub: api_pb2_grpc.AnalyticsStub, png: bytes, bitstream: bytes
) -> None:
    """A good and a failing request through each API, so that every labelled series has
    samples to read."""
    ok = client.post(
        "/v1/analyze?task=detection", content=png, headers={"content-type": "image/png"}
    )
    assert ok.status_code == 200, ok.text
    bad = client.post("/v1/analyze", content=b"text", headers={"content-type": "text/plain"})
    assert bad.status_code == 415
    assert client.post("/v2/models/detection/infer", json=v2_body(bitstream)).status_code == 200
    assert client.post("/v2/models/detection/infer", json=v2_body(b"junk")).status_code == 400
    stub.Analyze(api_pb2.AnalyzeRequest(bitstream=bitstream, task="detection"), timeout=60)
    with pytest.raises(grpc.RpcError):
        stub.Analyze(api_pb2.AnalyzeRequest(bitstream=b"TTIC junk"), timeout=60)
    frames = [api_pb2.Frame(stream_id="metrics-cam", sequence=0, bitstream=bitstream)]
    acks = list(stub.AnalyzeStream(iter(frames), timeout=60))
    assert [ack.error_code for ack in acks] == [0], acks


def test_served_metrics_are_the_documented_ones(
    service: tuple[TestClient, InProcessAnalytics], sample_png: bytes, bitstream: bytes
) -> None:
    client, server = service
    use_every_api(client, api_pb2_grpc.AnalyticsStub(server.channel), sample_png, bitstream)
    assert served(client.get("/metrics").text) == documented("analytics")


def test_every_api_times_its_requests_failed_ones_too(
    service: tuple[TestClient, InProcessAnalytics], sample_png: bytes, bitstream: bytes
) -> None:
    client, server = service
    before = {api: count(client, LATENCY, api=api) for api in ("rest", "grpc", "stream", "v2")}
    use_every_api(client, api_pb2_grpc.AnalyticsStub(server.channel), sample_png, bitstream)
    after = {api: count(client, LATENCY, api=api) for api in before}
    assert {api: after[api] - before[api] for api in before} == {
        "rest": 2,
        "grpc": 2,
        "stream": 1,
        "v2": 2,
    }
    # The failures are there under the model they never resolved to.
    assert count(client, LATENCY, api="rest", codec="unknown", task="unknown") >= 1
    # A frame is counted and timed under one label name for the API it came through.
    assert count(client, "transtic_analytics_frames_total", api="stream") >= 1


def test_a_refused_request_is_timed_when_no_codec_is_loaded(
    make_analytics_settings: Callable[..., Settings], backends: list[TaskBackend], sample_png: bytes
) -> None:
    settings = make_analytics_settings(codec_checkpoint=None, use_shipped_weights=False)
    with TestClient(create_app(settings, backends=backends)) as client:
        answer = client.post(
            "/v1/analyze", content=sample_png, headers={"content-type": "image/png"}
        )
        assert answer.status_code == 503
        assert count(client, LATENCY, api="rest") == 1


def test_promtool_accepts_the_exposition(
    service: tuple[TestClient, InProcessAnalytics], sample_png: bytes, bitstream: bytes
) -> None:
    if shutil.which("promtool") is None:
        pytest.skip("promtool not installed (Debian package prometheus; scripts/setup_env.sh)")
    client, server = service
    use_every_api(client, api_pb2_grpc.AnalyticsStub(server.channel), sample_png, bitstream)
    text = client.get("/metrics").text
    done = subprocess.run(
        ["promtool", "check", "metrics"], input=text, capture_output=True, text=True, timeout=60
    )
    # Remarks on the process collectors' names are not ours. Bits per pixel is a ratio,
    # not an amount of data to give in bytes, so the unit remark on it is not taken up.
    ours = [
        line
        for line in (done.stdout + done.stderr).splitlines()
        if "transtic_" in line and not ("_bits_per_pixel" in line and "base unit" in line)
    ]
    assert not ours, ours
