"""Deterministic tests of the bitstream container: round trips, layout, and every corruption.

Streams with hand-picked field values are built by ``pack_stream`` straight from the layout in
``docs/bitstream.md`` (independently of the encoder), so these tests double as a conformance
check of the written spec.
"""

from __future__ import annotations

import dataclasses
import hashlib
import struct
import zlib
from typing import Any

import pytest

from transtic.bitstream import (
    FORMAT_VERSION,
    MAGIC,
    AlignMode,
    BitstreamError,
    Container,
    EntropyParamMode,
    StreamHeader,
    decode_container,
    encode_container,
    peek_header,
)

FINGERPRINT = hashlib.sha256(b"transtic weights").digest()[:16]

HEADER = StreamHeader(
    codec="transtic",
    weights_fingerprint=FINGERPRINT,
    quality=3,
    task="detection",
    original_size=(480, 640),
    coded_size=(512, 640),
    align_mode=AlignMode.PAD,
    entropy_mode=EntropyParamMode.FIXED_POINT,
    y_shape=(320, 32, 40),
    z_shape=(192, 8, 10),
)
Y_STRING = b"\x00y-string\xff" * 3
Z_STRING = b"z\x00z"

# Offsets from the layout table in docs/bitstream.md.
OFF_MAJOR, OFF_MINOR, OFF_HEADER_LENGTH, OFF_TOTAL_LENGTH = 4, 5, 6, 8
OFF_QUALITY, OFF_ALIGN, OFF_ENTROPY = 28, 29, 30
FIXED_SIZE = 61


def pack_stream(**overrides: Any) -> bytes:
    """Build a stream field by field following docs/bitstream.md; lengths and CRC default to
    the consistent values, any field may be overridden (``crc=None`` means "compute it")."""
    f: dict[str, Any] = {
        "magic": b"TTIC",
        "major": 1,
        "minor": 0,
        "fingerprint": FINGERPRINT,
        "quality": 3,
        "align": 1,
        "entropy": 1,
        "codec": b"transtic",
        "task": b"detection",
        "original": (480, 640),
        "coded": (512, 640),
        "y": (320, 32, 40),
        "z": (192, 8, 10),
        "extension": b"",
        "y_string": Y_STRING,
        "z_string": Z_STRING,
        "crc": None,
    }
    f.update(overrides)
    codec_length = f.get("codec_length", len(f["codec"]))
    task_length = f.get("task_length", len(f["task"]))
    header_length = f.get(
        "header_length", FIXED_SIZE + len(f["codec"]) + len(f["task"]) + len(f["extension"])
    )
    y_length = f.get("y_length", len(f["y_string"]))
    z_length = f.get("z_length", len(f["z_string"]))
    body_size = header_length + len(f["y_string"]) + len(f["z_string"]) + 4
    if "header_length" in overrides:  # keep the real byte count consistent with the field
        body_size = FIXED_SIZE + len(f["codec"]) + len(f["task"]) + len(f["extension"])
        body_size += len(f["y_string"]) + len(f["z_string"]) + 4
    total_length = f.get("total_length", body_size)
    payload = struct.pack(
        "<4sBBHI16sBBBBB2H2H3H3HII",
        f["magic"],
        f["major"],
        f["minor"],
        header_length,
        total_length,
        f["fingerprint"],
        f["quality"],
        f["align"],
        f["entropy"],
        codec_length,
        task_length,
        *f["original"],
        *f["coded"],
        *f["y"],
        *f["z"],
        y_length,
        z_length,
    )
    payload += f["codec"] + f["task"] + f["extension"] + f["y_string"] + f["z_string"]
    crc = zlib.crc32(payload) if f["crc"] is None else f["crc"]
    return payload + struct.pack("<I", crc)


def reseal(stream: bytes | bytearray) -> bytes:
    """Recompute the trailing CRC32 after tampering with the payload."""
    payload = bytes(stream[:-4])
    return payload + struct.pack("<I", zlib.crc32(payload))


def expect_error(data: Any, *fragments: str, **kwargs: Any) -> BitstreamError:
    with pytest.raises(BitstreamError) as info:
        decode_container(data, **kwargs)
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    return info.value


# --------------------------------------------------------------------------- round trips


def variant(**changes: Any) -> StreamHeader:
    return dataclasses.replace(HEADER, **changes)


ROUND_TRIP_HEADERS = [
    HEADER,
    variant(  # smallest everything
        codec="tic", weights_fingerprint=bytes(16), quality=0, task="human",
        original_size=(1, 1), coded_size=(1, 1), align_mode=AlignMode.NONE,
        entropy_mode=EntropyParamMode.FLOAT, y_shape=(1, 1, 1), z_shape=(1, 1, 1),
    ),
    variant(  # longest names, most channels, 64 Mpixel (the default pixel limit)
        codec="t" * 32, weights_fingerprint=b"\xff" * 16, quality=255, task="~" * 32,
        original_size=(8192, 8192), coded_size=(8192, 8192), align_mode=AlignMode.NONE,
        y_shape=(4096, 512, 512), z_shape=(4096, 128, 128),
    ),
    variant(  # resized down: coded smaller than the original
        task="segmentation", original_size=(1000, 3000), coded_size=(256, 768),
        align_mode=AlignMode.RESIZE, y_shape=(192, 16, 48), z_shape=(128, 4, 12),
    ),
    variant(  # padded, maximum width, non-multiple heights
        codec="tic", task="classification", original_size=(17, 65535), coded_size=(64, 65535),
        y_shape=(8, 4, 4096), z_shape=(8, 1, 1024),
    ),
]  # fmt: skip


@pytest.mark.parametrize("header", ROUND_TRIP_HEADERS)
@pytest.mark.parametrize("strings", [(b"", b""), (Y_STRING, Z_STRING), (bytes(range(256)), b"z")])
def test_round_trip(header: StreamHeader, strings: tuple[bytes, bytes]) -> None:
    stream = encode_container(header, *strings)
    decoded = decode_container(stream)
    assert decoded == Container(header, *strings)
    assert isinstance(decoded.header.align_mode, AlignMode)
    assert isinstance(decoded.header.entropy_mode, EntropyParamMode)
    assert peek_header(stream) == header
    assert encode_container(decoded.header, decoded.y_string, decoded.z_string) == stream


def test_encoder_matches_written_layout() -> None:
    stream = encode_container(HEADER, Y_STRING, Z_STRING)
    assert stream == pack_stream()
    assert stream[:4] == MAGIC == b"TTIC"
    assert stream[OFF_MAJOR] == FORMAT_VERSION == 1
    assert stream[OFF_MINOR] == 0
    assert struct.unpack_from("<I", stream, OFF_TOTAL_LENGTH)[0] == len(stream)
    assert stream[OFF_QUALITY] == 3 and stream[OFF_ALIGN] == 1 and stream[OFF_ENTROPY] == 1
    assert struct.unpack("<I", stream[-4:])[0] == zlib.crc32(stream[:-4])


@pytest.mark.parametrize("wrap", [bytearray, memoryview])
def test_accepts_bytes_like(wrap: Any) -> None:
    stream = encode_container(HEADER, bytearray(Y_STRING), memoryview(Z_STRING))
    decoded = decode_container(wrap(stream))
    assert decoded == Container(HEADER, Y_STRING, Z_STRING)
    assert type(decoded.y_string) is bytes and type(decoded.z_string) is bytes


def test_encoder_normalises_plain_ints_and_lists() -> None:
    loose = variant(align_mode=1, entropy_mode=1, original_size=[480, 640], y_shape=[320, 32, 40])
    assert decode_container(encode_container(loose, b"", b"")).header == HEADER


def test_resize_mode_allows_smaller_coded_size() -> None:
    stream = pack_stream(align=2, original=(4000, 6000))
    assert decode_container(stream).header.original_size == (4000, 6000)


def test_minor_version_extension_is_skipped() -> None:
    stream = pack_stream(minor=7, extension=b"future fields")
    assert decode_container(stream) == Container(HEADER, Y_STRING, Z_STRING)


def test_error_is_a_value_error() -> None:
    assert issubclass(BitstreamError, ValueError)


# --------------------------------------------------------------------------- framing errors


@pytest.mark.parametrize("data", [b"", b"T", b"TTI"])
def test_empty_or_tiny_input(data: bytes) -> None:
    expect_error(data, "bitstream:")


@pytest.mark.parametrize("data", [b"\x89PNG\r\n\x1a\n" + bytes(80), b"TTIX" + bytes(80), b"x"])
def test_bad_magic(data: bytes) -> None:
    expect_error(data, "bad magic", "TTIC")


@pytest.mark.parametrize("data", ["TTIC", None, 42, [1, 2, 3]])
def test_non_bytes_input(data: Any) -> None:
    expect_error(data, "bytes-like")


@pytest.mark.parametrize("major", [0, 2, 255])
def test_unknown_major_version(major: int) -> None:
    expect_error(pack_stream(major=major, minor=3), "unsupported format version", f"{major}.3")


def test_truncated_at_every_offset() -> None:
    stream = pack_stream()
    for cut in range(len(stream)):
        error = expect_error(stream[:cut], "bitstream:")
        assert any(w in str(error) for w in ("truncated", "empty")), str(error)


@pytest.mark.parametrize("extra", [b"\x00", b"garbage", bytes(1000)])
def test_trailing_garbage(extra: bytes) -> None:
    expect_error(pack_stream() + extra, "length mismatch", f"{len(extra)} trailing bytes")


def test_every_bit_flip_is_rejected() -> None:
    stream = pack_stream()
    for index in range(len(stream)):
        for bit in range(8):
            mutated = bytearray(stream)
            mutated[index] ^= 1 << bit
            error = expect_error(bytes(mutated), "bitstream:")
            if index < 4:
                assert "bad magic" in str(error)
            elif index == OFF_MAJOR:
                assert "unsupported format version" in str(error)
            elif OFF_TOTAL_LENGTH <= index < OFF_TOTAL_LENGTH + 4:
                assert "length mismatch" in str(error)
            else:
                assert "checksum mismatch" in str(error), (index, bit, str(error))


def test_wrong_checksum() -> None:
    expect_error(pack_stream(crc=0xDEADBEEF), "checksum mismatch", "0xdeadbeef")


def test_peek_header_checks_checksum() -> None:
    with pytest.raises(BitstreamError, match="checksum"):
        peek_header(pack_stream(crc=1))


def test_input_over_max_bytes() -> None:
    stream = pack_stream()
    expect_error(stream, "max_bytes", max_bytes=len(stream) - 1)
    assert decode_container(stream, max_bytes=len(stream)).header == HEADER


def test_limits_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_bytes"):
        decode_container(pack_stream(), max_bytes=0)
    with pytest.raises(ValueError, match="max_pixels"):
        peek_header(pack_stream(), max_pixels=-1)


# --------------------------------------------------------------------------- field errors
# Each of these streams has a *valid* checksum, so the semantic checks are what must fire.

FIELD_ERRORS = [
    ({"align": 3}, ["align_mode = 3", "RESIZE=2"]),
    ({"entropy": 2}, ["entropy_mode = 2", "FIXED_POINT=1"]),
    ({"entropy": 255}, ["entropy_mode = 255"]),
    ({"original": (0, 640)}, ["original_size height = 0"]),
    ({"original": (480, 0), "align": 2}, ["original_size width = 0"]),
    ({"coded": (0, 640)}, ["coded_size height = 0"]),
    ({"original": (60000, 60000), "align": 2}, ["original_size", "max_pixels"]),
    ({"align": 0}, ["align_mode NONE", "coded_size == original_size"]),
    ({"original": (513, 640)}, ["align_mode PAD", "coded_size >= original_size"]),
    ({"y": (0, 32, 40)}, ["y_shape channels = 0"]),
    ({"y": (4097, 32, 40)}, ["y_shape channels = 4097"]),
    ({"z": (0, 8, 10)}, ["z_shape channels = 0"]),
    ({"y": (320, 33, 40)}, ["y_shape spatial size 33x40", "expected ceil(coded/16) = 32x40"]),
    ({"y": (320, 32, 41)}, ["y_shape spatial size"]),
    ({"z": (192, 8, 11)}, ["z_shape spatial size 8x11", "expected ceil(coded/64) = 8x10"]),
    ({"coded": (513, 640)}, ["y_shape spatial size", "513x640"]),
    ({"codec": b""}, ["codec must not be empty"]),
    ({"task": b""}, ["task must not be empty"]),
    ({"codec": b"x" * 33}, ["codec is 33 characters", "32"]),
    ({"codec": b"tr\xc3\xa9s"}, ["codec contains byte 0xc3"]),
    ({"task": b"human\n"}, ["task contains byte 0x0a"]),
    ({"task": b"two words"}, ["task contains byte 0x20"]),
    ({"y_length": 0xFFFFFFFF}, ["y_length = 4294967295", "max_bytes"]),
    ({"z_length": 0xFFFFFFFF}, ["z_length = 4294967295", "max_bytes"]),
    ({"y_length": len(Y_STRING) + 1}, ["do not add up"]),
    ({"z_length": 0}, ["do not add up"]),
    ({"codec_length": 255}, ["header_length", "codec_length 255"]),
    ({"header_length": FIXED_SIZE}, ["header_length = 61"]),
    ({"header_length": FIXED_SIZE + 17 + 1}, ["version 1.0 header is exactly 78"]),
    ({"extension": b"x"}, ["version 1.0 header is exactly 78"]),
    ({"minor": 1, "header_length": 0xFFFF}, ["do not add up"]),
    ({"y_string": b"", "z_string": b"", "codec": b"", "task": b""}, ["minimum 67"]),
    ({"total_length": 1000}, ["length mismatch", "(truncated)"]),
]


@pytest.mark.parametrize(("overrides", "fragments"), FIELD_ERRORS)
def test_field_errors(overrides: dict[str, Any], fragments: list[str]) -> None:
    stream = pack_stream(**overrides)
    expect_error(stream, "bitstream:", *fragments)
    with pytest.raises(BitstreamError):
        peek_header(stream)


def test_pixel_limit_is_configurable() -> None:
    stream = pack_stream()
    expect_error(stream, "coded_size 512x640", "max_pixels", max_pixels=480 * 640)
    expect_error(stream, "original_size 480x640", "max_pixels", max_pixels=480 * 640 - 1)


def test_huge_declared_length_in_tiny_stream_is_cheap() -> None:
    stream = pack_stream(y_length=0xFFFFFFF0, z_length=0xFFFFFFF0)
    expect_error(stream, "y_length", max_bytes=2**40)


# --------------------------------------------------------------------------- encoder checks

ENCODER_ERRORS = [
    ({"codec": ""}, "codec must not be empty"),
    ({"codec": b"tic"}, "codec must be a str"),
    ({"task": "détection"}, "task contains character"),
    ({"task": "t" * 33}, "task is 33 characters"),
    ({"weights_fingerprint": bytes(15)}, "exactly 16 bytes, got 15"),
    ({"weights_fingerprint": "0" * 16}, "weights_fingerprint must be bytes"),
    ({"quality": 256}, "quality = 256"),
    ({"quality": -1}, "quality = -1"),
    ({"quality": True}, "quality must be an integer"),
    ({"quality": 2.0}, "quality must be an integer"),
    ({"align_mode": 9}, "align_mode = 9"),
    ({"entropy_mode": "FLOAT"}, "entropy_mode must be an integer"),
    ({"original_size": (480,)}, "original_size must have 2 entries"),
    ({"original_size": "ab"}, "original_size must be a tuple"),
    ({"original_size": (480, 70000)}, "original_size width = 70000"),
    ({"coded_size": (512, -640)}, "coded_size width = -640"),
    ({"y_shape": (320, 32)}, "y_shape must have 3 entries"),
    ({"y_shape": (320, 32, 39)}, "y_shape spatial size"),
    ({"z_shape": (192, 9, 10)}, "z_shape spatial size"),
    ({"z_shape": (5000, 8, 10)}, "z_shape channels = 5000"),
]


@pytest.mark.parametrize(("changes", "fragment"), ENCODER_ERRORS)
def test_encoder_rejects_invalid_header(changes: dict[str, Any], fragment: str) -> None:
    bad = dataclasses.replace(HEADER, **changes)
    with pytest.raises(BitstreamError, match="bitstream: ") as info:
        encode_container(bad, Y_STRING, Z_STRING)
    assert fragment in str(info.value)


def test_encoder_rejects_bad_strings_and_sizes() -> None:
    with pytest.raises(BitstreamError, match="header must be a StreamHeader"):
        encode_container("header", b"", b"")  # type: ignore[arg-type]
    with pytest.raises(BitstreamError, match="y_string must be bytes-like"):
        encode_container(HEADER, "y", b"")  # type: ignore[arg-type]
    with pytest.raises(BitstreamError, match="z_string must be bytes-like"):
        encode_container(HEADER, b"", None)  # type: ignore[arg-type]
    with pytest.raises(BitstreamError, match="max_bytes"):
        encode_container(HEADER, bytes(100), b"", max_bytes=100)
    with pytest.raises(BitstreamError, match="max_pixels"):
        encode_container(HEADER, b"", b"", max_pixels=1000)


def test_released_memoryview() -> None:
    view = memoryview(pack_stream())
    view.release()
    expect_error(view, "released")
