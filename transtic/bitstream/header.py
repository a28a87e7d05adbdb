"""Header model of the TransTIC bitstream container: error type, enums, header, validation.

The byte layout lives in :mod:`transtic.bitstream.container`; this module only defines the
logical header and the rules a header must satisfy. The same rules are applied when writing
(so we never produce a stream we cannot read back) and when reading (so nothing parsed from
untrusted bytes is trusted). See ``docs/bitstream.md`` for the normative specification.
"""

from __future__ import annotations

import enum
import operator
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "AlignMode",
    "BitstreamError",
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_PIXELS",
    "EntropyParamMode",
    "FINGERPRINT_SIZE",
    "HYPER_LATENT_STRIDE",
    "LATENT_STRIDE",
    "MAX_CHANNELS",
    "MAX_DIM",
    "MAX_NAME_BYTES",
    "StreamHeader",
    "validate_header",
]

#: Length in bytes of ``StreamHeader.weights_fingerprint`` (truncated sha256 of the weights).
FINGERPRINT_SIZE = 16
#: Maximum length in bytes of the ``codec`` and ``task`` names.
MAX_NAME_BYTES = 32
#: Largest image / coded dimension (fits an unsigned 16-bit field).
MAX_DIM = 65535
#: Largest channel count of ``y_shape`` / ``z_shape``.
MAX_CHANNELS = 4096
#: Spatial down-sampling factor from ``coded_size`` to the latent ``y``.
LATENT_STRIDE = 16
#: Spatial down-sampling factor from ``coded_size`` to the hyper-latent ``z``.
HYPER_LATENT_STRIDE = 64
#: Default cap on the size of a whole stream accepted by the decoder (64 MiB).
DEFAULT_MAX_BYTES = 64 * 2**20
#: Default cap on ``H * W`` of ``original_size`` and ``coded_size`` (64 Mpixel).
DEFAULT_MAX_PIXELS = 2**26

# Names are restricted to visible ASCII (no space, no control characters) so that they are
# safe to echo into logs, HTTP headers and file names.
_NAME_MIN_CHAR = 0x21
_NAME_MAX_CHAR = 0x7E


class BitstreamError(ValueError):
    """The one error raised for any malformed, corrupted, unsupported or invalid stream/header.

    The message always names the offending field or check, e.g.
    ``"bitstream: checksum mismatch (stored 0x1234abcd, computed 0x99887766)"``.
    """


class AlignMode(enum.IntEnum):
    """How the input image was brought to the size the network coded."""

    NONE = 0  #: coded as-is; ``coded_size == original_size``
    PAD = 1  #: padded; ``coded_size >= original_size`` per dimension, crop after decoding
    RESIZE = 2  #: resampled to ``coded_size``; resample back to ``original_size`` after decoding


class EntropyParamMode(enum.IntEnum):
    """How the decoder must compute the entropy-model parameters (see ``docs/bitstream.md``)."""

    FLOAT = 0  #: ordinary floating-point evaluation
    FIXED_POINT = 1  #: deterministic fixed-point evaluation


@dataclass(frozen=True)
class StreamHeader:
    """Self-describing metadata of one coded image.

    Construction does not validate; :func:`validate_header` (called by the encoder and the
    decoder) does.
    """

    codec: str
    weights_fingerprint: bytes
    quality: int
    task: str
    original_size: tuple[int, int]
    coded_size: tuple[int, int]
    align_mode: AlignMode
    entropy_mode: EntropyParamMode
    y_shape: tuple[int, int, int]
    z_shape: tuple[int, int, int]


def _fail(message: str) -> BitstreamError:
    return BitstreamError(f"bitstream: {message}")


def _as_int(value: Any, field: str) -> int:
    if isinstance(value, bool):
        raise _fail(f"{field} must be an integer, got bool {value!r}")
    try:
        return operator.index(value)
    except TypeError:
        raise _fail(f"{field} must be an integer, got {type(value).__name__}") from None


def _check_range(value: Any, field: str, low: int, high: int) -> int:
    number = _as_int(value, field)
    if not low <= number <= high:
        raise _fail(f"{field} = {number} is out of range [{low}, {high}]")
    return number


def _check_ints(value: Any, field: str, count: int) -> tuple[int, ...]:
    if isinstance(value, (str, bytes, bytearray)) or not isinstance(value, Sequence):
        raise _fail(f"{field} must be a tuple of {count} integers, got {type(value).__name__}")
    if len(value) != count:
        raise _fail(f"{field} must have {count} entries, got {len(value)}")
    return tuple(_as_int(v, f"{field}[{i}]") for i, v in enumerate(value))


def check_name(value: Any, field: str) -> str:
    """Validate a ``codec``/``task`` name: 1..32 visible ASCII characters (0x21..0x7E)."""
    if not isinstance(value, str):
        raise _fail(f"{field} must be a str, got {type(value).__name__}")
    if not value:
        raise _fail(f"{field} must not be empty")
    if len(value) > MAX_NAME_BYTES:
        raise _fail(f"{field} is {len(value)} characters long; the limit is {MAX_NAME_BYTES}")
    for char in value:
        if not _NAME_MIN_CHAR <= ord(char) <= _NAME_MAX_CHAR:
            raise _fail(
                f"{field} contains character {char!r}; only visible ASCII (0x21..0x7E) is allowed"
            )
    return value


def decode_name(raw: bytes, field: str) -> str:
    """Decode a name read from a stream, with the same rules as :func:`check_name`."""
    for byte in raw:
        if not _NAME_MIN_CHAR <= byte <= _NAME_MAX_CHAR:
            raise _fail(
                f"{field} contains byte 0x{byte:02x}; only visible ASCII (0x21..0x7E) is allowed"
            )
    return check_name(raw.decode("ascii"), field)


def check_enum(value: Any, enum_type: type[enum.IntEnum], field: str) -> Any:
    """Return ``enum_type(value)`` or raise :class:`BitstreamError` naming the field."""
    number = _as_int(value, field)
    try:
        return enum_type(number)
    except ValueError:
        allowed = ", ".join(f"{m.name}={m.value}" for m in enum_type)
        raise _fail(f"{field} = {number} is not a known value (expected {allowed})") from None


def _check_size(value: Any, field: str, max_pixels: int) -> tuple[int, int]:
    height, width = _check_ints(value, field, 2)
    _check_range(height, f"{field} height", 1, MAX_DIM)
    _check_range(width, f"{field} width", 1, MAX_DIM)
    if height * width > max_pixels:
        raise _fail(
            f"{field} {height}x{width} has {height * width} pixels, more than max_pixels "
            f"= {max_pixels}"
        )
    return height, width


def _ceil_div(value: int, divisor: int) -> int:
    return -(-value // divisor)


def _check_latent(
    value: Any, field: str, coded: tuple[int, int], stride: int
) -> tuple[int, int, int]:
    channels, height, width = _check_ints(value, field, 3)
    _check_range(channels, f"{field} channels", 1, MAX_CHANNELS)
    expected = (_ceil_div(coded[0], stride), _ceil_div(coded[1], stride))
    if (height, width) != expected:
        raise _fail(
            f"{field} spatial size {height}x{width} is inconsistent with coded_size "
            f"{coded[0]}x{coded[1]} (expected ceil(coded/{stride}) = {expected[0]}x{expected[1]})"
        )
    return channels, height, width


def validate_header(header: Any, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> StreamHeader:
    """Check every field of ``header``; return it normalised (plain ints/tuples, enum members).

    Raises :class:`BitstreamError` naming the first offending field.
    """
    if not isinstance(header, StreamHeader):
        raise _fail(f"header must be a StreamHeader, got {type(header).__name__}")
    codec = check_name(header.codec, "codec")
    task = check_name(header.task, "task")
    fingerprint = header.weights_fingerprint
    if not isinstance(fingerprint, (bytes, bytearray, memoryview)):
        raise _fail(f"weights_fingerprint must be bytes, got {type(fingerprint).__name__}")
    fingerprint = bytes(fingerprint)
    if len(fingerprint) != FINGERPRINT_SIZE:
        raise _fail(
            f"weights_fingerprint must be exactly {FINGERPRINT_SIZE} bytes, got {len(fingerprint)}"
        )
    quality = _check_range(header.quality, "quality", 0, 255)
    align_mode = check_enum(header.align_mode, AlignMode, "align_mode")
    entropy_mode = check_enum(header.entropy_mode, EntropyParamMode, "entropy_mode")
    original = _check_size(header.original_size, "original_size", max_pixels)
    coded = _check_size(header.coded_size, "coded_size", max_pixels)
    if align_mode is AlignMode.NONE and coded != original:
        raise _fail(
            f"align_mode NONE requires coded_size == original_size, got coded_size "
            f"{coded[0]}x{coded[1]} and original_size {original[0]}x{original[1]}"
        )
    if align_mode is AlignMode.PAD and (coded[0] < original[0] or coded[1] < original[1]):
        raise _fail(
            f"align_mode PAD requires coded_size >= original_size per dimension, got coded_size "
            f"{coded[0]}x{coded[1]} and original_size {original[0]}x{original[1]}"
        )
    y_shape = _check_latent(header.y_shape, "y_shape", coded, LATENT_STRIDE)
    z_shape = _check_latent(header.z_shape, "z_shape", coded, HYPER_LATENT_STRIDE)
    return StreamHeader(
        codec=codec,
        weights_fingerprint=fingerprint,
        quality=quality,
        task=task,
        original_size=original,
        coded_size=coded,
        align_mode=align_mode,
        entropy_mode=entropy_mode,
        y_shape=y_shape,
        z_shape=z_shape,
    )
