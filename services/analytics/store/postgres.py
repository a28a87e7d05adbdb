"""The PostgreSQL frame store: several analytics replicas share one database.

Dedupe holds across replicas because the (stream, sequence) primary key is enforced
by the server: of two replicas inserting the same frame, the second waits for the
first to commit and then inserts nothing (``ON CONFLICT DO NOTHING``), and reads the
first copy. Within a process one connection serves all threads behind the store's
lock, as with SQLite; a connection lost to a server restart or fail-over is
reopened once per call and the call retried, which is safe because every write is
idempotent under the dedupe key.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict

from services.analytics.store.base import Cursor, Execute, FrameStore, T
from services.analytics.store.migrations import pending, statements

log = logging.getLogger(__name__)
# pg_advisory_xact_lock key that serialises schema upgrades of replicas starting together.
_MIGRATION_LOCK = 0x7472616E73746963 & (2**63 - 1)  # "transtic"
_CONNECT_TIMEOUT_S = 10


def redacted(url: str) -> str:
    """The connection target without its password, for logs and error messages."""
    try:
        params = conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return "<unparsable database URL>"
    params.pop("password", None)
    return " ".join(f"{k}={v}" for k, v in sorted(params.items()))


class PostgresFrameStore(FrameStore):
    backend = "postgres"

    def __init__(
        self,
        url: str,
        *,
        max_frames_per_stream: int = 10_000,
        max_age_s: float = 7 * 24 * 3600.0,
        clock: Callable[[], float] = time.time,
        schema_target: int | None = None,
    ) -> None:
        super().__init__(
            max_frames_per_stream=max_frames_per_stream, max_age_s=max_age_s, clock=clock
        )
        self._url = url
        self.target = redacted(url)
        self._conn = self._connect()
        self._migrate(schema_target)
        self.prune()

    def _connect(self) -> psycopg.Connection[Any]:
        try:
            # Autocommit: every unit of work opens its own explicit transaction block.
            return psycopg.connect(
                self._url,
                autocommit=True,
                connect_timeout=_CONNECT_TIMEOUT_S,
                application_name="transtic-analytics",
            )
        except psycopg.Error as exc:
            # libpq's message names host and port but never the password.
            raise OSError(f"cannot connect to PostgreSQL ({self.target}): {exc}") from None

    def _migrate(self, target: int | None) -> None:
        with self._lock, self._conn.transaction():
            self._conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
            self._conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, "
                "name TEXT NOT NULL, applied_ms BIGINT NOT NULL)"
            )
            for migration in pending(self.backend, self._version(), target):
                log.info("upgrading the store schema to %s", migration.name)
                for statement in statements(migration.sql):
                    self._conn.execute(statement)
                self._conn.execute(
                    "INSERT INTO schema_migrations VALUES (%s, %s, %s)",
                    (migration.version, migration.name, self._now_ms()),
                )

    def _version(self) -> int:
        row = self._conn.execute("SELECT COALESCE(MAX(version), 0) FROM schema_migrations")
        found = row.fetchone()
        return int(found[0]) if found is not None else 0

    def schema_version(self) -> int:
        with self._lock:
            return self._version()

    def _run(self, work: Callable[[Execute], T], *, write: bool = False) -> T:
        with self._lock:
            try:
                return self._transaction(work)
            except psycopg.OperationalError:
                if not self._conn.closed:
                    raise
            log.warning("PostgreSQL connection lost (%s); reconnecting once", self.target)
            self._conn = self._connect()
            return self._transaction(work)

    def _transaction(self, work: Callable[[Execute], T]) -> T:
        with self._conn.transaction(), self._conn.cursor() as cursor:

            def execute(sql: str, params: Sequence[Any]) -> Cursor:
                return cursor.execute(sql.replace("?", "%s"), params)

            return work(execute)

    def close(self) -> None:
        with self._lock:
            self._conn.close()
