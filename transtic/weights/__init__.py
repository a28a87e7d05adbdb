"""Weights registry and manager: what the models need, where to find it, how to fetch it."""

from transtic.weights.catalog import default_registry
from transtic.weights.cli import default_cache_dir, weights_main
from transtic.weights.errors import (
    ChecksumError,
    DuplicateWeightsError,
    UnknownWeightsError,
    WeightsError,
    WeightsNotFoundError,
)
from transtic.weights.loading import (
    CodecFile,
    CodecFileNotFoundError,
    LoadedCodec,
    UnknownCodecError,
    load_codec,
    locate_codec,
)
from transtic.weights.manager import (
    list_weights,
    local_weights,
    package_file,
    pull,
    resolve,
    sha256_file,
)
from transtic.weights.registry import WeightsEntry, WeightsKind, WeightsRegistry

__all__ = [
    "ChecksumError",
    "CodecFile",
    "CodecFileNotFoundError",
    "DuplicateWeightsError",
    "LoadedCodec",
    "UnknownCodecError",
    "UnknownWeightsError",
    "WeightsEntry",
    "WeightsError",
    "WeightsKind",
    "WeightsNotFoundError",
    "WeightsRegistry",
    "default_cache_dir",
    "default_registry",
    "list_weights",
    "local_weights",
    "load_codec",
    "locate_codec",
    "package_file",
    "pull",
    "resolve",
    "sha256_file",
    "weights_main",
]
