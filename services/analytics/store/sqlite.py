"""The embedded SQLite frame store: one file, one process.

One connection guarded by the store's lock: SQLite serialises writers anyway, and
frame rates per service are far below what one connection sustains. WAL lets the
REST readers and the writer proceed without blocking each other on disk.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

from services.analytics.store.base import Execute, FrameStore, T
from services.analytics.store.migrations import pending, statements


class SqliteFrameStore(FrameStore):
    backend = "sqlite"

    def __init__(
        self,
        path: str | Path,
        *,
        max_frames_per_stream: int = 10_000,
        max_age_s: float = 7 * 24 * 3600.0,
        synchronous: str = "FULL",
        clock: Callable[[], float] = time.time,
        schema_target: int | None = None,
    ) -> None:
        if synchronous not in ("NORMAL", "FULL"):
            raise ValueError("synchronous must be NORMAL or FULL")
        super().__init__(
            max_frames_per_stream=max_frames_per_stream, max_age_s=max_age_s, clock=clock
        )
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(f"PRAGMA synchronous={synchronous}")
        self._db.execute("PRAGMA busy_timeout=5000")
        self._migrate(schema_target)
        self.prune()

    def _migrate(self, target: int | None) -> None:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")  # one process upgrades, others wait
            try:
                for migration in pending(self.backend, self.schema_version(), target):
                    for statement in statements(migration.sql):
                        self._db.execute(statement)
                    self._db.execute(f"PRAGMA user_version={migration.version}")
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def schema_version(self) -> int:
        return int(self._db.execute("PRAGMA user_version").fetchone()[0])

    def _run(self, work: Callable[[Execute], T], *, write: bool = False) -> T:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            try:
                outcome = work(self._db.execute)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return outcome

    def close(self) -> None:
        with self._lock:
            self._db.close()
