"""services.common.errors: one classification of failures for REST and gRPC."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from services.common.errors import (
    GRPC_STATUS,
    HTTP_STATUS,
    ErrorCode,
    ServiceError,
    to_service_error,
)
from transtic.bitstream import BitstreamError
from transtic.codec import WeightsMismatchError
from transtic.images import ImageError
from transtic.weights import WeightsNotFoundError


@pytest.mark.parametrize(
    ("exc", "code", "http", "rpc"),
    [
        (BitstreamError("bitstream: bad"), "INVALID_ARGUMENT", 400, "INVALID_ARGUMENT"),
        (ImageError("corrupt image"), "INVALID_ARGUMENT", 400, "INVALID_ARGUMENT"),
        (WeightsMismatchError("other weights"), "FAILED_PRECONDITION", 409, "FAILED_PRECONDITION"),
        (
            WeightsNotFoundError("det", "det-123.pth", Path("/w"), None),
            "UNAVAILABLE",
            503,
            "UNAVAILABLE",
        ),
        (TimeoutError(), "DEADLINE_EXCEEDED", 504, "DEADLINE_EXCEEDED"),
        (KeyError("secret internals"), "INTERNAL", 500, "INTERNAL"),
    ],
)
def test_library_errors_map_to_status_codes(exc: Exception, code: str, http: int, rpc: str) -> None:
    error = to_service_error(exc)
    assert error.code.value == code
    assert error.http_status == http
    assert error.grpc_status == getattr(grpc.StatusCode, rpc)
    assert error.to_json() == {"error": {"code": code, "message": error.message}}
    if code == "INTERNAL":
        assert "secret internals" not in error.message  # no internals leak to clients
    if code == "UNAVAILABLE":
        assert "det-123.pth" in error.message


def test_every_code_has_both_mappings() -> None:
    assert set(HTTP_STATUS) == set(GRPC_STATUS) == set(ErrorCode)
    full = ServiceError(ErrorCode.RESOURCE_EXHAUSTED, "queue full", retry_after_s=2)
    assert full.http_status == 429 and full.grpc_code_value == 8
    assert to_service_error(full) is full
