"""Tensor-side image preprocessing, so decoded images never round-trip through PIL."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from transtic.tasks.base import Normalization

_MODES = {"bicubic": "bicubic", "bilinear": "bilinear", "nearest": "nearest"}
# Above this many times the crop's area, the scaled image is mostly thrown away by the
# centre crop: a 1xW sliver would otherwise be scaled to 256 x 256W (gigabytes).
MAX_RESIZE_AREA_FACTOR = 16
# Margin kept on each side of the crop window (in output pixels' worth of source), so
# the antialiasing filter sees the neighbourhood it would see in the full image.
_CROP_MARGIN = 4


def _crop_to_window(image: torch.Tensor, factor: float, crop_h: int, crop_w: int) -> torch.Tensor:
    """Centre part of ``image`` that, scaled by ``factor``, covers the crop (plus margin)."""
    h, w = image.shape[-2:]
    # When shrinking, the filter spans 1/factor source pixels per output pixel.
    margin = _CROP_MARGIN * max(1, math.ceil(1 / factor))
    keep_h = min(h, math.ceil(crop_h / factor) + 2 * margin)
    keep_w = min(w, math.ceil(crop_w / factor) + 2 * margin)
    top, left = (h - keep_h) // 2, (w - keep_w) // 2
    return image[:, top : top + keep_h, left : left + keep_w]


def resize_center_crop(
    image: torch.Tensor, size: tuple[int, int], crop_pct: float, interpolation: str
) -> torch.Tensor:
    """timm's eval transform on a [3, H, W] tensor: scale, then centre-crop ``size``.

    The shorter side is scaled to ``size / crop_pct`` (256 for 224 at 0.875) while
    keeping the aspect ratio, matching how ImageNet classifiers were evaluated.
    For extreme aspect ratios only the centre that the crop keeps is scaled, so the
    work stays bounded by ``MAX_RESIZE_AREA_FACTOR`` times the crop, whatever the input.
    """
    mode = _MODES.get(interpolation)
    if mode is None:
        raise ValueError(f"unsupported interpolation {interpolation!r}")
    crop_h, crop_w = size
    h, w = image.shape[-2:]
    scale_to = math.floor(min(crop_h, crop_w) / crop_pct)
    factor = scale_to / min(h, w)
    new_h, new_w = max(crop_h, round(h * factor)), max(crop_w, round(w * factor))
    if new_h * new_w > MAX_RESIZE_AREA_FACTOR * scale_to * scale_to:
        image = _crop_to_window(image, factor, crop_h, crop_w)
        h, w = image.shape[-2:]
        new_h, new_w = max(crop_h, round(h * factor)), max(crop_w, round(w * factor))
    resized = F.interpolate(
        image[None],
        size=(new_h, new_w),
        mode=mode,
        align_corners=False if mode != "nearest" else None,
        # Antialias matches PIL's downscaling, which the reference accuracies used.
        antialias=mode != "nearest",
    )[0]
    # Bicubic overshoots; the network never saw values outside the 0..1 range.
    resized = resized.clamp_(0.0, 1.0)
    top = (new_h - crop_h) // 2
    left = (new_w - crop_w) // 2
    return resized[:, top : top + crop_h, left : left + crop_w]


def normalize_batch(images: list[torch.Tensor], norm: Normalization) -> torch.Tensor:
    """Resize/crop each image and stack into one normalised batch."""
    if norm.input_size is None or norm.crop_pct is None or norm.interpolation is None:
        raise ValueError("normalization lacks input_size/crop_pct/interpolation")
    batch = torch.stack(
        [resize_center_crop(i, norm.input_size, norm.crop_pct, norm.interpolation) for i in images]
    )
    return standardize(batch, norm)


def standardize(batch: torch.Tensor, norm: Normalization) -> torch.Tensor:
    """(B, 3, H, W) in [0, 1] -> the network's input scale, no geometry change."""
    mean = torch.tensor(norm.mean, dtype=batch.dtype, device=batch.device).view(1, 3, 1, 1)
    std = torch.tensor(norm.std, dtype=batch.dtype, device=batch.device).view(1, 3, 1, 1)
    return (batch - mean) / std
