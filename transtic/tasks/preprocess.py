"""Tensor-side image preprocessing, so decoded images never round-trip through PIL."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from transtic.tasks.base import Normalization

_MODES = {"bicubic": "bicubic", "bilinear": "bilinear", "nearest": "nearest"}


def resize_center_crop(
    image: torch.Tensor, size: tuple[int, int], crop_pct: float, interpolation: str
) -> torch.Tensor:
    """timm's eval transform on a [3, H, W] tensor: scale, then centre-crop ``size``.

    The shorter side is scaled to ``size / crop_pct`` (256 for 224 at 0.875) while
    keeping the aspect ratio, matching how ImageNet classifiers were evaluated.
    """
    mode = _MODES.get(interpolation)
    if mode is None:
        raise ValueError(f"unsupported interpolation {interpolation!r}")
    crop_h, crop_w = size
    h, w = image.shape[-2:]
    scale_to = math.floor(min(crop_h, crop_w) / crop_pct)
    factor = scale_to / min(h, w)
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
