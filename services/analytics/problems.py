"""How REST errors are answered: every error, from any layer, becomes an RFC 9457
``application/problem+json`` body with a stable ``code``, and the OpenAPI document
declares, per operation, the statuses it can really answer."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from services.analytics.schemas import Problem
from services.common.errors import HTTP_STATUS, PROBLEM_CONTENT_TYPE, ErrorCode, ServiceError

# Errors raised by Starlette itself (unknown path, wrong method) keep their status.
_HTTP_CODES = {
    400: ErrorCode.INVALID_ARGUMENT,
    401: ErrorCode.UNAUTHENTICATED,
    404: ErrorCode.NOT_FOUND,
    413: ErrorCode.PAYLOAD_TOO_LARGE,
}
# A status shared by several codes (409) is documented under the first of them.
_CODE_OF_STATUS: dict[int, ErrorCode] = {}
for _code, _status in HTTP_STATUS.items():
    _CODE_OF_STATUS.setdefault(_status, _code)

# What the guard (security.py) may answer before any route runs, and what any
# unexpected failure gives; every operation can see these.
GUARD_CODES = (ErrorCode.RESOURCE_EXHAUSTED, ErrorCode.PAYLOAD_TOO_LARGE, ErrorCode.INTERNAL)
PROBE_CODES = (ErrorCode.PAYLOAD_TOO_LARGE, ErrorCode.INTERNAL)  # probes skip keys and limits


def retry_after_value(error: ServiceError) -> str | None:
    if error.retry_after_s is None:
        return None
    return str(max(1, math.ceil(error.retry_after_s)))


def problem_response(
    error: ServiceError, status: int | None = None, instance: str | None = None
) -> JSONResponse:
    headers = {}
    retry_after = retry_after_value(error)
    if retry_after is not None:
        headers["Retry-After"] = retry_after
    return JSONResponse(
        error.to_problem(status=status, instance=instance),
        status_code=status or error.http_status,
        headers=headers,
        media_type=PROBLEM_CONTENT_TYPE,
    )


def problem_responses(*codes: ErrorCode, guarded: bool = True) -> dict[int | str, Any]:
    """The ``responses`` entry of an operation: each status it can answer, as a problem."""
    every = (*codes, ErrorCode.UNAUTHENTICATED, *GUARD_CODES) if guarded else (*codes, *PROBE_CODES)
    return {status: _problem_doc(status) for status in sorted({HTTP_STATUS[c] for c in every})}


def _problem_doc(status: int) -> dict[str, Any]:
    code = _CODE_OF_STATUS[status]
    doc: dict[str, Any] = {
        "description": f"{code.value}: problem details (RFC 9457)",
        "content": {PROBLEM_CONTENT_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}},
    }
    if code in (ErrorCode.RESOURCE_EXHAUSTED, ErrorCode.UNAVAILABLE):
        doc["headers"] = {
            "Retry-After": {
                "description": "seconds to wait before retrying",
                "schema": {"type": "integer"},
            }
        }
    return doc


def declare_problem_schema(schema: dict[str, Any]) -> None:
    schema.setdefault("components", {}).setdefault("schemas", {})["Problem"] = (
        Problem.model_json_schema(ref_template="#/components/schemas/{model}")
    )


def _validation_detail(errors: Iterable[Any]) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg', '')}" for e in errors
    )


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ServiceError)
    async def service_error(request: Request, exc: ServiceError) -> JSONResponse:
        return problem_response(exc, instance=request.url.path)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        error = ServiceError(ErrorCode.INVALID_ARGUMENT, _validation_detail(exc.errors()))
        return problem_response(error, instance=request.url.path)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(exc.status_code, ErrorCode.INVALID_ARGUMENT)
        response = problem_response(
            ServiceError(code, str(exc.detail)), exc.status_code, request.url.path
        )
        response.headers.update(exc.headers or {})
        return response

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        error = request.app.state.runtime.record_error(exc)
        return problem_response(error, instance=request.url.path)
