"""A fake Analytics gRPC service for stream tests: a real server that can be stopped and restarted
(and :func:`live_analytics`, the real service in process, for end-to-end stream tests).

The store outlives server restarts, like the persistent dedup store of the real service, so
tests can check that each (stream_id, sequence) was processed exactly once.
"""

from __future__ import annotations

import io
import socket
import threading
from collections.abc import Iterator
from concurrent import futures
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import numpy as np
from PIL import Image

from services.encoder.streamer import EncodedFrame, StreamRun
from services.generated.transtic.v1 import api_pb2, api_pb2_grpc


@dataclass
class Store:
    processed: list[tuple[str, int]] = field(default_factory=list)
    results: dict[tuple[str, int], api_pb2.AnalyzeResult] = field(default_factory=dict)
    duplicates_answered: list[int] = field(default_factory=list)
    # sequence -> grpc code to answer once (not stored: the frame was not processed)
    fail_once: dict[int, grpc.StatusCode] = field(default_factory=dict)
    # sequence -> code answered every time, stored as processed (a permanent error)
    fail_always: dict[int, grpc.StatusCode] = field(default_factory=dict)
    # process this sequence, then never ack it: the crash-between-work-and-ack case
    hang_after: int | None = None
    hanging: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)
    ack_delay_s: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)
    # quality -> weights fingerprint of the codecs held (GetInfo); None: no GetInfo at all.
    # Frames of other qualities (FakeEncoder's first byte) are refused as the real service
    # refuses foreign weights.
    codecs: dict[int, str] | None = None
    # (sequence, quality): when this frame arrives, that codec is unloaded
    unload_at: tuple[int, int] | None = None

    def sequences(self) -> list[int]:
        return [seq for _, seq in self.processed]


class FakeAnalytics(api_pb2_grpc.AnalyticsServicer):
    def __init__(self, store: Store) -> None:
        self.store = store

    def GetInfo(self, request: Any, context: Any) -> api_pb2.ServiceInfo:  # noqa: N802
        if self.store.codecs is None:
            context.abort(grpc.StatusCode.UNIMPLEMENTED, "no GetInfo here")
        with self.store.lock:
            codecs = dict(self.store.codecs or {})
        models = [
            api_pb2.ModelInfo(kind="codec", quality=q, fingerprint=fp, ready=True)
            for q, fp in codecs.items()
        ]
        return api_pb2.ServiceInfo(service="analytics", models=models)

    def AnalyzeStream(self, request_iterator: Iterator[api_pb2.Frame], context: Any) -> Any:  # noqa: N802
        s = self.store
        for frame in request_iterator:
            key = (frame.stream_id, int(frame.sequence))
            sid, seq = frame.stream_id, frame.sequence
            with s.lock:
                if s.unload_at is not None and seq >= s.unload_at[0] and s.codecs:
                    s.codecs.pop(s.unload_at[1], None)
                if s.codecs is not None and frame.bitstream[0] not in s.codecs:
                    code = grpc.StatusCode.FAILED_PRECONDITION
                    yield api_pb2.FrameAck(
                        stream_id=sid, sequence=seq, error_code=code.value[0], error_message="?"
                    )
                    continue
                if key in s.results:
                    s.duplicates_answered.append(key[1])
                    yield api_pb2.FrameAck(
                        stream_id=sid, sequence=seq, duplicate=True, result=s.results[key]
                    )
                    continue
                code = s.fail_once.pop(key[1], None)
                if code is not None:
                    yield api_pb2.FrameAck(
                        stream_id=sid, sequence=seq, error_code=code.value[0], error_message="busy"
                    )
                    continue
                s.processed.append(key)
                result = api_pb2.AnalyzeResult(
                    task=frame.task, labels=[api_pb2.Label(name=f"label{key[1]}", score=0.9)]
                )
                s.results[key] = result
                permanent = s.fail_always.get(key[1])
            if s.hang_after == key[1]:
                s.hanging.set()
                s.release.wait(30)
                return
            if s.ack_delay_s and s.release.wait(s.ack_delay_s):
                pass
            if permanent is not None:
                yield api_pb2.FrameAck(
                    stream_id=sid, sequence=seq, error_code=permanent.value[0], error_message="bad"
                )
            else:
                yield api_pb2.FrameAck(stream_id=sid, sequence=seq, result=result)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class FakeAnalyticsServer:
    """Start/stop/restart on one fixed port, sharing one Store."""

    def __init__(self, store: Store | None = None, port: int | None = None) -> None:
        self.store = store or Store()
        self.port = port or free_port()
        self.server: grpc.Server | None = None

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> FakeAnalyticsServer:
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        api_pb2_grpc.add_AnalyticsServicer_to_server(FakeAnalytics(self.store), server)
        if server.add_insecure_port(self.target) != self.port:
            raise OSError(f"cannot bind {self.target}")
        server.start()
        self.server = server
        return self

    def stop(self) -> None:
        """Like a crash: cancel every call at once (then let hung handlers return)."""
        if self.server is not None:
            stopped = self.server.stop(0)
            self.store.release.set()
            stopped.wait(5)
            self.server = None
            self.store.release = threading.Event()


class FakeEncoder:
    """Known bits per pixel per quality; records each call's buffer occupancy if given one."""

    def __init__(self, bpp: dict[int, float], observe: Any = None) -> None:
        self.bpp = bpp
        self.calls: list[int] = []
        self.observe = observe

    def __call__(self, image: Any, quality: int) -> EncodedFrame:
        if self.observe is not None:
            self.observe()
        self.calls.append(quality)
        pixels = int(image.shape[-1] * image.shape[-2])
        size = max(1, round(self.bpp[quality] * pixels / 8))
        return EncodedFrame(bytes([quality]) + b"x" * (size - 1), 1.0)  # quality, then filler


def png_bytes(width: int, height: int, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    array = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(array).save(out, format="PNG")
    return out.getvalue()


def write_frames(directory: Path, count: int, size: int = 64) -> Path:
    """A video-like sequence: one scene with a little fresh noise per frame."""
    directory.mkdir(parents=True, exist_ok=True)
    scene = np.random.default_rng(0).integers(0, 256, size=(size, size, 3)).astype(np.int16)
    for i in range(count):
        noise = np.random.default_rng(i + 1).integers(-12, 13, size=scene.shape)
        frame = np.clip(scene + noise, 0, 255).astype(np.uint8)
        Image.fromarray(frame).save(directory / f"frame_{i:04d}.png")
    return directory


@contextmanager
def live_analytics(settings: Any, backends: list[Any]) -> Iterator[tuple[str, Any]]:
    """The real analytics (runtime and gRPC front end) on 127.0.0.1: yields its target and
    runtime, whose store holds what the stream client delivered."""
    from service_fakes import analytics_grpc

    with analytics_grpc(settings, backends) as served:
        yield f"127.0.0.1:{served.port}", served.runtime


def camera_analytics_settings(checkpoint: Path, db_path: Path) -> Any:
    """Analytics for the camera tests: detection with the test codec, batches right away."""
    from services.analytics.settings import Settings

    return Settings(
        codec_checkpoint=str(checkpoint),
        host="127.0.0.1",
        device="cpu",
        default_task="detection",
        db_path=db_path,
        max_batch_delay_ms=1.0,
        precision="float32",  # emulated bfloat16 is slow on small CPUs
    )


def camera_stream_run(
    source: str, target: str, checkpoint: Path, stream_id: str, **overrides: Any
) -> StreamRun:
    """The stream client reading a camera, patient with a camera that goes away."""
    from services.encoder.settings import EncoderSettings

    values: dict[str, Any] = {
        "checkpoints": {"detection": {1: checkpoint}},
        "task": "detection",
        "device": "cpu",
        "precision": "float32",
        "source": source,
        "target": target,
        "stream_id": stream_id,
        "reconnect_initial_s": 0.2,
        "reconnect_max_s": 0.5,
        "source_reconnect_attempts": 100,
        "drain_timeout_s": 60.0,
    }
    return StreamRun(EncoderSettings(**(values | overrides)))
