"""Request ids: what a client may send, and what replaces anything else.

A request id ties together the edge client's log, the analytics log, the stored result and
the answer. Clients choose it (REST header ``X-Request-ID``, gRPC metadata
``x-request-id``, or ``Frame.request_id`` per streamed frame); the services accept it only
when it is short and made of safe characters, so it can go into logs, headers and the
database as it is. Anything else is replaced by a generated id and never logged raw.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import grpc

HTTP_HEADER = "X-Request-ID"
METADATA_KEY = "x-request-id"  # gRPC metadata keys are lower case
MAX_LENGTH = 128
# RFC 3986 unreserved characters plus ":" (UUIDs, ULIDs, "host:counter" ids all fit).
PATTERN = rf"^[A-Za-z0-9._~:-]{{1,{MAX_LENGTH}}}$"
_SAFE = re.compile(PATTERN)

log = logging.getLogger(__name__)


def new_request_id() -> str:
    return uuid.uuid4().hex


def is_valid(value: str) -> bool:
    return bool(_SAFE.fullmatch(value))


def accept(sent: str | bytes | None, *, fallback: str | None = None) -> str:
    """``sent`` if it is a valid id, else ``fallback`` (or a new id).

    A refused id is described by its length only: it may hold control characters or
    terminal escapes meant for whoever reads the log.
    """
    if isinstance(sent, bytes):
        try:
            sent = sent.decode("ascii")
        except UnicodeDecodeError:
            sent = "\x00"  # not ASCII: refused below like any unsafe id
    if sent and is_valid(sent):
        return sent
    replacement = fallback if fallback is not None else new_request_id()
    if sent:
        log.warning(
            "refused a client request id (%d characters, not 1-%d of A-Z a-z 0-9 . _ ~ : -); "
            "using %s",
            len(sent),
            MAX_LENGTH,
            replacement,
        )
    return replacement


def from_metadata(metadata: Iterable[tuple[str, str | bytes]] | None) -> str:
    """The request id of a gRPC call (its ``x-request-id`` metadata), checked or generated."""
    for key, value in metadata or ():
        if key == METADATA_KEY:
            return accept(value)
    return new_request_id()


def for_frame(sent: str, call_id: str, sequence: int) -> str:
    """A streamed frame's id: the one the frame carries, else derived from its call's id
    and sequence (clients that predate per-frame ids still get traceable frames)."""
    derived = f"{call_id[: MAX_LENGTH - 21]}.{sequence}"
    return accept(sent, fallback=derived)


def echo_grpc(context: grpc.ServicerContext) -> str:
    """A gRPC call's request id (its checked metadata, else a new one), sent back at once in
    the initial metadata and again in the trailers, which error answers carry too."""
    request_id = from_metadata(context.invocation_metadata())
    echo = ((METADATA_KEY, request_id),)
    context.send_initial_metadata(echo)
    context.set_trailing_metadata(echo)
    return request_id
