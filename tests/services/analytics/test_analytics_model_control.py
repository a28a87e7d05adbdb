"""Model control on a runtime: models swap in and out whole, and work already accepted
finishes on the model it was given."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from model_repository import add_to_repository
from service_fakes import FakeDetection, GatedDetection

from services.analytics.runtime import Runtime
from services.analytics.settings import Settings
from services.common.errors import ErrorCode, ServiceError
from transtic.codec import ImageCodec
from transtic.tasks.registry import BackendRegistry


def wait_until(condition: Callable[[], bool], timeout_s: float = 30.0) -> None:
    """Done-callbacks run just after a future's waiters wake: poll for their effect."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition never became true"
        time.sleep(0.01)


def fingerprint(checkpoint: Path) -> str:
    return ImageCodec.from_checkpoint(str(checkpoint)).fingerprint.hex()


def error_code(call: Callable[[], Any]) -> ErrorCode:
    with pytest.raises(ServiceError) as caught:
        call()
    return caught.value.code


def states(runtime: Runtime) -> dict[tuple[str, str], str]:
    return {(e["name"], e["version"]): e["state"] for e in runtime.models.index()}


@pytest.fixture
def repository(tmp_path: Path, other_codec_checkpoint: Path) -> Path:
    repo = tmp_path / "models"
    add_to_repository(repo, "other", other_codec_checkpoint)
    return repo


@pytest.fixture
def gated() -> Iterator[GatedDetection]:
    backend = GatedDetection()
    yield backend
    backend.gate.set()  # never leave the batch worker stuck


@pytest.fixture
def runtime(
    make_settings: Callable[..., Settings], repository: Path, gated: GatedDetection
) -> Iterator[Runtime]:
    registry = BackendRegistry()
    registry.register(FakeDetection)
    registry.register(GatedDetection)
    rt = Runtime(
        make_settings(model_repository=repository, default_task="detection"),
        backends=[gated],
        backend_registry=registry,
    )
    rt.start()
    try:
        yield rt
    finally:
        gated.gate.set()
        rt.close()


def test_queued_frames_finish_on_the_codec_that_was_unloaded(
    runtime: Runtime,
    gated: GatedDetection,
    bitstream: bytes,
    foreign_bitstream: bytes,
    codec_checkpoint: Path,
) -> None:
    entry, already = runtime.models.submit_load("other").result(60)
    assert entry["state"] == "READY" and not already and entry["source"] == "repository"
    first = runtime.submit_bitstream(bitstream, "detection", api="test")
    assert gated.entered.wait(30)  # decoded, held in the task stage
    queued = runtime.submit_bitstream(bitstream, "detection", api="test")  # not decoded yet

    (gone,) = runtime.models.unload("tiny")
    assert gone["state"] == "UNLOADING" and gone["in_flight"] == 2
    tiny = fingerprint(codec_checkpoint)
    assert states(runtime)[("tiny", tiny)] == "UNLOADING"
    # New work no longer gets it; the other codec serves its own streams.
    assert (
        error_code(lambda: runtime.submit_bitstream(bitstream, "detection", api="test"))
        is ErrorCode.FAILED_PRECONDITION
    )
    other = runtime.submit_bitstream(foreign_bitstream, "detection", api="test")

    gated.gate.set()
    for future in (first, queued):
        result = future.result(60).result
        assert (result.codec_id, result.codec_fingerprint) == ("tiny", tiny)
    assert other.result(60).result.codec_id == "other"
    # Once the last holder is done, the unloaded codec is let go (and gone from the list).
    wait_until(lambda: runtime.hub.retired == [])
    assert ("tiny", tiny) not in states(runtime)


def test_a_task_model_swapped_under_a_running_frame(
    runtime: Runtime, gated: GatedDetection, bitstream: bytes
) -> None:
    running = runtime.submit_bitstream(bitstream, "detection", api="test")
    assert gated.entered.wait(30)
    entry, already = runtime.models.submit_load("fake_detection").result(60)
    assert (entry["name"], entry["state"], entry["task"], already) == (
        "fake_detection",
        "READY",
        "detection",
        False,
    )
    after = runtime.submit_bitstream(bitstream, "detection", api="test")
    assert states(runtime)[("gated_detection", "fake_detection_weights")] == "UNLOADING"
    gated.gate.set()
    assert running.result(60).result.task_model_id.startswith("gated_detection:")
    assert after.result(60).result.task_model_id.startswith("fake_detection:")
    # Loading what serves already is no new load.
    assert runtime.models.submit_load("fake_detection").result(60)[1] is True


def test_unloading_a_task_model_makes_its_task_unavailable(
    runtime: Runtime, gated: GatedDetection, bitstream: bytes
) -> None:
    gated.gate.set()
    (gone,) = runtime.models.unload("gated_detection")
    assert gone["state"] == "UNAVAILABLE" and gone["task"] == "detection"
    assert runtime.hub.ready_tasks() == []
    assert (
        error_code(lambda: runtime.submit_bitstream(bitstream, "detection", api="test"))
        is ErrorCode.UNAVAILABLE
    )
    assert runtime.models.unload("gated_detection") == []  # unloading twice changes nothing
    runtime.models.submit_load("gated_detection").result(60)
    assert runtime.hub.ready_tasks() == ["detection"]
    assert runtime.submit_bitstream(bitstream, "detection", api="test").result(60)


def test_the_last_codec_goes_only_with_force(runtime: Runtime) -> None:
    assert error_code(lambda: runtime.models.unload("tiny")) is ErrorCode.FAILED_PRECONDITION
    assert runtime.ready
    runtime.models.unload("tiny", force=True)
    assert not runtime.ready and runtime.hub.codecs == []
    runtime.models.submit_load("other").result(60)
    assert runtime.ready


def test_a_new_version_of_a_name_serves_beside_the_old_one(
    runtime: Runtime,
    repository: Path,
    codec_checkpoint: Path,
    other_codec_checkpoint: Path,
) -> None:
    add_to_repository(repository, "cam", codec_checkpoint, task="detection", quality=1)
    v1 = runtime.models.submit_load("cam").result(60)[0]["version"]
    add_to_repository(repository, "cam", other_codec_checkpoint, task="detection", quality=1)
    v2, already = runtime.models.submit_load("cam").result(60)
    assert v1 == fingerprint(codec_checkpoint) and v2["version"] == fingerprint(
        other_codec_checkpoint
    )
    assert not already and states(runtime)[("cam", v1)] == "READY"
    # Images are coded with the newest version of their task and quality.
    assert runtime.hub.codec_for_image("detection", 1).fingerprint == v2["version"]
    assert error_code(lambda: runtime.models.unload("cam", "0" * 32)) is ErrorCode.NOT_FOUND
    (gone,) = runtime.models.unload("cam", v1)
    assert gone["version"] == v1
    assert [s.fingerprint for s in runtime.hub.codecs if s.id == "cam"] == [v2["version"]]


def test_only_names_the_catalog_knows_load(
    runtime: Runtime, repository: Path, codec_checkpoint: Path, tmp_path: Path
) -> None:
    control = runtime.models
    assert error_code(lambda: control.submit_load("nothing").result(60)) is ErrorCode.NOT_FOUND
    assert error_code(lambda: control.submit_load("../models/other")) is ErrorCode.INVALID_ARGUMENT
    assert error_code(lambda: control.unload("nothing")) is ErrorCode.NOT_FOUND
    # A manifest whose digest does not match its file: refused before the file is parsed.
    add_to_repository(repository, "tampered", codec_checkpoint)
    manifest = repository / "tampered.json"
    manifest.write_text(json.dumps({**json.loads(manifest.read_text()), "sha256": "0" * 64}))
    assert error_code(lambda: control.submit_load("tampered").result(60)) is (
        ErrorCode.FAILED_PRECONDITION
    )
    # A manifest naming a file that is not there, and one reusing a catalog name.
    add_to_repository(repository, "gone", codec_checkpoint)
    for path in repository.glob("gone-*.pth"):
        path.unlink()
    assert error_code(lambda: control.submit_load("gone").result(60)) is (
        ErrorCode.FAILED_PRECONDITION
    )
    add_to_repository(repository, "transtic_small_base_q1", codec_checkpoint)
    listed = [e for e in control.index() if e["name"] == "transtic_small_base_q1"]
    assert {e["source"] for e in listed} == {"catalog", "repository"}
    repo_entry = next(e for e in listed if e["source"] == "repository")
    assert "catalog" in repo_entry["reason"] and repo_entry["state"] == "UNAVAILABLE"
    assert [s.id for s in runtime.hub.codecs] == ["tiny"]


def test_one_load_of_a_name_at_a_time(runtime: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    release = threading.Event()
    build = runtime.hub.build_codec

    def slow_build(*args: Any, **kwargs: Any) -> Any:
        release.wait(30)
        return build(*args, **kwargs)

    monkeypatch.setattr(runtime.hub, "build_codec", slow_build)
    first = runtime.models.submit_load("other")
    assert error_code(lambda: runtime.models.submit_load("other")) is ErrorCode.FAILED_PRECONDITION
    assert ("other", "") in states(runtime) and states(runtime)[("other", "")] == "LOADING"
    release.set()
    assert first.result(60)[0]["state"] == "READY"
