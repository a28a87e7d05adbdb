"""Model control over REST: our ``/v1/repository`` routes (problem+json errors, in the
API document) and Triton's explicit model-control routes under ``/v2/repository`` (the
Open Inference Protocol's ``{"error": ...}`` bodies), so tritonclient's
``load_model`` / ``unload_model`` / ``get_model_repository_index`` work as they are.

Both only take names the server's catalog knows (see services.analytics.model_control);
the API-key guard covers them like every other non-public path.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response

from services.analytics.oip import load_json
from services.analytics.problems import problem_responses
from services.analytics.routes.analysis import read_body
from services.analytics.routes.deps import RuntimeDep
from services.analytics.routes.inference import _answer, v2_responses
from services.analytics.runtime import Runtime
from services.analytics.schemas import LoadResult, RepositoryIndex, UnloadResult
from services.common.errors import ErrorCode, ServiceError
from services.common.model_catalog import MODEL_NAME_PATTERN

router = APIRouter(tags=["models"])
triton_router = APIRouter(tags=["open inference protocol"])

ModelName = Annotated[
    str, Path(pattern=MODEL_NAME_PATTERN, description="a name from GET /v1/repository/models")
]
# A Triton control body is small JSON; anything bigger is no control request.
_MAX_CONTROL_BODY = 64 * 1024


def _control_body_doc(properties: dict[str, Any]) -> dict[str, Any]:
    """The optional JSON body of a Triton control route (other members are ignored, as
    Triton ignores them)."""
    schema = {"type": "object", "properties": properties}
    return {"requestBody": {"required": False, "content": {"application/json": {"schema": schema}}}}


_NO_PARAMETERS = {"type": "object", "maxProperties": 0}


async def _load(runtime: Runtime, name: str) -> tuple[dict[str, Any], bool]:
    if runtime.draining:
        raise ServiceError(ErrorCode.UNAVAILABLE, "the service is shutting down")
    # The load runs on the model loader's thread; this request only waits for it.
    return await asyncio.wrap_future(runtime.models.submit_load(name))


@router.get(
    "/v1/repository/models",
    operation_id="list_repository_models",
    responses=problem_responses(ErrorCode.INVALID_ARGUMENT),
)
def repository_index(
    runtime: RuntimeDep,
    ready: Annotated[bool, Query(description="only models in state READY")] = False,
) -> RepositoryIndex:
    """Every model: loaded (READY), being loaded or unloaded, and loadable by name."""
    return RepositoryIndex.model_validate({"models": runtime.models.index(ready_only=ready)})


@router.post(
    "/v1/repository/models/{name}/load",
    operation_id="load_model",
    responses=problem_responses(
        ErrorCode.INVALID_ARGUMENT,
        ErrorCode.NOT_FOUND,
        ErrorCode.FAILED_PRECONDITION,
        ErrorCode.UNAVAILABLE,
    ),
)
async def load_model(runtime: RuntimeDep, name: ModelName) -> LoadResult:
    """Load a codec (a new version of a name is added beside the old one and codes new
    images from now on) or a task model (it replaces its task's current one)."""
    try:
        entry, already = await _load(runtime, name)
    except Exception as exc:
        raise runtime.record_error(exc) from None
    return LoadResult.model_validate({"model": entry, "already_loaded": already})


@router.post(
    "/v1/repository/models/{name}/unload",
    operation_id="unload_model",
    responses=problem_responses(
        ErrorCode.INVALID_ARGUMENT, ErrorCode.NOT_FOUND, ErrorCode.FAILED_PRECONDITION
    ),
)
def unload_model(
    runtime: RuntimeDep,
    name: ModelName,
    version: Annotated[
        str | None, Query(pattern=r"^[0-9a-f]{32}$", description="one codec version only")
    ] = None,
    force: Annotated[bool, Query(description="allow unloading the last codec")] = False,
) -> UnloadResult:
    """Unload a model: new requests no longer get it; those holding it finish on it."""
    try:
        unloaded = runtime.models.unload(name, version, force=force)
    except Exception as exc:
        raise runtime.record_error(exc) from None
    return UnloadResult.model_validate({"unloaded": unloaded})


# -- Triton's names ----------------------------------------------------------------------
async def _control_body(request: Request) -> dict[str, Any]:
    # Refused by its declared size before reading; a chunked body stops at the limit.
    body = await read_body(request, _MAX_CONTROL_BODY)
    if not body.strip():
        return {}
    parsed = load_json(body, "the body")
    if not isinstance(parsed, dict):
        raise ServiceError(ErrorCode.INVALID_ARGUMENT, "the body must be a JSON object")
    return parsed


def _parameters(body: dict[str, Any], allowed: set[str]) -> dict[str, Any]:
    parameters = body.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise ServiceError(ErrorCode.INVALID_ARGUMENT, "'parameters' must be an object")
    refused = sorted(set(parameters) - allowed)
    if refused:
        # Triton lets a load carry a config or model files; this server loads only what
        # its own catalog holds.
        raise ServiceError(
            ErrorCode.INVALID_ARGUMENT,
            f"parameters {', '.join(refused)} are not accepted: models load by name from "
            "the server's catalog only",
        )
    return parameters


@triton_router.post(
    "/v2/repository/index",
    operation_id="v2_repository_index",
    openapi_extra=_control_body_doc({"ready": {"type": "boolean"}}),
    responses=v2_responses(ErrorCode.INVALID_ARGUMENT),
)
async def triton_index(request: Request, runtime: RuntimeDep) -> Response:
    async def work() -> Response:
        ready = (await _control_body(request)).get("ready", False)
        if not isinstance(ready, bool):
            raise ServiceError(ErrorCode.INVALID_ARGUMENT, "'ready' must be a boolean")
        entries = await run_in_threadpool(runtime.models.index, ready_only=ready)
        keys = ("name", "version", "state", "reason")
        return JSONResponse([{k: e[k] for k in keys} for e in entries])

    return await _answer(runtime, work)


@triton_router.post(
    "/v2/repository/models/{name}/load",
    operation_id="v2_load_model",
    openapi_extra=_control_body_doc({"parameters": _NO_PARAMETERS}),
    responses=v2_responses(
        ErrorCode.INVALID_ARGUMENT,
        ErrorCode.NOT_FOUND,
        ErrorCode.FAILED_PRECONDITION,
        ErrorCode.UNAVAILABLE,
    ),
)
async def triton_load(request: Request, runtime: RuntimeDep, name: ModelName) -> Response:
    async def work() -> Response:
        _parameters(await _control_body(request), set())
        await _load(runtime, name)
        return Response(status_code=200)

    return await _answer(runtime, work)


@triton_router.post(
    "/v2/repository/models/{name}/unload",
    operation_id="v2_unload_model",
    openapi_extra=_control_body_doc(
        {
            "parameters": {
                "type": "object",
                "properties": {"unload_dependents": {}, "force": {}},
                "additionalProperties": False,
            }
        }
    ),
    responses=v2_responses(
        ErrorCode.INVALID_ARGUMENT, ErrorCode.NOT_FOUND, ErrorCode.FAILED_PRECONDITION
    ),
)
async def triton_unload(request: Request, runtime: RuntimeDep, name: ModelName) -> Response:
    async def work() -> Response:
        # unload_dependents has no meaning here (no ensembles); force is ours.
        parameters = _parameters(await _control_body(request), {"unload_dependents", "force"})
        force = parameters.get("force", False) is True
        await run_in_threadpool(runtime.models.unload, name, None, force=force)
        return Response(status_code=200)

    return await _answer(runtime, work)
