"""Frame sources for the stream client: an image folder, a video file, a local camera, or
a network camera (``rtsp://``, ``http(s)://`` MJPEG or any URL FFmpeg reads) or a
GStreamer pipeline (``gst:<pipeline>``), reopened when the stream drops.

Video files and cameras go through OpenCV (``opencv-python-headless``), imported only when
needed so folder streaming works on devices without it.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from transtic.images import DEFAULT_MAX_PIXELS, ImageError, decode_image_bytes

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".ppm"})
# A camera may drop a read now and then (USB hiccup); this many in a row end the stream.
_CAMERA_READ_FAILURES = 10
NETWORK_SCHEMES = ("rtsp://", "rtsps://", "http://", "https://")
GSTREAMER_PREFIX = "gst:"
log = logging.getLogger(__name__)


class SourceError(ValueError):
    """The source cannot be opened."""


@dataclass
class SourceFrame:
    index: int
    name: str
    image: Any  # (3, H, W) float tensor or HxWx3 uint8 RGB array; None when unreadable
    capture_time_ms: int
    error: str | None = None

    @property
    def pixels(self) -> int:
        shape = tuple(self.image.shape)
        if isinstance(self.image, np.ndarray):  # H x W x C from OpenCV
            return int(shape[0] * shape[1])
        return int(shape[-1] * shape[-2])  # (3, H, W) tensor


def _now_ms() -> int:
    return int(time.time() * 1000)


def is_camera(spec: str) -> bool:
    return spec.startswith("/dev/video") or spec.startswith("camera:")


def is_network(spec: str) -> bool:
    return spec.lower().startswith(NETWORK_SCHEMES) or spec.startswith(GSTREAMER_PREFIX)


def redact(url: str) -> str:
    """The URL without its user:password, for names and logs."""
    return re.sub(r"(://)[^/@]*@", r"\1***@", url)


@dataclass(frozen=True)
class Reconnect:
    """How a network source comes back after it drops: wait ``delay(failures)`` between
    reopen attempts; give up after ``max_attempts`` failed ones in a row (0 = never), or
    as soon as ``cancelled`` is set (nobody reads the frames any more)."""

    delay: Callable[[int], float]
    max_attempts: int = 20
    sleep: Callable[[float], None] | None = None  # default: wait on ``cancelled``
    cancelled: threading.Event = field(default_factory=threading.Event)


def open_source(
    spec: str,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    reconnect: Reconnect | None = None,
    newest_only: bool = False,
) -> Iterator[SourceFrame]:
    """Frames from ``spec``: a directory of images, /dev/videoN or camera:N, a video file,
    an rtsp:// or http(s):// stream, or gst:<GStreamer pipeline ending in appsink>.

    ``newest_only``: for live sources (cameras, streams), always hand out the newest frame
    and skip those the consumer was too slow for (see :func:`newest_frames`)."""
    if spec.startswith(GSTREAMER_PREFIX):
        require_gstreamer(_cv2())
    live: Iterator[SourceFrame] | None = None
    reconnect = reconnect or Reconnect(delay=lambda n: min(10.0, 0.2 * 2**n))
    if is_network(spec):
        live = network_frames(spec, reconnect)
    elif is_camera(spec):
        device: int | str = int(spec.split(":", 1)[1]) if spec.startswith("camera:") else spec
        live = video_frames(device, name=spec, camera=True)
    if live is not None:
        return newest_frames(live, reconnect.cancelled) if newest_only else live
    path = Path(spec)
    if path.is_dir():
        return folder_frames(path, max_pixels=max_pixels)
    if path.is_file():
        return video_frames(str(path), name=path.name, camera=False)
    raise SourceError(
        f"source {spec!r} is not a directory, a video file, a camera, an rtsp:// or "
        "http(s):// stream or a gst: pipeline"
    )


class _NewestSlot:
    """One frame: a newer one replaces it; the reader blocks until there is one."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._frame: SourceFrame | None = None
        self._ended = False
        self.skipped = 0

    def put(self, frame: SourceFrame) -> None:
        with self._cond:
            if self._frame is not None:
                self.skipped += 1
            self._frame = frame
            self._cond.notify_all()

    def end(self) -> None:
        with self._cond:
            self._ended = True
            self._cond.notify_all()

    def take(self) -> SourceFrame | None:
        """The newest frame not taken yet; None once the source has ended."""
        with self._cond:
            self._cond.wait_for(lambda: self._frame is not None or self._ended)
            frame, self._frame = self._frame, None
            return frame


def newest_frames(
    frames: Iterator[SourceFrame], stop: threading.Event | None = None
) -> Iterator[SourceFrame]:
    """Read ``frames`` on a thread of its own, flat out, and yield only the newest one each
    time: a consumer slower than a live camera then codes what the camera sees now, not a
    backlog that grows by the second (and, with a stream, notices a camera that went away
    at once instead of after that backlog). Skipped frames leave gaps in the indices.
    Closing it sets ``stop`` (the source's :class:`Reconnect` ``cancelled``, so a source
    that is reconnecting gives up too) and ends the reader."""
    slot = _NewestSlot()
    stop = stop or threading.Event()

    def pump() -> None:
        try:
            for frame in frames:
                slot.put(frame)
                if stop.is_set():
                    break
        except Exception as exc:  # a broken source ends the stream like a finished one
            log.error("frame source failed: %s", exc)
        finally:
            slot.end()
            close = getattr(frames, "close", None)
            if close is not None:
                close()  # releases the capture, on the thread that used it
            if slot.skipped:
                log.info("skipped %d frames the encoder was too slow for", slot.skipped)

    def generate() -> Iterator[SourceFrame]:
        reader = threading.Thread(target=pump, name="frame-reader", daemon=True)
        reader.start()
        try:
            while (frame := slot.take()) is not None:
                yield frame
        finally:
            stop.set()

    return generate()


def list_images(directory: Path) -> list[Path]:
    files = [p for p in directory.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
    return sorted(files, key=lambda p: p.name)


def folder_frames(
    directory: Path, *, max_pixels: int = DEFAULT_MAX_PIXELS
) -> Iterator[SourceFrame]:
    files = list_images(directory)
    if not files:
        raise SourceError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in {directory}")

    def generate() -> Iterator[SourceFrame]:
        for index, path in enumerate(files):
            try:
                image = decode_image_bytes(path.read_bytes(), max_pixels=max_pixels)
            except (ImageError, OSError) as exc:
                yield SourceFrame(index, path.name, None, _now_ms(), error=str(exc))
                continue
            yield SourceFrame(index, path.name, image, _now_ms())

    return generate()


def has_gstreamer(cv2: Any) -> bool:
    """Whether this OpenCV build has the GStreamer video I/O backend (the opencv-python
    wheels on PyPI do not; a distribution's or a self-built OpenCV may)."""
    for line in cv2.getBuildInformation().splitlines():
        name, _, value = line.strip().partition(":")
        if name.strip() == "GStreamer":
            return value.strip().upper().startswith("YES")
    return False


def require_gstreamer(cv2: Any) -> None:
    if not has_gstreamer(cv2):
        version = getattr(cv2, "__version__", "?")
        raise SourceError(
            f"gst: pipeline sources need OpenCV built with GStreamer, and this one (cv2 "
            f"{version}) is built without it: read the camera by its rtsp:// or http(s):// "
            "URL instead, or install an OpenCV with GStreamer (docs/cameras.md)"
        )


def _cv2() -> Any:
    try:
        import cv2
    except ImportError:
        raise SourceError(
            "video files and cameras need OpenCV: pip install opencv-python-headless "
            "(or stream a folder of images)"
        ) from None
    return cv2


def video_frames(device: int | str, *, name: str, camera: bool) -> Iterator[SourceFrame]:
    cv2 = _cv2()
    capture = cv2.VideoCapture(device)
    if not capture.isOpened():
        capture.release()
        raise SourceError(f"cannot open {'camera' if camera else 'video'} {name!r}")

    def generate() -> Iterator[SourceFrame]:
        index = 0
        failures = 0
        try:
            while True:
                ok, bgr = capture.read()
                if not ok:
                    failures += 1
                    if camera and failures < _CAMERA_READ_FAILURES:
                        time.sleep(0.05)
                        continue
                    return
                failures = 0
                rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
                yield SourceFrame(index, f"{name}#{index}", rgb, _now_ms())
                index += 1
        finally:
            capture.release()

    return generate()


# A stalled stream (camera unplugged, network gone) must end a read, not hang it.
NETWORK_TIMEOUT_MS = 10_000


def _open_network(cv2: Any, spec: str) -> Any:
    if spec.startswith(GSTREAMER_PREFIX):
        return cv2.VideoCapture(spec[len(GSTREAMER_PREFIX) :], cv2.CAP_GSTREAMER)
    timeouts = [
        cv2.CAP_PROP_OPEN_TIMEOUT_MSEC,
        NETWORK_TIMEOUT_MS,
        cv2.CAP_PROP_READ_TIMEOUT_MSEC,
        NETWORK_TIMEOUT_MS,
    ]
    return cv2.VideoCapture(spec, cv2.CAP_FFMPEG, timeouts)


def network_frames(spec: str, reconnect: Reconnect) -> Iterator[SourceFrame]:
    """Frames of a network stream; when it ends or stalls, it is reopened (frame indices
    go on), until ``reconnect.max_attempts`` reopenings in a row fail."""
    cv2 = _cv2()
    name = redact(spec)
    capture = _open_network(cv2, spec)
    if not capture.isOpened():
        # A camera that is not up yet gets the same patience as one that dropped.
        capture.release()
        capture = _reopen(cv2, spec, name, reconnect)
    if capture is None:
        raise SourceError(f"cannot open stream {name!r}")

    def generate() -> Iterator[SourceFrame]:
        nonlocal capture
        index = 0
        try:
            while True:
                ok, bgr = capture.read()
                if ok:
                    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
                    yield SourceFrame(index, f"{name}#{index}", rgb, _now_ms())
                    index += 1
                    continue
                capture.release()
                log.warning("stream %s lost after frame %d; reconnecting", name, index)
                capture = _reopen(cv2, spec, name, reconnect)
                if capture is None:
                    return
        finally:
            if capture is not None:
                capture.release()

    return generate()


def _reopen(cv2: Any, spec: str, name: str, reconnect: Reconnect) -> Any:
    failures = 0
    while reconnect.max_attempts == 0 or failures < reconnect.max_attempts:
        delay = reconnect.delay(failures)
        if reconnect.sleep is not None:
            reconnect.sleep(delay)
        if reconnect.cancelled.wait(0 if reconnect.sleep is not None else delay):
            return None
        capture = _open_network(cv2, spec)
        if capture.isOpened():
            log.info("stream %s reopened after %d failed attempt(s)", name, failures)
            return capture
        capture.release()
        failures += 1
    log.error("stream %s: gave up after %d reconnect attempts", name, failures)
    return None
