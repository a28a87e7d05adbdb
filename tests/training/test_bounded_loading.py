"""Training images are downscaled once to a bounded shorter side and cached as uint8."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from transtic.training.data import CropDataset, read_bounded


def _photo(path: Path, width: int, height: int) -> Path:
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(path)
    return path


def test_read_bounded_downscales_only_large_images(tmp_path: Path) -> None:
    big = _photo(tmp_path / "big.png", 1000, 600)
    small = _photo(tmp_path / "small.png", 320, 280)
    assert tuple(read_bounded(big, 300).shape) == (3, 300, 500)
    assert read_bounded(big, 300).dtype == torch.uint8
    assert tuple(read_bounded(small, 300).shape) == (3, 280, 320)
    assert tuple(read_bounded(big, None).shape) == (3, 600, 1000)


def test_cached_dataset_gives_the_same_crops(tmp_path: Path) -> None:
    files = [_photo(tmp_path / f"{i}.png", 700, 520) for i in range(2)]
    kwargs = {"patch_size": 256, "scale": (0.5, 1.0), "seed": 3, "max_short_side": 512}
    cached = CropDataset(files, cache=True, **kwargs)  # type: ignore[arg-type]
    plain = CropDataset(files, **kwargs)  # type: ignore[arg-type]
    for index in range(2):
        first = cached[index][0]
        assert torch.equal(first, cached[index][0])  # from the cache the second time
        assert torch.equal(first, plain[index][0])
        assert first.shape == (3, 256, 256)
        assert 0.0 <= float(first.min()) <= float(first.max()) <= 1.0
