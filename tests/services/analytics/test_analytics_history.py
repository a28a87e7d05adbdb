"""A stream's history survives its camera's reboots: a new session only scopes the
dedupe of (stream, sequence); results are deleted only by the operator's retention or by
an explicitly authorized DELETE. Store tests run against SQLite and a real PostgreSQL."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from service_fakes import FakeDetection

from services.analytics.rest import create_app
from services.analytics.runtime import Runtime
from services.analytics.settings import Settings
from services.analytics.store import FrameStore, SqliteFrameStore
from services.analytics.store.migrations import migrations
from services.analytics.streaming import FrameProcessor

USER_KEY = "user-key-0123456789abcdef"
ADMIN_KEY = "admin-key-0123456789abcdef"


def result(n: int) -> dict[str, object]:
    return {"task": "classification", "labels": [{"name": f"l{n}", "index": n, "score": 0.5}]}


@pytest.fixture(params=["sqlite", "postgres"])
def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[..., FrameStore]:
    """``open_store(**options)`` opens (or reopens) one fresh database of the backend."""
    if request.param == "sqlite":
        path = tmp_path / "f.db"
        return lambda **options: SqliteFrameStore(path, **options)
    from services.analytics.store.postgres import PostgresFrameStore

    url = request.getfixturevalue("postgres_server").create_database("history")
    return lambda **options: PostgresFrameStore(url, **options)


def test_a_new_session_keeps_every_earlier_frame(open_store: Callable[..., FrameStore]) -> None:
    store = open_store()
    for boot in ("boot-1", "boot-2", "boot-3"):  # two reboots, each counting from 0 again
        for seq in range(5):
            _, inserted = store.put("cam", seq, "classification", result(seq), session=boot)
            assert inserted
    # The same sequence in another session is another frame, not a duplicate.
    assert store.get("cam", 0, "boot-1") is not None and store.get("cam", 0, "boot-3") is not None
    for boot in ("boot-1", "boot-2", "boot-3"):
        assert [f.sequence for f in store.frames("cam", session=boot)] == [0, 1, 2, 3, 4]
    # Without a session, the page is the current (latest) session's, as before.
    assert {f.session for f in store.frames("cam")} == {"boot-3"}
    sessions = store.sessions("cam")
    assert [(s["session"], s["frames_stored"]) for s in sessions] == [
        ("boot-1", 5),
        ("boot-2", 5),
        ("boot-3", 5),
    ]
    (summary,) = store.streams()
    assert summary["frames_stored"] == 15 and summary["frames_total"] == 15
    assert summary["session"] == "boot-3" and summary["last_sequence"] == 4
    store.close()


def test_a_late_frame_of_an_old_session_neither_deletes_nor_becomes_current(
    open_store: Callable[..., FrameStore],
) -> None:
    store = open_store()
    store.put("cam", 0, "classification", result(0), session="old")
    store.put("cam", 0, "classification", result(1), session="new")
    store.put("cam", 7, "classification", result(7), session="old")  # a late resend
    assert [f.sequence for f in store.frames("cam", session="old")] == [0, 7]
    assert [f.sequence for f in store.frames("cam")] == [0]  # still the new session's
    assert store.streams()[0]["session"] == "new"
    store.close()


def test_delete_is_explicit_and_scoped(open_store: Callable[..., FrameStore]) -> None:
    store = open_store()
    for boot in ("a", "b"):
        for seq in range(3):
            store.put("cam", seq, "classification", result(seq), session=boot)
    store.put("other", 0, "classification", result(0))
    assert store.delete("cam", session="a") == 3
    assert [s["session"] for s in store.sessions("cam")] == ["b"]
    assert store.delete("cam") == 3
    assert not store.has_stream("cam") and store.has_stream("other")
    assert store.delete("cam") == 0
    store.close()


def test_retention_by_count_drops_the_oldest_arrivals_across_sessions(
    open_store: Callable[..., FrameStore],
) -> None:
    now = [1_700_000_000.0]
    store = open_store(max_frames_per_stream=4, clock=lambda: now[0])
    for boot in ("x", "y"):
        for seq in range(3):
            now[0] += 1
            store.put("cam", seq, "classification", result(seq), session=boot)
    # The operator's limit of 4 keeps the 4 newest arrivals: x/2 and all of y.
    assert [f.sequence for f in store.frames("cam", session="x")] == [2]
    assert [f.sequence for f in store.frames("cam", session="y")] == [0, 1, 2]
    store.close()


def test_a_version_4_database_migrates_without_losing_rows(
    open_store: Callable[..., FrameStore],
) -> None:
    old = open_store(schema_target=4)
    now = int(time.time() * 1000)

    def write_as_release_4(execute: Any) -> None:
        for seq in range(3):
            execute(
                "INSERT INTO frames (stream_id, sequence, received_ms, capture_time_ms, task, "
                "result, session, digest, request_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    "cam",
                    seq,
                    now + seq,
                    None,
                    "classification",
                    json.dumps(result(seq)),
                    "s1",
                    f"d{seq}",
                    f"r{seq}",
                ),
            )
        execute(
            "INSERT INTO streams (stream_id, first_seen_ms, last_seen_ms, frames_total, "
            "last_sequence, session) VALUES (?, ?, ?, 3, 2, ?)",
            ("cam", now, now + 2, "s1"),
        )

    old._run(write_as_release_4, write=True)
    old.close()
    store = open_store()
    assert store.schema_version() == migrations(store.backend)[-1].version
    frames = store.frames("cam", session="s1")
    assert [(f.sequence, f.digest, f.request_id) for f in frames] == [
        (0, "d0", "r0"),
        (1, "d1", "r1"),
        (2, "d2", "r2"),
    ]
    assert store.put("cam", 0, "classification", result(9), session="s2")[1]
    assert len(store.frames("cam", session="s1")) == 3
    store.close()


# -- through the service -------------------------------------------------------------------
@pytest.fixture
def service(
    make_settings: Callable[..., Settings],
) -> Iterator[tuple[Runtime, FrameProcessor, TestClient]]:
    settings = make_settings(
        default_task="detection", api_keys=[USER_KEY], admin_api_keys=[ADMIN_KEY]
    )
    runtime = Runtime(settings, backends=[FakeDetection()])
    frames = FrameProcessor(runtime)
    with TestClient(create_app(settings, runtime)) as client:
        runtime.start()
        try:
            yield runtime, frames, client
        finally:
            frames.close()
            runtime.close()


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_a_camera_rebooted_twice_finds_every_earlier_result(
    service: tuple[Runtime, FrameProcessor, TestClient], bitstream: bytes
) -> None:
    _, frames, client = service
    for boot in ("boot-1", "boot-2", "boot-3"):
        for seq in range(3):
            outcome = frames.submit("cam", seq, bitstream, None, None, boot).result(60)
            assert outcome.error is None and not outcome.duplicate
    # A resend of an earlier session's frame is answered from the store, not run again.
    assert frames.submit("cam", 1, bitstream, None, None, "boot-1").result(60).duplicate
    listed = client.get("/v1/streams/cam/sessions", headers=auth(USER_KEY))
    assert listed.status_code == 200
    assert [(s["session"], s["frames_stored"]) for s in listed.json()["sessions"]] == [
        ("boot-1", 3),
        ("boot-2", 3),
        ("boot-3", 3),
    ]
    for boot in ("boot-1", "boot-2", "boot-3"):
        page = client.get(
            "/v1/streams/cam/frames", params={"session": boot}, headers=auth(USER_KEY)
        ).json()
        assert page["session"] == boot
        assert [(f["session"], f["sequence"]) for f in page["frames"]] == [
            (boot, 0),
            (boot, 1),
            (boot, 2),
        ]
    current = client.get("/v1/streams/cam/frames", headers=auth(USER_KEY)).json()
    assert current["session"] == "boot-3" and len(current["frames"]) == 3


def test_deleting_results_needs_an_admin_key(
    service: tuple[Runtime, FrameProcessor, TestClient], bitstream: bytes
) -> None:
    runtime, frames, client = service
    for boot in ("boot-1", "boot-2"):
        frames.submit("cam", 0, bitstream, None, None, boot).result(60)
    refused = client.delete("/v1/streams/cam", headers=auth(USER_KEY))
    assert refused.status_code == 403 and refused.json()["code"] == "PERMISSION_DENIED"
    assert client.delete("/v1/streams/cam").status_code == 401
    assert len(runtime.store.sessions("cam")) == 2
    one = client.delete("/v1/streams/cam", params={"session": "boot-1"}, headers=auth(ADMIN_KEY))
    assert one.status_code == 200 and one.json() == {"stream_id": "cam", "deleted": 1}
    assert [s["session"] for s in runtime.store.sessions("cam")] == ["boot-2"]
    assert client.delete("/v1/streams/cam", headers=auth(ADMIN_KEY)).json()["deleted"] == 1
    gone = client.get("/v1/streams/cam/frames", headers=auth(USER_KEY))
    assert gone.status_code == 404


def test_deleting_is_off_without_admin_keys(make_settings: Callable[..., Settings]) -> None:
    with TestClient(create_app(make_settings(), backends=[FakeDetection()])) as client:
        refused = client.delete("/v1/streams/cam")
    assert refused.status_code == 403 and refused.json()["code"] == "PERMISSION_DENIED"
