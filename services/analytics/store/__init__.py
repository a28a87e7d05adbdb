"""Stored results of streamed frames: SQLite for one process, PostgreSQL for replicas.

``open_store`` picks the backend from the service settings: ``db_url`` names a
PostgreSQL database (``postgresql://user@host:5432/db``); without it the SQLite file
``db_path`` is used. Both run the same versioned migrations on open
(``migrations/<backend>/``), so an older database is upgraded in place.
"""

from __future__ import annotations

from services.analytics.settings import Settings
from services.analytics.store.base import MAX_SEQUENCE, FrameStore, StoredFrame
from services.analytics.store.sqlite import SqliteFrameStore

__all__ = ["MAX_SEQUENCE", "FrameStore", "SqliteFrameStore", "StoredFrame", "open_store"]


def open_store(settings: Settings) -> FrameStore:
    if settings.db_url is None:
        return SqliteFrameStore(
            settings.db_path,
            max_frames_per_stream=settings.retention_max_frames,
            max_age_s=settings.retention_max_age_s,
            synchronous=settings.db_synchronous,
        )
    # Imported here: single-process deployments need no PostgreSQL driver.
    from services.analytics.store.postgres import PostgresFrameStore

    return PostgresFrameStore(
        settings.db_url,
        max_frames_per_stream=settings.retention_max_frames,
        max_age_s=settings.retention_max_age_s,
    )
