"""The REST front end (FastAPI): the app, its error answers, security, and the routers."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Sequence

from fastapi import FastAPI
from fastapi.concurrency import run_in_threadpool

import transtic
from services.analytics.openapi import install_openapi
from services.analytics.problems import install_error_handlers
from services.analytics.routes import ROUTERS
from services.analytics.routes.analysis import BITSTREAM_TYPE
from services.analytics.routes.web import mount_assets
from services.analytics.runtime import Runtime
from services.analytics.security import install as install_security
from services.analytics.settings import Settings
from services.common.http_limits import BodyLimits
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
    return app
