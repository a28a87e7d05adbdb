"""The SQLite frame store: dedupe, retention, persistence across restarts."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from services.analytics.store import FrameStore


class Clock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def result(n: int) -> dict[str, object]:
    return {"task": "classification", "labels": [{"name": f"l{n}", "index": n, "score": 0.5}]}


def test_put_dedupes_and_returns_the_first_result(tmp_path: Path) -> None:
    store = FrameStore(tmp_path / "f.db")
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


def test_restart_loses_nothing(tmp_path: Path) -> None:
    path = tmp_path / "f.db"
    store = FrameStore(path)
    for seq in range(3):
        store.put("cam", seq, "classification", result(seq))
    store.close()
    reopened = FrameStore(path)
    assert [f.sequence for f in reopened.frames("cam")] == [0, 1, 2]
    assert reopened.get("cam", 2) is not None and reopened.get("cam", 2).result == result(2)  # type: ignore[union-attr]
    assert not reopened.put("cam", 1, "classification", result(9))[1]
    assert reopened.streams()[0]["frames_total"] == 3
    mode = sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"
    reopened.close()


def test_retention_keeps_newest_frames_per_stream(tmp_path: Path) -> None:
    store = FrameStore(tmp_path / "f.db", max_frames_per_stream=3)
    for seq in [5, 0, 1, 2, 3, 4]:
        store.put("cam", seq, "classification", result(seq))
    store.put("quiet", 0, "classification", result(0))
    assert [f.sequence for f in store.frames("cam")] == [3, 4, 5]
    assert [f.sequence for f in store.frames("quiet")] == [0]
    listing = {s["stream_id"]: s for s in store.streams()}
    assert listing["cam"]["frames_stored"] == 3
    assert listing["cam"]["frames_total"] == 6
    assert listing["cam"]["last_sequence"] == 5
    assert listing["cam"]["latest"]["sequence"] == 5


def test_retention_drops_old_frames_and_empty_streams(tmp_path: Path) -> None:
    clock = Clock()
    store = FrameStore(tmp_path / "f.db", max_age_s=100.0, clock=clock)
    store.put("old", 0, "classification", result(0))
    store.put("both", 0, "classification", result(0))
    clock.now += 60
    store.put("both", 1, "classification", result(1))
    clock.now += 60  # "old" and both/0 are now 120 s old, both/1 is 60 s old
    assert store.prune() == 2
    assert [s["stream_id"] for s in store.streams()] == ["both"]
    assert [f.sequence for f in store.frames("both")] == [1]
    assert not store.has_stream("old")


def test_frames_since_and_limit(tmp_path: Path) -> None:
    store = FrameStore(tmp_path / "f.db")
    for seq in range(10):
        store.put("cam", seq, "classification", result(seq))
    assert [f.sequence for f in store.frames("cam", since=6)] == [7, 8, 9]
    assert [f.sequence for f in store.frames("cam", since=-1, limit=2)] == [0, 1]
    assert store.frames("nope") == []


def test_concurrent_duplicates_insert_once(tmp_path: Path) -> None:
    store = FrameStore(tmp_path / "f.db", synchronous="NORMAL")
    outcomes: list[bool] = []

    def writer(n: int) -> None:
        outcomes.append(store.put("cam", 7, "classification", result(n))[1])

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == [False] * 7 + [True]
    assert store.streams()[0]["frames_total"] == 1


def test_rejects_bad_synchronous_mode(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        FrameStore(tmp_path / "f.db", synchronous="OFF")
