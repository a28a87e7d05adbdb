"""transtic.v1.ModelControlService: load, unload and list models over gRPC, for either
service (each brings its own controller; the encoder's holds codecs only)."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, Protocol

import grpc

from services.common.errors import ServiceError, abort_grpc, to_service_error
from services.generated.transtic.v1 import api_pb2, api_pb2_grpc

MODEL_CONTROL_SERVICE = api_pb2.DESCRIPTOR.services_by_name["ModelControlService"].full_name

# One model's entry: the fields of RepositoryModel.
ModelEntry = dict[str, Any]


class ModelController(Protocol):
    def submit_load(self, name: str) -> Future[tuple[ModelEntry, bool]]: ...

    def unload(
        self, name: str, version: str | None = None, *, force: bool = False
    ) -> list[ModelEntry]: ...

    def index(self, *, ready_only: bool = False) -> list[ModelEntry]: ...


class ModelControlServicer(api_pb2_grpc.ModelControlServiceServicer):
    def __init__(
        self,
        control: ModelController,
        *,
        on_error: Callable[[BaseException], ServiceError] = to_service_error,
    ) -> None:
        self.control = control
        self.on_error = on_error

    def _fail(self, context: grpc.ServicerContext, exc: BaseException) -> None:
        abort_grpc(context, self.on_error(exc))

    def ListModels(  # noqa: N802
        self, request: api_pb2.ListModelsRequest, context: grpc.ServicerContext
    ) -> api_pb2.ListModelsResponse:
        try:
            entries = self.control.index(ready_only=request.ready_only)
        except Exception as exc:
            self._fail(context, exc)
            raise  # unreachable: abort raises
        return api_pb2.ListModelsResponse(models=[api_pb2.RepositoryModel(**e) for e in entries])

    def LoadModel(  # noqa: N802
        self, request: api_pb2.LoadModelRequest, context: grpc.ServicerContext
    ) -> api_pb2.LoadModelResponse:
        try:
            # The loader thread does the work; this handler thread only waits for it. A
            # deadline that passes first leaves the load running (ListModels shows it).
            future = self.control.submit_load(request.name)
            entry, already = future.result(timeout=context.time_remaining())
        except Exception as exc:
            self._fail(context, exc)
            raise
        return api_pb2.LoadModelResponse(
            model=api_pb2.RepositoryModel(**entry), already_loaded=already
        )

    def UnloadModel(  # noqa: N802
        self, request: api_pb2.UnloadModelRequest, context: grpc.ServicerContext
    ) -> api_pb2.UnloadModelResponse:
        try:
            gone = self.control.unload(request.name, request.version or None, force=request.force)
        except Exception as exc:
            self._fail(context, exc)
            raise
        return api_pb2.UnloadModelResponse(unloaded=[api_pb2.RepositoryModel(**e) for e in gone])


def add_model_control(
    server: grpc.Server,
    control: ModelController,
    on_error: Callable[[BaseException], ServiceError] = to_service_error,
) -> str:
    """Serve ``control`` on ``server``; returns the service name (for health checks)."""
    api_pb2_grpc.add_ModelControlServiceServicer_to_server(
        ModelControlServicer(control, on_error=on_error), server
    )
    return MODEL_CONTROL_SERVICE
