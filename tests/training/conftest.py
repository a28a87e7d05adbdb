"""Tiny image folders for training and evaluation tests."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from PIL import Image


def smooth_image(seed: int, h: int, w: int) -> Image.Image:
    """A photo-like image: upsampled noise, so codecs and classifiers see structure."""
    gen = torch.Generator().manual_seed(seed)
    low = torch.rand(1, 3, h // 16, w // 16, generator=gen)
    img = F.interpolate(low, size=(h, w), mode="bicubic", align_corners=False)[0].clamp(0, 1)
    array = (img * 255).round().byte().permute(1, 2, 0).numpy()
    return Image.fromarray(array)


@pytest.fixture(scope="session")
def image_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("images")
    for i, (h, w) in enumerate([(256, 256), (288, 320), (256, 300)]):
        smooth_image(i, h, w).save(root / f"img{i}.png")
    return root
