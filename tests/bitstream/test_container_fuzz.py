"""Property-based tests: whatever the input, the decoder returns an equal value or raises
BitstreamError -- never another exception -- and anything it accepts is canonical."""

from __future__ import annotations

import struct
import zlib
from datetime import timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from transtic.bitstream import (
    DEFAULT_MAX_PIXELS,
    MAGIC,
    MAX_CHANNELS,
    MAX_DIM,
    AlignMode,
    BitstreamError,
    Container,
    EntropyParamMode,
    StreamHeader,
    decode_container,
    encode_container,
    peek_header,
)

FUZZ = settings(max_examples=250, deadline=timedelta(seconds=1), database=None)

VISIBLE_ASCII = "".join(chr(c) for c in range(0x21, 0x7F))
NAMES = st.text(alphabet=VISIBLE_ASCII, min_size=1, max_size=32)
STRINGS = st.binary(max_size=48)


def ceil_div(value: int, divisor: int) -> int:
    return -(-value // divisor)


@st.composite
def headers(draw: st.DrawFn, max_pixels: int = DEFAULT_MAX_PIXELS) -> StreamHeader:
    align = draw(st.sampled_from(AlignMode))
    orig_h = draw(st.integers(1, min(MAX_DIM, max_pixels)))
    orig_w = draw(st.integers(1, min(MAX_DIM, max_pixels // orig_h)))
    if align is AlignMode.NONE:
        coded_h, coded_w = orig_h, orig_w
    elif align is AlignMode.PAD:
        coded_h = draw(st.integers(orig_h, min(MAX_DIM, max_pixels // orig_w)))
        coded_w = draw(st.integers(orig_w, min(MAX_DIM, max_pixels // coded_h)))
    else:
        coded_h = draw(st.integers(1, min(MAX_DIM, max_pixels)))
        coded_w = draw(st.integers(1, min(MAX_DIM, max_pixels // coded_h)))
    return StreamHeader(
        codec=draw(NAMES),
        weights_fingerprint=draw(st.binary(min_size=16, max_size=16)),
        quality=draw(st.integers(0, 255)),
        task=draw(st.one_of(st.sampled_from(["human", "classification", "detection"]), NAMES)),
        original_size=(orig_h, orig_w),
        coded_size=(coded_h, coded_w),
        align_mode=align,
        entropy_mode=draw(st.sampled_from(EntropyParamMode)),
        y_shape=(draw(st.integers(1, MAX_CHANNELS)), ceil_div(coded_h, 16), ceil_div(coded_w, 16)),
        z_shape=(draw(st.integers(1, MAX_CHANNELS)), ceil_div(coded_h, 64), ceil_div(coded_w, 64)),
    )


@st.composite
def valid_streams(draw: st.DrawFn) -> bytes:
    return encode_container(draw(headers()), draw(STRINGS), draw(STRINGS))


def check_decode(data: Any, **limits: int) -> Container | None:
    """Decode ``data``: a BitstreamError with a real message, or a canonical Container."""
    try:
        result = decode_container(data, **limits)
    except BitstreamError as error:
        message = str(error)
        assert message.startswith("bitstream: ") and len(message) > 20, message
        return None
    assert isinstance(result, Container)
    assert peek_header(data, **limits) == result.header
    if bytes(data)[5] == 0:  # a 1.0 stream has exactly one encoding: decoding is injective
        assert encode_container(result.header, result.y_string, result.z_string) == bytes(data)
    return result


def reseal(payload: bytes) -> bytes:
    return payload + struct.pack("<I", zlib.crc32(payload))


@FUZZ
@given(header=headers(), y_string=STRINGS, z_string=STRINGS)
def test_valid_headers_round_trip(header: StreamHeader, y_string: bytes, z_string: bytes) -> None:
    stream = encode_container(header, y_string, z_string)
    assert check_decode(stream) == Container(header, y_string, z_string)


@FUZZ
@given(max_pixels=st.integers(1, 2**20), data=st.data())
def test_pixel_limit_is_honoured(max_pixels: int, data: st.DataObject) -> None:
    header = data.draw(headers(max_pixels=max_pixels))
    stream = encode_container(header, b"y", b"z", max_pixels=max_pixels)
    assert check_decode(stream, max_pixels=max_pixels) == Container(header, b"y", b"z")


@FUZZ
@given(data=st.binary(max_size=300))
def test_random_bytes(data: bytes) -> None:
    assert check_decode(data) is None


@FUZZ
@given(
    body=st.binary(min_size=49, max_size=200),
    major=st.sampled_from([1, 1, 1, 2]),
    minor=st.integers(0, 2),
    header_length=st.one_of(st.integers(61, 140), st.integers(0, 0xFFFF)),
)
def test_random_body_behind_valid_prefix(
    body: bytes, major: int, minor: int, header_length: int
) -> None:
    """Random content with a valid magic, version, length and checksum reaches field parsing."""
    prefix = MAGIC + struct.pack("<BBHI", major, minor, header_length, 12 + len(body) + 4)
    check_decode(reseal(prefix + body))


@st.composite
def mutated(draw: st.DrawFn, base: bytes) -> bytes:
    stream = bytearray(base)
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "truncate", "insert", "delete", "overwrite"]))
        if not stream:
            break
        index = draw(st.integers(0, len(stream) - 1))
        if op == "flip":
            stream[index] ^= 1 << draw(st.integers(0, 7))
        elif op == "truncate":
            del stream[index:]
        elif op == "insert":
            stream[index:index] = draw(st.binary(min_size=1, max_size=8))
        elif op == "delete":
            del stream[index : index + draw(st.integers(1, 8))]
        else:
            stream[index] = draw(st.integers(0, 255))
    return bytes(stream)


@FUZZ
@given(data=st.data())
def test_mutations_of_valid_stream(data: st.DataObject) -> None:
    base = data.draw(valid_streams())
    stream = data.draw(mutated(base))
    result = check_decode(stream)
    if stream != base:
        assert result is None


@FUZZ
@given(data=st.data())
def test_resealed_mutations_reach_field_checks(data: st.DataObject) -> None:
    """Mutate the header fields, then repair length and checksum so the field checks run."""
    base = data.draw(valid_streams())
    payload = bytearray(base[:-4])
    for _ in range(data.draw(st.integers(1, 3))):
        index = data.draw(st.integers(12, 60))
        payload[index] = data.draw(st.integers(0, 255))
    check_decode(reseal(bytes(payload)))


U8 = st.one_of(st.integers(0, 3), st.integers(0, 255))
U16 = st.one_of(st.integers(0, 70), st.integers(0, 0xFFFF))
U32 = st.one_of(st.integers(0, 64), st.integers(0, 0xFFFFFFFF))
RAW_NAMES = st.one_of(NAMES.map(str.encode), NAMES.map(str.encode), st.binary(max_size=40))
MODES = st.one_of(st.sampled_from([0, 1, 2]), U8)
RARELY = st.sampled_from([False, False, False, True])


@st.composite
def shape_fields(draw: st.DrawFn) -> list[int]:
    """original (H, W), coded (H, W), y (C, H, W), z (C, H, W): often consistent, often not."""
    orig = [draw(U16), draw(U16)]
    coded = draw(st.sampled_from([orig, [draw(U16), draw(U16)]]))
    latents = []
    for stride in (16, 64):
        spatial = [ceil_div(coded[0], stride), ceil_div(coded[1], stride)]
        latents += [draw(U16), *draw(st.sampled_from([spatial, [draw(U16), draw(U16)]]))]
    return orig + coded + latents


@FUZZ
@given(
    modes=st.tuples(U8, MODES, MODES),
    codec=RAW_NAMES,
    task=RAW_NAMES,
    dims=shape_fields(),
    minor=st.integers(0, 1),
    data=st.data(),
)
def test_arbitrary_field_values(
    modes: tuple[int, int, int],
    codec: bytes,
    task: bytes,
    dims: list[int],
    minor: int,
    data: st.DataObject,
) -> None:
    """Every field drawn independently (mostly invalid combinations); the checksum, and usually
    the section lengths, are kept consistent so that the field checks are reached."""
    strings = data.draw(st.binary(max_size=40))
    split = data.draw(st.integers(0, len(strings)))
    lengths = [split, len(strings) - split]
    if data.draw(RARELY):
        lengths = [data.draw(U32), data.draw(U32)]
    name_lengths = [min(len(codec), 255), min(len(task), 255)]
    if data.draw(RARELY):
        name_lengths = [data.draw(U8), data.draw(U8)]
    body = struct.pack("<16sBBBBB10HII", b"\x42" * 16, *modes, *name_lengths, *dims, *lengths)
    body += codec + task + strings
    header_length = 61 + len(codec) + len(task)
    prefix = MAGIC + struct.pack("<BBHI", 1, minor, header_length, 12 + len(body) + 4)
    check_decode(reseal(prefix + body))


@FUZZ
@given(data=st.one_of(st.binary(max_size=100).map(bytearray), st.binary(max_size=100)))
def test_bytes_like_and_small_limits(data: bytes) -> None:
    check_decode(memoryview(data), max_bytes=64, max_pixels=4096)
