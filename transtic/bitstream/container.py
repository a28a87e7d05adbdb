"""Versioned, self-describing container for one coded image (format 1.0).

Layout (little-endian, see ``docs/bitstream.md`` for the normative table)::

    0   magic "TTIC"          4s     | 33  original_size H, W   2 x u16
    4   major version (=1)    u8     | 37  coded_size H, W      2 x u16
    5   minor version (=0)    u8     | 41  y_shape C, H, W      3 x u16
    6   header_length         u16    | 47  z_shape C, H, W      3 x u16
    8   total_length          u32    | 53  y_length             u32
    12  weights_fingerprint   16s    | 57  z_length             u32
    28  quality               u8     | 61  codec name           codec_length bytes
    29  align_mode            u8     |     task name            task_length bytes
    30  entropy_mode          u8     |     extension (minor >= 1 only), up to header_length
    31  codec_length          u8     | header_length: y_string, then z_string
    32  task_length           u8     | total_length - 4: CRC32 of every preceding byte (u32)

Every parse failure raises :class:`BitstreamError`; nothing read from the input is trusted.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from typing import Any

from .header import (
    DEFAULT_MAX_BYTES,
    DEFAULT_MAX_PIXELS,
    AlignMode,
    BitstreamError,
    EntropyParamMode,
    StreamHeader,
    decode_name,
    validate_header,
)

__all__ = [
    "AlignMode",
    "BitstreamError",
    "BytesLike",
    "CHECKSUM_SIZE",
    "Container",
    "FIXED_HEADER_SIZE",
    "FORMAT_MINOR_VERSION",
    "FORMAT_VERSION",
    "MAGIC",
    "MIN_STREAM_SIZE",
    "PREFIX_SIZE",
    "EntropyParamMode",
    "StreamHeader",
    "decode_container",
    "encode_container",
    "peek_header",
]

#: Four bytes every stream starts with.
MAGIC = b"TTIC"
#: Major format version written by this encoder; a decoder rejects any other major version.
FORMAT_VERSION = 1
#: Minor format version written by this encoder; any minor version of a known major is read.
FORMAT_MINOR_VERSION = 0

# magic, major, minor, header_length, total_length
_PREFIX = struct.Struct("<4sBBHI")
# fingerprint, quality, align_mode, entropy_mode, codec_length, task_length,
# original (H, W), coded (H, W), y (C, H, W), z (C, H, W), y_length, z_length
_BODY = struct.Struct("<16sBBBBB2H2H3H3HII")
_CHECKSUM = struct.Struct("<I")

#: Bytes of the version-independent prefix (magic, versions, header_length, total_length).
PREFIX_SIZE = _PREFIX.size
#: Bytes of the fixed-width part of the 1.x header, before the variable-length names.
FIXED_HEADER_SIZE = _PREFIX.size + _BODY.size
#: Bytes of the trailing CRC32.
CHECKSUM_SIZE = _CHECKSUM.size
#: Smallest possible well-formed stream (1-byte names, empty strings).
MIN_STREAM_SIZE = FIXED_HEADER_SIZE + 2 + CHECKSUM_SIZE

#: Inputs accepted wherever the API says ``bytes`` (copied into ``bytes`` internally).
BytesLike = bytes | bytearray | memoryview

_MAX_TOTAL_LENGTH = 0xFFFFFFFF


@dataclass(frozen=True)
class Container:
    """A decoded stream: the validated header and the two entropy-coded strings."""

    header: StreamHeader
    y_string: bytes
    z_string: bytes


def _fail(message: str) -> BitstreamError:
    return BitstreamError(f"bitstream: {message}")


def _check_limit(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value


def _as_bytes(data: Any, field: str) -> bytes:
    if isinstance(data, bytes):
        return data
    if isinstance(data, (bytearray, memoryview)):
        return bytes(data)
    raise _fail(f"{field} must be bytes-like, got {type(data).__name__}")


def encode_container(
    header: StreamHeader,
    y_string: BytesLike,
    z_string: BytesLike,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> bytes:
    """Serialise ``header`` and the two strings into a format-1.0 stream.

    The header is validated with the same rules (and limits) the decoder applies, so every
    stream this returns is accepted by :func:`decode_container` with the same limits.
    Raises :class:`BitstreamError` on an invalid header, strings or an over-size result.
    """
    _check_limit(max_bytes, "max_bytes")
    _check_limit(max_pixels, "max_pixels")
    checked = validate_header(header, max_pixels=max_pixels)
    y_bytes = _as_bytes(y_string, "y_string")
    z_bytes = _as_bytes(z_string, "z_string")
    codec = checked.codec.encode("ascii")
    task = checked.task.encode("ascii")
    header_length = FIXED_HEADER_SIZE + len(codec) + len(task)
    total_length = header_length + len(y_bytes) + len(z_bytes) + CHECKSUM_SIZE
    if total_length > min(max_bytes, _MAX_TOTAL_LENGTH):
        raise _fail(
            f"stream would be {total_length} bytes, more than max_bytes = "
            f"{min(max_bytes, _MAX_TOTAL_LENGTH)}"
        )
    body = _BODY.pack(
        checked.weights_fingerprint,
        checked.quality,
        int(checked.align_mode),
        int(checked.entropy_mode),
        len(codec),
        len(task),
        *checked.original_size,
        *checked.coded_size,
        *checked.y_shape,
        *checked.z_shape,
        len(y_bytes),
        len(z_bytes),
    )
    prefix = _PREFIX.pack(MAGIC, FORMAT_VERSION, FORMAT_MINOR_VERSION, header_length, total_length)
    payload = b"".join((prefix, body, codec, task, y_bytes, z_bytes))
    return payload + _CHECKSUM.pack(zlib.crc32(payload))


def _input_bytes(data: Any, max_bytes: int) -> bytes:
    """Return ``data`` as ``bytes`` after the type, emptiness and ``max_bytes`` checks."""
    if isinstance(data, (bytes, bytearray)):
        size = len(data)
    elif isinstance(data, memoryview):
        try:
            size = data.nbytes
        except ValueError:  # a released memoryview
            raise _fail("input memoryview has been released") from None
    else:
        raise _fail(f"input must be bytes-like, got {type(data).__name__}")
    if size == 0:
        raise _fail("empty input")
    if size > max_bytes:
        raise _fail(f"input is {size} bytes, more than max_bytes = {max_bytes}")
    return data if isinstance(data, bytes) else bytes(data)


def _parse(data: Any, max_bytes: int, max_pixels: int) -> tuple[StreamHeader, bytes, int, int, int]:
    """Validate ``data``; return (header, data as bytes, header_length, y_length, z_length)."""
    _check_limit(max_bytes, "max_bytes")
    _check_limit(max_pixels, "max_pixels")
    buf = _input_bytes(data, max_bytes)
    size = len(buf)
    view = memoryview(buf)
    head = buf[:PREFIX_SIZE]
    if head[:4] != MAGIC[: len(head[:4])]:
        raise _fail(f"bad magic {head[:4]!r} (expected {MAGIC!r}); not a TransTIC stream")
    if size < PREFIX_SIZE:
        raise _fail(f"truncated: {size} bytes is shorter than the {PREFIX_SIZE}-byte prefix")
    _, major, minor, header_length, total_length = _PREFIX.unpack(head)
    if major != FORMAT_VERSION:
        raise _fail(
            f"unsupported format version {major}.{minor}; this decoder reads major version "
            f"{FORMAT_VERSION} only"
        )
    if total_length != size:
        kind = "truncated" if size < total_length else f"{size - total_length} trailing bytes"
        raise _fail(
            f"length mismatch: total_length field says {total_length} bytes but the input "
            f"has {size} ({kind})"
        )
    if size < MIN_STREAM_SIZE:
        raise _fail(f"truncated: {size} bytes is shorter than the minimum {MIN_STREAM_SIZE}")
    (stored_crc,) = _CHECKSUM.unpack_from(buf, size - CHECKSUM_SIZE)
    computed_crc = zlib.crc32(view[: size - CHECKSUM_SIZE])
    if stored_crc != computed_crc:
        raise _fail(
            f"checksum mismatch (stored 0x{stored_crc:08x}, computed 0x{computed_crc:08x}); "
            "the stream is corrupted"
        )

    (
        fingerprint,
        quality,
        align_mode,
        entropy_mode,
        codec_length,
        task_length,
        orig_h,
        orig_w,
        coded_h,
        coded_w,
        y_c,
        y_h,
        y_w,
        z_c,
        z_h,
        z_w,
        y_length,
        z_length,
    ) = _BODY.unpack_from(buf, PREFIX_SIZE)

    names_end = FIXED_HEADER_SIZE + codec_length + task_length
    if header_length < names_end:
        raise _fail(
            f"header_length = {header_length} is smaller than the {names_end} bytes the fixed "
            f"fields and names (codec_length {codec_length}, task_length {task_length}) need"
        )
    if minor == 0 and header_length != names_end:
        raise _fail(
            f"header_length = {header_length} but a version 1.0 header is exactly {names_end} bytes"
        )
    for field, length in (("y_length", y_length), ("z_length", z_length)):
        if length > max_bytes:
            raise _fail(f"{field} = {length} is more than max_bytes = {max_bytes}")
    expected_total = header_length + y_length + z_length + CHECKSUM_SIZE
    if expected_total != size:
        raise _fail(
            f"section lengths do not add up: header_length {header_length} + y_length "
            f"{y_length} + z_length {z_length} + checksum {CHECKSUM_SIZE} = {expected_total}, "
            f"but total_length is {size}"
        )
    codec_end = FIXED_HEADER_SIZE + codec_length
    codec = decode_name(buf[FIXED_HEADER_SIZE:codec_end], "codec")
    task = decode_name(buf[codec_end:names_end], "task")
    raw = StreamHeader(
        codec=codec,
        weights_fingerprint=fingerprint,
        quality=quality,
        task=task,
        original_size=(orig_h, orig_w),
        coded_size=(coded_h, coded_w),
        align_mode=align_mode,
        entropy_mode=entropy_mode,
        y_shape=(y_c, y_h, y_w),
        z_shape=(z_c, z_h, z_w),
    )
    header = validate_header(raw, max_pixels=max_pixels)
    return header, buf, header_length, y_length, z_length


def decode_container(
    data: BytesLike, *, max_bytes: int = DEFAULT_MAX_BYTES, max_pixels: int = DEFAULT_MAX_PIXELS
) -> Container:
    """Parse and fully validate a stream.

    ``max_bytes`` caps the size of the whole input (and therefore of each string);
    ``max_pixels`` caps ``H * W`` of ``original_size`` and of ``coded_size``.
    Raises :class:`BitstreamError` (only) if anything is wrong with ``data``.
    """
    header, buf, header_length, y_length, z_length = _parse(data, max_bytes, max_pixels)
    y_end = header_length + y_length
    return Container(
        header=header,
        y_string=buf[header_length:y_end],
        z_string=buf[y_end : y_end + z_length],
    )


def peek_header(
    data: BytesLike, *, max_bytes: int = DEFAULT_MAX_BYTES, max_pixels: int = DEFAULT_MAX_PIXELS
) -> StreamHeader:
    """Validate ``data`` exactly like :func:`decode_container` (checksum included) and return
    only its header, without copying the coded strings."""
    return _parse(data, max_bytes, max_pixels)[0]
