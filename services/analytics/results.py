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
