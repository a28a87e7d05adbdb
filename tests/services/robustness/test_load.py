"""Load and load shedding against real analytics processes on 127.0.0.1.

Two ``python -m services.analytics`` processes (tiny random-weight codec, the real
EfficientNet-Lite0 classifier) start together:

* ``load``, default limits: two identical phases of concurrent edge streams (the encoder's
  streaming code, in-process) plus REST clients posting bitstreams. Reported: throughput,
  p50/p99 latency, rejections, the process's resident memory; checked: every frame of
  every stream stored exactly once, nothing analysed twice, memory bounded and not growing
  from one phase to the next.
* ``small``, ``--max-queue 2 --max-batch-size 1``: flooded over REST and gRPC until it
  sheds load (429 with Retry-After, RESOURCE_EXHAUSTED with a retry-after trailer), then
  left alone: it must answer normally at once and report SERVING.

Counts and times are bounded (about a minute on two busy cores); the figures also appear
in the terminal summary ("load test figures").
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from e2e_helpers import (
    BITSTREAM,
    SERVING,
    Analytics,
    grpc_health,
    metric,
    scene,
    stored_frames,
)

from services.generated.transtic.v1 import api_pb2, api_pb2_grpc

from .conftest import LOAD_REPORTS
from .load_helpers import (
    RestStats,
    RssSampler,
    StreamRun,
    join_threads,
    percentiles_ms,
    proc_status_mb,
    rest_client,
    run_threads,
    start_stream,
    start_threads,
)

pytestmark = pytest.mark.integration

HEIGHT, WIDTH = 96, 128
N_STREAMS, N_FRAMES = 6, 10
N_REST_CLIENTS, N_REST_REQUESTS = 3, 8
PHASE_TIMEOUT_S = 150.0
RSS_LIMIT_MB = 3072.0
RSS_GROWTH_LIMIT_MB = 256.0  # phase 2 over phase 1: allocator noise, not a leak
FLOOD_S = 6.0
REST_FLOODERS, GRPC_FLOODERS = 8, 4
FRAMES_METRIC = "transtic_analytics_frames_total"


@dataclass
class Services:
    load: Analytics
    small: Analytics
    bitstreams: list[bytes]


@pytest.fixture(scope="module")
def services(
    codec_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Services]:
    work = tmp_path_factory.mktemp("load")
    cache = work / "weights"
    cache.mkdir()
    backends = ["--task-backends", "classification"]
    load = Analytics(codec_checkpoint, work / "load.db", cache, work / "load.log", backends)
    shed = [*backends, "--max-queue", "2", "--max-batch-size", "1", "--rate-limit-per-s", "0"]
    small = Analytics(codec_checkpoint, work / "small.db", cache, work / "small.log", shed)
    try:
        load.start()
        small.start()
        # Code the frames while both processes import torch and load their models.
        from transtic.codec import ImageCodec
        from transtic.images import to_tensor

        codec = ImageCodec.from_checkpoint(str(codec_checkpoint))
        bitstreams = [
            codec.encode(to_tensor(scene(HEIGHT, WIDTH, seed=i))).data for i in range(N_FRAMES)
        ]
        load.wait_ready()
        small.wait_ready()
        yield Services(load, small, bitstreams)
    finally:
        small.stop()
        load.stop()


def report(name: str, figures: dict[str, Any], record_property: Any) -> None:
    print(f"\n{name}: {json.dumps(figures, indent=1, sort_keys=True)}")
    record_property(name, json.dumps(figures, sort_keys=True))
    LOAD_REPORTS.append((name, figures))


def check_streams(service: Analytics, runs: list[StreamRun], deadline: float) -> list[str]:
    """Every frame acknowledged once and stored exactly once; problems as text."""
    problems = []
    for run in runs:
        if not run.sender.join(max(0.0, deadline - time.monotonic())):
            run.sender.stop()
            problems.append(f"{run.stream_id}: still streaming at the deadline")
            continue
        if run.sender.error is not None or run.outcomes["error"]:
            problems.append(f"{run.stream_id}: {run.sender.error} {dict(run.outcomes)}")
        if sorted(run.acked) != list(range(run.count)) or set(run.acked.values()) != {1}:
            problems.append(f"{run.stream_id}: acks {dict(run.acked)}")
        sequences = [f["sequence"] for f in stored_frames(service.url, run.stream_id)]
        if sorted(sequences) != list(range(run.count)) or len(set(sequences)) != len(sequences):
            problems.append(f"{run.stream_id}: stored sequences {sequences}")
    return problems


def run_phase(service: Analytics, bitstreams: list[bytes], tag: str) -> dict[str, Any]:
    before = service.metrics()
    rest = RestStats()
    start = time.perf_counter()
    deadline = time.monotonic() + PHASE_TIMEOUT_S
    with RssSampler(service.pid) as rss:
        runs = [
            start_stream(service.target, f"load-{tag}-{i}", bitstreams) for i in range(N_STREAMS)
        ]
        clients = [
            (rest_client, (service.url, bitstreams[i], N_REST_REQUESTS, deadline, rest))
            for i in range(N_REST_CLIENTS)
        ]
        run_threads(clients, PHASE_TIMEOUT_S + 10)
        problems = check_streams(service, runs, deadline)
        elapsed = time.perf_counter() - start
    assert not problems, "\n".join(problems) + service.log_tail(3000)
    assert not rest.bad_answers, rest.bad_answers[:5]
    assert rest.statuses[200] == N_REST_CLIENTS * N_REST_REQUESTS, dict(rest.statuses)

    after = service.metrics()

    def delta(name: str, **labels: str) -> float:
        return metric(after, name, labels) - metric(before, name, labels)

    stream_frames = N_STREAMS * N_FRAMES
    # Nothing analysed twice: each stored frame and each REST answer is one analysis.
    assert delta(FRAMES_METRIC, api="stream") == stream_frames
    assert delta(FRAMES_METRIC, api="rest") == rest.statuses[200]
    assert delta("transtic_analytics_duplicate_frames_total") == 0
    assert delta("transtic_analytics_errors_total", code="INTERNAL") == 0
    stream_latencies = [s for run in runs for s in run.latencies_s]
    analysed = stream_frames + rest.statuses[200]
    return {
        "seconds": round(elapsed, 2),
        "frames_analysed": analysed,
        "throughput_fps": round(analysed / elapsed, 2),
        "stream_latency": percentiles_ms(stream_latencies),
        "rest_latency": percentiles_ms(rest.latencies_s),
        "rejected_rest_429": rest.statuses[429],
        "rejected_stream_frames": sum(r.outcomes["refused_resource_exhausted"] for r in runs),
        "stream_retries": sum(r.outcomes["retry"] for r in runs),
        "rss_peak_mb": round(rss.peak_mb, 1),
        "rss_end_mb": round(proc_status_mb(service.pid, "VmRSS"), 1),
        "vm_hwm_mb": round(proc_status_mb(service.pid, "VmHWM"), 1),
    }


def test_load_streams_and_rest_clients(services: Services, record_property: Any) -> None:
    service = services.load
    first = run_phase(service, services.bitstreams, "a")
    second = run_phase(service, services.bitstreams, "b")
    figures = {
        "streams": N_STREAMS,
        "frames_per_stream": N_FRAMES,
        "rest_clients": N_REST_CLIENTS,
        "rest_requests_per_client": N_REST_REQUESTS,
        "image": f"{WIDTH}x{HEIGHT}",
        "phase_1": first,
        "phase_2": second,
    }
    report("load", figures, record_property)
    assert second["vm_hwm_mb"] < RSS_LIMIT_MB, figures
    growth = second["rss_end_mb"] - first["rss_end_mb"]
    assert growth < RSS_GROWTH_LIMIT_MB, f"RSS grew {growth:.0f} MiB from phase 1 to 2"
    assert grpc_health(service.target) == SERVING


# -- shedding -------------------------------------------------------------------------------
@dataclass
class GrpcFlood:
    codes: Counter[str]
    retry_after: list[str]


def grpc_flooder(target: str, bitstream: bytes, deadline: float, out: GrpcFlood) -> None:
    request = api_pb2.AnalyzeRequest(bitstream=bitstream, task="classification")
    with grpc.insecure_channel(target) as channel:
        stub = api_pb2_grpc.AnalyticsStub(channel)
        while time.monotonic() < deadline:
            try:
                stub.Analyze(request, timeout=60)
                out.codes["OK"] += 1
            except grpc.RpcError as exc:
                out.codes[exc.code().name] += 1
                trailers = dict(exc.trailing_metadata() or ())  # type: ignore[attr-defined]
                if exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
                    out.retry_after.append(str(trailers.get("retry-after", "")))
                    time.sleep(0.02)


def test_full_queue_sheds_load_and_recovers(services: Services, record_property: Any) -> None:
    service, bitstreams = services.small, services.bitstreams
    before = service.metrics()
    rest = RestStats()
    flood = GrpcFlood(Counter(), [])
    deadline = time.monotonic() + FLOOD_S
    with RssSampler(service.pid) as rss:
        flooders: list[tuple[Any, tuple[Any, ...]]] = [
            (rest_client, (service.url, bitstreams[i % N_FRAMES], 10**6, deadline, rest, 0.02))
            for i in range(REST_FLOODERS)
        ]
        flooders += [
            (grpc_flooder, (service.target, bitstreams[i], deadline, flood))
            for i in range(GRPC_FLOODERS)
        ]
        threads = start_threads(flooders)
        # An edge stream joins the flood: its refused frames are retried, none is lost.
        time.sleep(1.0)
        stream = start_stream(service.target, "shed-stream", bitstreams)
        join_threads(threads, FLOOD_S + 90)
        flood_end = time.monotonic()
        stream_problems = check_streams(service, [stream], flood_end + 90)

    # Shedding: both front ends refused work with the typed answer and a retry hint.
    assert not rest.bad_answers, rest.bad_answers[:5]
    assert rest.statuses[429] > 0, dict(rest.statuses)
    # ... while it kept working at its (tiny) capacity.
    assert rest.statuses[200] + flood.codes["OK"] > 0, (dict(rest.statuses), dict(flood.codes))
    assert all(value.isdigit() and int(value) >= 1 for value in rest.retry_after)
    assert set(flood.codes) <= {"OK", "RESOURCE_EXHAUSTED"}, dict(flood.codes)
    assert flood.codes["RESOURCE_EXHAUSTED"] > 0, dict(flood.codes)
    assert all(value.isdigit() and int(value) >= 1 for value in flood.retry_after)
    assert not stream_problems, stream_problems

    # Recovery: the next ordinary request succeeds at once, and the service is healthy.
    start = time.perf_counter()
    reply = httpx.post(
        f"{service.url}/v1/analyze", content=bitstreams[0], headers=BITSTREAM, timeout=60
    )
    recovery_s = time.perf_counter() - start
    assert reply.status_code == 200, reply.text
    assert reply.json()["labels"]
    with grpc.insecure_channel(service.target) as channel:
        result = api_pb2_grpc.AnalyticsStub(channel).Analyze(
            api_pb2.AnalyzeRequest(bitstream=bitstreams[1]), timeout=60
        )
    assert result.labels
    assert grpc_health(service.target) == SERVING
    assert httpx.get(f"{service.url}/readyz", timeout=10).status_code == 200
    after = service.metrics()
    assert metric(after, "transtic_analytics_queue_depth") == 0
    assert metric(after, "transtic_analytics_errors_total", {"code": "INTERNAL"}) == 0
    refused = metric(after, "transtic_analytics_errors_total", {"code": "RESOURCE_EXHAUSTED"})
    refused -= metric(before, "transtic_analytics_errors_total", {"code": "RESOURCE_EXHAUSTED"})
    report(
        "shedding",
        {
            "flood_seconds": FLOOD_S,
            "rest": {str(k): v for k, v in sorted(rest.statuses.items())},
            "grpc": dict(flood.codes),
            "stream_frames_refused_then_retried": stream.outcomes["refused_resource_exhausted"],
            "refusals_counted_by_service": refused,
            "rest_latency_accepted": percentiles_ms(rest.latencies_s),
            "first_request_after_flood_ms": round(recovery_s * 1e3, 1),
            "rss_peak_mb": round(rss.peak_mb, 1),
        },
        record_property,
    )
