"""The stream client against a real RTSP camera: GStreamer's RTSP server from Debian on
127.0.0.1 (``rtsp_camera_server.py``, run by the system Python that has its bindings).

The camera is killed mid-stream and a new one comes up on the same port with another
picture size, so the store shows the frames of both: the client reconnected and went on.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from itertools import islice
from pathlib import Path

import pytest
from encoder_fakes import camera_analytics_settings, camera_stream_run, live_analytics
from service_fakes import FakeDetection

from services.encoder.sources import Reconnect, network_frames
from services.encoder.streamer import EXIT_OK

pytestmark = pytest.mark.integration
pytest.importorskip("cv2")

SERVER_SCRIPT = Path(__file__).with_name("rtsp_camera_server.py")
# Debian's python3-gi belongs to the system Python, not to the project's environment.
SYSTEM_PYTHON = "/usr/bin/python3"
FIRST_SIZE, SECOND_SIZE = (128, 96), (160, 120)


def _gst_rtsp_server_available() -> bool:
    probe = (
        "import gi; gi.require_version('GstRtspServer', '1.0'); "
        "from gi.repository import Gst, GstRtspServer; Gst.init(None); "
        "assert all(Gst.ElementFactory.find(e) for e in "
        "('videotestsrc', 'jpegenc', 'rtpjpegpay'))"
    )
    try:
        done = subprocess.run([SYSTEM_PYTHON, "-c", probe], capture_output=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


if sys.platform != "linux" or not _gst_rtsp_server_available():
    pytest.skip(
        "GStreamer's RTSP server is not installed for the system Python "
        "(scripts/setup_env.sh adds python3-gi and gir1.2-gst-rtsp-server-1.0)",
        allow_module_level=True,
    )


class RtspCamera:
    """One run of the RTSP server; ``kill`` is the camera losing power."""

    def __init__(self, port: int, size: tuple[int, int], colour: str, fps: int = 5) -> None:
        self.proc = subprocess.Popen(
            [SYSTEM_PYTHON, str(SERVER_SCRIPT), "--port", str(port),
             "--size", f"{size[0]}x{size[1]}", "--colour", colour, "--fps", str(fps)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()  # "port N" once it listens
        if not line.startswith("port "):
            self.kill()
            raise RuntimeError(f"RTSP server did not start: {line!r} {self.proc.stderr}")
        self.port = int(line.split()[1])
        self.url = f"rtsp://127.0.0.1:{self.port}/cam"

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(30)
        for pipe in (self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                pipe.close()


@pytest.fixture
def cameras() -> Iterator[list[RtspCamera]]:
    """The cameras a test starts; every one is killed at the end."""
    started: list[RtspCamera] = []
    yield started
    for camera in started:
        camera.kill()


def test_rtsp_frames_are_read_and_resume_after_the_camera_restarts(
    cameras: list[RtspCamera],
) -> None:
    first = RtspCamera(0, FIRST_SIZE, "dc1e1e")
    cameras.append(first)
    frames = network_frames(first.url, Reconnect(delay=lambda failures: 0.2, max_attempts=100))
    head = next(frames)
    assert head.image.shape == (FIRST_SIZE[1], FIRST_SIZE[0], 3)
    assert head.image[..., 0].mean() > head.image[..., 2].mean()  # red, as RGB
    first.kill()
    cameras.append(RtspCamera(first.port, SECOND_SIZE, "1e1edc"))
    # Frames the client had buffered before the loss come first; then the new camera's.
    rest = list(islice((f for f in frames if f.image.shape[1] == SECOND_SIZE[0]), 2))
    assert [f.image.shape for f in rest] == [(SECOND_SIZE[1], SECOND_SIZE[0], 3)] * 2
    assert rest[0].index > head.index and rest[1].index == rest[0].index + 1
    assert rest[0].image[..., 2].mean() > rest[0].image[..., 0].mean()  # blue
    frames.close()


def test_rtsp_camera_reaches_the_analytics_store_across_a_camera_restart(
    cameras: list[RtspCamera], codec_checkpoint: Path, tmp_path: Path
) -> None:
    first = RtspCamera(0, FIRST_SIZE, "dc1e1e")
    cameras.append(first)
    settings = camera_analytics_settings(codec_checkpoint, tmp_path / "frames.db")
    with live_analytics(settings, [FakeDetection()]) as (target, runtime):
        run = camera_stream_run(first.url, target, codec_checkpoint, "cam-rtsp")

        def widths() -> list[int]:
            return [f.result["width"] for f in runtime.store.frames("cam-rtsp", -1, 10_000)]

        def restart_camera_then_stop() -> None:
            deadline = time.monotonic() + 120
            while len(widths()) < 2 and time.monotonic() < deadline:
                time.sleep(0.1)
            first.kill()
            cameras.append(RtspCamera(first.port, SECOND_SIZE, "1e1edc"))
            while widths().count(SECOND_SIZE[0]) < 3 and time.monotonic() < deadline:
                time.sleep(0.1)
            run.stop()  # like Ctrl-C: drain what is in flight, then end

        director = threading.Thread(target=restart_camera_then_stop, daemon=True)
        director.start()
        summary = run.run()
        director.join(10)
        assert run.exit_code(summary) == EXIT_OK, summary
        stored = runtime.store.frames("cam-rtsp", -1, 10_000)
        assert [f.sequence for f in stored] == list(range(len(stored)))  # none lost
        seen = [f.result["width"] for f in stored]
        switch = seen.index(SECOND_SIZE[0])
        # The first camera's frames, then (after the reconnect) only the second camera's.
        assert switch >= 2 and set(seen[:switch]) == {FIRST_SIZE[0]}, seen
        assert set(seen[switch:]) == {SECOND_SIZE[0]} and len(seen) - switch >= 3, seen
        assert all(f.result["detections"][0]["label"] == "thing" for f in stored)
        assert summary["stopped_by"] == "signal" and summary["frames"]["unacked"] == 0
    # The run closed its source: the reader thread ends and stops reconnecting.
    for camera in cameras:
        camera.kill()
    deadline = time.monotonic() + 30
    while any(t.name == "frame-reader" for t in threading.enumerate()):
        assert time.monotonic() < deadline, "the camera reader outlived the run"
        time.sleep(0.1)
