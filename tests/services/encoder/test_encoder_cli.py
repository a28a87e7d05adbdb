"""Settings precedence, CLI commands, frame sources, and one real streaming run."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import grpc
import numpy as np
import pytest
from encoder_fakes import FakeAnalyticsServer, free_port, png_bytes, write_frames
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.encoder.cli import build_parser, main, parse_checkpoints, settings_from_args
from services.encoder.codecs import discover_checkpoints
from services.encoder.settings import EncoderSettings, env_names
from services.encoder.sources import (
    Reconnect,
    SourceError,
    has_gstreamer,
    list_images,
    open_source,
)

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture
def restore_process_state() -> Iterator[None]:
    """main() configures logging and signal handlers for the whole process; undo that."""
    handlers, level = logging.root.handlers[:], logging.root.level
    signals = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    yield
    logging.root.handlers[:] = handlers
    logging.root.setLevel(level)
    for sig, handler in signals.items():
        signal.signal(sig, handler)


def test_env_then_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRANSTIC_ENCODER_GRPC_PORT", "6000")
    monkeypatch.setenv("TRANSTIC_ENCODER_TARGET_BPP", "0.25")
    monkeypatch.setenv("TRANSTIC_ENCODER_CHECKPOINTS", '{"detection": {"2": "/w/det_2.pth"}}')
    args = build_parser().parse_args(["stream", "--target", "cloud:1", "--checkpoint", "1=/a.pth"])
    settings = settings_from_args(args)
    assert settings.target == "cloud:1" and settings.target_bpp == 0.25
    assert settings.grpc_port == 6000
    assert settings.checkpoints == {
        "detection": {2: Path("/w/det_2.pth")},
        "classification": {1: Path("/a.pth")},
    }
    args = build_parser().parse_args(["serve", "--grpc-port", "7000", "--tasks", "a", "b"])
    assert settings_from_args(args).grpc_port == 7000
    assert settings_from_args(args).tasks == ["a", "b"]
    assert settings_from_args(build_parser().parse_args(["stream", "--pace"])).pace is True


def test_env_names_cover_inherited_and_own_fields() -> None:
    names = env_names()
    assert names["grpc_port"] == "TRANSTIC_ENCODER_GRPC_PORT"
    assert names["shutdown_grace_s"] == "TRANSTIC_ENCODER_SHUTDOWN_GRACE_S"
    assert names["target_kbps"] == "TRANSTIC_ENCODER_TARGET_KBPS"


def test_invalid_settings_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["stream", "--target-bpp", "0.1", "--target-kbps", "100"]) == 2
    assert "not both" in capsys.readouterr().err
    assert main(["serve", "--checkpoint", "nonsense"]) == 2


def test_parse_checkpoints() -> None:
    assert parse_checkpoints(["1=a", "detection:3=b"], "classification") == {
        "classification": {1: "a"},
        "detection": {3: "b"},
    }
    with pytest.raises(ValueError):
        parse_checkpoints(["x=a"], "classification")


def test_discover_catalog_files_in_weights_dir(tmp_path: Path) -> None:
    for name in ("cls_1.pth.tar", "cls_2.pth.tar", "det_4.pth.tar", "base_codec_1.pth.tar"):
        (tmp_path / name).write_bytes(b"")
    settings = EncoderSettings(
        weights_cache_dir=tmp_path,
        checkpoints={"classification": {2: Path("/elsewhere.pth")}},
        use_shipped_weights=False,
    )
    table = discover_checkpoints(settings)
    assert table == {
        "classification": {1: tmp_path / "cls_1.pth.tar", 2: Path("/elsewhere.pth")},
        "detection": {4: tmp_path / "det_4.pth.tar"},
        "human": {1: tmp_path / "base_codec_1.pth.tar"},
    }
    only = EncoderSettings(weights_cache_dir=tmp_path, tasks=["detection"])
    assert list(discover_checkpoints(only)) == ["detection"]


def test_shipped_weights_are_the_offline_default(tmp_path: Path) -> None:
    table = discover_checkpoints(EncoderSettings(weights_cache_dir=tmp_path))
    assert set(table["classification"]) >= {1, 3}
    assert all(p.is_file() for qualities in table.values() for p in qualities.values())


def test_folder_source_is_sorted_and_reports_unreadable_files(tmp_path: Path) -> None:
    (tmp_path / "b.png").write_bytes(png_bytes(8, 6, seed=1))
    (tmp_path / "a.png").write_bytes(png_bytes(8, 6, seed=2))
    (tmp_path / "c.jpg").write_bytes(b"broken")
    (tmp_path / "notes.txt").write_text("not a frame")
    assert [p.name for p in list_images(tmp_path)] == ["a.png", "b.png", "c.jpg"]
    got = list(open_source(str(tmp_path)))
    assert [f.name for f in got] == ["a.png", "b.png", "c.jpg"]
    assert got[0].pixels == 48 and tuple(got[0].image.shape) == (3, 6, 8)
    assert got[2].image is None and got[2].error
    with pytest.raises(SourceError):
        open_source(str(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(SourceError):
        open_source(str(tmp_path / "empty"))


def test_video_file_source(tmp_path: Path) -> None:
    cv2 = pytest.importorskip("cv2")
    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (32, 24))
    for i in range(5):
        bgr = np.zeros((24, 32, 3), np.uint8)
        bgr[..., 2] = 200  # red in BGR order
        bgr[0, 0, 0] = i
        writer.write(bgr)
    writer.release()
    got = list(open_source(str(path)))
    assert len(got) == 5 and got[0].image.shape == (24, 32, 3) and got[0].pixels == 768
    assert got[0].image[..., 0].mean() > 150  # converted to RGB: red first
    with pytest.raises(SourceError):
        open_source("camera:57")


def test_gstreamer_support_is_read_from_the_opencv_build() -> None:
    def build(line: str) -> Any:
        return SimpleNamespace(getBuildInformation=lambda: f"  Video I/O:\n    {line}\n")

    assert has_gstreamer(build("GStreamer:                   YES (1.22.0)"))
    assert not has_gstreamer(build("GStreamer:                   NO"))
    assert not has_gstreamer(build("FFMPEG:                      YES"))


def test_gst_pipeline_source_is_refused_without_gstreamer_in_opencv(
    checkpoints: dict[int, Path], restore_process_state: None, capfd: pytest.CaptureFixture[str]
) -> None:
    cv2 = pytest.importorskip("cv2")
    if has_gstreamer(cv2):
        pytest.skip("this OpenCV has GStreamer: gst: sources are accepted")
    pipeline = "gst:videotestsrc ! videoconvert ! appsink"

    def no_reconnect(seconds: float) -> None:
        raise AssertionError("a source that can never open must not be retried")

    with pytest.raises(SourceError, match="built without") as refused:
        open_source(pipeline, reconnect=Reconnect(lambda n: 1.0, sleep=no_reconnect))
    assert "rtsp://" in str(refused.value)
    argv = ["stream", "--source", pipeline, "--checkpoint", f"1={checkpoints[1]}",
            "--device", "cpu", "--target", f"127.0.0.1:{free_port()}"]  # fmt: skip
    assert main(argv) == 2
    assert "need OpenCV built with GStreamer" in capfd.readouterr().err


def test_stream_command_real_codec_meets_target_bpp(
    tmp_path: Path, checkpoints: dict[int, Path], restore_process_state: None
) -> None:
    analytics = FakeAnalyticsServer().start()
    try:
        folder = write_frames(tmp_path / "frames", 14)
        out = tmp_path / "summary.json"
        argv = ["stream", "--source", str(folder), "--target", analytics.target,
                "--checkpoint", f"1={checkpoints[1]}", "--checkpoint", f"2={checkpoints[2]}",
                "--checkpoint", f"classification:3={checkpoints[3]}", "--target-bpp", "6",
                "--summary-json", str(out), "--device", "cpu", "--stream-id", "cli-run",
                "--reconnect-initial-s", "0.05"]  # fmt: skip
        assert main(argv) == 0
    finally:
        analytics.stop()
    summary = json.loads(out.read_text())
    assert analytics.store.sequences() == list(range(14))
    assert summary["stream_id"] == "cli-run" and summary["frames"]["acked"] == 14
    rate = summary["rate"]
    # Random-weight codecs give ~2 bpp (q1), ~13 (q2), ~25 (q3) on these frames.
    assert rate["achieved_bpp"] == pytest.approx(6.0, rel=0.15)
    assert {"1", "2"} <= set(rate["qualities"])
    assert rate["achieved_kbps_at_fps"] > 0 and summary["encode_ms"]["p50"] > 0


def test_serve_probe_info_and_sigterm(checkpoints: dict[int, Path]) -> None:
    port = free_port()
    table = json.dumps({"classification": {"1": str(checkpoints[1])}})
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "TRANSTIC_ENCODER_HTTP_PORT": "0",
        "TRANSTIC_ENCODER_CHECKPOINTS": table,
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "services.encoder", "serve", "--grpc-port", str(port),
         "--host", "127.0.0.1", "--device", "cpu"],
        cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        address = f"127.0.0.1:{port}"
        deadline = time.monotonic() + 90
        with grpc.insecure_channel(address) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            while True:
                assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
                try:
                    status = stub.Check(health_pb2.HealthCheckRequest(), timeout=1).status
                    if status == health_pb2.HealthCheckResponse.SERVING:
                        break
                except grpc.RpcError:
                    pass
                assert time.monotonic() < deadline, "encoder never became SERVING"
                time.sleep(0.2)
        assert main(["probe", "--address", address]) == 0
        assert main(["info", "--address", address]) == 0
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
        assert "encoder stopped" in err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert main(["probe", "--address", address, "--timeout", "0.5"]) == 1


def test_start_up_keeps_freed_memory_before_any_server_thread_exists(
    monkeypatch: pytest.MonkeyPatch, restore_process_state: None
) -> None:
    """Frames are coded in server threads: glibc must put them on the retained main heap,
    which only threads created after the setting get (transtic.allocator)."""
    import transtic.allocator
    from services.encoder import cli

    calls: list[int] = []
    monkeypatch.setattr(transtic.allocator, "retain_freed_memory", lambda: calls.append(1))
    cli._configure(EncoderSettings())
    assert calls == [1]
