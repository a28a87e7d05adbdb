"""The REST front end (FastAPI): the app, its error answers, security, and the routers."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Sequence

from fastapi import FastAPI
from fastapi.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

import transtic
from services.analytics.openapi import install_openapi
from services.analytics.problems import install_error_handlers
from services.analytics.routes import ROUTERS
from services.analytics.routes.analysis import BITSTREAM_TYPE
from services.analytics.routes.web import mount_assets
from services.analytics.runtime import Runtime
from services.analytics.security import install as install_security
from services.analytics.settings import Settings
from services.common import request_ids
from services.common.http_limits import BodyLimits
from services.common.logs import log_context
from transtic.tasks import TaskBackend

log = logging.getLogger(__name__)

__all__ = ["BITSTREAM_TYPE", "create_app"]


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
        docs_url=None,  # routes.web serves it from local files: the default page loads a CDN
        redoc_url=None,  # ReDoc has no offline bundle here; /docs covers the same ground
    )
    app.state.settings = settings
    app.state.runtime = rt
    install_error_handlers(app)
    # Inside the guard (added later, so outer): refused requests never reach the budget.
    app.add_middleware(
        BodyLimits,
        max_buffered_bytes=settings.http_max_buffered_bytes,
        body_timeout_s=settings.http_body_timeout_s,
    )
    keys = install_security(app, settings)
    mount_assets(app)
    for router in ROUTERS:
        app.include_router(router)
    install_openapi(
        app, keys_required=keys.enabled, metrics_public=not settings.metrics_require_auth
    )
    # Outermost: refusals by the guard and the limits carry the request id too.
    app.add_middleware(RequestIds)
    return app


class RequestIds:
    """Gives every HTTP request an id: the client's ``X-Request-ID`` when it is safe, else a
    generated one. Routes read it as ``request.state.request_id``, log records carry it,
    and every answer returns it in ``X-Request-ID``."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        header = request_ids.HTTP_HEADER.lower().encode()
        sent = next((value for key, value in scope["headers"] if key == header), None)
        request_id = request_ids.accept(sent)
        scope.setdefault("state", {})["request_id"] = request_id

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != header]
                headers.append((header, request_id.encode()))
                message = {**message, "headers": headers}
            await send(message)

        with log_context(request_id=request_id):
            await self.app(scope, receive, send_with_id)
