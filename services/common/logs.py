"""Process-wide logging setup for the service entry points (never called by the library)."""

from __future__ import annotations

import logging

_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def configure_logging(level: str | int = "INFO") -> None:
    logging.basicConfig(level=level, format=_FORMAT, force=True)
    # uvicorn's per-request access log duplicates what the metrics already count.
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
