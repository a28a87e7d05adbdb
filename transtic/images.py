"""Turn uploads and arrays into image tensors, refusing what would hurt the process."""

from __future__ import annotations

import io
import os
import warnings
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor

DEFAULT_MAX_PIXELS = 64 * 2**20  # 64 MP: above any camera frame, below a memory blow-up
# Beyond this an image is mostly padding once aligned to 256 (the services default to a
# tighter 16:1, above any panorama a camera sends).
DEFAULT_MAX_ASPECT_RATIO = 64.0
# What the codecs align to (TIC/TransTIC at window 8 and a 256 training size).
DEFAULT_ALIGNMENT = 256


class ImageError(ValueError):
    """The input is not an image we can code (corrupt, unsupported, or too large)."""


class ImageTooLargeError(ImageError):
    """The image's coded size is over the pixel budget (a shape problem is a plain ImageError)."""


def check_size_budget(
    height: int,
    width: int,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_aspect_ratio: float = DEFAULT_MAX_ASPECT_RATIO,
    alignment: int = DEFAULT_ALIGNMENT,
) -> None:
    """Refuse a size before any work is done on it.

    The cost of coding is set by the *coded* size (each side padded or resized up to
    a multiple of ``alignment``), not by the original one: an 8192x1 image is coded
    as 8192x256. So ``max_pixels`` caps the aligned area, and ``max_aspect_ratio``
    refuses slivers whose padding (and whose task-network resize) dwarf their content.
    """
    if height < 1 or width < 1:
        raise ImageError(f"image is {width}x{height}: it has no pixels")
    aspect = max(height, width) / min(height, width)
    if aspect > max_aspect_ratio:
        raise ImageError(
            f"image is {width}x{height}: aspect ratio {aspect:.1f}:1 exceeds the limit of "
            f"{max_aspect_ratio:g}:1"
        )
    coded_h = -(-height // alignment) * alignment
    coded_w = -(-width // alignment) * alignment
    if coded_h * coded_w > max_pixels:
        raise ImageTooLargeError(
            f"image is {width}x{height}, coded as {coded_w}x{coded_h} = {coded_h * coded_w} "
            f"pixels; the limit is {max_pixels}"
        )


def decode_image_bytes(
    data: bytes,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_aspect_ratio: float = DEFAULT_MAX_ASPECT_RATIO,
    alignment: int = DEFAULT_ALIGNMENT,
) -> Tensor:
    """Encoded image file (PNG, JPEG, WebP, ...) -> (3, H, W) float32 in [0, 1].

    The size is checked against the budget (:func:`check_size_budget`) from the file
    header alone, before any pixel is decoded.
    """
    if not data:
        raise ImageError("empty image upload")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:
                w, h = img.size
                check_size_budget(
                    h,
                    w,
                    max_pixels=max_pixels,
                    max_aspect_ratio=max_aspect_ratio,
                    alignment=alignment,
                )
                img.load()
                return to_tensor(img)
    except ImageError:
        raise
    except (UnidentifiedImageError, Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageError("not a decodable image (or a decompression bomb)") from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise ImageError(f"corrupt image: {exc}") from None


def read_rgb_file(path: str | os.PathLike[str]) -> Image.Image:
    """An image file as an RGB PIL image (no size budget: for local datasets); an
    unreadable file raises ImageError naming it and why."""
    try:
        with Image.open(path) as img:
            return img.convert("RGB")
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise ImageError(f"{path}: not a readable image ({exc})") from None


def to_tensor(image: Any) -> Tensor:
    """PIL image, HxWx3 uint8 array, or (3,H,W) tensor -> (3, H, W) float32 in [0, 1]."""
    if isinstance(image, Image.Image):
        image = np.asarray(image.convert("RGB"))
    if isinstance(image, np.ndarray):
        if image.ndim == 2:
            image = np.repeat(image[..., None], 3, axis=2)
        if image.ndim != 3 or image.shape[2] not in (3, 4):
            raise ImageError(f"expected an HxWx3 array, got shape {image.shape}")
        arr = image[..., :3]
        tensor = torch.from_numpy(np.array(arr, dtype=np.uint8)).permute(2, 0, 1)
    elif isinstance(image, Tensor):
        tensor = image
        if tensor.dim() == 4 and tensor.shape[0] == 1:
            tensor = tensor[0]
        if tensor.dim() != 3 or tensor.shape[0] != 3:
            raise ImageError(f"expected a (3, H, W) tensor, got {tuple(tensor.shape)}")
    else:
        raise ImageError(f"unsupported image type {type(image).__name__}")
    if tensor.shape[-1] < 1 or tensor.shape[-2] < 1:
        raise ImageError("image has no pixels")
    if tensor.dtype == torch.uint8:
        return tensor.float().div_(255.0)
    return tensor.float().clamp(0, 1)


def to_uint8(image: Tensor) -> np.ndarray:
    """(3, H, W) float in [0, 1] -> HxWx3 uint8 array."""
    return image.clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).cpu().numpy()
