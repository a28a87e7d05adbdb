"""Frame sources for the stream client: an image folder, a video file, or a camera.

Video files and cameras go through OpenCV (``opencv-python-headless``), imported only when
needed so folder streaming works on devices without it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from transtic.images import DEFAULT_MAX_PIXELS, ImageError, decode_image_bytes

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".ppm"})
# A camera may drop a read now and then (USB hiccup); this many in a row end the stream.
_CAMERA_READ_FAILURES = 10


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


def open_source(spec: str, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> Iterator[SourceFrame]:
    """Frames from ``spec``: a directory of images, /dev/videoN or camera:N, or a video file."""
    path = Path(spec)
    if path.is_dir():
        return folder_frames(path, max_pixels=max_pixels)
    if is_camera(spec):
        device: int | str = int(spec.split(":", 1)[1]) if spec.startswith("camera:") else spec
        return video_frames(device, name=spec, camera=True)
    if path.is_file():
        return video_frames(str(path), name=path.name, camera=False)
    raise SourceError(f"source {spec!r} is not a directory, a video file or a camera")


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
