"""The analytics service's typed answers: one result model from the pipeline to REST,
gRPC, the store and the client SDK, and the models of every other REST answer.

The store keeps an ``AnalysisResult`` as its JSON form; gRPC gets ``to_proto``; the REST
routes declare these as ``response_model`` so the OpenAPI document says what is sent.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from services.generated.transtic.v1 import api_pb2


class _Model(BaseModel):
    # Answers written by newer servers may carry fields this version does not know.
    model_config = ConfigDict(extra="ignore")


class Label(_Model):
    name: str
    index: int
    score: float


class Mask(_Model):
    size: list[int] = Field(description="[height, width]")
    counts: str = Field(description="COCO run-length encoding")


class Detection(_Model):
    label: str
    category_id: int
    score: float
    box: list[float] = Field(description="[x0, y0, x1, y1] in pixels of the original image")
    mask: Mask | None = None


class AnalysisResult(_Model):
    """What one frame gives: the task's output plus what the codec did."""

    task: str
    labels: list[Label] = []
    detections: list[Detection] = []
    bits_per_pixel: float
    num_bytes: int
    width: int
    height: int
    quality: int
    codec_id: str
    codec_fingerprint: str = ""
    task_model_id: str
    timings_ms: dict[str, float] = {}
    request_id: str = Field(
        default="",
        description="the request this result was produced for: the client's X-Request-ID "
        "(REST), x-request-id metadata or Frame.request_id (gRPC) when valid, else a "
        "generated one",
    )
    thumbnail_jpeg_base64: str | None = Field(
        default=None, description="small JPEG of the decoded frame (streamed frames)"
    )

    @classmethod
    def from_task_output(cls, output: Mapping[str, Any], **fields: Any) -> AnalysisResult:
        """A backend's raw output (``predictions`` / ``detections``) plus codec fields."""
        labels = [
            Label(name=str(p["label"]), index=int(p["index"]), score=float(p["score"]))
            for p in output.get("predictions", [])
        ]
        detections = []
        for det in output.get("detections", []):
            mask = det.get("mask")
            detections.append(
                Detection(
                    label=str(det.get("label", det.get("category_id", ""))),
                    category_id=int(det.get("category_id", 0)),
                    score=float(det.get("score", 0.0)),
                    box=[float(v) for v in det.get("box", [])],
                    mask=Mask(size=[int(v) for v in mask["size"]], counts=str(mask["counts"]))
                    if mask
                    else None,
                )
            )
        return cls(labels=labels, detections=detections, **fields)

    def to_json(self) -> dict[str, Any]:
        """The stored form (absent optional members left out, as the REST answers do)."""
        return self.model_dump(mode="json", exclude_none=True)

    def to_proto(self) -> api_pb2.AnalyzeResult:
        message = api_pb2.AnalyzeResult(
            task=self.task,
            bits_per_pixel=self.bits_per_pixel,
            width=self.width,
            height=self.height,
            codec_id=self.codec_id,
            task_model_id=self.task_model_id,
            request_id=self.request_id,
        )
        message.timings_ms.update(self.timings_ms)
        for label in self.labels:
            message.labels.add(name=label.name, index=label.index, score=label.score)
        for det in self.detections:
            entry = message.detections.add(
                label=det.label, category_id=det.category_id, score=det.score, box=det.box
            )
            if det.mask is not None:
                entry.mask_rle = det.mask.counts
                entry.mask_size.extend(det.mask.size)
        return message


class UploadInfo(_Model):
    kind: Literal["image", "bitstream"]
    content_type: str
    bytes: int


class AnalyzeResponse(AnalysisResult):
    """``POST /v1/analyze``: the result plus what was uploaded and how well it compressed."""

    input: UploadInfo
    bitstream_bytes: int
    compression_ratio: float | None = Field(
        None, description="upload bytes / bitstream bytes (images only)"
    )
    compression_ratio_raw: float = Field(description="24-bit RGB bytes / bitstream bytes")
    image_png_base64: str | None = None


class StoredFrame(_Model):
    stream_id: str
    session: str = Field("", description="the device's session (boot epoch) of this frame")
    sequence: int
    received_ms: int
    capture_time_unix_ms: int | None = Field(
        None, description="Frame.capture_time_unix_ms as the device sent it"
    )
    content_sha256: str | None = Field(
        None, description="hex SHA-256 of the frame's bitstream (absent for old frames)"
    )
    request_id: str | None = Field(
        None, description="the request id the frame was processed under (absent for old frames)"
    )
    task: str
    result: AnalysisResult


class StreamSummary(_Model):
    stream_id: str
    first_seen_ms: int
    last_seen_ms: int
    frames_total: int
    frames_stored: int
    last_sequence: int
    session: str = Field(default="", description="the current session (the one started last)")
    latest: StoredFrame | None = None


class StreamList(_Model):
    streams: list[StreamSummary]


class FramePage(_Model):
    stream_id: str
    session: str = Field(default="", description="the session these frames belong to")
    frames: list[StoredFrame]
    next_since: int = Field(description="pass as 'since' to get the frames after these")


class SessionSummary(_Model):
    session: str
    frames_stored: int
    first_sequence: int
    last_sequence: int
    first_received_ms: int
    last_received_ms: int


class SessionList(_Model):
    stream_id: str
    sessions: list[SessionSummary] = Field(description="in the order they first arrived")


class DeleteResult(_Model):
    stream_id: str
    deleted: int = Field(description="stored frames deleted")


class ModelInfo(_Model):
    id: str
    kind: Literal["codec", "task"]
    task: str
    quality: int
    fingerprint: str
    ready: bool
    detail: str
    codec: str | None = None
    precision: str | None = Field(
        default=None, description="codecs: the arithmetic 'auto' resolved to on this device"
    )
    backend: str | None = None
    required_weights: list[str] | None = None


class ModelsInfo(_Model):
    device: str
    default_task: str
    tasks: list[str]
    qualities: list[int]
    models: list[ModelInfo]


class RepositoryModel(_Model):
    """One model as model control sees it (the fields of the gRPC RepositoryModel)."""

    name: str
    kind: Literal["codec", "task"]
    version: str = Field(
        description="codecs: weights fingerprint (hex), empty until loaded; tasks: weights"
    )
    state: Literal["READY", "UNAVAILABLE", "LOADING", "UNLOADING"]
    reason: str = Field(description="why it is not READY")
    task: str
    quality: int
    source: Literal["catalog", "repository", "config", "backends"]
    in_flight: int = Field(description="requests still holding it")


class RepositoryIndex(_Model):
    models: list[RepositoryModel]


class LoadResult(_Model):
    model: RepositoryModel
    already_loaded: bool = Field(description="that version was loaded before this call")


class UnloadResult(_Model):
    unloaded: list[RepositoryModel] = Field(
        description="state UNLOADING while requests still use them; empty if none was loaded"
    )


class Health(_Model):
    status: Literal["ok", "ready"]


class Problem(_Model):
    """RFC 9457 problem details, plus the service's stable error ``code``."""

    type: str = Field(description="a URI naming the error kind")
    title: str
    status: int
    detail: str
    code: str = Field(description="stable machine-readable code, e.g. NOT_FOUND")
    instance: str | None = None
