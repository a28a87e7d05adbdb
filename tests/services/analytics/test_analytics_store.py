"""The frame stores (SQLite and a real PostgreSQL server): dedupe, retention, restarts,
schema upgrades. Every behavioural test runs against both backends."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from services.analytics.settings import Settings
from services.analytics.store import FrameStore, SqliteFrameStore, open_store
from services.analytics.store.migrations import migrations, pending, statements

OpenStore = Callable[..., FrameStore]


class Clock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def result(n: int) -> dict[str, object]:
    return {"task": "classification", "labels": [{"name": f"l{n}", "index": n, "score": 0.5}]}


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, str]:
    """(backend, location): a fresh SQLite file or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return "sqlite", str(tmp_path / "f.db")
    server = request.getfixturevalue("postgres_server")
    return "postgres", server.create_database("store")


@pytest.fixture
def make_store(backend: tuple[str, str]) -> OpenStore:
    """``make_store(**options)`` opens (or reopens) the test's store."""
    kind, location = backend

    def make(**options: Any) -> FrameStore:
        if kind == "sqlite":
            return SqliteFrameStore(location, **options)
        from services.analytics.store.postgres import PostgresFrameStore

        options.pop("synchronous", None)  # a SQLite knob; PostgreSQL commits durably
        return PostgresFrameStore(location, **options)

    return make


def test_put_dedupes_and_returns_the_first_result(make_store: OpenStore) -> None:
    store = make_store()
    frame, inserted = store.put("cam", 0, "classification", result(1), capture_time_ms=42)
    assert inserted and frame.result == result(1) and frame.capture_time_ms == 42
    again, inserted = store.put("cam", 0, "classification", result(2))
    assert not inserted
    assert again.result == result(1)  # the stored one wins, never overwritten
    assert store.get("cam", 0) == frame
    assert store.get("cam", 1) is None
    # The same sequence in another stream is another frame.
    assert store.put("other", 0, "classification", result(3))[1]
    store.close()


def test_restart_loses_nothing(make_store: OpenStore) -> None:
    store = make_store()
    for seq in range(3):
        store.put("cam", seq, "classification", result(seq))
    store.close()
    reopened = make_store()
    assert [f.sequence for f in reopened.frames("cam")] == [0, 1, 2]
    assert reopened.get("cam", 2) is not None and reopened.get("cam", 2).result == result(2)  # type: ignore[union-attr]
    assert not reopened.put("cam", 1, "classification", result(9))[1]
    assert reopened.streams()[0]["frames_total"] == 3
    reopened.close()


def test_largest_sequence_round_trips(make_store: OpenStore) -> None:
    store = make_store()
    biggest = 2**63 - 1
    assert store.put("cam", biggest, "classification", result(0))[1]
    assert [f.sequence for f in store.frames("cam")] == [biggest]
    assert store.streams()[0]["last_sequence"] == biggest
    store.close()


def test_retention_keeps_newest_frames_per_stream(make_store: OpenStore) -> None:
    clock = Clock()
    store = make_store(max_frames_per_stream=3, clock=clock)
    for seq in [5, 0, 1, 2, 3, 4]:
        clock.now += 1
        store.put("cam", seq, "classification", result(seq))
    store.put("quiet", 0, "classification", result(0))
    # The newest arrivals are kept (sequences restart in a new session, so they cannot
    # say which frame is newer): 5 came first and went first.
    assert [f.sequence for f in store.frames("cam")] == [2, 3, 4]
    assert [f.sequence for f in store.frames("quiet")] == [0]
    listing = {s["stream_id"]: s for s in store.streams()}
    assert listing["cam"]["frames_stored"] == 3
    assert listing["cam"]["frames_total"] == 6
    assert listing["cam"]["last_sequence"] == 5
    assert listing["cam"]["latest"]["sequence"] == 4
    store.close()


def test_retention_drops_old_frames_and_empty_streams(make_store: OpenStore) -> None:
    clock = Clock()
    store = make_store(max_age_s=100.0, clock=clock)
    store.put("old", 0, "classification", result(0))
    store.put("both", 0, "classification", result(0))
    clock.now += 60
    store.put("both", 1, "classification", result(1))
    clock.now += 60  # "old" and both/0 are now 120 s old, both/1 is 60 s old
    assert store.prune() == 2
    assert [s["stream_id"] for s in store.streams()] == ["both"]
    assert [f.sequence for f in store.frames("both")] == [1]
    assert not store.has_stream("old")
    store.close()


def test_frames_since_and_limit(make_store: OpenStore) -> None:
    store = make_store()
    for seq in range(10):
        store.put("cam", seq, "classification", result(seq))
    assert [f.sequence for f in store.frames("cam", since=6)] == [7, 8, 9]
    assert [f.sequence for f in store.frames("cam", since=-1, limit=2)] == [0, 1]
    assert store.frames("nope") == []
    store.close()


def test_concurrent_duplicates_insert_once(make_store: OpenStore) -> None:
    # Two store objects = two connections, as two replicas (or a replica and a restart) hold.
    stores = [make_store(synchronous="NORMAL"), make_store(synchronous="NORMAL")]
    outcomes: list[bool] = []

    def writer(n: int) -> None:
        outcomes.append(stores[n % 2].put("cam", 7, "classification", result(n))[1])

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == [False] * 7 + [True]
    assert stores[0].get("cam", 7) == stores[1].get("cam", 7) is not None
    for store in stores:
        assert store.streams()[0]["frames_total"] == 1
        store.close()


def test_opens_an_older_schema_and_upgrades_it(make_store: OpenStore) -> None:
    old = make_store(schema_target=1)
    assert old.schema_version() == 1

    def first_release_write(execute: Any) -> None:  # as version 1 of the code wrote a frame
        execute(
            "INSERT INTO frames (stream_id, sequence, received_ms, capture_time_ms, task, "
            "result) VALUES (?, ?, ?, ?, ?, ?)",
            ("cam", 0, int(time.time() * 1000), None, "classification", json.dumps(result(0))),
        )
        execute("INSERT INTO streams VALUES (?, ?, ?, 1, 0)", ("cam", 1, 1))

    old._run(first_release_write, write=True)
    old.close()
    upgraded = make_store()
    assert upgraded.schema_version() == migrations(upgraded.backend)[-1].version > 1
    assert upgraded.get("cam", 0) is not None
    assert upgraded.put("cam", 1, "classification", result(1))[1]
    assert upgraded.streams()[0]["frames_total"] == 2
    upgraded.close()


def test_request_id_is_stored_and_kept_by_the_first_copy(make_store: OpenStore) -> None:
    store = make_store()
    frame, inserted = store.put("cam", 0, "classification", result(0), request_id="req-a")
    assert inserted and frame.request_id == "req-a"
    # A resend under another id is answered with the first copy's.
    again, inserted = store.put("cam", 0, "classification", result(0), request_id="req-b")
    assert not inserted and again.request_id == "req-a"
    store.close()
    reopened = make_store()
    assert reopened.get("cam", 0).request_id == "req-a"  # type: ignore[union-attr]
    assert reopened.frames("cam")[0].to_json()["request_id"] == "req-a"
    assert reopened.streams()[0]["latest"]["request_id"] == "req-a"
    reopened.close()


def test_frames_from_before_request_ids_read_back_without_one(make_store: OpenStore) -> None:
    version_before = migrations(make_store().backend)[-1].version - 1
    old = make_store(schema_target=version_before)
    old._run(
        lambda execute: execute(
            "INSERT INTO frames (stream_id, sequence, received_ms, capture_time_ms, task, "
            "result, session, digest) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                "cam",
                0,
                int(time.time() * 1000),
                None,
                "classification",
                json.dumps(result(0)),
                "",
                None,
            ),
        ),
        write=True,
    )
    old.close()
    upgraded = make_store()
    assert upgraded.get("cam", 0).request_id is None  # type: ignore[union-attr]
    assert (
        upgraded.put("cam", 1, "classification", result(1), request_id="r1")[0].request_id == "r1"
    )
    upgraded.close()


def test_refuses_a_schema_newer_than_the_code(make_store: OpenStore) -> None:
    store = make_store()
    newest = store.schema_version()
    store.close()
    with pytest.raises(RuntimeError, match="newer than this service"):
        pending(store.backend, newest + 1)


# -- backend specifics -------------------------------------------------------------------------
def test_sqlite_upgrades_a_file_written_by_the_first_release(tmp_path: Path) -> None:
    """A database exactly as release 0.1 left it (tables, user_version 1) keeps its data."""
    path = tmp_path / "old.db"
    db = sqlite3.connect(path)
    for statement in statements(migrations("sqlite")[0].sql):
        db.execute(statement)
    now = int(time.time() * 1000)
    db.execute(
        "INSERT INTO frames VALUES ('cam', 3, ?, NULL, 'classification', '{\"a\": 1}')", (now,)
    )
    db.execute("INSERT INTO streams VALUES ('cam', ?, ?, 1, 3)", (now, now))
    db.execute("PRAGMA user_version=1")
    db.commit()
    db.close()
    store = SqliteFrameStore(path)
    assert store.schema_version() == migrations("sqlite")[-1].version
    assert store.get("cam", 3) is not None and store.get("cam", 3).result == {"a": 1}  # type: ignore[union-attr]
    store.close()
    indexes = sqlite3.connect(path).execute("PRAGMA index_list(streams)").fetchall()
    assert "streams_last_seen" in {row[1] for row in indexes}
    mode = sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"


def test_sqlite_rejects_bad_synchronous_mode(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        SqliteFrameStore(tmp_path / "f.db", synchronous="OFF")


def test_settings_choose_the_backend(tmp_path: Path, postgres_server: Any) -> None:
    sqlite_store = open_store(Settings(db_path=tmp_path / "a.db"))
    assert sqlite_store.backend == "sqlite"
    sqlite_store.close()
    url = postgres_server.create_database("settings")
    pg_store = open_store(Settings(db_url=url, retention_max_frames=2))
    assert pg_store.backend == "postgres" and pg_store.max_frames_per_stream == 2
    pg_store.close()


def test_postgres_unreachable_is_a_clear_error_without_password() -> None:
    from services.analytics.store.postgres import PostgresFrameStore

    with pytest.raises(OSError) as caught:
        PostgresFrameStore("postgresql://app:s3cret-pw@127.0.0.1:1/frames")
    assert "127.0.0.1" in str(caught.value) and "s3cret-pw" not in str(caught.value)


def test_postgres_reconnects_after_losing_its_connection(postgres_server: Any) -> None:
    import psycopg

    from services.analytics.store.postgres import PostgresFrameStore

    url = postgres_server.create_database("reconnect")
    store = PostgresFrameStore(url)
    store.put("cam", 0, "classification", result(0))
    with psycopg.connect(postgres_server.url(), autocommit=True) as admin:
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE application_name = 'transtic-analytics'"
        )
    assert store.put("cam", 1, "classification", result(1))[1]
    assert [f.sequence for f in store.frames("cam")] == [0, 1]
    store.close()
