"""Model control over REST (ours and Triton's routes, with tritonclient) and over gRPC:
answers, error codes, the API key, and what readiness, the model list and GetInfo say."""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from fastapi.testclient import TestClient
from http_helpers import serve_in_thread
from model_repository import add_to_repository, listed_models
from service_fakes import FakeDetection

from services.analytics.rest import create_app
from services.analytics.runtime import Runtime
from services.generated.transtic.v1 import api_pb2, api_pb2_grpc
from transtic.client import AnalyticsClient, AsyncAnalyticsClient, ClientError
from transtic.tasks.registry import BackendRegistry

from .conftest import grpc_channel
from .test_analytics_rest import error_of, metric

KEY = "model-control-key-0123456789abcdef"
MakeRuntime = Callable[..., Runtime]


@pytest.fixture
def make_runtime(
    start_runtime: MakeRuntime, other_codec_checkpoint: Path, tmp_path: Path
) -> MakeRuntime:
    repository = tmp_path / "models"
    add_to_repository(repository, "other", other_codec_checkpoint)
    registry = BackendRegistry()
    registry.register(FakeDetection)
    return functools.partial(
        start_runtime,
        backend_registry=registry,
        model_repository=repository,
        default_task="detection",
    )


def entries(client: TestClient, **params: Any) -> dict[str, dict[str, Any]]:
    response = client.get("/v1/repository/models", params=params)
    assert response.status_code == 200, response.text
    return {e["name"]: e for e in response.json()["models"]}


def test_rest_load_list_unload(make_runtime: MakeRuntime) -> None:
    runtime = make_runtime()
    client = TestClient(create_app(runtime.settings, runtime))
    listed = entries(client)
    assert listed["tiny"]["state"] == "READY" and listed["tiny"]["source"] == "config"
    assert listed["other"]["state"] == "UNAVAILABLE" and listed["other"]["reason"] == "not loaded"
    detector = listed["fake_detection"]
    assert detector["kind"] == "task" and detector["state"] == "READY"
    assert set(entries(client, ready="true")) == {"tiny", "fake_detection"}

    loaded = client.post("/v1/repository/models/other/load")
    assert loaded.status_code == 200, loaded.text
    model = loaded.json()["model"]
    assert model["state"] == "READY" and len(model["version"]) == 32
    assert loaded.json()["already_loaded"] is False
    assert client.post("/v1/repository/models/other/load").json()["already_loaded"] is True
    held = {m["id"]: m for m in client.get("/v1/models").json()["models"]}
    assert held["other"]["fingerprint"] == model["version"] and held["other"]["ready"]

    gone = client.post("/v1/repository/models/other/unload").json()["unloaded"]
    assert [(g["name"], g["state"]) for g in gone] == [("other", "UNAVAILABLE")]
    assert "other" not in {m["id"] for m in client.get("/v1/models").json()["models"]}

    detail = error_of(client.post("/v1/repository/models/tiny/unload"), 409, "FAILED_PRECONDITION")
    assert "last" in detail
    assert client.post("/v1/repository/models/tiny/unload", params={"force": "true"}).is_success
    assert "no codec is loaded" in error_of(client.get("/readyz"), 503, "UNAVAILABLE")
    assert metric(client, "transtic_analytics_model_ready") == 0.0
    assert client.post("/v1/repository/models/other/load").is_success
    assert client.get("/readyz").status_code == 200
    assert metric(client, "transtic_analytics_model_ready") == 1.0
    assert metric(client, "transtic_analytics_models_loaded", kind="codec") == 1.0


def test_rest_errors_are_problems(make_runtime: MakeRuntime) -> None:
    runtime = make_runtime()
    client = TestClient(create_app(runtime.settings, runtime))
    assert "no codec model" in error_of(
        client.post("/v1/repository/models/nothing/load"), 404, "NOT_FOUND"
    )
    error_of(client.post("/v1/repository/models/nothing/unload"), 404, "NOT_FOUND")
    error_of(client.post("/v1/repository/models/..hidden/load"), 400, "INVALID_ARGUMENT")
    error_of(
        client.post("/v1/repository/models/tiny/unload", params={"version": "x"}),
        400,
        "INVALID_ARGUMENT",
    )
    assert [s.id for s in runtime.hub.codecs] == ["tiny"]


def test_rest_model_control_needs_the_key(make_runtime: MakeRuntime) -> None:
    runtime = make_runtime(api_keys=[KEY])
    client = TestClient(create_app(runtime.settings, runtime))
    for method, path in [
        ("GET", "/v1/repository/models"),
        ("POST", "/v1/repository/models/other/load"),
        ("POST", "/v1/repository/models/tiny/unload"),
        ("POST", "/v2/repository/index"),
        ("POST", "/v2/repository/models/other/load"),
    ]:
        error_of(client.request(method, path), 401, "UNAUTHENTICATED")
    assert [s.id for s in runtime.hub.codecs] == ["tiny"]
    answer = client.post(
        "/v1/repository/models/other/load", headers={"Authorization": f"Bearer {KEY}"}
    )
    assert answer.status_code == 200, answer.text


@pytest.mark.integration
def test_tritonclient_controls_models(make_runtime: MakeRuntime) -> None:
    httpclient = pytest.importorskip("tritonclient.http")
    utils = pytest.importorskip("tritonclient.utils")
    runtime = make_runtime()
    with serve_in_thread(create_app(runtime.settings, runtime)) as port:
        client = httpclient.InferenceServerClient(url=f"127.0.0.1:{port}")
        try:
            client.load_model("other")
            index = {e["name"]: e for e in client.get_model_repository_index()}
            assert index["other"]["state"] == "READY" and index["other"]["version"]
            # Triton's "ready" filter (which tritonclient does not send).
            url = f"http://127.0.0.1:{port}/v2/repository/index"
            ready = {e["name"] for e in httpx.post(url, json={"ready": True}).json()}
            assert ready == {"tiny", "other", "fake_detection"}
            client.unload_model("other")
            assert "other" not in {s.id for s in runtime.hub.codecs}
            with pytest.raises(utils.InferenceServerException, match="no codec model"):
                client.load_model("nothing")
            # Triton may carry a config or files with a load; this server takes neither.
            with pytest.raises(utils.InferenceServerException, match="not accepted"):
                client.load_model("other", config='{"backend": "python"}')
            assert "other" not in {s.id for s in runtime.hub.codecs}
        finally:
            client.close()


@pytest.fixture
def serve_grpc() -> Iterator[Callable[[Runtime], grpc.Channel]]:
    with contextlib.ExitStack() as stack:
        yield lambda runtime: stack.enter_context(grpc_channel(runtime))


@pytest.mark.integration
def test_grpc_load_list_unload(
    make_runtime: MakeRuntime, serve_grpc: Callable[[Runtime], grpc.Channel]
) -> None:
    channel = serve_grpc(make_runtime())
    control = api_pb2_grpc.ModelControlServiceStub(channel)
    listed = listed_models(channel)
    assert listed["other"].state == "UNAVAILABLE" and listed["tiny"].state == "READY"
    loaded = control.LoadModel(api_pb2.LoadModelRequest(name="other"), timeout=60)
    assert loaded.model.state == "READY" and not loaded.already_loaded
    info = api_pb2_grpc.AnalyticsStub(channel).GetInfo(api_pb2.GetInfoRequest(), timeout=10)
    assert loaded.model.version in {m.fingerprint for m in info.models if m.id == "other"}

    gone = control.UnloadModel(
        api_pb2.UnloadModelRequest(name="other", version=loaded.model.version), timeout=30
    )
    assert [m.name for m in gone.unloaded] == ["other"]
    for call, request, code in [
        (control.LoadModel, api_pb2.LoadModelRequest(name="nothing"), grpc.StatusCode.NOT_FOUND),
        (
            control.UnloadModel,
            api_pb2.UnloadModelRequest(name="nothing"),
            grpc.StatusCode.NOT_FOUND,
        ),
        (
            control.UnloadModel,
            api_pb2.UnloadModelRequest(name="tiny"),
            grpc.StatusCode.FAILED_PRECONDITION,
        ),
        (
            control.LoadModel,
            api_pb2.LoadModelRequest(name="../other"),
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
    ]:
        with pytest.raises(grpc.RpcError) as caught:
            call(request, timeout=30)
        assert caught.value.code() == code, caught.value.details()


@pytest.mark.integration
def test_grpc_model_control_needs_the_key(
    make_runtime: MakeRuntime, serve_grpc: Callable[[Runtime], grpc.Channel]
) -> None:
    runtime = make_runtime(api_keys=[KEY])
    control = api_pb2_grpc.ModelControlServiceStub(serve_grpc(runtime))
    for call, request in [
        (control.ListModels, api_pb2.ListModelsRequest()),
        (control.LoadModel, api_pb2.LoadModelRequest(name="other")),
        (control.UnloadModel, api_pb2.UnloadModelRequest(name="tiny", force=True)),
    ]:
        with pytest.raises(grpc.RpcError) as caught:
            call(request, timeout=30)
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert [s.id for s in runtime.hub.codecs] == ["tiny"]
    loaded = control.LoadModel(
        api_pb2.LoadModelRequest(name="other"),
        metadata=(("authorization", f"Bearer {KEY}"),),
        timeout=60,
    )
    assert loaded.model.state == "READY"


@pytest.mark.integration
def test_the_client_sdk_controls_models(make_runtime: MakeRuntime) -> None:
    runtime = make_runtime(api_keys=[KEY])
    with serve_in_thread(create_app(runtime.settings, runtime)) as port:
        url = f"http://127.0.0.1:{port}"
        with AnalyticsClient(url, api_key=KEY) as client:
            assert client.load_model("other").model.state == "READY"
            ready = {m.name for m in client.repository(ready=True).models}
            assert ready == {"tiny", "other", "fake_detection"}
            with pytest.raises(ClientError) as caught:
                client.load_model("nothing")
            assert (caught.value.status, caught.value.code) == (404, "NOT_FOUND")

        async def unload() -> list[str]:
            async with AsyncAnalyticsClient(url, api_key=KEY) as client:
                return [m.name for m in (await client.unload_model("other")).unloaded]

        assert asyncio.run(unload()) == ["other"]
    assert [s.id for s in runtime.hub.codecs] == ["tiny"]
