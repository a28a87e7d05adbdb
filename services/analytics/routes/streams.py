"""Results of the streams sent through gRPC AnalyzeStream, as stored."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query

from services.analytics.problems import problem_responses
from services.analytics.routes.deps import RuntimeDep
from services.analytics.schemas import FramePage, StreamList
from services.analytics.streaming import STREAM_ID_PATTERN
from services.common.errors import ErrorCode, ServiceError

router = APIRouter(tags=["streams"])


@router.get(
    "/v1/streams",
    operation_id="list_streams",
    response_model_exclude_none=True,
    responses=problem_responses(ErrorCode.INVALID_ARGUMENT),
)
def streams(runtime: RuntimeDep, limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> StreamList:
    """Streams seen by AnalyzeStream, most recently active first, with their latest frame."""
    return StreamList.model_validate({"streams": runtime.store.streams(limit)})


@router.get(
    "/v1/streams/{stream_id}/frames",
    operation_id="list_stream_frames",
    response_model_exclude_none=True,
    responses=problem_responses(ErrorCode.INVALID_ARGUMENT, ErrorCode.NOT_FOUND),
)
def frames(
    stream_id: Annotated[
        str, Path(pattern=STREAM_ID_PATTERN, description="1-128 of A-Z a-z 0-9 . _ ~ -")
    ],
    runtime: RuntimeDep,
    since: Annotated[int, Query(ge=-1, le=2**63 - 1, description="only sequences above this")] = -1,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> FramePage:
    """Stored frames of one stream, oldest first; poll with since = next_since."""
    if not runtime.store.has_stream(stream_id):
        raise ServiceError(ErrorCode.NOT_FOUND, f"no stream {stream_id!r}")
    found = runtime.store.frames(stream_id, since, limit)
    return FramePage.model_validate(
        {
            "stream_id": stream_id,
            "frames": [f.to_json() for f in found],
            "next_since": found[-1].sequence if found else since,
        }
    )
