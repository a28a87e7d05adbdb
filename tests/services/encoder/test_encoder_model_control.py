"""Model control of the edge encoder: a codec's new version takes its (task, quality)
while the encoder serves; an encode already running finishes on the model it started
with; names only, errors with gRPC status codes, the API key."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from encoder_fakes import png_bytes
from model_repository import add_to_repository, listed_models

from services.encoder.codecs import CodecBank
from services.encoder.server import EncoderServer
from services.encoder.settings import EncoderSettings
from services.generated.transtic.v1 import api_pb2, api_pb2_grpc
from transtic.bitstream import peek_header

KEY = "encoder-control-key-0123456789abcdef"
Serve = Callable[..., tuple[EncoderServer, grpc.Channel]]


@pytest.fixture
def repository(tmp_path: Path, checkpoints: dict[int, Path]) -> Path:
    repo = tmp_path / "models"
    # Other weights (the q3 file) published as a new version of the q2 codec.
    add_to_repository(repo, "cls-q2-v2", checkpoints[3], task="classification", quality=2)
    add_to_repository(repo, "no-quality", checkpoints[1], task="classification")
    return repo


@pytest.fixture
def serve(make_settings: Callable[..., EncoderSettings], repository: Path) -> Iterator[Serve]:
    started: list[tuple[EncoderServer, grpc.Channel]] = []

    def start(**overrides: Any) -> tuple[EncoderServer, grpc.Channel]:
        settings = make_settings(model_repository=repository, **overrides)
        server = EncoderServer(settings, CodecBank.load(settings)).start()
        channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
        started.append((server, channel))
        return server, channel

    yield start
    for server, channel in started:
        channel.close()
        server.stop(grace=0)


def encode_q2(channel: grpc.Channel) -> api_pb2.EncodeResponse:
    request = api_pb2.EncodeRequest(image=png_bytes(64, 64), task="classification", quality=2)
    reply: api_pb2.EncodeResponse = api_pb2_grpc.EncoderStub(channel).Encode(request, timeout=60)
    assert peek_header(reply.bitstream).weights_fingerprint.hex() == reply.fingerprint
    return reply


def test_a_new_version_takes_over_its_task_and_quality(serve: Serve) -> None:
    _, channel = serve()
    control = api_pb2_grpc.ModelControlServiceStub(channel)
    listed = listed_models(channel)
    assert listed["cls_q2"].state == "READY" and listed["cls_q2"].source == "config"
    assert listed["cls-q2-v2"].state == "UNAVAILABLE"
    before = encode_q2(channel).fingerprint
    assert listed["cls_q2"].version == before

    loaded = control.LoadModel(api_pb2.LoadModelRequest(name="cls-q2-v2"), timeout=60)
    assert (loaded.model.task, loaded.model.quality, loaded.already_loaded) == (
        "classification",
        2,
        False,
    )
    assert loaded.model.version != before and encode_q2(channel).fingerprint == loaded.model.version
    info = api_pb2_grpc.EncoderStub(channel).GetInfo(api_pb2.GetInfoRequest(), timeout=10)
    (q2,) = [m for m in info.models if m.task == "classification" and m.quality == 2]
    assert q2.fingerprint == loaded.model.version and q2.detail == "model cls-q2-v2"
    again = control.LoadModel(api_pb2.LoadModelRequest(name="cls-q2-v2"), timeout=60)
    assert again.already_loaded

    gone = control.UnloadModel(api_pb2.UnloadModelRequest(name="cls-q2-v2"), timeout=30)
    assert [m.version for m in gone.unloaded] == [loaded.model.version]
    with pytest.raises(grpc.RpcError) as caught:
        encode_q2(channel)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


@pytest.mark.parametrize(
    ("request_", "code"),
    [
        (api_pb2.LoadModelRequest(name="nothing"), grpc.StatusCode.NOT_FOUND),
        (api_pb2.LoadModelRequest(name="no-quality"), grpc.StatusCode.FAILED_PRECONDITION),
        (api_pb2.LoadModelRequest(name="/etc/passwd"), grpc.StatusCode.INVALID_ARGUMENT),
        (api_pb2.UnloadModelRequest(name="nothing"), grpc.StatusCode.NOT_FOUND),
        (
            api_pb2.UnloadModelRequest(name="cls_q1", version="0" * 32),
            grpc.StatusCode.NOT_FOUND,
        ),
    ],
    ids=["unknown", "no-quality", "path", "unload-unknown", "unload-other-version"],
)
def test_refusals_have_status_codes(serve: Serve, request_: Any, code: grpc.StatusCode) -> None:
    _, channel = serve()
    control = api_pb2_grpc.ModelControlServiceStub(channel)
    is_load = isinstance(request_, api_pb2.LoadModelRequest)
    call = control.LoadModel if is_load else control.UnloadModel
    with pytest.raises(grpc.RpcError) as caught:
        call(request_, timeout=60)
    assert caught.value.code() == code, caught.value.details()


def test_model_control_needs_the_key(serve: Serve) -> None:
    server, channel = serve(api_keys=[KEY])
    control = api_pb2_grpc.ModelControlServiceStub(channel)
    with pytest.raises(grpc.RpcError) as caught:
        control.LoadModel(api_pb2.LoadModelRequest(name="cls-q2-v2"), timeout=30)
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "cls-q2-v2" not in {m.model_name for m in server.control.bank.models()}
    reply = control.ListModels(
        api_pb2.ListModelsRequest(ready_only=True),
        metadata=(("authorization", f"Bearer {KEY}"),),
        timeout=30,
    )
    assert {m.state for m in reply.models} == {"READY"}


def test_the_last_codec_goes_only_with_force(
    make_settings: Callable[..., EncoderSettings], checkpoints: dict[int, Path], repository: Path
) -> None:
    settings = make_settings(checkpoints={"detection": {1: checkpoints[1]}})
    server = EncoderServer(settings, CodecBank.load(settings))
    try:
        with pytest.raises(Exception, match="last one"):
            server.control.unload("cls_q1")
        assert [m["state"] for m in server.control.unload("cls_q1", force=True)] == ["UNAVAILABLE"]
        assert server.control.bank.models() == []
    finally:
        server.stop(grace=0)


def test_an_encode_running_during_a_swap_finishes_on_its_model(
    make_settings: Callable[..., EncoderSettings], repository: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = make_settings(model_repository=repository)
    bank = CodecBank.load(settings)
    server = EncoderServer(settings, bank)
    try:
        (old,) = [m for m in bank.models() if (m.task, m.quality) == ("classification", 2)]
        picked = threading.Event()
        pick = bank._codec

        def noting_pick(*args: Any) -> Any:
            picked.set()
            return pick(*args)

        monkeypatch.setattr(bank, "_codec", noting_pick)
        results: list[Any] = []
        image = bank.decode_upload(png_bytes(64, 64))
        with old.lock:  # the running encode waits here, holding the old model
            worker = threading.Thread(
                target=lambda: results.append(bank.encode(image, "classification", 2))
            )
            worker.start()
            assert picked.wait(30)
            entry, _ = server.control.submit_load("cls-q2-v2").result(60)
        worker.join(60)
        assert results[0].header.weights_fingerprint.hex() == old.fingerprint
        fresh = bank.encode(image, "classification", 2)
        assert fresh.header.weights_fingerprint.hex() == entry["version"] != old.fingerprint
    finally:
        server.stop(grace=0)
