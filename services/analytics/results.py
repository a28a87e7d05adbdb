"""Decoded images as the REST answers carry them."""

from __future__ import annotations

import base64
import io

from PIL import Image
from torch import Tensor

from transtic.images import to_uint8


def png_base64(image: Tensor) -> str:
    buffer = io.BytesIO()
    # Speed over size: the page shows it once and it never leaves the client.
    Image.fromarray(to_uint8(image)).save(buffer, format="PNG", compress_level=1)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def jpeg_thumbnail_base64(image: Tensor, height: int) -> str:
    """A small JPEG of a decoded frame: a few kB per stored frame, enough to recognise it."""
    picture = Image.fromarray(to_uint8(image))
    width = max(1, round(picture.width * height / picture.height))
    buffer = io.BytesIO()
    picture.resize((width, height), Image.Resampling.BILINEAR).save(
        buffer, format="JPEG", quality=70
    )
    return base64.b64encode(buffer.getvalue()).decode("ascii")
