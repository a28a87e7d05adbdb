"""Exactly-once without stale answers: content digests, sessions, stream id charset."""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
from fastapi.testclient import TestClient
from service_fakes import FakeDetection

from services.analytics.grpc_service import GrpcFrontEnd
from services.analytics.rest import create_app
from services.analytics.runtime import Runtime
from services.analytics.settings import Settings
from services.analytics.store import SqliteFrameStore
from services.analytics.store.migrations import migrations
from services.analytics.streaming import FrameOutcome, FrameProcessor
from services.generated.transtic.v1 import api_pb2, api_pb2_grpc
from transtic.codec import ImageCodec
from transtic.images import decode_image_bytes

ALREADY_EXISTS = grpc.StatusCode.ALREADY_EXISTS.value[0]


@pytest.fixture(scope="module")
def other_bitstream(codec_checkpoint: Path, make_png: Callable[..., bytes]) -> bytes:
    """Another picture, coded by the service's codec."""
    codec = ImageCodec.from_checkpoint(str(codec_checkpoint))
    return codec.encode(decode_image_bytes(make_png(96, 64, 7))).data


@pytest.fixture
def service(make_settings: Callable[..., Settings]) -> Iterator[tuple[Runtime, FrameProcessor]]:
    runtime = Runtime(make_settings(default_task="detection"), backends=[FakeDetection()])
    runtime.start()
    frames = FrameProcessor(runtime)
    try:
        yield runtime, frames
    finally:
        frames.close()
        runtime.close()


def send(frames: FrameProcessor, sequence: int, data: bytes, session: str = "") -> FrameOutcome:
    return frames.submit("cam-1", sequence, data, None, None, session).result(60)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_same_key_with_other_bytes_is_refused_not_answered_stale(
    service: tuple[Runtime, FrameProcessor], bitstream: bytes, other_bitstream: bytes
) -> None:
    _, frames = service
    first = send(frames, 2, bitstream)
    assert first.error is None and not first.duplicate and first.digest == sha(bitstream)
    clash = send(frames, 2, other_bitstream)
    assert clash.result is None and clash.error is not None
    assert clash.error.grpc_code_value == ALREADY_EXISTS and clash.error.http_status == 409
    assert sha(bitstream) in clash.error.message and sha(other_bitstream) in clash.error.message
    again = send(frames, 2, bitstream)  # a true resend is still answered from the store
    assert again.duplicate and again.result == first.result


def test_a_rebooted_camera_starts_again_at_zero(
    service: tuple[Runtime, FrameProcessor], bitstream: bytes, other_bitstream: bytes
) -> None:
    runtime, frames = service
    before = [send(frames, seq, bitstream, "boot-1") for seq in range(3)]
    assert all(o.error is None and not o.duplicate for o in before)
    after = send(frames, 0, other_bitstream, "boot-2")  # counter reset after a reboot
    assert after.error is None and not after.duplicate
    assert after.result is not None and after.result.height == 96  # the new picture's
    stored = runtime.store.frames("cam-1")  # the current session's
    assert [(f.session, f.sequence, f.digest) for f in stored] == [
        ("boot-2", 0, sha(other_bitstream))
    ]
    # The earlier session is kept, not deleted by the reboot.
    kept = runtime.store.frames("cam-1", session="boot-1")
    assert [(f.sequence, f.digest) for f in kept] == [(n, sha(bitstream)) for n in range(3)]
    assert send(frames, 0, other_bitstream, "boot-2").duplicate
    assert send(frames, 0, bitstream, "boot-1").duplicate


# "." and "..": URL dot segments, which /v1/streams/{id}/frames could never read back.
@pytest.mark.parametrize("stream_id", ["a/b", "a b", "", "x" * 129, "caf\u00e9", "a\n", ".", ".."])
def test_stream_ids_outside_the_charset_are_refused(
    service: tuple[Runtime, FrameProcessor], bitstream: bytes, stream_id: str
) -> None:
    _, frames = service
    outcome = frames.submit(stream_id, 0, bitstream, None).result(60)
    assert outcome.error is not None and outcome.error.code.value == "INVALID_ARGUMENT"


def test_rest_refuses_stream_ids_outside_the_charset(
    make_settings: Callable[..., Settings],
) -> None:
    with TestClient(create_app(make_settings(), backends=[FakeDetection()])) as client:
        assert client.get("/v1/streams/a%20b/frames").status_code == 400
        assert client.get("/v1/streams/cam-1.A_b~c/frames").status_code == 404


def test_grpc_acks_carry_digest_session_and_already_exists(
    service: tuple[Runtime, FrameProcessor], bitstream: bytes, other_bitstream: bytes
) -> None:
    runtime, frames = service
    front = GrpcFrontEnd(runtime, frames, "127.0.0.1:0")
    front.server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{front.port}") as channel:
            stub = api_pb2_grpc.AnalyticsStub(channel)
            first = list(
                stub.AnalyzeStream(
                    iter([api_pb2.Frame(stream_id="g", sequence=5, bitstream=bitstream)]),
                    timeout=60,
                )
            )
            clash = list(
                stub.AnalyzeStream(
                    iter([api_pb2.Frame(stream_id="g", sequence=5, bitstream=other_bitstream)]),
                    timeout=60,
                )
            )
    finally:
        front.server.stop(0).wait()
    assert first[0].error_code == 0 and first[0].content_sha256 == sha(bitstream)
    assert clash[0].error_code == ALREADY_EXISTS and not clash[0].HasField("result")
    assert clash[0].content_sha256 == sha(other_bitstream)


def test_an_older_store_is_upgraded_in_place(tmp_path: Path) -> None:
    path = tmp_path / "v1.db"
    db = sqlite3.connect(path)
    db.executescript(
        """
        CREATE TABLE frames (stream_id TEXT NOT NULL, sequence INTEGER NOT NULL,
            received_ms INTEGER NOT NULL, capture_time_ms INTEGER, task TEXT NOT NULL,
            result TEXT NOT NULL, PRIMARY KEY (stream_id, sequence)) WITHOUT ROWID;
        CREATE TABLE streams (stream_id TEXT PRIMARY KEY, first_seen_ms INTEGER NOT NULL,
            last_seen_ms INTEGER NOT NULL, frames_total INTEGER NOT NULL,
            last_sequence INTEGER NOT NULL) WITHOUT ROWID;
        INSERT INTO frames VALUES ('old', 1, 1000, NULL, 'detection', '{"x": 1}');
        INSERT INTO streams VALUES ('old', 1000, 1000, 1, 1);
        PRAGMA user_version = 1;
        """
    )
    db.close()
    store = SqliteFrameStore(path, max_age_s=1e12)
    try:
        (old,) = store.frames("old")
        assert old.result == {"x": 1} and old.digest is None and old.session == ""
        frame, inserted = store.put("old", 2, "detection", {"x": 2}, session="", digest="ab")
        assert inserted and frame.digest == "ab"
    finally:
        store.close()
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == len(migrations("sqlite"))
    db.close()
