"""The service itself: loaded models, liveness, readiness, Prometheus metrics."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST

from services.analytics.problems import error_response
from services.analytics.routes.deps import RuntimeDep, SettingsDep
from services.common.errors import ErrorCode, ServiceError

router = APIRouter(tags=["service"])


@router.get("/v1/models")
def models(settings: SettingsDep, runtime: RuntimeDep) -> dict[str, Any]:
    """Codecs and task backends, each ready or not (with the reason)."""
    return {
        "device": runtime.hub.device,
        "default_task": settings.default_task,
        "tasks": runtime.hub.tasks(),
        "qualities": sorted({c.quality for c in runtime.hub.codecs}),
        "models": runtime.hub.describe(),
    }


@router.get("/healthz")
def healthz() -> dict[str, str]:
    """Liveness: the process answers."""
    return {"status": "ok"}


@router.get("/readyz")
def readyz(runtime: RuntimeDep) -> Any:
    """Readiness: a codec is loaded and the service is not draining."""
    if runtime.ready:
        return {"status": "ready"}
    reason = (
        "shutting down"
        if runtime.draining
        else "; ".join(runtime.hub.codec_problems.values()) or "starting"
    )
    return error_response(ServiceError(ErrorCode.UNAVAILABLE, f"not ready: {reason}"))


@router.get("/metrics", response_class=PlainTextResponse)
def metrics(runtime: RuntimeDep) -> Response:
    """Prometheus text format."""
    return Response(runtime.metrics.render(), media_type=CONTENT_TYPE_LATEST)
