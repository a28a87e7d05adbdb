"""Fixtures of the analytics tests: settings and task backends."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest
from service_fakes import FakeDetection, serve_grpc

from services.analytics.runtime import Runtime
from services.analytics.settings import Settings
from transtic.tasks import TaskBackend, create_backend
from transtic.tasks.registry import BackendRegistry


@pytest.fixture
def make_settings(make_analytics_settings: Callable[..., Settings]) -> Callable[..., Settings]:
    return functools.partial(make_analytics_settings, max_batch_delay_ms=2.0)


@pytest.fixture
def start_runtime(make_settings: Callable[..., Settings]) -> Iterator[Callable[..., Runtime]]:
    """``start_runtime(**overrides)``: a started runtime with the fake detector, closed
    when the test ends (``backend_registry``: what model control may load)."""
    started: list[Runtime] = []

    def start(*, backend_registry: BackendRegistry | None = None, **overrides: Any) -> Runtime:
        runtime = Runtime(
            make_settings(**overrides),
            backends=[FakeDetection()],
            backend_registry=backend_registry,
        )
        runtime.start()
        started.append(runtime)
        return runtime

    yield start
    for runtime in started:
        runtime.close()


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
def module_settings(make_analytics_settings: Callable[..., Settings]) -> Settings:
    return make_analytics_settings(max_batch_delay_ms=2.0, max_upload_bytes=200_000)


@contextlib.contextmanager
def grpc_serving(runtime: Runtime) -> Iterator[int]:
    """The runtime's gRPC front end on an ephemeral port (yielded); the server and its
    frame processor stop on exit, the (caller's) runtime does not."""
    with serve_grpc(runtime, serving=None, grace_s=1) as served:
        yield served.port


@contextlib.contextmanager
def grpc_channel(runtime: Runtime) -> Iterator[grpc.Channel]:
    """A channel to the runtime's gRPC front end (see grpc_serving)."""
    with serve_grpc(runtime, serving=None, grace_s=1) as served:
        yield served.channel
