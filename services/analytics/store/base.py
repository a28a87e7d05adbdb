"""What every frame store guarantees, written once in SQL both backends understand.

A backend (SQLite for one process, PostgreSQL for replicas sharing one database)
supplies a connection and runs each unit of work in one transaction; the queries,
dedupe, retention and read shapes live here so the backends cannot drift apart.
SQL is written with ``?`` placeholders and the PostgreSQL backend translates them.
"""

from __future__ import annotations

import json
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

_AGE_PRUNE_EVERY_S = 60.0
MAX_SEQUENCE = 2**63 - 1  # signed 64-bit in both SQLite and PostgreSQL (BIGINT)

T = TypeVar("T")


class Cursor(Protocol):
    @property
    def rowcount(self) -> int: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...


Execute = Callable[[str, Sequence[Any]], Cursor]


@dataclass(frozen=True)
class StoredFrame:
    stream_id: str
    sequence: int
    received_ms: int
    capture_time_ms: int | None
    task: str
    result: dict[str, Any]
    session: str = ""
    digest: str | None = None  # hex SHA-256 of the bitstream; None: stored before digests
    request_id: str | None = None  # None: stored before request ids

    def to_json(self) -> dict[str, Any]:
        return {
            "stream_id": self.stream_id,
            "session": self.session,
            "sequence": self.sequence,
            "received_ms": self.received_ms,
            # The proto's name (Frame.capture_time_unix_ms): one name on both APIs.
            "capture_time_unix_ms": self.capture_time_ms,
            "content_sha256": self.digest,
            "request_id": self.request_id,
            "task": self.task,
            "result": self.result,
        }


_FRAME_COLUMNS = (
    "stream_id, sequence, received_ms, capture_time_ms, task, result, session, digest, request_id"
)
_SELECT_FRAME = (
    f"SELECT {_FRAME_COLUMNS} FROM frames WHERE stream_id = ? AND session = ? AND sequence = ?"
)
# A stream's frames from newest to oldest arrival: what retention by count keeps first.
_NEWEST_FIRST = "ORDER BY received_ms DESC, session DESC, sequence DESC"


class FrameStore(ABC):
    """Frame results keyed by (stream, session, sequence): the first stored copy wins.

    ``put`` returns only after the transaction committed, so a result acknowledged
    to a client survives a crash of the service (persist-before-ack). No frame deletes
    another: results go only by the operator's retention (``max_frames_per_stream``,
    ``max_age_s``) or an explicit ``delete``.
    """

    backend: str = ""

    def __init__(
        self,
        *,
        max_frames_per_stream: int,
        max_age_s: float,
        clock: Callable[[], float],
    ) -> None:
        self.max_frames_per_stream = max_frames_per_stream
        self.max_age_s = max_age_s
        self._clock = clock
        self._lock = threading.Lock()
        self._last_age_prune = float("-inf")

    @abstractmethod
    def _run(self, work: Callable[[Execute], T], *, write: bool = False) -> T:
        """Run ``work`` in one transaction (committed when it returns, rolled back if it
        raises), holding the store's lock; ``write`` takes the write lock up front."""

    @abstractmethod
    def schema_version(self) -> int:
        """The migration version the open database is at."""

    @abstractmethod
    def close(self) -> None: ...

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
        request_id: str | None = None,
    ) -> tuple[StoredFrame, bool]:
        """Store a frame's result unless one is stored already.

        Returns the stored frame and whether this call inserted it (False: an
        earlier or concurrent copy of the frame won, and its result is returned; the
        caller compares its ``digest``). A ``session`` is a device's boot epoch: its
        sequences start again at 0, so it scopes the dedupe key, and the stream's
        earlier sessions stay stored. The stream's current session is the one that
        started last; a late frame of an older one does not take that back.
        """
        now = self._now_ms()
        row_values = (
            stream_id,
            sequence,
            now,
            capture_time_ms,
            task,
            json.dumps(result),
            session,
            digest,
            request_id,
        )

        def work(execute: Execute) -> tuple[Any, bool]:
            session_is_new = (
                execute(
                    "SELECT 1 FROM frames WHERE stream_id = ? AND session = ? LIMIT 1",
                    (stream_id, session),
                ).fetchone()
                is None
            )
            inserted = (
                execute(
                    f"INSERT INTO frames ({_FRAME_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
                    "ON CONFLICT (stream_id, session, sequence) DO NOTHING",
                    row_values,
                ).rowcount
                == 1
            )
            if inserted:
                execute(
                    "INSERT INTO streams (stream_id, first_seen_ms, last_seen_ms, frames_total, "
                    "last_sequence, session) VALUES (?, ?, ?, 1, ?, ?) "
                    "ON CONFLICT (stream_id) DO UPDATE SET "
                    "last_seen_ms = excluded.last_seen_ms, "
                    "frames_total = streams.frames_total + 1, "
                    "last_sequence = CASE WHEN ? THEN excluded.last_sequence "
                    "WHEN excluded.session = streams.session "
                    "AND excluded.last_sequence > streams.last_sequence "
                    "THEN excluded.last_sequence ELSE streams.last_sequence END, "
                    "session = CASE WHEN ? THEN excluded.session ELSE streams.session END",
                    (stream_id, now, now, sequence, session, session_is_new, session_is_new),
                )
                # The operator's limit: keep the stream's newest max_frames_per_stream
                # arrivals, whatever their session; NULL (fewer frames) deletes nothing.
                execute(
                    "DELETE FROM frames WHERE stream_id = ? AND (received_ms, session, sequence) "
                    "< (SELECT received_ms, session, sequence FROM frames WHERE stream_id = ? "
                    f"{_NEWEST_FIRST} LIMIT 1 OFFSET ?)",
                    (stream_id, stream_id, self.max_frames_per_stream - 1),
                )
            return execute(_SELECT_FRAME, (stream_id, session, sequence)).fetchone(), inserted

        row, inserted = self._run(work, write=True)
        if now / 1000 - self._last_age_prune > _AGE_PRUNE_EVERY_S:
            self.prune()
        # The row can only be missing if retention dropped it at once (max 1 frame, old seq).
        frame = (
            _frame(row)
            if row is not None
            else StoredFrame(
                stream_id, sequence, now, capture_time_ms, task, result, session, digest, request_id
            )
        )
        return frame, inserted

    def prune(self) -> int:
        """Drop frames older than the retention age, and streams left without frames."""
        now = self._now_ms()
        cutoff = now - int(self.max_age_s * 1000)

        def work(execute: Execute) -> int:
            removed = execute("DELETE FROM frames WHERE received_ms < ?", (cutoff,)).rowcount
            execute(
                "DELETE FROM streams WHERE last_seen_ms < ? AND NOT EXISTS ("
                "SELECT 1 FROM frames WHERE frames.stream_id = streams.stream_id)",
                (cutoff,),
            )
            return int(removed)

        removed = self._run(work, write=True)
        self._last_age_prune = now / 1000
        return removed

    def delete(self, stream_id: str, session: str | None = None) -> int:
        """Delete a stream's stored frames (one session's, or all with the stream itself);
        the number of frames deleted. Only an authorized caller may get here."""

        def work(execute: Execute) -> int:
            if session is None:
                removed = execute("DELETE FROM frames WHERE stream_id = ?", (stream_id,)).rowcount
                execute("DELETE FROM streams WHERE stream_id = ?", (stream_id,))
            else:
                removed = execute(
                    "DELETE FROM frames WHERE stream_id = ? AND session = ?", (stream_id, session)
                ).rowcount
            return int(removed)

        return self._run(work, write=True)

    # -- reads --------------------------------------------------------------------
    def get(self, stream_id: str, sequence: int, session: str = "") -> StoredFrame | None:
        row = self._run(
            lambda execute: execute(_SELECT_FRAME, (stream_id, session, sequence)).fetchone()
        )
        return _frame(row) if row is not None else None

    def frames(
        self, stream_id: str, since: int = -1, limit: int = 100, session: str | None = None
    ) -> list[StoredFrame]:
        """Stored frames of one session of a stream (None: its current session) with
        sequence > ``since``, in sequence order."""
        rows = self._run(
            lambda execute: execute(
                f"SELECT {_FRAME_COLUMNS} FROM frames WHERE stream_id = ? AND session = "
                "COALESCE(?, (SELECT session FROM streams WHERE stream_id = ?)) "
                "AND sequence > ? ORDER BY sequence LIMIT ?",
                (stream_id, session, stream_id, since, limit),
            ).fetchall()
        )
        return [_frame(r) for r in rows]

    def current_session(self, stream_id: str) -> str | None:
        """The session that started last (None: no such stream)."""
        row = self._run(
            lambda execute: execute(
                "SELECT session FROM streams WHERE stream_id = ?", (stream_id,)
            ).fetchone()
        )
        return str(row[0]) if row is not None else None

    def sessions(self, stream_id: str) -> list[dict[str, Any]]:
        """The sessions a stream has frames stored of, in the order they first arrived."""
        rows = self._run(
            lambda execute: execute(
                "SELECT session, COUNT(*), MIN(sequence), MAX(sequence), MIN(received_ms), "
                "MAX(received_ms) FROM frames WHERE stream_id = ? GROUP BY session "
                "ORDER BY MIN(received_ms), session",
                (stream_id,),
            ).fetchall()
        )
        return [
            {
                "session": session,
                "frames_stored": int(count),
                "first_sequence": first_seq,
                "last_sequence": last_seq,
                "first_received_ms": first_ms,
                "last_received_ms": last_ms,
            }
            for session, count, first_seq, last_seq, first_ms, last_ms in rows
        ]

    def streams(self, limit: int = 100) -> list[dict[str, Any]]:
        """Streams, most recently active first, each with its latest stored frame."""

        def work(execute: Execute) -> tuple[list[Any], dict[str, Any]]:
            rows = execute(
                "SELECT s.stream_id, s.first_seen_ms, s.last_seen_ms, s.frames_total, "
                "s.last_sequence, (SELECT COUNT(*) FROM frames f WHERE f.stream_id = s.stream_id), "
                "s.session FROM streams s ORDER BY s.last_seen_ms DESC, s.stream_id LIMIT ?",
                (limit,),
            ).fetchall()
            # The latest frame of the current session (the newest arrival of an older one
            # may be a late resend).
            latest = {
                r[0]: execute(
                    f"SELECT {_FRAME_COLUMNS} FROM frames WHERE stream_id = ? AND session = ? "
                    "ORDER BY sequence DESC LIMIT 1",
                    (r[0], r[6]),
                ).fetchone()
                for r in rows
            }
            return rows, latest

        rows, latest = self._run(work)
        return [
            {
                "stream_id": sid,
                "first_seen_ms": first,
                "last_seen_ms": last,
                "frames_total": total,
                "frames_stored": int(stored),
                "last_sequence": last_seq,
                "session": session,
                "latest": _frame(latest[sid]).to_json() if latest[sid] is not None else None,
            }
            for sid, first, last, total, last_seq, stored, session in rows
        ]

    def has_stream(self, stream_id: str) -> bool:
        row = self._run(
            lambda execute: execute(
                "SELECT 1 FROM streams WHERE stream_id = ?", (stream_id,)
            ).fetchone()
        )
        return row is not None


def _frame(row: Sequence[Any]) -> StoredFrame:
    stream_id, sequence, received_ms, capture_ms, task, result, session, digest, request_id = row
    return StoredFrame(
        stream_id,
        sequence,
        received_ms,
        capture_ms,
        task,
        json.loads(result),
        session,
        digest,
        request_id,
    )
