"""The REST front end (FastAPI): analysis, stream results, models, health, metrics, web page."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import logging
import re
import time
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Query, Request
from fastapi import Path as FastApiPath
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, PlainTextResponse, Response
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

import transtic
from services.analytics.batcher import Pending
from services.analytics.pipeline import Outcome
from services.analytics.results import png_base64
from services.analytics.runtime import Runtime
from services.analytics.security import CONTENT_SECURITY_POLICY
from services.analytics.security import install as install_security
from services.analytics.settings import Settings
from services.analytics.streaming import STREAM_ID_PATTERN
from services.common.errors import ErrorCode, ServiceError
from services.common.http_limits import BodyBudget
from transtic.bitstream import MAGIC
from transtic.images import decode_image_bytes
from transtic.tasks import TaskBackend

log = logging.getLogger(__name__)
STATIC_DIR = Path(__file__).parent / "static"
BITSTREAM_TYPE = "application/x-transtic"
_INLINE_SCRIPT = re.compile(r"<script>(.*?)</script>", re.DOTALL)
# How often a waiting request checks whether its client is still connected.
_DISCONNECT_POLL_S = 0.25
_HTTP_CODES = {
    400: ErrorCode.INVALID_ARGUMENT,
    401: ErrorCode.UNAUTHENTICATED,
    404: ErrorCode.NOT_FOUND,
    413: ErrorCode.PAYLOAD_TOO_LARGE,
}

_ANALYZE_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {"file": {"type": "string", "format": "binary"}},
                    "required": ["file"],
                }
            },
            "image/*": {"schema": {"type": "string", "format": "binary"}},
            BITSTREAM_TYPE: {"schema": {"type": "string", "format": "binary"}},
        },
    }
}


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


SettingsDep = Annotated[Settings, Depends(get_settings)]
RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


def _error_response(error: ServiceError) -> JSONResponse:
    headers = {}
    if error.retry_after_s is not None:
        headers["Retry-After"] = str(max(1, round(error.retry_after_s)))
    return JSONResponse(error.to_json(), status_code=error.http_status, headers=headers)


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ServiceError)
    async def service_error(request: Request, exc: ServiceError) -> JSONResponse:
        return _error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg', '')}"
            for e in exc.errors()
        )
        return _error_response(ServiceError(ErrorCode.INVALID_ARGUMENT, problems))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(exc.status_code, ErrorCode.INVALID_ARGUMENT)
        body = ServiceError(code, str(exc.detail)).to_json()
        return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        return _error_response(request.app.state.runtime.record_error(exc))


def create_app(
    settings: Settings,
    runtime: Runtime | None = None,
    *,
    backends: Sequence[TaskBackend] | None = None,
) -> FastAPI:
    """The HTTP app; it owns (starts and closes) a runtime only if none is given."""
    owned = runtime is None
    rt = runtime if runtime is not None else Runtime(settings, backends=backends)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if owned:
            await run_in_threadpool(rt.start)
        try:
            yield
        finally:
            if owned:
                await run_in_threadpool(rt.close)

    app = FastAPI(
        title="TransTIC analytics",
        version=transtic.__version__,
        description="Decodes TransTIC bitstreams (or codes uploaded images first) and runs "
        "vision tasks on the decoded images.",
        lifespan=lifespan,
        docs_url=None,  # served below from local files: the default page loads a CDN
        redoc_url=None,  # ReDoc has no offline bundle here; /docs covers the same ground
    )
    app.state.settings = settings
    app.state.runtime = rt
    app.state.body_budget = BodyBudget(settings.http_max_buffered_bytes)
    _install_error_handlers(app)
    install_security(app, settings)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    _install_docs(app)
    _routes(app)
    return app


def _install_docs(app: FastAPI) -> None:
    """Swagger UI from the swagger-ui-bundle package, so /docs works without internet."""
    import swagger_ui_bundle
    from fastapi.openapi.docs import get_swagger_ui_html

    app.mount("/docs-assets", StaticFiles(directory=swagger_ui_bundle.swagger_ui_path), name="docs")

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        page = get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title=f"{app.title} - API docs",
            swagger_js_url="/docs-assets/swagger-ui-bundle.js",
            swagger_css_url="/docs-assets/swagger-ui.css",
            swagger_favicon_url="/docs-assets/favicon-32x32.png",
        )
        # The page starts Swagger UI from an inline script: allow exactly that script (by
        # its hash) and the inline styles Swagger UI sets, nothing else.
        html = bytes(page.body).decode()
        hashes = " ".join(
            f"'sha256-{base64.b64encode(hashlib.sha256(code.encode()).digest()).decode()}'"
            for code in _INLINE_SCRIPT.findall(html)
        )
        page.headers["content-security-policy"] = (
            f"{CONTENT_SECURITY_POLICY}; script-src 'self' {hashes}; "
            "style-src 'self' 'unsafe-inline'"
        )
        return page


async def _read_body(
    request: Request, limit: int, timeout_s: float, take: Callable[[int], None]
) -> bytes:
    """The whole body, refused once over ``limit`` bytes or ``timeout_s`` seconds (a
    trickling client must not hold a connection and its buffer indefinitely); every chunk
    is charged to the process-wide body budget through ``take``."""
    too_large = ServiceError(
        ErrorCode.PAYLOAD_TOO_LARGE, f"request body exceeds the limit of {limit} bytes"
    )
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_large
    chunks, size = [], 0
    try:
        async with asyncio.timeout(timeout_s):
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise too_large
                take(len(chunk))
                chunks.append(chunk)
    except TimeoutError:
        raise ServiceError(
            ErrorCode.REQUEST_TIMEOUT, f"the request body did not arrive within {timeout_s:g} s"
        ) from None
    return b"".join(chunks)


async def _multipart_file(request: Request, body: bytes) -> tuple[bytes, str]:
    """The ``file`` field of an already size-checked multipart body."""
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
    return await part.read(), (part.content_type or "").lower()


async def _outcome(request: Request, future: Pending[Outcome], timeout_s: float) -> Outcome:
    """Wait for the result while the client is still there and the timeout has not passed;
    otherwise abandon the work, so that it stops holding up the requests queued behind it."""
    waiter = asyncio.wrap_future(future)
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
            if await request.is_disconnected():
                raise ServiceError(ErrorCode.CANCELLED, "the client disconnected")
    finally:
        if not waiter.done():
            future.abandon()
            waiter.cancel()


def _media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


def _is_bitstream(media_type: str, data: bytes) -> bool:
    return media_type == BITSTREAM_TYPE or data[: len(MAGIC)] == MAGIC


def _routes(app: FastAPI) -> None:
    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html")

    @app.post("/v1/analyze", openapi_extra=_ANALYZE_BODY, tags=["analysis"])
    async def analyze(
        request: Request,
        settings: SettingsDep,
        runtime: RuntimeDep,
        task: Annotated[str | None, Query(description="empty: stream's task, else default")] = None,
        quality: Annotated[
            int | None, Query(ge=0, le=255, description="codec quality (images)")
        ] = None,
        return_image: Annotated[
            bool, Query(description="include the decoded PNG (base64)")
        ] = False,
    ) -> dict[str, Any]:
        """Analyse an image (coded at the edge codec first) or a TransTIC bitstream.

        Body: multipart form field ``file``, a raw ``image/*`` body, or
        ``application/x-transtic``.
        """
        start = time.perf_counter()
        try:
            with request.app.state.body_budget.account() as take:
                return await _analyze(
                    request, settings, runtime, task, quality, return_image, start, take
                )
        except Exception as exc:
            raise runtime.record_error(exc) from None

    @app.get("/v1/streams", tags=["streams"])
    def streams(
        runtime: RuntimeDep, limit: Annotated[int, Query(ge=1, le=1000)] = 100
    ) -> dict[str, Any]:
        """Streams seen by AnalyzeStream, most recently active first, with their latest frame."""
        return {"streams": runtime.store.streams(limit)}

    @app.get("/v1/streams/{stream_id}/frames", tags=["streams"])
    def frames(
        stream_id: Annotated[
            str, FastApiPath(pattern=STREAM_ID_PATTERN, description="A-Z a-z 0-9 . _ ~ -")
        ],
        runtime: RuntimeDep,
        since: Annotated[
            int, Query(ge=-1, le=2**63 - 1, description="only sequences above this")
        ] = -1,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> dict[str, Any]:
        """Stored frames of one stream, oldest first; poll with since = next_since."""
        if not runtime.store.has_stream(stream_id):
            raise ServiceError(ErrorCode.NOT_FOUND, f"no stream {stream_id!r}")
        found = runtime.store.frames(stream_id, since, limit)
        return {
            "stream_id": stream_id,
            "frames": [f.to_json() for f in found],
            "next_since": found[-1].sequence if found else since,
        }

    @app.get("/v1/models", tags=["service"])
    def models(settings: SettingsDep, runtime: RuntimeDep) -> dict[str, Any]:
        """Codecs and task backends, each ready or not (with the reason)."""
        return {
            "device": runtime.hub.device,
            "default_task": settings.default_task,
            "tasks": runtime.hub.tasks(),
            "qualities": sorted({c.quality for c in runtime.hub.codecs}),
            "models": runtime.hub.describe(),
        }

    @app.get("/healthz", tags=["service"])
    def healthz() -> dict[str, str]:
        """Liveness: the process answers."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["service"])
    def readyz(runtime: RuntimeDep) -> Any:
        """Readiness: a codec is loaded and the service is not draining."""
        if runtime.ready:
            return {"status": "ready"}
        if runtime.draining:
            reason = "shutting down"
        elif runtime.grpc_saturated:
            reason = "every gRPC handler thread is busy"
        else:
            reason = "; ".join(runtime.hub.codec_problems.values()) or "starting"
        return _error_response(ServiceError(ErrorCode.UNAVAILABLE, f"not ready: {reason}"))

    @app.get("/metrics", tags=["service"], response_class=PlainTextResponse)
    def metrics(runtime: RuntimeDep) -> Response:
        """Prometheus text format."""
        return Response(runtime.metrics.render(), media_type=CONTENT_TYPE_LATEST)


async def _analyze(
    request: Request,
    settings: Settings,
    runtime: Runtime,
    task: str | None,
    quality: int | None,
    return_image: bool,
    start: float,
    take: Callable[[int], None],
) -> dict[str, Any]:
    media_type = _media_type(request)
    allowed = ("multipart/form-data", BITSTREAM_TYPE, "application/octet-stream")
    if not (media_type in allowed or media_type.startswith("image/")):
        raise ServiceError(
            ErrorCode.UNSUPPORTED_MEDIA_TYPE,
            f"unsupported content type {media_type or '(none)'!r}; send multipart/form-data "
            f"(field 'file'), an image/* body, or {BITSTREAM_TYPE}",
        )
    body = await _read_body(request, settings.max_upload_bytes, settings.http_body_timeout_s, take)
    data, part_type = (
        await _multipart_file(request, body)
        if media_type == "multipart/form-data"
        else (body, media_type)
    )
    if not data:
        raise ServiceError(ErrorCode.INVALID_ARGUMENT, "the upload is empty")
    is_stream = _is_bitstream(part_type, data)
    if is_stream:
        source = "rest_bitstream"
        # Off the event loop: validation checksums the whole (possibly large) stream.
        future = await run_in_threadpool(
            runtime.submit_bitstream, data, task, source=source, keep_image=return_image
        )
    else:
        source = "rest_image"
        image = await run_in_threadpool(
            decode_image_bytes,
            data,
            max_pixels=settings.max_pixels,
            max_aspect_ratio=settings.max_aspect_ratio,
        )
        future = runtime.submit_image(image, task, quality, source=source, keep_image=return_image)
    outcome = await _outcome(request, future, settings.request_timeout_s)
    coded = len(outcome.bitstream)
    result = outcome.result
    response: dict[str, Any] = {
        **result,
        "input": {
            "kind": "bitstream" if is_stream else "image",
            "content_type": part_type,
            "bytes": len(data),
        },
        "bitstream_bytes": coded,
        # Against the upload's own (already compressed) size, as the user sees it.
        "compression_ratio": None if is_stream else len(data) / coded,
        "compression_ratio_raw": result["width"] * result["height"] * 3 / coded,
    }
    if outcome.image is not None:
        response["image_png_base64"] = await run_in_threadpool(png_base64, outcome.image)
    elapsed = time.perf_counter() - start
    response["timings_ms"] = {**result["timings_ms"], "total": round(elapsed * 1e3, 3)}
    runtime.metrics.request_seconds.labels(source).observe(elapsed)
    return response
