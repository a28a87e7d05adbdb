"""What GetInfo and the REST frame listing tell a client: defaults, ready tasks, names."""

from __future__ import annotations

from collections.abc import Callable

from fastapi.testclient import TestClient
from service_fakes import FakeDetection

from services.analytics.grpc_service import service_info
from services.analytics.rest import create_app
from services.analytics.settings import Settings
from services.analytics.streaming import FrameProcessor
from services.generated.transtic.v1 import api_pb2
from transtic.tasks import TaskBackend


def test_service_info_separates_ready_tasks_and_names_the_default(
    make_settings: Callable[..., Settings], backends: list[TaskBackend]
) -> None:
    settings = make_settings(default_task="detection")
    with TestClient(create_app(settings, backends=backends)) as client:
        info = service_info(client.app.state.runtime)  # type: ignore[attr-defined]
    assert info.default_task == "detection"
    assert list(info.tasks) == ["classification", "detection", "segmentation"]
    # The segmenter's weights are missing in the tests: known, but not ready.
    assert "segmentation" not in info.ready_tasks
    assert set(info.ready_tasks) == {"classification", "detection"}


def test_rest_frames_use_the_proto_field_names(
    make_settings: Callable[..., Settings], bitstream: bytes
) -> None:
    with TestClient(create_app(make_settings(), backends=[FakeDetection()])) as client:
        runtime = client.app.state.runtime  # type: ignore[attr-defined]
        frames = FrameProcessor(runtime)
        try:
            ack = frames.submit("cam", 0, bitstream, "detection", 1234, "boot").result(60)
        finally:
            frames.close()
        assert ack.error is None
        (frame,) = client.get("/v1/streams/cam/frames").json()["frames"]
    proto_names = set(api_pb2.Frame.DESCRIPTOR.fields_by_name)
    assert {"stream_id", "sequence", "capture_time_unix_ms", "session"} <= proto_names
    assert frame["capture_time_unix_ms"] == 1234 and frame["session"] == "boot"
    assert frame["content_sha256"] and "capture_time_ms" not in frame
