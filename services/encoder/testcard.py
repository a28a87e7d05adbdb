"""``python -m services.encoder.testcard FOLDER``: synthetic camera frames for demos.

A ball moving over a slowly shifting colour field, written as numbered PNGs, so the
demo stream has real, changing pictures without shipping or downloading photos.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image


def frame(index: int, height: int, width: int) -> np.ndarray:
    """Frame ``index`` of the sequence, HxWx3 uint8."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    t = index / 12.0
    field = [
        127 + 90 * np.sin(2 * np.pi * (x / width + t * 0.1 + c / 3)) * np.cos(np.pi * y / height)
        for c in range(3)
    ]
    pixels = np.stack(field, axis=-1)
    radius = min(height, width) / 6
    cx = width / 2 + (width / 2 - radius) * np.sin(t)
    cy = height / 2 + (height / 2 - radius) * np.sin(2 * t) / 2
    ball = (x - cx) ** 2 + (y - cy) ** 2 < radius**2
    pixels[ball] = (230, 60 + (index * 7) % 120, 40)
    return np.clip(pixels, 0, 255).astype(np.uint8)


def write(folder: Path, count: int, height: int, width: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(count):
        path = folder / f"testcard_{index:04d}.png"
        if not path.exists():  # a re-run (container restart) keeps what is there
            Image.fromarray(frame(index, height, width)).save(path)
        paths.append(path)
    return paths


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.encoder.testcard")
    parser.add_argument("folder", type=Path)
    parser.add_argument("--count", type=int, default=24)
    parser.add_argument("--height", type=int, default=240)
    parser.add_argument("--width", type=int, default=320)
    args = parser.parse_args(argv)
    if args.count < 1 or args.height < 16 or args.width < 16:
        parser.error("need --count >= 1 and frames of at least 16x16")
    paths = write(args.folder, args.count, args.height, args.width)
    print(f"{len(paths)} frames in {args.folder}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
