"""Fit any image size to what the network needs, and undo it after decoding."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from .bitstream import AlignMode


def aligned_size(size: tuple[int, int], divisor: int) -> tuple[int, int]:
    h, w = size
    return (-(-h // divisor) * divisor, -(-w // divisor) * divisor)


def align(x: Tensor, divisor: int, mode: AlignMode) -> Tensor:
    """(B,3,H,W) -> (B,3,H',W') with H', W' multiples of ``divisor``.

    ``PAD`` repeats the last row/column (cheap in bits, exact after cropping);
    ``RESIZE`` rescales bilinearly, as the paper's evaluation does.
    """
    size = tuple(x.shape[-2:])
    target = aligned_size(size, divisor)  # type: ignore[arg-type]
    if target == size or mode == AlignMode.NONE:
        return x
    if mode == AlignMode.PAD:
        pad_h, pad_w = target[0] - size[0], target[1] - size[1]
        return F.pad(x, (0, pad_w, 0, pad_h), mode="replicate")
    return F.interpolate(x, size=target, mode="bilinear", align_corners=False)


def restore(x_hat: Tensor, original: tuple[int, int], mode: AlignMode) -> Tensor:
    """Inverse of :func:`align` for the decoded image."""
    if tuple(x_hat.shape[-2:]) == tuple(original):
        return x_hat
    if mode == AlignMode.RESIZE:
        return F.interpolate(x_hat, size=original, mode="bilinear", align_corners=False)
    return x_hat[..., : original[0], : original[1]]
