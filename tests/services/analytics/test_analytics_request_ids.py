"""rest.RequestIds, the ASGI layer that gives every HTTP request an id, on raw header bytes
(control characters and non-ASCII that an HTTP client library would refuse to send)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from services.analytics.rest import RequestIds
from services.common.logs import context_fields


def call(header: bytes | None) -> tuple[dict[bytes, bytes], dict[str, Any], dict[str, Any]]:
    """Run one request through RequestIds around a tiny app; returns the answer's headers,
    what the app saw in ``scope["state"]``, and the log context while it ran."""
    seen: dict[str, Any] = {}

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen["state"] = dict(scope["state"])
        record = logging.LogRecord("t", logging.INFO, __file__, 1, "m", None, None)
        seen["log"] = context_fields(record)
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                # An app's own X-Request-ID must not make a second, different one.
                "headers": [(b"x-request-id", b"from-the-app")],
            }
        )
        await send({"type": "http.response.body", "body": b"ok"})

    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    headers = [(b"x-request-id", header)] if header is not None else []
    scope = {"type": "http", "method": "GET", "path": "/", "headers": headers}
    asyncio.run(RequestIds(app)(scope, receive, send))
    answer = sent[0]["headers"]
    assert [k for k, _ in answer].count(b"x-request-id") == 1
    return dict(answer), seen["state"], seen["log"]


def test_a_safe_id_reaches_the_route_the_log_and_the_answer() -> None:
    headers, state, log = call(b"client-7")
    assert headers[b"x-request-id"] == b"client-7"
    assert state["request_id"] == log["request_id"] == "client-7"


@pytest.mark.parametrize(
    "hostile",
    [
        b"\x1b[2J\x1b[31mfake",
        b"line\r\nSet-Cookie: x=1",
        "caf\u00e9".encode(),
        b"\xff\xfe",
        b"a" * 129,
    ],
)
def test_a_hostile_id_is_replaced_everywhere(
    hostile: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        headers, state, log = call(hostile)
    replaced = headers[b"x-request-id"].decode()
    assert len(replaced) == 32 and replaced == state["request_id"] == log["request_id"]
    assert hostile.decode("latin-1") not in caplog.text


def test_no_header_gets_a_new_id_each_time() -> None:
    first = call(None)[0][b"x-request-id"]
    assert len(first) == 32 and first != call(None)[0][b"x-request-id"]
