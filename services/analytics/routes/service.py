"""The service itself: loaded models, liveness, readiness, Prometheus metrics."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST

from services.analytics.problems import problem_response, problem_responses
from services.analytics.routes.deps import RuntimeDep, SettingsDep
from services.analytics.schemas import Health, ModelsInfo
from services.common.errors import ErrorCode, ServiceError

router = APIRouter(tags=["service"])


@router.get(
    "/v1/models",
    operation_id="list_models",
    response_model_exclude_none=True,
    responses=problem_responses(),
)
def models(settings: SettingsDep, runtime: RuntimeDep) -> ModelsInfo:
    """Codecs and task backends, each ready or not (with the reason)."""
    return ModelsInfo.model_validate(
        {
            "device": runtime.hub.device,
            "default_task": settings.default_task,
            "tasks": runtime.hub.tasks(),
            "qualities": sorted({c.quality for c in runtime.hub.codecs}),
            "models": runtime.hub.describe(),
        }
    )


@router.get("/healthz", operation_id="get_liveness", responses=problem_responses(guarded=False))
def healthz() -> Health:
    """Liveness: the process answers."""
    return Health(status="ok")


@router.get(
    "/readyz",
    operation_id="get_readiness",
    response_model=Health,
    responses=problem_responses(ErrorCode.UNAVAILABLE, guarded=False),
)
def readyz(runtime: RuntimeDep) -> Any:
    """Readiness: a codec is loaded and the service is not draining."""
    if runtime.ready:
        return Health(status="ready")
    if runtime.draining:
        reason = "shutting down"
    elif runtime.grpc_saturated:
        reason = "every gRPC handler thread is busy"
    else:
        unloaded = "no codec is loaded (load one through model control)"
        reason = "; ".join(runtime.hub.codec_problems.values()) or (
            unloaded if runtime.started else "starting"
        )
    return problem_response(ServiceError(ErrorCode.UNAVAILABLE, f"not ready: {reason}"))


@router.get(
    "/metrics",
    operation_id="get_metrics",
    response_class=PlainTextResponse,
    responses=problem_responses(),
)
def metrics(runtime: RuntimeDep) -> Response:
    """Prometheus text format."""
    return Response(runtime.metrics.render(), media_type=CONTENT_TYPE_LATEST)
