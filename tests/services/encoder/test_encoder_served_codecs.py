"""The stream client against the real analytics when the two hold different codecs: rate
control keeps to the qualities the analytics side can decode, and a mismatch is an error."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from encoder_fakes import camera_analytics_settings, live_analytics, write_frames
from service_fakes import FakeDetection

from services.encoder.settings import EncoderSettings
from services.encoder.streamer import EXIT_ERROR, EXIT_OK, StreamRun

FRAMES = 10


def stream_run(
    make_settings: Callable[..., EncoderSettings],
    checkpoints: dict[int, Path],
    target: str,
    folder: Path,
    **overrides: Any,
) -> StreamRun:
    settings = make_settings(
        checkpoints={"detection": checkpoints},
        task="detection",
        precision="float32",
        source=str(folder),
        target=target,
        stream_id="cam-q",
        reconnect_initial_s=0.05,
        reconnect_max_attempts=3,
        drain_timeout_s=30.0,
        **overrides,
    )
    return StreamRun(settings)


def test_rate_control_keeps_to_the_qualities_the_analytics_serves(
    make_settings: Callable[..., EncoderSettings], checkpoints: dict[int, Path], tmp_path: Path
) -> None:
    settings = camera_analytics_settings(checkpoints[1], tmp_path / "frames.db")
    settings = settings.model_copy(
        update={"codec_checkpoints": {"detection:2": str(checkpoints[2])}}
    )
    folder = write_frames(tmp_path / "frames", FRAMES)
    with live_analytics(settings, [FakeDetection()]) as (target, runtime):
        # A target far above every quality: unrestricted, the controller climbs to q3,
        # whose codec this analytics does not hold.
        run = stream_run(make_settings, checkpoints, target, folder, target_bpp=100.0)
        summary = run.run()
        stored = runtime.store.frames("cam-q", -1, 100)
    assert run.exit_code(summary) == EXIT_OK, summary
    assert [f.sequence for f in stored] == list(range(FRAMES))
    assert set(summary["rate"]["qualities"]) == {"1", "2"}, summary["rate"]
    assert summary["frames"]["errors"] == 0 and summary["refused"] == []
    assert summary["served_qualities"] == [1, 2]


def test_no_common_codec_is_an_error_before_any_frame_is_sent(
    make_settings: Callable[..., EncoderSettings],
    checkpoints: dict[int, Path],
    other_codec_checkpoint: Path,
    tmp_path: Path,
) -> None:
    settings = camera_analytics_settings(other_codec_checkpoint, tmp_path / "frames.db")
    folder = write_frames(tmp_path / "frames", FRAMES)
    with live_analytics(settings, [FakeDetection()]) as (target, runtime):
        run = stream_run(make_settings, checkpoints, target, folder)
        summary = run.run()
        stored = runtime.store.frames("cam-q", -1, 100)
    assert run.exit_code(summary) == EXIT_ERROR
    assert "holds none of this encoder's codecs" in summary["error"], summary["error"]
    assert summary["frames"]["sent"] == 0 and stored == []


def test_a_fixed_quality_the_analytics_does_not_serve_is_an_error(
    make_settings: Callable[..., EncoderSettings], checkpoints: dict[int, Path], tmp_path: Path
) -> None:
    settings = camera_analytics_settings(checkpoints[1], tmp_path / "frames.db")
    folder = write_frames(tmp_path / "frames", FRAMES)
    with live_analytics(settings, [FakeDetection()]) as (target, runtime):
        run = stream_run(make_settings, checkpoints, target, folder, quality=3)
        summary = run.run()
        stored = runtime.store.frames("cam-q", -1, 100)
    assert run.exit_code(summary) == EXIT_ERROR
    assert "quality 3" in summary["error"] and "serves 1" in summary["error"], summary["error"]
    assert summary["frames"]["sent"] == 0 and stored == []
