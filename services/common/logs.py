"""Process-wide logging setup for the service entry points (never called by the library).

Two formats, chosen by the ``log_format`` setting: ``text`` for people at a terminal and
``json`` (one object per line: timestamp, level, logger, message) for log collectors.
Either way every record carries the request it belongs to (``request_id``, and a
streamed frame's ``stream_id`` and ``sequence``), from ``extra=`` or from
:func:`log_context`, so one request can be followed from the edge client to the store.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterator
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any, Literal

LogFormat = Literal["text", "json"]
CONTEXT_FIELDS = ("request_id", "stream_id", "sequence")
_TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# Replaced (never mutated) by log_context, so a copied context cannot see later changes.
_context: ContextVar[dict[str, Any] | None] = ContextVar("transtic_log_context", default=None)


@contextlib.contextmanager
def log_context(**fields: Any) -> Iterator[None]:
    """Records logged inside the block (same thread or task) carry ``fields``.

    Only values already validated belong here (a request id that passed
    ``services.common.request_ids``): a log line must not carry raw client input.
    """
    merged = {**(_context.get() or {}), **{k: v for k, v in fields.items() if v not in (None, "")}}
    token = _context.set(merged)
    try:
        yield
    finally:
        _context.reset(token)


def context_fields(record: logging.LogRecord) -> dict[str, Any]:
    """The request fields of ``record``: its ``extra=`` values, else the current context."""
    current = _context.get() or {}
    found = {}
    for name in CONTEXT_FIELDS:
        value = getattr(record, name, None)
        if value is None:
            value = current.get(name)
        if value is not None and value != "":
            found[name] = value
    return found


class JsonFormatter(logging.Formatter):
    """One JSON object per line; newlines in messages stay escaped inside the string."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "timestamp": datetime.fromtimestamp(record.created, UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            **context_fields(record),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    """The classic line, with the request fields appended when there are any."""

    def __init__(self) -> None:
        super().__init__(_TEXT_FORMAT)

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 - stdlib name
        line = super().formatMessage(record)
        fields = context_fields(record)
        if not fields:
            return line
        return line + " [" + " ".join(f"{k}={v}" for k, v in fields.items()) + "]"


def make_formatter(log_format: LogFormat) -> logging.Formatter:
    return JsonFormatter() if log_format == "json" else TextFormatter()


def configure_logging(level: str | int = "INFO", log_format: LogFormat = "text") -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(make_formatter(log_format))
    logging.basicConfig(level=level, handlers=[handler], force=True)
    # Library warnings go through the same handler, so a JSON log stays all JSON.
    logging.captureWarnings(True)
    # uvicorn's per-request access log duplicates what the metrics already count.
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
