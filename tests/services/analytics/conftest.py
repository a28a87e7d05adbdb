"""Fixtures of the analytics tests: settings, a runtime, an HTTP client."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from services.analytics.grpc_service import GrpcFrontEnd
from services.analytics.runtime import Runtime
from services.analytics.settings import ENV_PREFIX, Settings
from services.analytics.streaming import FrameProcessor
from transtic.tasks import TaskBackend, create_backend

from .fakes import FakeDetection


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    # Settings read the environment: a developer's exports must not leak into tests.
    for name in list(os.environ):
        if name.startswith(ENV_PREFIX):
            monkeypatch.delenv(name)


@pytest.fixture
def make_settings(
    codec_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory
) -> Callable[..., Settings]:
    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "codec_checkpoint": str(codec_checkpoint),
            "host": "127.0.0.1",
            "grpc_port": 0,
            "http_port": 0,
            "device": "cpu",
            "db_path": tmp_path_factory.mktemp("db") / "frames.db",
            "weights_cache_dir": tmp_path_factory.mktemp("weights"),
            "max_batch_delay_ms": 2.0,
        }
        values.update(overrides)
        return Settings(**values)

    return make


@pytest.fixture(scope="module")
def backends(tmp_path_factory: pytest.TempPathFactory) -> list[TaskBackend]:
    """Real classifier (offline weights), fake detector, real segmenter lacking weights."""
    empty = tmp_path_factory.mktemp("no-weights")
    return [
        create_backend("classification", top_k=3, cache_dir=empty),
        FakeDetection(),
        create_backend("segmentation", cache_dir=empty),
    ]


@pytest.fixture(scope="module")
def module_settings(
    codec_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Settings]:
    yield Settings(
        codec_checkpoint=str(codec_checkpoint),
        host="127.0.0.1",
        grpc_port=0,
        http_port=0,
        device="cpu",
        db_path=tmp_path_factory.mktemp("db") / "frames.db",
        weights_cache_dir=tmp_path_factory.mktemp("weights"),
        max_batch_delay_ms=2.0,
        max_upload_bytes=200_000,
    )


@contextlib.contextmanager
def grpc_serving(runtime: Runtime) -> Iterator[int]:
    """The runtime's gRPC front end on an ephemeral port (yielded); the server and its
    frame processor stop on exit, the (caller's) runtime does not."""
    frames = FrameProcessor(runtime)
    front = GrpcFrontEnd(runtime, frames, "127.0.0.1:0")
    front.set_serving(runtime.ready)
    front.server.start()
    try:
        yield front.port
    finally:
        front.server.stop(1).wait()
        runtime.drain()
        frames.close()


@contextlib.contextmanager
def grpc_channel(runtime: Runtime) -> Iterator[grpc.Channel]:
    """A channel to the runtime's gRPC front end (see grpc_serving)."""
    with grpc_serving(runtime) as port, grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        yield channel
