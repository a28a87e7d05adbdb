"""The API document, made to match what the service does.

FastAPI's generated document declares a 422 that this service never sends (validation
errors are 400 problem details) and knows nothing of the API-key guard, which is an ASGI
middleware. Both are fixed here, once, after FastAPI has built the document.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from services.analytics.problems import declare_problem_schema
from services.analytics.security import is_public_path
from services.common import request_ids
from services.common.auth import API_KEY_HEADER

SECURITY_SCHEMES = {
    "bearerAuth": {"type": "http", "scheme": "bearer", "description": "the API key"},
    "apiKeyHeader": {"type": "apiKey", "in": "header", "name": API_KEY_HEADER.title()},
}
_UNUSED_SCHEMAS = ("HTTPValidationError", "ValidationError")
# Every operation takes and answers one (rest.RequestIds, a middleware FastAPI cannot see).
# Any value is accepted (an unsafe one is replaced, not refused), so only the answer's
# header is held to the pattern.
REQUEST_ID_PARAMETER = {
    "name": request_ids.HTTP_HEADER,
    "in": "header",
    "required": False,
    "description": "the caller's id for this request, echoed back and kept with the result; "
    f"one that does not match {request_ids.PATTERN} is replaced by a generated id",
    "schema": {"type": "string"},
}
REQUEST_ID_HEADER = {
    "description": "the request id: the caller's X-Request-ID if it was valid, else a new one",
    "schema": {"type": "string", "pattern": request_ids.PATTERN},
}


def install_openapi(app: FastAPI, *, keys_required: bool, metrics_public: bool) -> None:
    def build() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title,
                version=app.version,
                description=app.description,
                routes=app.routes,
                tags=app.openapi_tags,
            )
            _fix(schema, keys_required=keys_required, metrics_public=metrics_public)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = build  # type: ignore[method-assign]


def _fix(schema: dict[str, Any], *, keys_required: bool, metrics_public: bool) -> None:
    declare_problem_schema(schema)
    schemas = schema["components"]["schemas"]
    for name in _UNUSED_SCHEMAS:
        schemas.pop(name, None)
    schema["components"]["securitySchemes"] = SECURITY_SCHEMES
    # Either scheme will do; with no keys configured the service also takes anonymous calls.
    requirement: list[dict[str, list[str]]] = [{name: []} for name in SECURITY_SCHEMES]
    if not keys_required:
        requirement.append({})
    for path, operations in schema["paths"].items():
        for operation in operations.values():
            operation["responses"].pop("422", None)
            public = is_public_path(path, metrics_public=metrics_public)
            operation["security"] = [] if public else requirement
            operation.setdefault("parameters", []).append(REQUEST_ID_PARAMETER)
            for response in operation["responses"].values():
                response.setdefault("headers", {})[request_ids.HTTP_HEADER] = REQUEST_ID_HEADER
