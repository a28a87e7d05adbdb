"""gRPC clients of both services: ``EncoderGrpcClient`` (Encode, GetInfo) and
``AnalyticsGrpcClient`` (Analyze, AnalyzeStream, GetInfo), both with model control
(list, load, unload), API keys, (mutual) TLS, typed results and retries of
RESOURCE_EXHAUSTED / UNAVAILABLE honouring retry-after."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc

from services.analytics.schemas import (
    AnalysisResult,
    Detection,
    Label,
    LoadResult,
    Mask,
    RepositoryModel,
    UnloadResult,
)
from services.common.auth import auth_metadata
from services.common.tls import ClientTLS, open_channel
from services.generated.transtic.v1 import api_pb2, api_pb2_grpc
from transtic.client.errors import ClientError, RetryPolicy, parse_retry_after

T = TypeVar("T")
RETRY_CODES = frozenset({grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.UNAVAILABLE})

__all__ = ["AnalyticsGrpcClient", "ClientTLS", "EncodeResult", "EncoderGrpcClient"]


def result_from_proto(message: api_pb2.AnalyzeResult) -> AnalysisResult:
    """The typed result of a gRPC answer (the fields gRPC carries; the rest keep defaults)."""
    detections = [
        Detection(
            label=d.label,
            category_id=d.category_id,
            score=d.score,
            box=list(d.box),
            mask=Mask(size=list(d.mask_size), counts=d.mask_rle) if d.mask_rle else None,
        )
        for d in message.detections
    ]
    return AnalysisResult(
        task=message.task,
        labels=[Label(name=x.name, index=x.index, score=x.score) for x in message.labels],
        detections=detections,
        bits_per_pixel=message.bits_per_pixel,
        num_bytes=0,
        width=message.width,
        height=message.height,
        quality=0,
        codec_id=message.codec_id,
        task_model_id=message.task_model_id,
        timings_ms=dict(message.timings_ms),
        request_id=message.request_id,
    )


@dataclass(frozen=True)
class EncodeResult:
    bitstream: bytes
    bits_per_pixel: float
    width: int
    height: int
    codec_id: str
    timings_ms: dict[str, float]


def _model(message: api_pb2.RepositoryModel) -> RepositoryModel:
    fields = RepositoryModel.model_fields
    return RepositoryModel.model_validate({name: getattr(message, name) for name in fields})


def _client_error(exc: grpc.RpcError) -> ClientError:
    code: grpc.StatusCode = exc.code()  # type: ignore[attr-defined]
    trailing = dict(exc.trailing_metadata() or ())  # type: ignore[attr-defined]
    retry_after = parse_retry_after(trailing.get("retry-after"))
    return ClientError(code.name, code.name, exc.details() or "", retry_after_s=retry_after)  # type: ignore[attr-defined]


class _GrpcClient:
    def __init__(
        self,
        target: str,
        *,
        api_key: str | None = None,
        tls: ClientTLS | None = None,
        timeout_s: float = 60.0,
        retry: RetryPolicy | None = None,
    ) -> None:
        self.channel = open_channel(target, tls)
        self.metadata = auth_metadata(api_key)
        self.timeout_s = timeout_s
        self.retry = retry or RetryPolicy()

    def __enter__(self: T) -> T:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.channel.close()

    def _call(self, method: Callable[..., T], request: Any) -> T:
        for attempt in range(self.retry.attempts):
            try:
                return method(request, timeout=self.timeout_s, metadata=self.metadata)
            except grpc.RpcError as exc:
                error = _client_error(exc)
                if exc.code() not in RETRY_CODES or attempt + 1 == self.retry.attempts:  # type: ignore[attr-defined]
                    raise error from None
                time.sleep(self.retry.delay(attempt, error.retry_after_s))
        raise AssertionError("unreachable: the last attempt returns or raises")

    def info(self) -> api_pb2.ServiceInfo:
        stub: Any = self._stub
        return self._call(stub.GetInfo, api_pb2.GetInfoRequest())

    @property
    def _stub(self) -> Any:
        raise NotImplementedError

    # -- model control (transtic.v1.ModelControlService) ---------------------------------
    @property
    def _control(self) -> api_pb2_grpc.ModelControlServiceStub:
        return api_pb2_grpc.ModelControlServiceStub(self.channel)

    def list_models(self, *, ready_only: bool = False) -> list[RepositoryModel]:
        request = api_pb2.ListModelsRequest(ready_only=ready_only)
        return [_model(m) for m in self._call(self._control.ListModels, request).models]

    def load_model(self, name: str) -> LoadResult:
        """Load a model the service's catalog names (never a path); returns when loaded."""
        reply = self._call(self._control.LoadModel, api_pb2.LoadModelRequest(name=name))
        return LoadResult(model=_model(reply.model), already_loaded=reply.already_loaded)

    def unload_model(self, name: str, *, version: str = "", force: bool = False) -> UnloadResult:
        request = api_pb2.UnloadModelRequest(name=name, version=version, force=force)
        reply = self._call(self._control.UnloadModel, request)
        return UnloadResult(unloaded=[_model(m) for m in reply.unloaded])


class EncoderGrpcClient(_GrpcClient):
    @property
    def _stub(self) -> api_pb2_grpc.EncoderStub:
        return api_pb2_grpc.EncoderStub(self.channel)

    def encode(
        self, image: bytes, *, task: str = "", quality: int = 0, align_mode: str = ""
    ) -> EncodeResult:
        """Code an image file (PNG, JPEG, ...) into a TransTIC bitstream."""
        request = api_pb2.EncodeRequest(
            image=image, task=task, quality=quality, align_mode=align_mode
        )
        reply = self._call(self._stub.Encode, request)
        return EncodeResult(
            reply.bitstream,
            reply.bits_per_pixel,
            reply.width,
            reply.height,
            reply.codec_id,
            dict(reply.timings_ms),
        )


class AnalyticsGrpcClient(_GrpcClient):
    @property
    def _stub(self) -> api_pb2_grpc.AnalyticsStub:
        return api_pb2_grpc.AnalyticsStub(self.channel)

    def analyze(self, bitstream: bytes, *, task: str = "") -> AnalysisResult:
        reply = self._call(
            self._stub.Analyze, api_pb2.AnalyzeRequest(bitstream=bitstream, task=task)
        )
        return result_from_proto(reply)

    def stream(
        self, frames: Iterable[api_pb2.Frame], *, timeout_s: float | None = None
    ) -> Iterator[api_pb2.FrameAck]:
        """Acks of a frame stream, as they come (no retries: resending is the caller's,
        and the service answers resent frames from its store)."""
        try:
            yield from self._stub.AnalyzeStream(
                iter(frames), timeout=timeout_s or self.timeout_s, metadata=self.metadata
            )
        except grpc.RpcError as exc:
            raise _client_error(exc) from None
