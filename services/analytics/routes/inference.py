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
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

import transtic
from services.analytics.oip import HEADER_LENGTH, OutputTensor, parse_request, write_response
from services.analytics.problems import retry_after_value
from services.analytics.routes.analysis import (
    await_outcome,
    is_bitstream,
    read_body,
    submit_upload,
)
from services.analytics.routes.deps import RuntimeDep, SettingsDep
from services.analytics.runtime import Runtime
from services.analytics.schemas import AnalysisResult
from services.common.errors import ErrorCode, ServiceError

MODEL_VERSION = "1"
INPUT_NAME = "INPUT"
EXTENSIONS = ["binary_tensor_data"]

router = APIRouter(prefix="/v2", include_in_schema=False)


def _v2_error(error: ServiceError) -> JSONResponse:
    retry_after = retry_after_value(error)
    headers = {"Retry-After": retry_after} if retry_after else None
    return JSONResponse({"error": error.message}, error.http_status, headers=headers)


async def _answer(runtime: Runtime, work: Callable[[], Awaitable[Response]]) -> Response:
    try:
        return await work()
    except Exception as exc:
        return _v2_error(runtime.record_error(exc))


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


@router.get("")
def server_metadata() -> dict[str, Any]:
    return {"name": "transtic-analytics", "version": transtic.__version__, "extensions": EXTENSIONS}


@router.get("/health/live")
def live() -> dict[str, bool]:
    return {"live": True}


@router.get("/health/ready")
def ready(runtime: RuntimeDep) -> Response:
    if runtime.ready:
        return JSONResponse({"ready": True})
    return _v2_error(ServiceError(ErrorCode.UNAVAILABLE, "not ready"))


@router.get("/models/{name}")
@router.get("/models/{name}/versions/{version}")
async def model_metadata(runtime: RuntimeDep, name: str, version: str | None = None) -> Response:
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


@router.get("/models/{name}/ready")
@router.get("/models/{name}/versions/{version}/ready")
async def model_ready(runtime: RuntimeDep, name: str, version: str | None = None) -> Response:
    async def work() -> Response:
        _check_model(runtime, name, version)
        slot = runtime.hub.backends.get(name)
        if not runtime.ready or slot is None or not slot.ready:
            detail = slot.detail if slot is not None else "not loaded"
            raise ServiceError(ErrorCode.UNAVAILABLE, f"model {name!r} is not ready: {detail}")
        return JSONResponse({"name": name, "ready": True})

    return await _answer(runtime, work)


@router.post("/models/{name}/infer")
@router.post("/models/{name}/versions/{version}/infer")
async def infer(
    request: Request,
    runtime: RuntimeDep,
    settings: SettingsDep,
    name: str,
    version: str | None = None,
) -> Response:
    async def work() -> Response:
        _check_model(runtime, name, version)
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
        futures = [
            await submit_upload(
                runtime, settings, data, is_bitstream("", data), name, quality, "v2"
            )
            for data in elements
        ]
        outcomes = await asyncio.gather(*(await_outcome(f, settings) for f in futures))
        tensors = _tensors(name, [o.result for o in outcomes])
        content, header_length = write_response(name, MODEL_VERSION, parsed, tensors)
        if header_length is None:
            return Response(content, media_type="application/json")
        return Response(
            content,
            media_type="application/octet-stream",
            headers={HEADER_LENGTH: str(header_length)},
        )

    return await _answer(runtime, work)


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
