"""Tiny codecs, photo-like images and a tiny COCO set shared by the evaluation tests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from transtic.models import create_model
from transtic.training import export_weights


def smooth_image(seed: int, h: int, w: int) -> Image.Image:
    """Upsampled noise: structure a codec and a classifier can see, any size."""
    gen = torch.Generator().manual_seed(seed)
    low = torch.rand(1, 3, max(1, h // 16), max(1, w // 16), generator=gen)
    img = F.interpolate(low, size=(h, w), mode="bicubic", align_corners=False)[0]
    array = (img.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()
    return Image.fromarray(array)


@pytest.fixture(scope="session")
def tiny_codecs(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    root = tmp_path_factory.mktemp("codecs")
    paths = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        paths.append(export_weights(create_model("tic-tiny"), root / f"tiny{seed}.pth.tar", {}))
    return paths


# Two images, each with one box; sizes not multiples of 256 and of other aspect ratios.
COCO_IMAGES: list[dict[str, Any]] = [
    {"id": 7, "file_name": "a.png", "height": 120, "width": 160},
    {"id": 9, "file_name": "b.png", "height": 150, "width": 100},
]
COCO_BOXES = {7: [20.0, 30.0, 60.0, 50.0], 9: [10.0, 40.0, 50.0, 70.0]}  # xywh


@pytest.fixture(scope="session")
def tiny_coco(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(image dir, instances json) with one square-mask instance per image."""
    root = tmp_path_factory.mktemp("coco")
    anns = []
    for i, im in enumerate(COCO_IMAGES):
        smooth_image(10 + i, im["height"], im["width"]).save(root / im["file_name"])
        x, y, w, h = COCO_BOXES[im["id"]]
        polygon = [x, y, x + w, y, x + w, y + h, x, y + h]
        anns.append(
            {"id": i + 1, "image_id": im["id"], "category_id": 1, "bbox": [x, y, w, h],
             "area": w * h, "iscrowd": 0, "segmentation": [polygon]}
        )  # fmt: skip
    ann_file = root / "instances.json"
    ann_file.write_text(
        json.dumps(
            {"images": COCO_IMAGES, "annotations": anns, "categories": [{"id": 1, "name": "p"}]}
        )
    )
    return root, ann_file
