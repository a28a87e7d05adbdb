"""What the service tests share: small task backends, a raw analyze request, the in-process
analytics gRPC server. One copy each; the fixtures that use them are in ``conftest.py``."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, ClassVar

import grpc
import torch

from services.analytics.grpc_service import GrpcFrontEnd
from services.analytics.rest import BITSTREAM_TYPE
from services.analytics.runtime import Runtime
from services.analytics.schemas import AnalysisResult
from services.analytics.settings import Settings
from services.analytics.streaming import FrameProcessor
from transtic.tasks import Normalization, TaskBackend, TaskName, encode_masks

FAIL_WIDTH = 24  # images this wide make FakeDetection fail (to test per-item isolation)
COLOURS = ("red", "green", "blue")


class WeightlessBackend(TaskBackend):
    """A task backend with nothing to load that takes images as they come (0-1 RGB)."""

    @property
    def required_weights(self) -> list[str]:
        return []

    @property
    def normalization(self) -> Normalization:
        return Normalization(mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), resize="internal")

    def _load(self) -> None:
        pass


class FakeDetection(WeightlessBackend):
    """One box over the middle half of each image, with a mask, category 0."""

    name: ClassVar[str] = "fake_detection"
    task: ClassVar[TaskName] = "detection"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.batches: list[int] = []

    @property
    def required_weights(self) -> list[str]:
        return ["fake_detection_weights"]

    def _predict(self, images: list[torch.Tensor]) -> list[dict[str, Any]]:
        self.batches.append(len(images))
        out = []
        for image in images:
            h, w = image.shape[-2:]
            if w == FAIL_WIDTH:
                raise ValueError("fake detector cannot handle this width")
            x1, y1, x2, y2 = w // 4, h // 4, 3 * w // 4, 3 * h // 4
            mask = torch.zeros(1, 1, h, w)
            mask[..., y1:y2, x1:x2] = 1.0
            (rle,) = encode_masks(mask)
            out.append(
                {
                    "image_size": [h, w],
                    "detections": [
                        {
                            "box": [float(x1), float(y1), float(x2), float(y2)],
                            "score": 0.9,
                            "category_id": 0,
                            "label": "thing",
                            "mask": rle,
                        }
                    ],
                }
            )
        return out


class GatedDetection(FakeDetection):
    """Holds the batch worker inside predict until ``gate`` is set."""

    name: ClassVar[str] = "gated_detection"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.entered = threading.Event()
        self.gate = threading.Event()

    def _predict(self, images: list[torch.Tensor]) -> list[dict[str, Any]]:
        self.entered.set()
        self.gate.wait(30)
        return super()._predict(images)


class TinyDetection(WeightlessBackend):
    """A detector without weights: one box over each whole image, no mask."""

    name: ClassVar[str] = "tiny_detection"
    task: ClassVar[TaskName] = "detection"

    def _predict(self, images: list[torch.Tensor]) -> list[dict[str, Any]]:
        out = []
        for image in images:
            h, w = image.shape[-2:]
            box = [0.0, 0.0, float(w), float(h)]
            detection = {"box": box, "score": 0.5, "category_id": 0, "label": "thing"}
            out.append({"image_size": [h, w], "detections": [detection]})
        return out


class MeanColourClassifier(WeightlessBackend):
    """Labels an image by its dominant mean channel: constant work, no weights."""

    name: ClassVar[str] = "mean_colour"
    task: ClassVar[TaskName] = "classification"

    def _predict(self, images: list[torch.Tensor]) -> list[dict[str, Any]]:
        out = []
        for image in images:
            means = image.float().mean(dim=(-2, -1))
            index = int(means.argmax())
            out.append({"predictions": [{"label": COLOURS[index], "index": index, "score": 1.0}]})
        return out


def sample_result(**overrides: Any) -> AnalysisResult:
    """A complete analysis result without a model run (a detection by the tiny codec)."""
    values: dict[str, Any] = {"task": "detection", "bits_per_pixel": 0.25, "num_bytes": 96}
    values.update(width=64, height=48, quality=1, codec_id="tiny", task_model_id="fake-detector")
    return AnalysisResult(**{**values, **overrides})


def analyze_scope(
    *,
    query: bytes = b"task=detection",
    content_type: str = BITSTREAM_TYPE,
    headers: dict[str, str] | None = None,
) -> dict[str, Any]:
    """A raw ASGI request to the analyze endpoint, for tests that drive the app below HTTP."""
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/analyze",
        "raw_path": b"/v1/analyze",
        "query_string": query,
        "headers": [
            (b"content-type", content_type.encode()),
            *((k.encode(), v.encode()) for k, v in (headers or {}).items()),
        ],
        "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 80),
        "root_path": "",
        "state": {},
    }


@dataclass(frozen=True)
class InProcessAnalytics:
    runtime: Runtime
    frames: FrameProcessor
    front: GrpcFrontEnd
    channel: grpc.Channel  # insecure, to the front end's port

    @property
    def port(self) -> int:
        return int(self.front.port)


@contextmanager
def serve_grpc(
    runtime: Runtime, *, serving: bool | None = True, grace_s: float = 0
) -> Iterator[InProcessAnalytics]:
    """The gRPC front end of ``runtime`` (and its health-only port when configured) on
    127.0.0.1; the server and its frame processor stop on exit, the runtime does not.
    ``serving=None`` reports health as the runtime's readiness."""
    frames = FrameProcessor(runtime)
    try:
        front = GrpcFrontEnd(runtime, frames, "127.0.0.1:0")
    except BaseException:
        frames.close()
        raise
    front.set_serving(runtime.ready if serving is None else serving)
    front.server.start()
    if front.health_port is not None:
        front.health_port.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{front.port}")
    try:
        yield InProcessAnalytics(runtime, frames, front, channel)
    finally:
        channel.close()
        front.server.stop(grace_s).wait()
        if front.health_port is not None:
            front.health_port.stop()
        runtime.drain()
        frames.close()


@contextmanager
def analytics_grpc(
    settings: Settings,
    backends: list[TaskBackend],
    *,
    start: bool = True,
    serving: bool | None = True,
    grace_s: float = 0,
) -> Iterator[InProcessAnalytics]:
    """A runtime with ``backends`` (its models loaded unless ``start=False``) served by
    :func:`serve_grpc`; closed on exit."""
    runtime = Runtime(settings, backends=backends)
    try:
        if start:
            runtime.start()
        with serve_grpc(runtime, serving=serving, grace_s=grace_s) as served:
            yield served
    finally:
        runtime.close()
