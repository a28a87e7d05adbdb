"""The Open Inference Protocol (KServe V2) over HTTP, beside the service's own API, so
that Triton's and KServe's clients and perf_analyzer can call it.

Each task is a model named after it (``classification``, ``detection``,
``segmentation``), version ``1``. Its one input, ``INPUT`` (BYTES, shape ``[N]``), holds
images (any format Pillow reads; coded at the edge codec first) or TransTIC bitstreams.
Outputs: ``LABELS`` (BYTES ``[N, K]``), ``SCORES`` (FP32 ``[N, K]``), ``BPP`` (FP32
``[N]``), plus ``CLASS_INDEX`` (INT64 ``[N, K]``) for classification and ``BOXES`` (FP32
``[N, K, 4]``, x0 y0 x1 y1) for detection and segmentation; rows shorter than K are
padded with empty labels and zero scores. The V2 answers keep the protocol's own error
form, ``{"error": message}``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import APIRouter, Path, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response

import transtic
from services.analytics.metrics import UNKNOWN, ModelLabels
from services.analytics.oip import HEADER_LENGTH, OutputTensor, parse_request, write_response
from services.analytics.pipeline import Job
from services.analytics.problems import problem_responses, retry_after_value
from services.analytics.routes.analysis import (
    await_outcome,
    is_bitstream,
    read_body,
    request_id_of,
)
from services.analytics.routes.deps import RuntimeDep, SettingsDep
from services.analytics.runtime import Runtime
from services.analytics.schemas import AnalysisResult
from services.analytics.settings import Settings
from services.analytics.v2_admission import check_image_count, check_predicted_pixels
from services.common.errors import ErrorCode, ServiceError
from services.common.model_catalog import MODEL_NAME_PATTERN
from transtic.images import decode_image_bytes

MODEL_VERSION = "1"
V2_API = "v2"  # the metrics' api label of these routes
INPUT_NAME = "INPUT"
EXTENSIONS = ["binary_tensor_data"]

router = APIRouter(prefix="/v2", tags=["open inference protocol"])

# Model names are task names, versions are whole numbers (only "1" exists).
ModelName = Annotated[str, Path(pattern=MODEL_NAME_PATTERN, description="a task name")]
Version = Annotated[str, Path(pattern=r"^[0-9]{1,19}$", description="a model version")]
_V2_ERROR = {
    "type": "object",
    "properties": {"error": {"type": "string"}},
    "required": ["error"],
}
_INFER_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["inputs"],
                    "properties": {
                        "id": {"type": "string"},
                        "inputs": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "required": ["name", "datatype", "shape"],
                                "properties": {
                                    "name": {"type": "string"},
                                    "datatype": {"type": "string", "enum": ["BYTES"]},
                                    "shape": {
                                        "type": "array",
                                        "items": {"type": "integer", "minimum": 0},
                                    },
                                    "data": {
                                        "type": "array",
                                        "description": "base64 strings (nested as shape)",
                                    },
                                },
                            },
                        },
                        "parameters": {"type": "object"},
                    },
                }
            },
            "application/octet-stream": {
                "schema": {
                    "type": "string",
                    "format": "binary",
                    "description": f"binary-data extension: a JSON header of {HEADER_LENGTH} "
                    "bytes, then the raw tensors",
                }
            },
        },
    }
}


def v2_responses(*codes: ErrorCode, guarded: bool = True) -> dict[int | str, Any]:
    """The error statuses of a V2 route: the protocol's ``{"error": ...}`` body from the
    route, or problem details from the guard (key, rate, declared size) before it."""
    responses = problem_responses(*codes, guarded=guarded)
    for doc in responses.values():
        doc["content"]["application/json"] = {"schema": _V2_ERROR}
    return responses


def _v2_error(error: ServiceError) -> JSONResponse:
    retry_after = retry_after_value(error)
    headers = {"Retry-After": retry_after} if retry_after else None
    return JSONResponse({"error": error.message}, error.http_status, headers=headers)


async def _answer(
    runtime: Runtime,
    work: Callable[[], Awaitable[Response]],
    labels: ModelLabels | None = None,
) -> Response:
    try:
        return await work()
    except Exception as exc:
        return _v2_error(runtime.record_error(exc, labels))


def _check_model(runtime: Runtime, name: str, version: str | None) -> None:
    if name not in runtime.hub.tasks():
        raise ServiceError(ErrorCode.NOT_FOUND, f"no model {name!r}")
    if version not in (None, "", MODEL_VERSION):
        raise ServiceError(ErrorCode.NOT_FOUND, f"model {name!r} has no version {version!r}")


def _outputs(task: str) -> list[dict[str, Any]]:
    outputs = [
        {"name": "LABELS", "datatype": "BYTES", "shape": [-1, -1]},
        {"name": "SCORES", "datatype": "FP32", "shape": [-1, -1]},
        {"name": "BPP", "datatype": "FP32", "shape": [-1]},
    ]
    if task == "classification":
        outputs.append({"name": "CLASS_INDEX", "datatype": "INT64", "shape": [-1, -1]})
    else:
        outputs.append({"name": "BOXES", "datatype": "FP32", "shape": [-1, -1, 4]})
    return outputs


@router.get("", operation_id="v2_server_metadata", responses=v2_responses())
def server_metadata() -> dict[str, Any]:
    return {"name": "transtic-analytics", "version": transtic.__version__, "extensions": EXTENSIONS}


@router.get("/health/live", operation_id="v2_live", responses=v2_responses(guarded=False))
def live() -> dict[str, bool]:
    return {"live": True}


@router.get(
    "/health/ready",
    operation_id="v2_ready",
    responses=v2_responses(ErrorCode.UNAVAILABLE, guarded=False),
)
def ready(runtime: RuntimeDep) -> Response:
    if runtime.ready:
        return JSONResponse({"ready": True})
    return _v2_error(ServiceError(ErrorCode.UNAVAILABLE, "not ready"))


@router.get(
    "/models/{name}",
    operation_id="v2_model_metadata",
    responses=v2_responses(ErrorCode.INVALID_ARGUMENT, ErrorCode.NOT_FOUND),
)
async def model_metadata(runtime: RuntimeDep, name: ModelName) -> Response:
    return await _model_metadata(runtime, name, None)


@router.get(
    "/models/{name}/versions/{version}",
    operation_id="v2_model_version_metadata",
    responses=v2_responses(ErrorCode.INVALID_ARGUMENT, ErrorCode.NOT_FOUND),
)
async def model_version_metadata(
    runtime: RuntimeDep, name: ModelName, version: Version
) -> Response:
    return await _model_metadata(runtime, name, version)


async def _model_metadata(runtime: Runtime, name: str, version: str | None) -> Response:
    async def work() -> Response:
        _check_model(runtime, name, version)
        return JSONResponse(
            {
                "name": name,
                "versions": [MODEL_VERSION],
                "platform": "transtic",
                "inputs": [{"name": INPUT_NAME, "datatype": "BYTES", "shape": [-1]}],
                "outputs": _outputs(name),
            }
        )

    return await _answer(runtime, work)


@router.get(
    "/models/{name}/ready",
    operation_id="v2_model_ready",
    responses=v2_responses(ErrorCode.INVALID_ARGUMENT, ErrorCode.NOT_FOUND, ErrorCode.UNAVAILABLE),
)
async def model_ready(runtime: RuntimeDep, name: ModelName) -> Response:
    return await _model_ready(runtime, name, None)


@router.get(
    "/models/{name}/versions/{version}/ready",
    operation_id="v2_model_version_ready",
    responses=v2_responses(ErrorCode.INVALID_ARGUMENT, ErrorCode.NOT_FOUND, ErrorCode.UNAVAILABLE),
)
async def model_version_ready(runtime: RuntimeDep, name: ModelName, version: Version) -> Response:
    return await _model_ready(runtime, name, version)


async def _model_ready(runtime: Runtime, name: str, version: str | None) -> Response:
    async def work() -> Response:
        _check_model(runtime, name, version)
        slot = runtime.hub.backends.get(name)
        if not runtime.ready or slot is None or not slot.ready:
            detail = slot.detail if slot is not None else "not loaded"
            raise ServiceError(ErrorCode.UNAVAILABLE, f"model {name!r} is not ready: {detail}")
        return JSONResponse({"name": name, "ready": True})

    return await _answer(runtime, work)


_INFER_ERRORS = (
    ErrorCode.INVALID_ARGUMENT,
    ErrorCode.NOT_FOUND,
    ErrorCode.REQUEST_TIMEOUT,
    ErrorCode.FAILED_PRECONDITION,
    ErrorCode.UNAVAILABLE,
    ErrorCode.DEADLINE_EXCEEDED,
)
_INFER_OK: dict[int | str, Any] = {
    200: {
        "description": "the outputs; with binary outputs, a JSON header of "
        f"{HEADER_LENGTH} bytes and then the raw tensors",
        "content": {"application/octet-stream": {"schema": {"type": "string"}}},
    }
}


@router.post(
    "/models/{name}/infer",
    operation_id="v2_infer",
    openapi_extra=_INFER_BODY,
    responses={**_INFER_OK, **v2_responses(*_INFER_ERRORS)},
)
async def infer(
    request: Request, runtime: RuntimeDep, settings: SettingsDep, name: ModelName
) -> Response:
    return await _infer(request, runtime, settings, name, None)


@router.post(
    "/models/{name}/versions/{version}/infer",
    operation_id="v2_version_infer",
    openapi_extra=_INFER_BODY,
    responses={**_INFER_OK, **v2_responses(*_INFER_ERRORS)},
)
async def version_infer(
    request: Request, runtime: RuntimeDep, settings: SettingsDep, name: ModelName, version: Version
) -> Response:
    return await _infer(request, runtime, settings, name, version)


async def _infer(
    request: Request, runtime: Runtime, settings: Settings, name: str, version: str | None
) -> Response:
    start = time.perf_counter()
    labels = ModelLabels()
    try:
        return await _answer(
            runtime, lambda: _infer_work(request, runtime, settings, name, version, labels), labels
        )
    finally:
        # Refused and failed requests too, as on the other APIs.
        runtime.metrics.time_request(V2_API, labels, time.perf_counter() - start)


async def _infer_work(
    request: Request,
    runtime: Runtime,
    settings: Settings,
    name: str,
    version: str | None,
    labels: ModelLabels,
) -> Response:
    _check_model(runtime, name, version)
    labels.task = name
    body = await read_body(request, settings.max_upload_bytes)
    parsed = parse_request(body, request.headers.get(HEADER_LENGTH))
    if list(parsed.inputs) != [INPUT_NAME]:
        raise ServiceError(
            ErrorCode.INVALID_ARGUMENT, f"model {name!r} takes one input, {INPUT_NAME!r}"
        )
    elements = parsed.inputs[INPUT_NAME]
    if not elements or not all(elements):
        raise ServiceError(ErrorCode.INVALID_ARGUMENT, f"{INPUT_NAME!r} holds empty data")
    quality = parsed.parameters.get("quality")
    if quality is not None and not isinstance(quality, int):
        raise ServiceError(ErrorCode.INVALID_ARGUMENT, "parameter 'quality' must be an int")
    # Admission before any work: the request's size, its predicted cost (from the
    # headers), and room in the queue for all of it.
    check_image_count(len(elements), settings)
    await run_in_threadpool(check_predicted_pixels, elements, settings)
    runtime.batcher.check_room(len(elements))
    jobs = await run_in_threadpool(
        _jobs, runtime, settings, elements, name, quality, request_id_of(request)
    )
    labels.codec, labels.quality = _one_codec(jobs)
    futures = runtime.queue_all(jobs)  # all of them, or none (the queue filled meanwhile)
    try:
        outcomes = await asyncio.gather(*(await_outcome(f, settings) for f in futures))
    finally:
        for future in futures:  # one failed: the others' answers would go unread
            if not future.done():
                future.abandon()
    tensors = _tensors(name, [o.result for o in outcomes])
    content, header_length = write_response(name, MODEL_VERSION, parsed, tensors)
    if header_length is None:
        return Response(content, media_type="application/json")
    return Response(
        content,
        media_type="application/octet-stream",
        headers={HEADER_LENGTH: str(header_length)},
    )


def _jobs(
    runtime: Runtime,
    settings: Settings,
    elements: list[bytes],
    task: str,
    quality: int | None,
    request_id: str,
) -> list[Job]:
    """Every element checked and decoded (images) into a job; nothing queued yet."""
    jobs = []
    for data in elements:
        if is_bitstream("", data):
            jobs.append(runtime.bitstream_job(data, task, api=V2_API, request_id=request_id))
            continue
        image = decode_image_bytes(
            data, max_pixels=settings.max_pixels, max_aspect_ratio=settings.max_aspect_ratio
        )
        jobs.append(runtime.image_job(image, task, quality, api=V2_API, request_id=request_id))
    return jobs


def _one_codec(jobs: list[Job]) -> tuple[str, str]:
    """The codec and quality label values of a request: its images' codec when they share
    one (bitstreams from several codecs may come together), else unknown."""
    codecs = {(job.codec.id, str(job.codec.quality)) for job in jobs}
    return codecs.pop() if len(codecs) == 1 else (UNKNOWN, UNKNOWN)


def _tensors(task: str, results: list[AnalysisResult]) -> list[OutputTensor]:
    rows: list[list[tuple[str, float, int, list[float]]]] = []
    for r in results:
        if task == "classification":
            rows.append([(lb.name, lb.score, lb.index, []) for lb in r.labels])
        else:
            rows.append([(d.label, d.score, d.category_id, d.box) for d in r.detections])
    k = max((len(row) for row in rows), default=0)
    padded = [row + [("", 0.0, -1, [0.0] * 4)] * (k - len(row)) for row in rows]
    flat = [item for row in padded for item in row]
    n = len(results)
    tensors = [
        OutputTensor("LABELS", "BYTES", [n, k], [item[0] for item in flat]),
        OutputTensor("SCORES", "FP32", [n, k], [item[1] for item in flat]),
        OutputTensor("BPP", "FP32", [n], [r.bits_per_pixel for r in results]),
    ]
    if task == "classification":
        tensors.append(OutputTensor("CLASS_INDEX", "INT64", [n, k], [item[2] for item in flat]))
    else:
        boxes = [v for item in flat for v in (item[3] or [0.0] * 4)]
        tensors.append(OutputTensor("BOXES", "FP32", [n, k, 4], boxes))
    return tensors
