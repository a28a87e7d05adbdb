"""Codec architecture presets and the rate-distortion λ per quality level, as data.

The model registry (:func:`transtic.models.create_model`) registers exactly the presets
below, and the weights catalog, the shipped weights' metadata and the training CLI read
the same tables, so an architecture or a λ is written down once. Pure data: importing
this module loads no model code (the catalog stays cheap to list).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any


@dataclass(frozen=True)
class ArchitecturePreset:
    """A registered codec architecture: ``CodecConfig`` fields, with or without prompts."""

    name: str
    prompted: bool  # TransTIC (instance and task prompts) rather than the plain TIC
    config: Mapping[str, Any]
    description: str


def _frozen(values: dict[str, Any]) -> Mapping[str, Any]:
    return MappingProxyType(values)


# The paper uses N=128, M=192 for qualities 1-4 and N=192, M=320 for 5-8.
PAPER = _frozen({"N": 128, "M": 192})
PAPER_HIGH_RATE = _frozen({"N": 192, "M": 320})
# Small enough to run in unit tests, with every structural feature of the real model.
TINY = _frozen({"N": 32, "M": 48, "num_heads": (2, 2, 2, 4, 4, 4)})
# CPU-trainable default: same block structure, two blocks per stage and narrower
# channels, so a usable codec trains in well under an hour on two CPU cores
# (~0.9 s per 2x256x256 step versus ~1.6 s for N=64/M=96 at full depth).
SMALL = _frozen({"N": 48, "M": 64, "depths": (2, 2, 2, 2, 2, 2), "num_heads": (4, 4, 4, 4, 4, 4)})

ARCHITECTURES: Mapping[str, ArchitecturePreset] = MappingProxyType(
    {
        preset.name: preset
        for preset in (
            ArchitecturePreset("tic", False, PAPER, "the paper's TIC, qualities 1-4"),
            ArchitecturePreset("tic-hq", False, PAPER_HIGH_RATE, "the paper's TIC, qualities 5-8"),
            ArchitecturePreset("tic-tiny", False, TINY, "TIC at unit-test size"),
            ArchitecturePreset("tic-small", False, SMALL, "the shipped CPU-trained base codec"),
            ArchitecturePreset("transtic", True, PAPER, "the paper's TransTIC, qualities 1-4"),
            ArchitecturePreset("transtic-tiny", True, TINY, "TransTIC at unit-test size"),
            ArchitecturePreset("transtic-small", True, SMALL, "the shipped CPU-trained TransTIC"),
        )
    }
)

# The paper's λ per quality, from the upstream configs: the codec's rate-distortion
# trade-off (λ·255²·MSE + bpp) and the classification prompts' (qualities 1-4, N=128/M=192).
QUALITY_LAMBDA: Mapping[int, float] = MappingProxyType({1: 0.0018, 2: 0.0035, 3: 0.0067, 4: 0.013})
# Detection and segmentation prompts: the weight of the rate term per quality.
DETECTION_LAMBDA: Mapping[int, float] = MappingProxyType({1: 2.0, 2: 1.0, 3: 0.5, 4: 0.2})
