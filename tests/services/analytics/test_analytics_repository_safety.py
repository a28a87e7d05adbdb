"""What model control shows and follows: no absolute server path in any answer (REST and
gRPC listings), no symlink out of the model repository, and a gRPC retry-after that is a
real positive number of seconds."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from fastapi.testclient import TestClient
from model_repository import add_to_repository
from service_fakes import FakeDetection

from services.analytics.rest import create_app
from services.analytics.runtime import Runtime
from services.analytics.settings import Settings
from services.common.errors import ErrorCode, ServiceError, abort_grpc
from services.common.model_catalog import CodecCatalog
from services.generated.transtic.v1 import api_pb2, api_pb2_grpc
from transtic.tasks import create_backend
from transtic.weights import WeightsRegistry

from .conftest import grpc_channel


@pytest.fixture
def unready_runtime(make_settings: Callable[..., Settings], tmp_path: Path) -> Iterator[Runtime]:
    """A runtime whose segmenter lacks its weights in a cache dir under ``tmp_path``: its
    listing reason is where the library's message names that directory."""
    cache = tmp_path / "weights-cache"
    cache.mkdir()
    settings = make_settings(weights_cache_dir=cache)
    runtime = Runtime(
        settings, backends=[FakeDetection(), create_backend("segmentation", cache_dir=cache)]
    )
    runtime.start()
    try:
        yield runtime
    finally:
        runtime.close()


def test_listings_show_no_absolute_path(unready_runtime: Runtime, tmp_path: Path) -> None:
    with TestClient(create_app(unready_runtime.settings, unready_runtime)) as client:
        rest = client.get("/v1/repository/models")
        triton = client.post("/v2/repository/index")
    with grpc_channel(unready_runtime) as channel:
        control = api_pb2_grpc.ModelControlServiceStub(channel)
        listing = control.ListModels(api_pb2.ListModelsRequest(), timeout=30)
    assert rest.status_code == 200 and triton.status_code == 200
    reasons = {m["name"]: m["reason"] for m in rest.json()["models"]}
    assert "not found locally" in reasons["segmentation"]  # the reason is still told
    grpc_text = str(listing)
    for answer in (rest.text, triton.text, grpc_text):
        assert str(tmp_path) not in answer and "'/tmp/" not in answer


def codec_repository(tmp_path: Path, checkpoint: Path) -> Path:
    repository = tmp_path / "repository"
    add_to_repository(repository, "inside", checkpoint)
    return repository


def catalog_of(repository: Path) -> CodecCatalog:
    return CodecCatalog(
        cache_dir=None, repository=repository, registry=WeightsRegistry([]), include_shipped=False
    )


def test_a_weights_link_out_of_the_repository_is_not_loadable(
    tmp_path: Path, codec_checkpoint: Path
) -> None:
    repository = codec_repository(tmp_path, codec_checkpoint)
    outside = tmp_path / "elsewhere.pth"
    outside.write_bytes(codec_checkpoint.read_bytes())
    manifest = json.loads((repository / "inside.json").read_text())
    os.symlink(outside, repository / "escape.pth")
    (repository / "escape.json").write_text(json.dumps({**manifest, "file": "escape.pth"}))
    sources = {s.name: s for s in catalog_of(repository).listing()}
    assert sources["inside"].problem == "" and sources["inside"].path is not None
    assert sources["escape"].path is None
    assert "outside the model repository" in sources["escape"].problem
    with pytest.raises(ServiceError) as refused:
        catalog_of(repository).find("escape")
    assert refused.value.code is ErrorCode.FAILED_PRECONDITION


def test_a_manifest_link_out_of_the_repository_is_skipped(
    tmp_path: Path, codec_checkpoint: Path
) -> None:
    repository = codec_repository(tmp_path, codec_checkpoint)
    elsewhere = tmp_path / "elsewhere"
    add_to_repository(elsewhere, "foreign", codec_checkpoint)
    os.symlink(elsewhere / "foreign.json", repository / "foreign.json")
    sources = {s.name: s for s in catalog_of(repository).listing()}
    assert sources["foreign"].path is None
    assert "outside the model repository" in sources["foreign"].problem


class TrailerContext:
    """The parts of a grpc.ServicerContext that abort_grpc uses."""

    def __init__(self) -> None:
        self.trailers: tuple[tuple[str, str], ...] = ()

    def trailing_metadata(self) -> tuple[tuple[str, str], ...]:
        return self.trailers

    def set_trailing_metadata(self, trailers: tuple[tuple[str, str], ...]) -> None:
        self.trailers = trailers

    def abort(self, code: grpc.StatusCode, details: str) -> Any:
        raise RuntimeError(details)


@pytest.mark.parametrize("wait_s", [0.0, 0.0004, 0.3, 1.0, 2.5])
def test_grpc_retry_after_is_a_positive_whole_number(wait_s: float) -> None:
    context = TrailerContext()
    error = ServiceError(ErrorCode.RESOURCE_EXHAUSTED, "slow down", retry_after_s=wait_s)
    with pytest.raises(RuntimeError):
        abort_grpc(context, error)  # type: ignore[arg-type]
    (value,) = [v for k, v in context.trailers if k == "retry-after"]
    assert value.isascii() and value.isdigit() and int(value) >= 1
    assert int(value) >= wait_s
