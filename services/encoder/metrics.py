"""Prometheus metrics of the encoder server and of the stream client, plus a tiny HTTP endpoint.

Each instance owns its registry so tests (and two roles in one process) never collide on
metric names, and each process exports only what it does. The HTTP server serves /metrics,
/healthz (process alive) and /readyz (codecs loaded, gRPC serving); the gRPC health
service remains the authoritative probe.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

log = logging.getLogger(__name__)

# The label value of a model a call never resolved to (unknown task or quality, refused).
UNKNOWN = "unknown"
MODEL_LABELS = ("codec", "quality", "task")
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BPP_BUCKETS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 4.0, 8.0)


def _default_registry() -> CollectorRegistry:
    registry = CollectorRegistry()
    # Process, Python platform and GC metrics, as every exporter has them.
    for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
        registry.register(collector)
    return registry


class CodingMetrics:
    """What both processes that code frames export: the encoder service (Encode calls)
    and the stream client (its frames), each in its own registry and on its own port."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else _default_registry()
        r = self.registry
        self.frames = Counter("transtic_encoder_frames", "Frames encoded", MODEL_LABELS, registry=r)
        self.bytes = Counter(
            "transtic_encoder_bytes", "Bitstream bytes produced", MODEL_LABELS, registry=r
        )
        self.encode_seconds = Histogram(
            "transtic_encoder_encode_seconds",
            "Time to encode one frame (decode upload + codec)",
            ["task"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.bpp = Histogram(
            "transtic_encoder_bits_per_pixel",
            "Bits per pixel of encoded frames",
            MODEL_LABELS,
            buckets=BPP_BUCKETS,
            registry=r,
        )

    def count_frame(self, codec: str, quality: int, task: str, nbytes: int, bpp: float) -> None:
        labels = {"codec": codec, "quality": str(quality), "task": task}
        self.frames.labels(**labels).inc()
        self.bytes.labels(**labels).inc(nbytes)
        self.bpp.labels(**labels).observe(bpp)


class EncoderMetrics(CodingMetrics):
    """The encoder service's: its Encode calls."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        super().__init__(registry)
        r = self.registry
        self.errors = Counter(
            "transtic_encoder_errors",
            "Refused or failed Encode calls by gRPC code, under the codec they resolved to",
            ["code", *MODEL_LABELS],
            registry=r,
        )
        self.inflight = Gauge(
            "transtic_encoder_inflight_requests", "Encode calls in progress", registry=r
        )

    def count_error(
        self, code: str, codec: str = UNKNOWN, quality: str = UNKNOWN, task: str = UNKNOWN
    ) -> None:
        self.errors.labels(code=code, codec=codec, quality=quality, task=task).inc()


class StreamMetrics(CodingMetrics):
    """The stream client's (``stream --stream-metrics-port``): the frames it coded and how
    their delivery goes. Never registered in the service, which streams nothing."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        super().__init__(registry)
        r = self.registry
        self.stream_sent = Counter(
            "transtic_stream_frames_sent", "Frame transmissions (incl. resends)", registry=r
        )
        self.stream_acked = Counter(
            "transtic_stream_frames_acked", "Frames acknowledged", ["outcome"], registry=r
        )
        self.stream_unacked = Gauge(
            "transtic_stream_unacked_frames", "Frames awaiting an ack", registry=r
        )
        self.stream_reconnects = Counter(
            "transtic_stream_reconnects", "Stream (re)connect attempts", registry=r
        )
        self.stream_target_bpp = Gauge(
            "transtic_stream_target_bpp", "Rate-control target (bpp)", registry=r
        )
        self.stream_achieved_bpp = Gauge(
            "transtic_stream_achieved_bpp", "Running average bits per pixel", registry=r
        )


def exposed_names(registry: CollectorRegistry) -> set[str]:
    """Every sample name the registry can expose (counters' _total, histograms' _bucket...)."""
    names: set[str] = set()
    for family in registry.collect():
        if family.type == "counter":
            names.update({f"{family.name}_total", f"{family.name}_created"})
        elif family.type == "histogram":
            names.update(f"{family.name}{s}" for s in ("_bucket", "_sum", "_count", "_created"))
        else:
            names.add(family.name)
    return names


class HealthHTTPServer:
    """/metrics, /healthz, /readyz on one port, in a daemon thread."""

    def __init__(
        self, host: str, port: int, registry: CollectorRegistry, ready: Callable[[], bool]
    ) -> None:
        handler = _make_handler(registry, ready)
        self._httpd = ThreadingHTTPServer((host, port), handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, name="metrics-http", daemon=True
        )

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    def start(self) -> HealthHTTPServer:
        self._thread.start()
        log.info("metrics and health on http://%s:%d/metrics", *self._httpd.server_address[:2])
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


def _make_handler(
    registry: CollectorRegistry, ready: Callable[[], bool]
) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._send(200, generate_latest(registry), CONTENT_TYPE_LATEST)
            elif path == "/healthz":
                self._send(200, b"ok\n")
            elif path == "/readyz":
                ok = ready()
                self._send(200 if ok else 503, b"ready\n" if ok else b"not ready\n")
            else:
                self._send(404, b"not found\n")

        def _send(self, status: int, body: bytes, ctype: str = "text/plain; charset=utf-8") -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            # Scrapes every few seconds would drown the service log.
            pass

    return Handler
