"""Embedded SQLite store of streamed frame results: dedupe key, retention, restart-safe.

One connection guarded by a lock: SQLite serialises writers anyway, and frame
rates per service are far below what one connection sustains. WAL lets the
REST readers and the writer proceed without blocking each other on disk.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 2
_AGE_PRUNE_EVERY_S = 60.0
MAX_SEQUENCE = 2**63 - 1  # SQLite integers are signed 64-bit

_SCHEMA = """
CREATE TABLE IF NOT EXISTS frames (
    stream_id TEXT NOT NULL,
    sequence INTEGER NOT NULL,
    received_ms INTEGER NOT NULL,
    capture_time_ms INTEGER,
    task TEXT NOT NULL,
    result TEXT NOT NULL,
    session TEXT NOT NULL DEFAULT '',
    digest TEXT,
    PRIMARY KEY (stream_id, sequence)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS frames_received ON frames (received_ms);
CREATE TABLE IF NOT EXISTS streams (
    stream_id TEXT PRIMARY KEY,
    first_seen_ms INTEGER NOT NULL,
    last_seen_ms INTEGER NOT NULL,
    frames_total INTEGER NOT NULL,
    last_sequence INTEGER NOT NULL,
    session TEXT NOT NULL DEFAULT ''
) WITHOUT ROWID;
"""
# Version 1 -> 2: the session (a device's boot epoch) and the content digest of frames.
_MIGRATE_FROM_1 = """
ALTER TABLE frames ADD COLUMN session TEXT NOT NULL DEFAULT '';
ALTER TABLE frames ADD COLUMN digest TEXT;
ALTER TABLE streams ADD COLUMN session TEXT NOT NULL DEFAULT '';
"""
_FRAME_COLUMNS = "stream_id, sequence, received_ms, capture_time_ms, task, result, session, digest"


@dataclass(frozen=True)
class StoredFrame:
    stream_id: str
    sequence: int
    received_ms: int
    capture_time_ms: int | None
    task: str
    result: dict[str, Any]
    session: str = ""
    digest: str | None = None  # hex SHA-256 of the bitstream (None: stored before v2)

    def to_json(self) -> dict[str, Any]:
        return {
            "stream_id": self.stream_id,
            "session": self.session,
            "sequence": self.sequence,
            "received_ms": self.received_ms,
            "capture_time_ms": self.capture_time_ms,
            "content_sha256": self.digest,
            "task": self.task,
            "result": self.result,
        }


class FrameStore:
    def __init__(
        self,
        path: str | Path,
        *,
        max_frames_per_stream: int = 10_000,
        max_age_s: float = 7 * 24 * 3600.0,
        synchronous: str = "FULL",
        clock: Callable[[], float] = time.time,
    ) -> None:
        if synchronous not in ("NORMAL", "FULL"):
            raise ValueError("synchronous must be NORMAL or FULL")
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self.max_frames_per_stream = max_frames_per_stream
        self.max_age_s = max_age_s
        self._clock = clock
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(f"PRAGMA synchronous={synchronous}")
        self._db.execute("PRAGMA busy_timeout=5000")
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version not in (0, 1, SCHEMA_VERSION):
            raise RuntimeError(f"{self.path}: store schema {version}, expected {SCHEMA_VERSION}")
        if version == 1:
            self._db.executescript(f"BEGIN;{_MIGRATE_FROM_1}COMMIT;")
        self._db.executescript(_SCHEMA)
        self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        self._last_age_prune = float("-inf")
        self.prune()

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    # -- writes -------------------------------------------------------------------
    def put(
        self,
        stream_id: str,
        sequence: int,
        task: str,
        result: dict[str, Any],
        capture_time_ms: int | None = None,
        *,
        session: str = "",
        digest: str | None = None,
    ) -> tuple[StoredFrame, bool]:
        """Store a frame's result unless one is stored already.

        Returns the stored frame and whether this call inserted it (False: an
        earlier or concurrent copy of the frame won, and its result is returned;
        the caller compares its digest). A frame of a new ``session`` of the stream
        first drops the frames of the stream's earlier sessions: the device restarted
        its counter, so their sequence numbers mean nothing any more.
        """
        now = self._now_ms()
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.execute(
                    "DELETE FROM frames WHERE stream_id = ? AND session != ? AND EXISTS ("
                    "SELECT 1 FROM streams WHERE stream_id = ? AND session != ?)",
                    (stream_id, session, stream_id, session),
                )
                cursor = self._db.execute(
                    f"INSERT OR IGNORE INTO frames ({_FRAME_COLUMNS}) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        stream_id,
                        sequence,
                        now,
                        capture_time_ms,
                        task,
                        json.dumps(result),
                        session,
                        digest,
                    ),
                )
                inserted = cursor.rowcount == 1
                if inserted:
                    self._db.execute(
                        "INSERT INTO streams VALUES (?, ?, ?, 1, ?, ?) ON CONFLICT (stream_id) DO "
                        "UPDATE SET last_seen_ms = excluded.last_seen_ms, "
                        "frames_total = frames_total + 1, "
                        "last_sequence = CASE WHEN session = excluded.session "
                        "THEN max(last_sequence, excluded.last_sequence) "
                        "ELSE excluded.last_sequence END, "
                        "session = excluded.session",
                        (stream_id, now, now, sequence, session),
                    )
                    self._trim_stream(stream_id)
                row = self._db.execute(
                    f"SELECT {_FRAME_COLUMNS} FROM frames WHERE stream_id = ? AND sequence = ?",
                    (stream_id, sequence),
                ).fetchone()
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        if now / 1000 - self._last_age_prune > _AGE_PRUNE_EVERY_S:
            self.prune()
        # The row can only be missing if retention dropped it at once (max 1 frame, old seq).
        frame = (
            _frame(row)
            if row is not None
            else StoredFrame(
                stream_id, sequence, now, capture_time_ms, task, result, session, digest
            )
        )
        return frame, inserted

    def _trim_stream(self, stream_id: str) -> None:
        # Keep the newest max_frames_per_stream sequences; NULL (fewer rows) deletes nothing.
        self._db.execute(
            "DELETE FROM frames WHERE stream_id = ? AND sequence < ("
            "SELECT sequence FROM frames WHERE stream_id = ? "
            "ORDER BY sequence DESC LIMIT 1 OFFSET ?)",
            (stream_id, stream_id, self.max_frames_per_stream - 1),
        )

    def prune(self) -> int:
        """Drop frames older than the retention age, and streams left without frames."""
        now = self._now_ms()
        cutoff = now - int(self.max_age_s * 1000)
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                removed = self._db.execute(
                    "DELETE FROM frames WHERE received_ms < ?", (cutoff,)
                ).rowcount
                self._db.execute(
                    "DELETE FROM streams WHERE last_seen_ms < ? AND NOT EXISTS ("
                    "SELECT 1 FROM frames WHERE frames.stream_id = streams.stream_id)",
                    (cutoff,),
                )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._last_age_prune = now / 1000
        return int(removed)

    # -- reads --------------------------------------------------------------------
    def get(self, stream_id: str, sequence: int) -> StoredFrame | None:
        with self._lock:
            row = self._db.execute(
                f"SELECT {_FRAME_COLUMNS} FROM frames WHERE stream_id = ? AND sequence = ?",
                (stream_id, sequence),
            ).fetchone()
        return _frame(row) if row is not None else None

    def frames(self, stream_id: str, since: int = -1, limit: int = 100) -> list[StoredFrame]:
        """Stored frames of a stream with sequence > ``since``, oldest first."""
        with self._lock:
            rows = self._db.execute(
                f"SELECT {_FRAME_COLUMNS} FROM frames WHERE stream_id = ? AND sequence > ? "
                "ORDER BY sequence LIMIT ?",
                (stream_id, since, limit),
            ).fetchall()
        return [_frame(r) for r in rows]

    def streams(self, limit: int = 100) -> list[dict[str, Any]]:
        """Streams, most recently active first, each with its latest stored frame."""
        with self._lock:
            rows = self._db.execute(
                "SELECT s.stream_id, s.first_seen_ms, s.last_seen_ms, s.frames_total, "
                "s.last_sequence, (SELECT COUNT(*) FROM frames f WHERE f.stream_id = s.stream_id) "
                "FROM streams s ORDER BY s.last_seen_ms DESC, s.stream_id LIMIT ?",
                (limit,),
            ).fetchall()
            latest = {
                r[0]: self._db.execute(
                    f"SELECT {_FRAME_COLUMNS} FROM frames WHERE stream_id = ? "
                    "ORDER BY sequence DESC LIMIT 1",
                    (r[0],),
                ).fetchone()
                for r in rows
            }
        return [
            {
                "stream_id": sid,
                "first_seen_ms": first,
                "last_seen_ms": last,
                "frames_total": total,
                "frames_stored": stored,
                "last_sequence": last_seq,
                "latest": _frame(latest[sid]).to_json() if latest[sid] is not None else None,
            }
            for sid, first, last, total, last_seq, stored in rows
        ]

    def has_stream(self, stream_id: str) -> bool:
        with self._lock:
            row = self._db.execute(
                "SELECT 1 FROM streams WHERE stream_id = ?", (stream_id,)
            ).fetchone()
        return row is not None

    def close(self) -> None:
        with self._lock:
            self._db.close()


def _frame(row: tuple[Any, ...]) -> StoredFrame:
    stream_id, sequence, received_ms, capture_ms, task, result, session, digest = row
    return StoredFrame(
        stream_id, sequence, received_ms, capture_ms, task, json.loads(result), session, digest
    )
