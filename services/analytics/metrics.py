"""Prometheus metrics of one service instance (own registry, so tests can build many)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

_NS = "transtic_analytics"
_STAGE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_BPP_BUCKETS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 4.0, 8.0)
_BATCH_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64, 128)
# The label value of a model a request never resolved to (garbage input, unknown task).
UNKNOWN = "unknown"
MODEL_LABELS = ("codec", "quality", "task")
# The ``api`` label: which interface a request or frame came in through. One name for the
# dimension on every metric, so that series join: rest (POST /v1/analyze), grpc (Analyze),
# stream (AnalyzeStream frames), v2 (the Open Inference Protocol's infer).
API_LABEL = "api"
APIS = ("rest", "grpc", "stream", "v2")


@dataclass
class ModelLabels:
    """The served model one request resolved to, as metric labels.

    Filled in step by step while the request is resolved (task checked, codec chosen),
    so an error counts under whatever was known when it happened. Values come only from
    the loaded model set, never from what a client sent: the series stay bounded.
    """

    codec: str = UNKNOWN
    quality: str = UNKNOWN
    task: str = UNKNOWN

    def values(self) -> dict[str, str]:
        return {"codec": self.codec, "quality": self.quality, "task": self.task}


def latency_buckets(timeout_s: float) -> tuple[float, ...]:
    """The stage buckets, extended up to the request timeout (the longest possible wait),
    so a slow-but-answered request never falls into +Inf only."""
    longer = [b for b in (20.0, 30.0, 60.0, 120.0, 300.0, 600.0) if b < timeout_s]
    return tuple(sorted({*_STAGE_BUCKETS, *longer, float(timeout_s)}))


class Metrics:
    def __init__(self, *, request_timeout_s: float = 60.0) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        # Process (CPU, memory, file descriptors), Python platform and GC: what an operator
        # looks at first, in this registry too since the service serves only its own.
        for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
            r.register(collector)
        self.build_info = Gauge(
            f"{_NS}_build_info",
            "Always 1; the labels name the running build",
            ["version", "python", "torch", "cuda"],
            registry=r,
        )
        self.model_ready = Gauge(
            f"{_NS}_model_ready",
            "1 when the codecs and task backends are loaded and the service takes work",
            registry=r,
        )
        self.models_loaded = Gauge(
            f"{_NS}_models_loaded",
            "Models serving now (codecs; task models of ready tasks); model control changes it",
            ["kind"],
            registry=r,
        )
        self.queue_capacity = Gauge(
            f"{_NS}_queue_capacity", "Queued frames at which requests are refused", registry=r
        )
        self.frames = Counter(
            f"{_NS}_frames",
            "Frames analysed successfully",
            [API_LABEL, *MODEL_LABELS],
            registry=r,
        )
        self.bytes = Counter(
            f"{_NS}_bitstream_bytes", "Bitstream bytes analysed", MODEL_LABELS, registry=r
        )
        self.bpp = Histogram(
            f"{_NS}_bits_per_pixel",
            "Bits per pixel of analysed frames",
            list(MODEL_LABELS),
            buckets=_BPP_BUCKETS,
            registry=r,
        )
        self.stage_seconds = Histogram(
            f"{_NS}_stage_seconds",
            "Time per processing stage (queue, encode, parse, entropy_decode, synthesis, task)",
            ["stage"],
            buckets=_STAGE_BUCKETS,
            registry=r,
        )
        self.request_seconds = Histogram(
            f"{_NS}_request_seconds",
            "End-to-end time per analysis request or streamed frame, failed ones too",
            [API_LABEL, *MODEL_LABELS],
            buckets=latency_buckets(request_timeout_s),
            registry=r,
        )
        self.queue_depth = Gauge(f"{_NS}_queue_depth", "Frames waiting for a batch", registry=r)
        self.batch_size = Histogram(
            f"{_NS}_batch_size", "Frames per processed batch", buckets=_BATCH_BUCKETS, registry=r
        )
        self.errors = Counter(
            f"{_NS}_errors", "Failed requests and frames", ["code", *MODEL_LABELS], registry=r
        )
        self.duplicates = Counter(
            f"{_NS}_duplicate_frames", "Stream frames answered from the store", registry=r
        )

    def observe_stages(self, timings_ms: Mapping[str, float]) -> None:
        for stage, ms in timings_ms.items():
            self.stage_seconds.labels(stage).observe(ms / 1e3)

    def time_request(self, api: str, labels: ModelLabels, seconds: float) -> None:
        self.request_seconds.labels(**{API_LABEL: api}, **labels.values()).observe(seconds)

    def count_error(self, code: str, labels: ModelLabels | None = None) -> None:
        self.errors.labels(code=code, **(labels or ModelLabels()).values()).inc()

    @staticmethod
    def total(counter: Counter, **labels: str) -> float:
        """The sum of ``counter`` over its series that have ``labels`` (the others free)."""
        return sum(
            sample.value
            for family in counter.collect()
            for sample in family.samples
            if sample.name.endswith("_total")
            and all(sample.labels.get(k) == v for k, v in labels.items())
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
