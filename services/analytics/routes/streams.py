"""Results of the streams sent through gRPC AnalyzeStream, as stored: every session of a
stream stays readable; deleting them is for admin keys only."""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, Path, Query

from services.analytics.problems import problem_responses
from services.analytics.routes.deps import AdminDep, RuntimeDep
from services.analytics.schemas import DeleteResult, FramePage, SessionList, StreamList
from services.analytics.streaming import MAX_SESSION, STREAM_ID_PATTERN
from services.common.errors import ErrorCode, ServiceError

log = logging.getLogger(__name__)
router = APIRouter(tags=["streams"])

StreamId = Annotated[
    str, Path(pattern=STREAM_ID_PATTERN, description="1-128 of A-Z a-z 0-9 . _ ~ -")
]
SESSION_PATTERN = rf"^[A-Za-z0-9._~-]{{0,{MAX_SESSION}}}$"


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
    stream_id: StreamId,
    runtime: RuntimeDep,
    since: Annotated[int, Query(ge=-1, le=2**63 - 1, description="only sequences above this")] = -1,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    session: Annotated[
        str | None,
        Query(pattern=SESSION_PATTERN, description="a session (default: the current one)"),
    ] = None,
) -> FramePage:
    """Stored frames of one session of a stream, by sequence; poll with since = next_since.
    Earlier sessions (before the device rebooted) are listed by /sessions."""
    current = runtime.store.current_session(stream_id)
    if current is None:
        raise ServiceError(ErrorCode.NOT_FOUND, f"no stream {stream_id!r}")
    chosen = current if session is None else session
    found = runtime.store.frames(stream_id, since, limit, session=chosen)
    return FramePage.model_validate(
        {
            "stream_id": stream_id,
            "session": chosen,
            "frames": [f.to_json() for f in found],
            "next_since": found[-1].sequence if found else since,
        }
    )


@router.get(
    "/v1/streams/{stream_id}/sessions",
    operation_id="list_stream_sessions",
    responses=problem_responses(ErrorCode.INVALID_ARGUMENT, ErrorCode.NOT_FOUND),
)
def sessions(stream_id: StreamId, runtime: RuntimeDep) -> SessionList:
    """The sessions of a stream with frames stored, in the order they first arrived."""
    if not runtime.store.has_stream(stream_id):
        raise ServiceError(ErrorCode.NOT_FOUND, f"no stream {stream_id!r}")
    return SessionList.model_validate(
        {"stream_id": stream_id, "sessions": runtime.store.sessions(stream_id)}
    )


@router.delete(
    "/v1/streams/{stream_id}",
    operation_id="delete_stream",
    responses=problem_responses(
        ErrorCode.INVALID_ARGUMENT, ErrorCode.PERMISSION_DENIED, ErrorCode.NOT_FOUND
    ),
)
def delete(
    stream_id: StreamId,
    runtime: RuntimeDep,
    admin: AdminDep,
    session: Annotated[
        str | None,
        Query(pattern=SESSION_PATTERN, description="only this session (default: every one)"),
    ] = None,
) -> DeleteResult:
    """Delete a stream's stored results (admin keys only): one session, or the whole stream."""
    if not runtime.store.has_stream(stream_id):
        raise ServiceError(ErrorCode.NOT_FOUND, f"no stream {stream_id!r}")
    deleted = runtime.store.delete(stream_id, session)
    # An audit line: deletion is the one way results leave the store besides retention.
    log.warning(
        "deleted %d stored frames of stream %s (%s) for %s",
        deleted,
        stream_id,
        f"session {session!r}" if session is not None else "every session",
        admin,
    )
    return DeleteResult(stream_id=stream_id, deleted=deleted)
