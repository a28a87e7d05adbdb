"""One error type for every service API, mapped to HTTP and gRPC status codes.

Library exceptions are translated in one place so that REST and gRPC report the
same case the same way, and so that no traceback ever reaches a client.
"""

from __future__ import annotations

import enum
import math
import re
from concurrent.futures import CancelledError
from typing import Any

import grpc


class ErrorCode(enum.StrEnum):
    INVALID_ARGUMENT = "INVALID_ARGUMENT"
    UNAUTHENTICATED = "UNAUTHENTICATED"
    # A valid key that may not do this (deleting stored results needs an admin key).
    PERMISSION_DENIED = "PERMISSION_DENIED"
    UNSUPPORTED_MEDIA_TYPE = "UNSUPPORTED_MEDIA_TYPE"
    PAYLOAD_TOO_LARGE = "PAYLOAD_TOO_LARGE"
    NOT_FOUND = "NOT_FOUND"
    REQUEST_TIMEOUT = "REQUEST_TIMEOUT"
    FAILED_PRECONDITION = "FAILED_PRECONDITION"
    ALREADY_EXISTS = "ALREADY_EXISTS"
    RESOURCE_EXHAUSTED = "RESOURCE_EXHAUSTED"
    UNAVAILABLE = "UNAVAILABLE"
    DEADLINE_EXCEEDED = "DEADLINE_EXCEEDED"
    # The client went away (disconnect, cancelled RPC): nobody reads the answer, and it is
    # no fault of the server's, so it is counted apart from INTERNAL.
    CANCELLED = "CANCELLED"
    INTERNAL = "INTERNAL"


HTTP_STATUS: dict[ErrorCode, int] = {
    ErrorCode.INVALID_ARGUMENT: 400,
    ErrorCode.UNAUTHENTICATED: 401,
    ErrorCode.PERMISSION_DENIED: 403,
    ErrorCode.UNSUPPORTED_MEDIA_TYPE: 415,
    ErrorCode.PAYLOAD_TOO_LARGE: 413,
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.REQUEST_TIMEOUT: 408,
    ErrorCode.FAILED_PRECONDITION: 409,
    ErrorCode.ALREADY_EXISTS: 409,
    ErrorCode.RESOURCE_EXHAUSTED: 429,
    ErrorCode.UNAVAILABLE: 503,
    ErrorCode.DEADLINE_EXCEEDED: 504,
    ErrorCode.CANCELLED: 499,  # nginx's "client closed request"; never actually delivered
    ErrorCode.INTERNAL: 500,
}

# HTTP-only distinctions (media type, body size) are argument errors to a gRPC client.
GRPC_STATUS: dict[ErrorCode, grpc.StatusCode] = {
    ErrorCode.INVALID_ARGUMENT: grpc.StatusCode.INVALID_ARGUMENT,
    ErrorCode.UNAUTHENTICATED: grpc.StatusCode.UNAUTHENTICATED,
    ErrorCode.PERMISSION_DENIED: grpc.StatusCode.PERMISSION_DENIED,
    ErrorCode.UNSUPPORTED_MEDIA_TYPE: grpc.StatusCode.INVALID_ARGUMENT,
    ErrorCode.PAYLOAD_TOO_LARGE: grpc.StatusCode.INVALID_ARGUMENT,
    ErrorCode.NOT_FOUND: grpc.StatusCode.NOT_FOUND,
    ErrorCode.REQUEST_TIMEOUT: grpc.StatusCode.DEADLINE_EXCEEDED,
    ErrorCode.FAILED_PRECONDITION: grpc.StatusCode.FAILED_PRECONDITION,
    ErrorCode.ALREADY_EXISTS: grpc.StatusCode.ALREADY_EXISTS,
    ErrorCode.RESOURCE_EXHAUSTED: grpc.StatusCode.RESOURCE_EXHAUSTED,
    ErrorCode.UNAVAILABLE: grpc.StatusCode.UNAVAILABLE,
    ErrorCode.DEADLINE_EXCEEDED: grpc.StatusCode.DEADLINE_EXCEEDED,
    ErrorCode.CANCELLED: grpc.StatusCode.CANCELLED,
    ErrorCode.INTERNAL: grpc.StatusCode.INTERNAL,
}


# An absolute file path (two or more components): clients see only its last part.
_ABSOLUTE_PATH = re.compile(r"(?<![\w.:/])/(?:[^\s/'\"]+/)+([^\s/'\"]*)")


def redact_paths(text: str) -> str:
    """``text`` with every absolute path cut to its file name: the server's layout is
    nobody's business but the log's."""
    return _ABSOLUTE_PATH.sub(lambda m: m.group(1) or "(path)", text)


PROBLEM_CONTENT_TYPE = "application/problem+json"
# A URN, not a URL: the type names the error kind and is never fetched.
PROBLEM_TYPE_PREFIX = "urn:transtic:error:"


class ServiceError(Exception):
    """An error a client caused or can act on; its message is safe to show (absolute
    paths are cut to their file names here, so no caller can leak them)."""

    def __init__(self, code: ErrorCode, message: str, *, retry_after_s: float | None = None):
        message = redact_paths(message)
        super().__init__(message)
        self.code = code
        self.message = message
        self.retry_after_s = retry_after_s

    @property
    def http_status(self) -> int:
        return HTTP_STATUS[self.code]

    @property
    def grpc_status(self) -> grpc.StatusCode:
        return GRPC_STATUS[self.code]

    @property
    def grpc_code_value(self) -> int:
        """The numeric google.rpc code, as carried in-band (e.g. FrameAck.error_code)."""
        value: int = self.grpc_status.value[0]
        return value

    def to_json(self) -> dict[str, Any]:
        return {"error": {"code": self.code.value, "message": self.message}}

    def to_problem(
        self, *, status: int | None = None, instance: str | None = None
    ) -> dict[str, Any]:
        """RFC 9457 problem details with the stable ``code``; ``error`` repeats the
        pre-1.0 body so that clients written against it keep working."""
        problem: dict[str, Any] = {
            "type": f"{PROBLEM_TYPE_PREFIX}{self.code.value}",
            "title": self.code.value.replace("_", " ").capitalize(),
            "status": status or self.http_status,
            "detail": self.message,
            "code": self.code.value,
            **self.to_json(),
        }
        if instance:
            problem["instance"] = instance
        return problem

    def __str__(self) -> str:
        return self.message


def to_service_error(exc: BaseException) -> ServiceError:
    """Classify any exception; unknown ones become INTERNAL with a neutral message.

    Imports stay local so that services/common does not pull torch in for callers
    that only want the error type.
    """
    if isinstance(exc, ServiceError):
        return exc
    from starlette.requests import ClientDisconnect

    from transtic.bitstream import BitstreamError
    from transtic.codec import WeightsMismatchError
    from transtic.images import ImageError
    from transtic.weights import UnknownWeightsError, WeightsNotFoundError

    if isinstance(exc, WeightsMismatchError):
        return ServiceError(ErrorCode.FAILED_PRECONDITION, str(exc))
    if isinstance(exc, BitstreamError):
        return ServiceError(ErrorCode.INVALID_ARGUMENT, str(exc))
    if isinstance(exc, ImageError):
        return ServiceError(ErrorCode.INVALID_ARGUMENT, str(exc))
    if isinstance(exc, WeightsNotFoundError):
        return ServiceError(ErrorCode.UNAVAILABLE, str(exc))
    if isinstance(exc, UnknownWeightsError):
        return ServiceError(ErrorCode.FAILED_PRECONDITION, str(exc))
    if isinstance(exc, (CancelledError, ClientDisconnect)):
        return ServiceError(ErrorCode.CANCELLED, "the client went away; the work was dropped")
    if isinstance(exc, TimeoutError):
        return ServiceError(ErrorCode.DEADLINE_EXCEEDED, "timed out waiting for the result")
    return ServiceError(
        ErrorCode.INTERNAL, f"internal error ({type(exc).__name__}); see server log"
    )


def abort_grpc(context: grpc.ServicerContext, error: ServiceError) -> None:
    """End an RPC with the error's status; never returns (grpc raises)."""
    if error.retry_after_s is not None:
        # Added to what the handler set already (the request id, for one).
        kept = tuple(context.trailing_metadata() or ())
        # Whole seconds, at least 1: "0" would tell a client to retry at once.
        retry = ("retry-after", str(max(1, math.ceil(error.retry_after_s))))
        context.set_trailing_metadata((*kept, retry))
    context.abort(error.grpc_status, error.message)
