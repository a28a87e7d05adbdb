"""Evaluation protocols: which image each method codes and the task network sees.

``native``  codes every image at its own resolution (the product's use: any camera
            frame), aligned to multiples of 256 by padding.
``paper``   reproduces the TransTIC paper's evaluation:

- classification: resize the shorter side to 256 (bilinear, antialiased, as
  torchvision's ``Resize(256)``), centre-crop 256x256, code that image and
  classify the decoded 256x256 image whole (no further crop);
- detection / segmentation: resize so the shorter side is 800 and the longer at
  most 1333 (detectron2's ``ResizeShortestEdge`` rule), code that image with the
  codec's ``resize`` alignment to multiples of 256, run the task network on the
  decoded image and map its boxes and masks back to the original image for COCO.

In both, the prepared image is rounded to 8 bits (it is what a file would hold),
every method (codecs and JPEG/WebP anchors) gets the same prepared image, and bpp
is counted over its pixels: 256x256 for classification, ``H' x W'`` after the
800/1333 resize for detection, not the 256-aligned size the codec resizes to
internally and not the original COCO size.
"""

from __future__ import annotations

import dataclasses

import torch
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as TF

from ..bitstream import AlignMode
from .runner import EvalSet

PROTOCOLS = ("native", "paper")
CLASSIFICATION_SIZE = 256
DETECTION_SHORT_SIDE = 800
DETECTION_MAX_SIDE = 1333


def _eight_bit(image: torch.Tensor) -> torch.Tensor:
    return (image.clamp(0, 1) * 255).round() / 255


def classification_view(image: torch.Tensor, size: int = CLASSIFICATION_SIZE) -> torch.Tensor:
    """Resize(size) then CenterCrop(size) of a (3, H, W) image in [0, 1]."""
    resized = TF.resize(image, [size], interpolation=InterpolationMode.BILINEAR, antialias=True)
    return _eight_bit(TF.center_crop(resized, [size, size]))


def detection_size(
    height: int, width: int, short: int = DETECTION_SHORT_SIDE, longest: int = DETECTION_MAX_SIDE
) -> tuple[int, int]:
    """Shorter side to ``short`` unless the longer side would exceed ``longest``."""
    scale = short / min(height, width)
    if max(height, width) * scale > longest:
        scale = longest / max(height, width)
    return int(height * scale + 0.5), int(width * scale + 0.5)


def detection_view(image: torch.Tensor) -> torch.Tensor:
    size = detection_size(int(image.shape[-2]), int(image.shape[-1]))
    resized = TF.resize(image, list(size), interpolation=InterpolationMode.BILINEAR, antialias=True)
    return _eight_bit(resized)


def prepare(data: EvalSet, task: str, protocol: str) -> EvalSet:
    """The evaluation set as the protocol codes it (``native``: unchanged)."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; known: {', '.join(PROTOCOLS)}")
    if protocol == "native":
        return data
    if task == "classification":
        return dataclasses.replace(data, images=[classification_view(i) for i in data.images])
    sizes = data.original_sizes or [(int(i.shape[-2]), int(i.shape[-1])) for i in data.images]
    return dataclasses.replace(
        data, images=[detection_view(i) for i in data.images], original_sizes=sizes
    )


def align_mode(protocol: str) -> AlignMode:
    """The paper resizes to multiples of 256; the product pads (fewer bits, exact crop)."""
    return AlignMode.RESIZE if protocol == "paper" else AlignMode.PAD
