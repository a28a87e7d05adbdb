"""Results of the streams sent through gRPC AnalyzeStream, as stored."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from services.analytics.routes.deps import RuntimeDep
from services.common.errors import ErrorCode, ServiceError

router = APIRouter(tags=["streams"])


@router.get("/v1/streams")
def streams(
    runtime: RuntimeDep, limit: Annotated[int, Query(ge=1, le=1000)] = 100
) -> dict[str, Any]:
    """Streams seen by AnalyzeStream, most recently active first, with their latest frame."""
    return {"streams": runtime.store.streams(limit)}


@router.get("/v1/streams/{stream_id}/frames")
def frames(
    stream_id: str,
    runtime: RuntimeDep,
    since: Annotated[int, Query(ge=-1, le=2**63 - 1, description="only sequences above this")] = -1,
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
