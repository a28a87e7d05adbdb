"""POST /v1/analyze: an image (coded with the edge codec first) or a TransTIC bitstream."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import Field, TypeAdapter, ValidationError
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from services.analytics.batcher import Pending
from services.analytics.metrics import ModelLabels
from services.analytics.pipeline import Outcome
from services.analytics.problems import problem_responses
from services.analytics.results import png_base64
from services.analytics.routes.deps import RuntimeDep, SettingsDep
from services.analytics.runtime import Runtime
from services.analytics.schemas import AnalyzeResponse, UploadInfo
from services.analytics.settings import Settings
from services.common.errors import ErrorCode, ServiceError
from services.common.http_limits import length_value
from transtic.bitstream import MAGIC
from transtic.images import decode_image_bytes

BITSTREAM_TYPE = "application/x-transtic"
REST_API = "rest"  # the metrics' api label of this route
# How often a waiting request checks whether its client is still connected.
_DISCONNECT_POLL_S = 0.25

_ANALYZE_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "file": {"type": "string", "format": "binary"},
                        # the query parameters, also accepted as form fields
                        "task": {"type": "string"},
                        "quality": {"type": "integer", "minimum": 0, "maximum": 255},
                        "return_image": {"type": "boolean"},
                    },
                    "required": ["file"],
                }
            },
            "image/*": {"schema": {"type": "string", "format": "binary"}},
            BITSTREAM_TYPE: {"schema": {"type": "string", "format": "binary"}},
        },
    }
}

router = APIRouter(tags=["analysis"])


@router.post(
    "/v1/analyze",
    operation_id="analyze",
    response_model_exclude_none=True,
    openapi_extra=_ANALYZE_BODY,
    responses=problem_responses(
        ErrorCode.INVALID_ARGUMENT,
        ErrorCode.UNSUPPORTED_MEDIA_TYPE,
        ErrorCode.FAILED_PRECONDITION,
        ErrorCode.UNAVAILABLE,
        ErrorCode.DEADLINE_EXCEEDED,
        ErrorCode.REQUEST_TIMEOUT,
    ),
)
async def analyze(
    request: Request,
    settings: SettingsDep,
    runtime: RuntimeDep,
    task: Annotated[str | None, Query(description="empty: stream's task, else default")] = None,
    quality: Annotated[
        int | None, Query(ge=0, le=255, description="codec quality (images)")
    ] = None,
    return_image: Annotated[bool, Query(description="include the decoded PNG (base64)")] = False,
) -> AnalyzeResponse:
    """Analyse an image (coded at the edge codec first) or a TransTIC bitstream.

    Body: multipart form field ``file`` (the options may come as form fields too), a raw
    ``image/*`` body, or ``application/x-transtic``.
    """
    start = time.perf_counter()
    labels = ModelLabels()
    try:
        return await _analyze(
            request, settings, runtime, task, quality, return_image, start, labels
        )
    except Exception as exc:
        raise runtime.record_error(exc, labels) from None
    finally:
        # Refused and failed requests too: a latency panel that leaves out the 503s of an
        # overloaded service would look best exactly when it is worst.
        runtime.metrics.time_request(REST_API, labels, time.perf_counter() - start)


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refused (413) by its declared Content-Length before a byte is read, and a
    chunked one as soon as it passes ``limit``."""
    too_large = ServiceError(
        ErrorCode.PAYLOAD_TOO_LARGE, f"request body exceeds the limit of {limit} bytes"
    )
    declared = length_value(request.headers.get("content-length"))
    if declared is not None and declared > limit:
        raise too_large
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


# Form fields a multipart upload may carry beside ``file``: the query parameters, with
# their types and what a bad value is told.
_FORM_TYPES: dict[str, tuple[TypeAdapter[Any], str]] = {
    "task": (TypeAdapter(str), "a task name"),
    "quality": (TypeAdapter(Annotated[int, Field(ge=0, le=255)]), "0-255"),
    "return_image": (TypeAdapter(bool), "true or false"),
}
FORM_OPTIONS = tuple(_FORM_TYPES)


@dataclass(frozen=True)
class Upload:
    data: bytes
    content_type: str
    options: dict[str, str] = field(default_factory=dict)  # form fields beside the file


async def _multipart_upload(request: Request, body: bytes) -> Upload:
    """The ``file`` field and the option fields of an already size-checked multipart body."""
    sent = False

    async def replay() -> dict[str, Any]:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    try:
        form = await Request(request.scope, replay).form(max_files=1, max_fields=8)
    except StarletteHTTPException as exc:  # malformed multipart, too many files or fields
        raise ServiceError(
            ErrorCode.INVALID_ARGUMENT, f"bad multipart body: {exc.detail}"
        ) from None
    part = form.get("file")
    if not isinstance(part, UploadFile):
        raise ServiceError(ErrorCode.INVALID_ARGUMENT, "multipart body needs a file field 'file'")
    options = {}
    for name, value in form.multi_items():
        if name == "file":
            continue
        if name in options:
            raise ServiceError(
                ErrorCode.INVALID_ARGUMENT, f"form field {name!r} is repeated; give it once"
            )
        if name not in FORM_OPTIONS or not isinstance(value, str):
            raise ServiceError(
                ErrorCode.INVALID_ARGUMENT,
                f"unexpected form field {name!r}; the form takes one file field 'file' and at "
                f"most one each of {', '.join(FORM_OPTIONS)}",
            )
        options[name] = value
    return Upload(await part.read(), (part.content_type or "").lower(), options)


def _form_value(name: str, text: str) -> Any:
    """A form field's value, validated by pydantic as FastAPI validates the query
    parameter of that name."""
    adapter, expected = _FORM_TYPES[name]
    try:
        return adapter.validate_python(text)
    except ValidationError:
        raise ServiceError(
            ErrorCode.INVALID_ARGUMENT, f"form field {name!r} must be {expected}, got {text!r}"
        ) from None


def merge_form_options(
    query: dict[str, Any], given_in_query: set[str], form: dict[str, str]
) -> dict[str, Any]:
    """The query options with the form's; the same option given differently in both is an
    error (neither silently wins)."""
    merged = dict(query)
    for name, text in form.items():
        value = _form_value(name, text)
        if name in given_in_query and query[name] != value:
            raise ServiceError(
                ErrorCode.INVALID_ARGUMENT,
                f"{name!r} is given as a query parameter ({query[name]!r}) and as a form "
                f"field ({value!r}); give it once",
            )
        merged[name] = value
    return merged


def request_id_of(request: Request) -> str:
    """The request's checked id (set by ``rest.RequestIds``; empty when mounted without it)."""
    return str(getattr(request.state, "request_id", ""))


def _media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


def is_bitstream(media_type: str, data: bytes) -> bool:
    return media_type == BITSTREAM_TYPE or data[: len(MAGIC)] == MAGIC


async def submit_upload(
    runtime: Runtime,
    settings: Settings,
    data: bytes,
    is_stream: bool,
    task: str | None,
    quality: int | None,
    api: str,
    *,
    keep_image: bool = False,
    labels: ModelLabels | None = None,
    request_id: str = "",
) -> Pending[Outcome]:
    """Queue one uploaded bitstream or image (decoded and coded at the edge codec first)."""
    if is_stream:
        # Off the event loop: validation checksums the whole (possibly large) stream.
        return await run_in_threadpool(
            runtime.submit_bitstream,
            data,
            task,
            api=api,
            keep_image=keep_image,
            labels=labels,
            request_id=request_id,
        )
    image = await run_in_threadpool(
        decode_image_bytes,
        data,
        max_pixels=settings.max_pixels,
        max_aspect_ratio=settings.max_aspect_ratio,
    )
    return runtime.submit_image(
        image,
        task,
        quality,
        api=api,
        keep_image=keep_image,
        labels=labels,
        request_id=request_id,
    )


async def await_outcome(
    future: Pending[Outcome], settings: Settings, request: Request | None = None
) -> Outcome:
    """Wait for the result while the client is still there (when ``request`` is given) and
    the timeout has not passed; otherwise abandon the work, so that it stops holding up
    the requests queued behind it."""
    waiter = asyncio.wrap_future(future)
    timeout_s = settings.request_timeout_s
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ServiceError(
                    ErrorCode.DEADLINE_EXCEEDED,
                    f"no result within {timeout_s} s; the service is overloaded",
                )
            done, _ = await asyncio.wait({waiter}, timeout=min(remaining, _DISCONNECT_POLL_S))
            if done:
                return waiter.result()
            if request is not None and await request.is_disconnected():
                raise ServiceError(ErrorCode.CANCELLED, "the client disconnected")
    finally:
        if not waiter.done():
            future.abandon()
            waiter.cancel()


async def _analyze(
    request: Request,
    settings: Settings,
    runtime: Runtime,
    task: str | None,
    quality: int | None,
    return_image: bool,
    start: float,
    labels: ModelLabels,
) -> AnalyzeResponse:
    media_type = _media_type(request)
    allowed = ("multipart/form-data", BITSTREAM_TYPE, "application/octet-stream")
    if not (media_type in allowed or media_type.startswith("image/")):
        raise ServiceError(
            ErrorCode.UNSUPPORTED_MEDIA_TYPE,
            f"unsupported content type {media_type or '(none)'!r}; send multipart/form-data "
            f"(field 'file'), an image/* body, or {BITSTREAM_TYPE}",
        )
    body = await read_body(request, settings.max_upload_bytes)
    upload = (
        await _multipart_upload(request, body)
        if media_type == "multipart/form-data"
        else Upload(body, media_type)
    )
    if upload.options:
        options = merge_form_options(
            {"task": task, "quality": quality, "return_image": return_image},
            set(request.query_params) & set(FORM_OPTIONS),
            upload.options,
        )
        task, quality, return_image = options["task"], options["quality"], options["return_image"]
    data, part_type = upload.data, upload.content_type
    if not data:
        raise ServiceError(ErrorCode.INVALID_ARGUMENT, "the upload is empty")
    is_stream = is_bitstream(part_type, data)
    future = await submit_upload(
        runtime,
        settings,
        data,
        is_stream,
        task,
        quality,
        REST_API,
        keep_image=return_image,
        labels=labels,
        request_id=request_id_of(request),
    )
    outcome = await await_outcome(future, settings, request)
    coded = len(outcome.bitstream)
    result = outcome.result
    image_png = None
    if outcome.image is not None:
        image_png = await run_in_threadpool(png_base64, outcome.image)
    elapsed = time.perf_counter() - start
    return AnalyzeResponse(
        **result.model_dump(exclude={"timings_ms"}),
        timings_ms={**result.timings_ms, "total": round(elapsed * 1e3, 3)},
        input=UploadInfo(
            kind="bitstream" if is_stream else "image", content_type=part_type, bytes=len(data)
        ),
        bitstream_bytes=coded,
        # Against the upload's own (already compressed) size, as the user sees it.
        compression_ratio=None if is_stream else len(data) / coded,
        compression_ratio_raw=result.width * result.height * 3 / coded,
        image_png_base64=image_png,
    )
