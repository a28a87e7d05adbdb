"""Dynamic batching: batches form, a full queue refuses, one bad item fails alone."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from service_fakes import FAIL_WIDTH, FakeDetection

from services.analytics.batcher import Batcher
from services.analytics.hub import BackendSlot, CodecSlot
from services.analytics.metrics import Metrics
from services.analytics.pipeline import Job, Outcome, Pipeline
from services.common.errors import ErrorCode, ServiceError
from transtic.bitstream import BitstreamError
from transtic.codec import ImageCodec
from transtic.images import decode_image_bytes


def test_items_are_batched_up_to_the_limit() -> None:
    seen: list[list[int]] = []
    entered, gate = threading.Event(), threading.Event()

    def process(items: list[int]) -> list[int | BaseException]:
        entered.set()
        gate.wait(5)
        seen.append(items)
        return [i * 10 for i in items]

    batcher: Batcher[int, int] = Batcher(process, max_batch_size=4, max_delay_s=0.05, max_queue=16)
    batcher.start()
    blocker = batcher.submit(-1)  # occupies the worker while the rest queue up
    assert entered.wait(5)
    futures = [batcher.submit(i) for i in range(6)]
    gate.set()
    assert [f.result(5) for f in futures] == [0, 10, 20, 30, 40, 50]
    assert blocker.result(5) == -10
    assert seen[0] == [-1]
    assert seen[1:] == [[0, 1, 2, 3], [4, 5]]
    batcher.close()


def test_full_queue_is_refused_with_retry_hint() -> None:
    entered, gate = threading.Event(), threading.Event()
    depths: list[int] = []

    def process(items: list[int]) -> list[int | BaseException]:
        entered.set()
        gate.wait(5)
        return list(items)

    batcher: Batcher[int, int] = Batcher(
        process, max_batch_size=1, max_delay_s=0, max_queue=2, on_depth=depths.append
    )
    batcher.start()
    first = batcher.submit(0)
    assert entered.wait(5)  # the worker holds item 0: exactly max_queue more fit
    queued = [batcher.submit(1), batcher.submit(2)]
    with pytest.raises(ServiceError) as info:
        batcher.submit(3)
    assert info.value.code is ErrorCode.RESOURCE_EXHAUSTED
    assert info.value.http_status == 429 and info.value.retry_after_s
    assert depths[-1] == 2
    gate.set()
    assert [f.result(5) for f in [first, *queued]] == [0, 1, 2]
    assert batcher.submit(4).result(5) == 4  # accepts again once drained
    batcher.close()


def test_item_failures_stay_with_their_item_and_worker_survives() -> None:
    def process(items: list[int]) -> list[int | BaseException]:
        if 99 in items:
            raise RuntimeError("whole batch broke")
        return [ValueError(f"bad {i}") if i % 2 else i for i in items]

    batcher: Batcher[int, int] = Batcher(process, max_batch_size=8, max_delay_s=0.02)
    batcher.start()
    futures = [batcher.submit(i) for i in range(4)]
    assert futures[0].result(5) == 0 and futures[2].result(5) == 2
    with pytest.raises(ValueError, match="bad 1"):
        futures[1].result(5)
    with pytest.raises(RuntimeError, match="whole batch"):
        batcher.submit(99).result(5)
    assert batcher.submit(6).result(5) == 6
    batcher.close()


def test_close_drains_queue_then_refuses() -> None:
    batcher: Batcher[int, int] = Batcher(lambda items: list(items), max_delay_s=0.01)
    batcher.start()
    futures = [batcher.submit(i) for i in range(5)]
    batcher.close(timeout=5)
    assert [f.result(0) for f in futures] == [0, 1, 2, 3, 4]
    with pytest.raises(ServiceError) as info:
        batcher.submit(5)
    assert info.value.code is ErrorCode.UNAVAILABLE


def test_pipeline_isolates_a_corrupt_stream_in_a_batch(
    codec_checkpoint: Path, make_png: Callable[..., bytes]
) -> None:
    codec = ImageCodec.from_checkpoint(str(codec_checkpoint))
    slot = CodecSlot("tiny", codec, None, 0, str(codec_checkpoint))
    detector = FakeDetection()
    detector.load("cpu")
    backend = BackendSlot(detector, ready=True)
    good = codec.encode(decode_image_bytes(make_png(32, 48, seed=1))).data
    bad_payload = bytearray(good)
    bad_payload[-12] ^= 0xFF  # inside the coded strings: caught by the checksum at parse
    narrow = decode_image_bytes(make_png(32, FAIL_WIDTH, seed=2))
    jobs = [
        Job("detection", slot, backend, "test", bitstream=good),
        Job("detection", slot, backend, "test", bitstream=bytes(bad_payload)),
        Job("detection", slot, backend, "test", image=narrow),  # the detector refuses it
        Job("detection", slot, backend, "test", bitstream=good, keep_image=True),
    ]
    metrics = Metrics()
    results = Pipeline(metrics).process(jobs)
    assert isinstance(results[0], Outcome) and isinstance(results[3], Outcome)
    assert isinstance(results[1], BitstreamError)
    assert isinstance(results[2], ValueError)
    first = results[0].result.to_json()
    assert first["task"] == "detection" and first["width"] == 48 and first["height"] == 32
    assert first["detections"][0]["box"] == [12.0, 8.0, 36.0, 24.0]
    assert first["detections"][0]["mask"]["size"] == [32, 48]
    assert first["bits_per_pixel"] == pytest.approx(len(good) * 8 / (32 * 48))
    assert set(first["timings_ms"]) >= {"queue", "parse", "entropy_decode", "synthesis", "task"}
    assert results[0].image is None and results[3].image is not None
    assert results[3].image.shape == (3, 32, 48)
    # The good streams were decoded and analysed together before the retry isolated the bad.
    assert 3 in detector.batches or 2 in detector.batches
    assert metrics.total(metrics.frames, task="detection", api="test") == 2
