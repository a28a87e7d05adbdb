"""Hostile image uploads, built at test time: mutated files, absurd headers, bombs.

Everything is generated in memory from a few small seed pictures, so nothing large ever
sits on disk; a decompression bomb is a few hundred kilobytes that would inflate to
gigabytes if a decoder believed it.
"""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Callable

import numpy as np
from hypothesis import strategies as st
from PIL import Image

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Flips and splices land in the first bytes (signatures, headers, tables) this often;
# elsewhere they mostly hit entropy-coded data, which is the less interesting half.
HEADER_BYTES = 96


def picture(height: int = 32, width: int = 48, seed: int = 0) -> Image.Image:
    """A small smooth RGB picture with some texture (so lossy codecs keep real data)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    pixels = np.stack(
        [x * 255 // max(1, width - 1), y * 255 // max(1, height - 1), (x ^ y) * 7 % 256], axis=-1
    )
    pixels = np.clip(pixels + rng.integers(-12, 13, pixels.shape), 0, 255).astype(np.uint8)
    return Image.fromarray(pixels)


def encoded(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def seed_files() -> dict[str, bytes]:
    """Valid small files in the formats a camera or a user would upload."""
    image = picture()
    return {
        "png": encoded(image, "PNG"),
        "png-palette": encoded(image.convert("P"), "PNG"),
        "png-interlaced": encoded(image, "PNG", interlace=1),
        "jpeg": encoded(image, "JPEG", quality=80),
        "jpeg-progressive": encoded(image, "JPEG", quality=70, progressive=True),
        "webp-lossy": encoded(image, "WEBP", quality=60),
        "webp-lossless": encoded(image, "WEBP", lossless=True),
        "gif": encoded(image.convert("P"), "GIF"),
        "bmp": encoded(image, "BMP"),
        "tiff": encoded(image, "TIFF", compression="tiff_deflate"),
    }


# -- PNG built chunk by chunk ---------------------------------------------------------------
def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_file(
    width: int,
    height: int,
    idat: bytes,
    *,
    bit_depth: int = 8,
    colour_type: int = 2,
    interlace: int = 0,
    before_idat: tuple[bytes, ...] = (),
) -> bytes:
    """A PNG with the given IHDR fields and image data, every CRC correct."""
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, interlace)
    return (
        PNG_SIGNATURE
        + png_chunk(b"IHDR", ihdr)
        + b"".join(before_idat)
        + png_chunk(b"IDAT", idat)
        + png_chunk(b"IEND", b"")
    )


def png_absurd(width: int, height: int) -> bytes:
    """A header declaring ``width`` x ``height`` RGB pixels, with a few bytes of data."""
    return png_file(width, height, zlib.compress(b"\x00" * 64))


def png_bomb(width: int, height: int) -> bytes:
    """A real all-black 1-bit PNG of that size: every row is there, deflated ~1000:1.

    40000 x 40000 is 1.6 G pixels (4.8 GB as RGB) in about 200 kB.
    """
    row = bytes(1 + (width + 7) // 8)  # filter byte + packed bits
    deflate = zlib.compressobj(9)
    data = b"".join(deflate.compress(row) for _ in range(height)) + deflate.flush()
    return png_file(width, height, data, bit_depth=1, colour_type=0)


def png_metadata_bomb(kind: bytes, inflated_bytes: int = 64 * 2**20) -> bytes:
    """A tiny valid PNG with a zTXt or iCCP chunk that inflates to ``inflated_bytes``."""
    deflate = zlib.compressobj(9)
    block = bytes(2**20)
    payload = b"".join(deflate.compress(block) for _ in range(inflated_bytes // len(block)))
    payload += deflate.flush()
    name = b"Comment" if kind == b"zTXt" else b"icc"
    meta = png_chunk(kind, name + b"\x00\x00" + payload)
    row_data = zlib.compress(b"".join(b"\x00" + bytes(3 * 8) for _ in range(8)))
    return png_file(8, 8, row_data, before_idat=(meta,))


def fix_png_crcs(data: bytes) -> bytes:
    """Recompute every chunk CRC that can be found, so mutations reach the decoder proper."""
    if not data.startswith(PNG_SIGNATURE):
        return data
    out = bytearray(data[:8])
    pos = 8
    while pos + 12 <= len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        end = pos + 12 + length
        if end > len(data):
            break
        body = data[pos + 4 : pos + 8 + length]
        out += data[pos : pos + 8 + length] + struct.pack(">I", zlib.crc32(body))
        pos = end
    out += data[pos:]
    return bytes(out)


# -- other formats with absurd headers -------------------------------------------------------
def jpeg_absurd(base: bytes, width: int, height: int) -> bytes:
    """A valid JPEG whose start-of-frame marker claims another size (16-bit fields)."""
    data = bytearray(base)
    for marker in (b"\xff\xc0", b"\xff\xc2"):
        at = data.find(marker)
        if at >= 0:
            data[at + 5 : at + 9] = struct.pack(">HH", height & 0xFFFF, width & 0xFFFF)
            return bytes(data)
    raise ValueError("no start-of-frame marker")


def gif_absurd(width: int, height: int) -> bytes:
    """A GIF whose logical screen and only image claim ``width`` x ``height``."""
    w, h = width & 0xFFFF, height & 0xFFFF
    screen = b"GIF89a" + struct.pack("<HHBBB", w, h, 0x80, 0, 0) + b"\x00" * 6  # 2-colour table
    image = b"\x2c" + struct.pack("<HHHHB", 0, 0, w, h, 0) + b"\x02\x02\x44\x01\x00"
    return screen + image + b"\x3b"


def bmp_absurd(width: int, height: int) -> bytes:
    """A BMP header with signed 32-bit dimensions (negative height = top-down) and 4 pixels."""
    pixels = bytes(16)
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, len(pixels), 2835, 2835, 0, 0)
    header = b"BM" + struct.pack("<IHHI", 14 + len(info) + len(pixels), 0, 0, 14 + len(info))
    return header + info + pixels


def webp_absurd(width: int, height: int) -> bytes:
    """A VP8X WebP whose canvas claims up to 2^24 x 2^24, with no image data at all."""
    canvas = (width - 1) & 0xFFFFFF, (height - 1) & 0xFFFFFF
    vp8x = b"VP8X" + struct.pack("<I", 10) + b"\x00" * 4
    vp8x += canvas[0].to_bytes(3, "little") + canvas[1].to_bytes(3, "little")
    return b"RIFF" + struct.pack("<I", 4 + len(vp8x)) + b"WEBP" + vp8x


ABSURD: dict[str, Callable[[int, int], bytes]] = {
    "png": png_absurd,
    "gif": gif_absurd,
    "bmp": bmp_absurd,
    "webp": webp_absurd,
}


# -- hypothesis strategies ------------------------------------------------------------------
def _position(draw: st.DrawFn, size: int) -> int:
    if size <= 1:
        return 0
    if draw(st.booleans()):
        return draw(st.integers(0, min(size, HEADER_BYTES) - 1))
    return draw(st.integers(0, size - 1))


@st.composite
def mutated_files(draw: st.DrawFn, seeds: dict[str, bytes]) -> bytes:
    """A seed file truncated, bit-flipped, spliced with random bytes or cut and repeated."""
    data = bytearray(seeds[draw(st.sampled_from(sorted(seeds)))])
    kind = draw(st.sampled_from(["truncate", "flip", "flip-fixed-crc", "splice", "repeat"]))
    if kind == "truncate":
        return bytes(data[: draw(st.integers(0, len(data) - 1))])
    if kind in ("flip", "flip-fixed-crc"):
        for _ in range(draw(st.integers(1, 8))):
            data[_position(draw, len(data))] ^= 1 << draw(st.integers(0, 7))
        return fix_png_crcs(bytes(data)) if kind == "flip-fixed-crc" else bytes(data)
    if kind == "splice":
        at = _position(draw, len(data))
        junk = draw(st.binary(min_size=1, max_size=64))
        data[at : at + draw(st.integers(0, 64))] = junk
        return fix_png_crcs(bytes(data))
    at = _position(draw, len(data))
    return bytes(data[:at]) + bytes(data[at:]) * draw(st.integers(2, 4))


@st.composite
def absurd_headers(draw: st.DrawFn, jpeg: bytes) -> tuple[str, int, int, bytes]:
    """(format, width, height, file) for a header declaring dimensions from tiny to absurd."""
    fmt = draw(st.sampled_from(sorted(ABSURD) + ["jpeg"]))
    big = st.integers(2**14, 2**31 - 1)
    side = st.one_of(st.integers(0, 64), st.integers(65, 2**14), big)
    width, height = draw(side), draw(side)
    if fmt == "jpeg":
        return fmt, width & 0xFFFF, height & 0xFFFF, jpeg_absurd(jpeg, width, height)
    if fmt == "bmp" and draw(st.booleans()):
        height = -height  # top-down rows
    return fmt, width, height, ABSURD[fmt](max(width, 0), height)
