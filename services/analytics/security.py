"""REST protection: API keys, per-client rate limits, declared body size, CORS, and the
security headers on every response.

A plain ASGI middleware rather than a FastAPI dependency: it refuses before any route,
body parsing or 404 handling runs, and covers every path, including ones added later.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable

from fastapi import FastAPI
from starlette.datastructures import Headers
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.analytics.settings import Settings
from services.common.auth import API_KEY_HEADER, ApiKeys
from services.common.errors import PROBLEM_CONTENT_TYPE, ErrorCode, ServiceError
from services.common.http_limits import length_value
from services.common.ratelimit import RateLimiter

log = logging.getLogger(__name__)

# Probes and load balancers must reach these without keys or limits.
PROBE_PATHS = frozenset({"/healthz", "/readyz", "/v2/health/live", "/v2/health/ready"})
# Open without a key: the web page and its assets (the page asks for the key itself) and
# the API description; none of them hold data.
PUBLIC_PATHS = frozenset({*PROBE_PATHS, "/", "/openapi.json", "/docs", "/docs/oauth2-redirect"})
# The Swagger UI files /docs loads: a browser fetches them without the key.
PUBLIC_PREFIXES = ("/static/", "/docs-assets/")

# Only this origin's scripts, styles and images (plus data: and blob: images: the decoded
# PNGs and the picked file's preview), no
# plugins, no framing (clickjacking), no <base> or form tricks. Pages that need an
# inline script set their own policy with that script's hash (rest._install_docs).
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; img-src 'self' data: blob:; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)
_SECURITY_HEADERS = (
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
)
HSTS = b"max-age=31536000"


class SecurityHeaders:
    """Adds the security headers to every HTTP response (errors and 404s included)."""

    def __init__(self, app: ASGIApp, *, https: bool) -> None:
        self.app = app
        self.https = https

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        https = self.https or scope.get("scheme") == "https"

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                extra = list(_SECURITY_HEADERS)
                extra.append((b"content-security-policy", CONTENT_SECURITY_POLICY.encode()))
                if https:
                    extra.append((b"strict-transport-security", HSTS))
                headers += [(name, value) for name, value in extra if name not in present]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


def is_public_path(path: str, *, metrics_public: bool = True) -> bool:
    """Whether the guard lets ``path`` through without an API key."""
    public = PUBLIC_PATHS | ({"/metrics"} if metrics_public else set())
    return path in public or path.startswith(PUBLIC_PREFIXES)


class Guard:
    def __init__(
        self,
        app: ASGIApp,
        *,
        keys: ApiKeys,
        limiter: RateLimiter | None,
        max_body_bytes: int,
        metrics_public: bool = True,
        on_refused: Callable[[ErrorCode], None] | None = None,
    ) -> None:
        self.app = app
        self.keys = keys
        self.limiter = limiter
        self.max_body_bytes = max_body_bytes
        self.public = PUBLIC_PATHS | ({"/metrics"} if metrics_public else set())
        self.on_refused = on_refused

    def needs_key(self, path: str) -> bool:
        return self.keys.enabled and not (path in self.public or path.startswith(PUBLIC_PREFIXES))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        error = self.check(scope)
        if error is not None:
            if self.on_refused is not None:
                self.on_refused(error.code)
            await _send_error(send, error)
            return
        await self.app(scope, receive, send)

    def check(self, scope: Scope) -> ServiceError | None:
        path: str = scope["path"]
        headers = Headers(scope=scope)
        identity = self.keys.identify_headers(headers) if self.keys.enabled else None
        # Limits first, keyed by the IP when the key is missing or wrong: guessing keys
        # costs the guesser its own budget.
        if self.limiter is not None and path not in PROBE_PATHS:
            client = scope.get("client")
            wait = self.limiter.acquire(identity or f"ip:{client[0] if client else 'unknown'}")
            if wait > 0:
                return ServiceError(
                    ErrorCode.RESOURCE_EXHAUSTED,
                    f"rate limit of {self.limiter.rate:g} requests/s exceeded",
                    retry_after_s=wait,
                )
        if identity is None and self.needs_key(path):
            return ServiceError(
                ErrorCode.UNAUTHENTICATED,
                f"missing or invalid API key: send 'Authorization: Bearer <key>' or "
                f"'{API_KEY_HEADER.title()}: <key>'",
            )
        declared = headers.get("content-length")
        if declared is not None and length_value(declared) is None:
            return ServiceError(ErrorCode.INVALID_ARGUMENT, "Content-Length must be ASCII digits")
        if declared is not None and int(declared) > self.max_body_bytes:
            # Refused before a byte of the body is read; chunked bodies (no length) are
            # counted while they stream in (routes.analysis.read_body).
            return ServiceError(
                ErrorCode.PAYLOAD_TOO_LARGE,
                f"request body exceeds the limit of {self.max_body_bytes} bytes",
            )
        return None


async def _send_error(send: Send, error: ServiceError) -> None:
    body = json.dumps(error.to_problem()).encode()
    headers = [
        (b"content-type", PROBLEM_CONTENT_TYPE.encode()),
        (b"content-length", str(len(body)).encode()),
    ]
    if error.code is ErrorCode.UNAUTHENTICATED:
        headers.append((b"www-authenticate", b'Bearer realm="transtic"'))
    if error.retry_after_s is not None:
        headers.append((b"retry-after", str(max(1, math.ceil(error.retry_after_s))).encode()))
    await send({"type": "http.response.start", "status": error.http_status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def install(app: FastAPI, settings: Settings) -> ApiKeys:
    """Add the guard and (only when origins are configured) CORS to ``app``; the admin
    keys (``app.state.admin_keys``) pass the guard too, and routes that delete results
    check for them (routes.deps.require_admin)."""
    admin_keys = ApiKeys(key.get_secret_value() for key in settings.admin_api_keys)
    app.state.admin_keys = admin_keys
    keys = ApiKeys.from_settings(settings).including(admin_keys)

    def refused(code: ErrorCode) -> None:
        runtime = app.state.runtime
        metrics = getattr(runtime, "metrics", None)
        if metrics is not None:
            metrics.count_error(code.value)

    app.add_middleware(
        Guard,
        keys=keys,
        limiter=RateLimiter.from_settings(settings),
        max_body_bytes=settings.max_upload_bytes,
        metrics_public=not settings.metrics_require_auth,
        on_refused=refused,
    )
    app.add_middleware(SecurityHeaders, https=settings.http_tls)
    if settings.cors_origins:
        # Added last, so outermost: preflights are answered before the key check, and
        # 401/429 answers carry the CORS headers a browser needs to show them.
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "X-API-Key", "Content-Type", "X-Request-ID"],
            expose_headers=["Retry-After", "X-Request-ID"],
            allow_credentials=False,
            max_age=600,
        )
    if keys.enabled:
        log.info("REST: API keys required (%d configured)", len(keys))
    return keys
