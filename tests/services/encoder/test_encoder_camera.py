"""Network camera sources against a real MJPEG-over-HTTP stream served by ffmpeg on
127.0.0.1: frames are read, the stream is reopened after the server goes away, and the
frames reach the analytics store through the real gRPC front end."""

from __future__ import annotations

import shutil
import subprocess
import threading
from collections.abc import Iterator
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from encoder_fakes import camera_analytics_settings, camera_stream_run, free_port, live_analytics
from PIL import Image
from service_fakes import FakeDetection

from services.encoder.sources import Reconnect, SourceError, network_frames, open_source, redact
from services.encoder.streamer import EXIT_OK

pytestmark = pytest.mark.integration
FFMPEG = shutil.which("ffmpeg")
if FFMPEG is None:
    pytest.skip("ffmpeg is not installed (scripts/setup_env.sh adds it)", allow_module_level=True)
pytest.importorskip("cv2")

RED, BLUE = (220, 30, 30), (30, 30, 220)


def picture(folder: Path, colour: tuple[int, int, int]) -> Path:
    path = folder / f"{colour[0]}-{colour[2]}.png"
    Image.new("RGB", (128, 96), colour).save(path)
    return path


def mjpeg_server(image: Path, port: int, seconds: float, fps: int = 3) -> subprocess.Popen[bytes]:
    """ffmpeg serving ``image`` as an MJPEG stream (multipart/x-mixed-replace) to one client,
    in real time for ``seconds``, then ending: a camera that goes away."""
    return subprocess.Popen(
        [FFMPEG, "-hide_banner", "-loglevel", "error", "-re", "-loop", "1",  # type: ignore[list-item]
         "-framerate", str(fps), "-i", str(image), "-t", str(seconds),
         "-vf", "format=yuvj420p", "-c:v", "mjpeg", "-q:v", "3",
         "-f", "mpjpeg", "-listen", "1", f"http://127.0.0.1:{port}/cam.mjpg"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip


class Camera:
    """A camera that is lost after a first short stream and comes back with a second one."""

    def __init__(self, folder: Path, first_s: float, second_s: float) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/cam.mjpg"
        self.first = mjpeg_server(picture(folder, RED), self.port, first_s)
        self.second: subprocess.Popen[bytes] | None = None
        blue = picture(folder, BLUE)

        def come_back() -> None:
            self.first.wait(120)
            self.second = mjpeg_server(blue, self.port, second_s)

        self.thread = threading.Thread(target=come_back, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.thread.join(130)
        for proc in (self.first, self.second):
            if proc is not None and proc.poll() is None:
                proc.kill()
            if proc is not None:
                proc.wait(30)


@pytest.fixture
def camera(tmp_path: Path) -> Iterator[Camera]:
    cam = Camera(tmp_path, first_s=1.0, second_s=60.0)
    try:
        yield cam
    finally:
        cam.close()


def reconnect() -> Reconnect:
    return Reconnect(delay=lambda failures: 0.2, max_attempts=100)


def colour_of(frame: Any) -> str:
    mean = np.asarray(frame.image, dtype=float).reshape(-1, 3).mean(axis=0)
    return "red" if mean[0] > mean[2] else "blue"


def test_mjpeg_stream_is_read_and_reopened_after_loss(camera: Camera) -> None:
    frames = list(islice(network_frames(camera.url, reconnect()), 6))
    assert [f.index for f in frames] == list(range(6))
    assert frames[0].image.shape == (96, 128, 3)
    colours = [colour_of(f) for f in frames]
    # The first server's frames, then (after it went away) the second server's.
    assert colours[0] == "red" and colours[-1] == "blue", colours
    assert colours == sorted(colours, key=lambda c: c == "blue"), colours
    assert camera.first.poll() is not None


def test_unreachable_stream_and_redacted_names(tmp_path: Path) -> None:
    url = f"rtsp://user:secret@127.0.0.1:{free_port()}/cam"
    with pytest.raises(SourceError) as refused:
        open_source(url, reconnect=Reconnect(delay=lambda failures: 0.0, max_attempts=2))
    assert "secret" not in str(refused.value) and "***@" in str(refused.value)
    assert redact("http://a:b@host/x") == "http://***@host/x"


def test_camera_frames_reach_the_analytics_store(
    camera: Camera, codec_checkpoint: Path, tmp_path: Path
) -> None:
    settings = camera_analytics_settings(codec_checkpoint, tmp_path / "frames.db")
    with live_analytics(settings, [FakeDetection()]) as (target, runtime):
        run = camera_stream_run(camera.url, target, codec_checkpoint, "cam-mjpeg", max_frames=6)
        summary = run.run()
        assert run.exit_code(summary) == EXIT_OK, summary
        stored = runtime.store.frames("cam-mjpeg", -1, 100)
        assert [f.sequence for f in stored] == list(range(6))
        assert all(f.result["detections"][0]["label"] == "thing" for f in stored)
        assert all(f.result["width"] == 128 and f.result["height"] == 96 for f in stored)
        assert camera.first.poll() is not None  # the stream outlived its first server
