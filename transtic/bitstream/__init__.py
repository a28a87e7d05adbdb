"""Versioned, self-describing bitstream container for TransTIC coded images.

See ``docs/bitstream.md`` for the byte layout and the versioning / error rules.
"""

from .container import (
    CHECKSUM_SIZE,
    FIXED_HEADER_SIZE,
    FORMAT_MINOR_VERSION,
    FORMAT_VERSION,
    MAGIC,
    MIN_STREAM_SIZE,
    PREFIX_SIZE,
    BytesLike,
    Container,
    decode_container,
    encode_container,
    peek_header,
)
from .header import (
    DEFAULT_MAX_BYTES,
    DEFAULT_MAX_PIXELS,
    FINGERPRINT_SIZE,
    HYPER_LATENT_STRIDE,
    LATENT_STRIDE,
    MAX_CHANNELS,
    MAX_DIM,
    MAX_NAME_BYTES,
    AlignMode,
    BitstreamError,
    EntropyParamMode,
    StreamHeader,
    validate_header,
)

__all__ = [
    "CHECKSUM_SIZE",
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_PIXELS",
    "FINGERPRINT_SIZE",
    "FIXED_HEADER_SIZE",
    "FORMAT_MINOR_VERSION",
    "FORMAT_VERSION",
    "HYPER_LATENT_STRIDE",
    "LATENT_STRIDE",
    "MAGIC",
    "MAX_CHANNELS",
    "MAX_DIM",
    "MAX_NAME_BYTES",
    "MIN_STREAM_SIZE",
    "PREFIX_SIZE",
    "AlignMode",
    "BytesLike",
    "BitstreamError",
    "Container",
    "EntropyParamMode",
    "StreamHeader",
    "decode_container",
    "encode_container",
    "peek_header",
    "validate_header",
]
