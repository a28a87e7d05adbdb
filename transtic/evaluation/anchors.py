"""JPEG and WebP anchors through Pillow, at given qualities or matched to target rates.

Rates are counted two ways. ``bits``: the whole file, as a user sends it.
``payload_bits``: for JPEG the bytes from the first start-of-scan marker (FFDA) to
the end, which leaves out the quantisation and Huffman tables, the JFIF header and
the frame header (about 600 bytes at 4:2:0, a large share of a 256x256 image's
file at low rates); a learned codec's container header is likewise excluded from
its payload. WebP's payload is the whole file: its RIFF/VP8 header is 20-30 bytes.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from PIL import Image

from ..images import to_uint8

FORMATS = {"jpeg": "JPEG", "webp": "WEBP"}
QUALITY_RANGE = (1, 100)
#: Mean rates the anchors are always matched to, so that their curves span the
#: range where the learned codecs' points lie (0.15-0.6 bpp at 256x256).
DEFAULT_TARGET_BPP = (0.15, 0.2, 0.3, 0.4, 0.5, 0.6)
START_OF_SCAN = b"\xff\xda"


@dataclass
class AnchorPoint:
    method: str
    quality: int
    images: list[torch.Tensor]  # decoded, (3, H, W) float in [0, 1]
    bits: list[int]  # whole files
    payload_bits: list[int]

    def bpp(self, pixels: Sequence[int]) -> float:
        """Mean over images of each image's bits per pixel (whole files)."""
        return sum(b / p for b, p in zip(self.bits, pixels, strict=True)) / len(pixels)


def payload_bytes(data: bytes, fmt: str) -> int:
    """Bytes of a file without its header (see the module docstring)."""
    if fmt != "JPEG":
        return len(data)
    # Walk the header segments by their lengths: table bytes may contain FF DA too.
    position = 2  # after the start-of-image marker
    while position + 4 <= len(data):
        if data[position] != 0xFF:
            break
        if data[position : position + 2] == START_OF_SCAN:
            return len(data) - position
        position += 2 + int.from_bytes(data[position + 2 : position + 4], "big")
    raise ValueError("JPEG file without a start-of-scan marker")


def _roundtrip(image: torch.Tensor, fmt: str, quality: int) -> tuple[torch.Tensor, int, int]:
    buf = io.BytesIO()
    pil = Image.fromarray(to_uint8(image))
    if fmt == "JPEG":
        # 4:2:0 is Pillow's default; stated so the anchor is reproducible.
        pil.save(buf, format=fmt, quality=quality, subsampling=2)
    else:
        pil.save(buf, format=fmt, quality=quality, method=6)
    data = buf.getvalue()
    with Image.open(io.BytesIO(data)) as img:
        rgb = img.convert("RGB")
        arr = torch.frombuffer(bytearray(rgb.tobytes()), dtype=torch.uint8)
        decoded = arr.view(rgb.height, rgb.width, 3).permute(2, 0, 1).float() / 255
    return decoded, len(data) * 8, payload_bytes(data, fmt) * 8


class AnchorCodec:
    """Encodes a fixed image set with one Pillow format; results are cached per quality."""

    def __init__(self, method: str, images: Sequence[torch.Tensor]) -> None:
        if method not in FORMATS:
            raise ValueError(f"unknown anchor {method!r}; known: {', '.join(FORMATS)}")
        self.method = method
        self.images = list(images)
        self.pixels = [int(i.shape[-2] * i.shape[-1]) for i in self.images]
        self._cache: dict[int, AnchorPoint] = {}

    def at(self, quality: int) -> AnchorPoint:
        if quality not in self._cache:
            decoded, bits, payload = zip(
                *(_roundtrip(i, FORMATS[self.method], quality) for i in self.images), strict=True
            )
            self._cache[quality] = AnchorPoint(
                self.method, quality, list(decoded), list(bits), list(payload)
            )
        return self._cache[quality]

    def match(self, target_bpp: float) -> AnchorPoint:
        """The quality whose mean bpp is nearest ``target_bpp`` (bisection, rate ~ monotone)."""
        lo, hi = QUALITY_RANGE
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if self.at(mid).bpp(self.pixels) < target_bpp:
                lo = mid
            else:
                hi = mid
        return min((self.at(lo), self.at(hi)), key=lambda p: abs(p.bpp(self.pixels) - target_bpp))
