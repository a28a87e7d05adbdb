"""A codec swapped under a live gRPC stream: a new version of the stream's codec is loaded
and the old one unloaded while frames keep coming, over the ModelControlService API.
Every frame is acknowledged once, without error, and stored once; the frames already
accepted when the old version is unloaded finish on it."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from model_repository import add_to_repository
from service_fakes import GatedDetection

from services.analytics.runtime import Runtime
from services.analytics.settings import Settings
from services.generated.transtic.v1 import api_pb2, api_pb2_grpc
from transtic.client import AnalyticsGrpcClient

from .conftest import grpc_serving

pytestmark = pytest.mark.integration

STREAM = "cam-swap"
WINDOW = 6  # frames the camera keeps unacknowledged (below the server's stream window, 8)
AFTER_SWAP = 15  # frames streamed on the new version before the stream ends


def wait_until(condition: Callable[[], bool], timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition never became true"
        time.sleep(0.02)


class Camera:
    """Streams frames coded with ``bitstream[0]`` (the test switches it), keeping at most
    WINDOW unacknowledged, until ``stop`` is set."""

    def __init__(self, bitstream: bytes) -> None:
        self.bitstream = [bitstream]
        self.room = threading.Semaphore(WINDOW)
        self.stop = threading.Event()
        self.sent: list[bytes] = []
        self.acks: list[Any] = []
        self.lock = threading.Lock()

    def frames(self) -> Iterator[api_pb2.Frame]:
        while True:
            while not self.room.acquire(timeout=0.05):
                if self.stop.is_set():
                    return
            if self.stop.is_set():
                return
            with self.lock:
                sequence = len(self.sent)
                self.sent.append(self.bitstream[0])
            yield api_pb2.Frame(
                stream_id=STREAM, sequence=sequence, bitstream=self.sent[-1], task="detection"
            )

    def read(self, answers: Iterator[Any]) -> None:
        for ack in answers:
            with self.lock:
                self.acks.append(ack)
            self.room.release()

    def acked(self, predicate: Callable[[Any], bool] = lambda ack: True) -> int:
        with self.lock:
            return sum(1 for ack in self.acks if predicate(ack))

    def unacked(self) -> int:
        with self.lock:
            return len(self.sent) - len(self.acks)


@pytest.fixture
def service(
    make_settings: Callable[..., Settings], codec_checkpoint: Path, tmp_path: Path
) -> Iterator[tuple[Runtime, GatedDetection, str, Path]]:
    repository = tmp_path / "models"
    add_to_repository(repository, "edge-codec", codec_checkpoint)
    detector = GatedDetection()
    detector.gate.set()  # open: the test closes it for the moment of the swap
    settings = make_settings(
        codec_checkpoint="edge-codec",
        model_repository=repository,
        default_task="detection",
        max_batch_size=4,
    )
    runtime = Runtime(settings, backends=[detector])
    runtime.start()
    try:
        with grpc_serving(runtime) as port:
            try:
                yield runtime, detector, f"127.0.0.1:{port}", repository
            finally:
                detector.gate.set()
    finally:
        runtime.close()


def test_codec_swap_under_a_live_stream_loses_nothing(
    service: tuple[Runtime, GatedDetection, str, Path],
    bitstream: bytes,
    foreign_bitstream: bytes,
    other_codec_checkpoint: Path,
) -> None:
    runtime, detector, target, repository = service
    (old,) = runtime.hub.codecs
    # The camera streams on its own channel; the operator uses the client SDK.
    channel = grpc.insecure_channel(target)
    control = AnalyticsGrpcClient(target, timeout_s=120)
    camera = Camera(bitstream)  # coded with the old version
    answers = api_pb2_grpc.AnalyticsStub(channel).AnalyzeStream(camera.frames(), timeout=600)
    reader = threading.Thread(target=camera.read, args=(answers,), daemon=True)
    reader.start()
    wait_until(lambda: camera.acked() >= 10)

    # Hold processing so that frames of the old version are in flight at the swap.
    detector.gate.clear()
    wait_until(lambda: camera.unacked() == WINDOW and old.in_flight.count == WINDOW)
    add_to_repository(repository, "edge-codec", other_codec_checkpoint)  # the new version
    loaded = control.load_model("edge-codec")
    new_version = loaded.model.version
    assert new_version != old.fingerprint and not loaded.already_loaded
    camera.bitstream[0] = foreign_bitstream  # the edge now codes with the new version
    gone = control.unload_model("edge-codec", version=old.fingerprint)
    assert [(m.version, m.state, m.in_flight) for m in gone.unloaded] == [
        (old.fingerprint, "UNLOADING", WINDOW)
    ]
    first_new = len(camera.sent)
    detector.gate.set()
    wait_until(lambda: camera.acked(lambda ack: ack.sequence >= first_new) >= AFTER_SWAP)
    camera.stop.set()
    reader.join(120)
    assert not reader.is_alive()
    channel.close()

    sent = len(camera.sent)
    assert Counter(ack.sequence for ack in camera.acks) == Counter(range(sent))
    failed = [(a.sequence, a.error_code, a.error_message) for a in camera.acks if a.error_code]
    assert failed == [] and not any(ack.duplicate for ack in camera.acks)
    stored = runtime.store.frames(STREAM, -1, 1000)
    assert [frame.sequence for frame in stored] == list(range(sent))
    versions = [frame.result["codec_fingerprint"] for frame in stored]
    assert versions == [old.fingerprint] * first_new + [new_version] * (sent - first_new)
    # The old version is gone once its last frame is done; the new one serves alone.
    assert [(s.id, s.fingerprint) for s in runtime.hub.codecs] == [("edge-codec", new_version)]
    wait_until(lambda: runtime.hub.unloading() == [])
    serving = {m.name for m in control.list_models(ready_only=True)}
    assert serving == {"edge-codec", "gated_detection"}
    control.close()
