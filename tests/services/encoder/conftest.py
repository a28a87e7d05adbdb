from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from services.encoder.codecs import CodecBank
from services.encoder.settings import EncoderSettings
from transtic.models import create_model, save_checkpoint

# Scaling the last analysis convolution scales the latent, so these tiny random-weight codecs
# differ in rate the way real quality levels do (q1 cheapest).
QUALITY_SCALE = {1: 0.25, 2: 0.5, 3: 1.0}


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[int, Path]:
    directory = tmp_path_factory.mktemp("codecs")
    paths = {}
    for quality, scale in QUALITY_SCALE.items():
        torch.manual_seed(0)
        model = create_model("transtic-tiny")
        last_conv: Any = model.g_a6
        with torch.no_grad():
            last_conv.weight.mul_(scale)
            last_conv.bias.mul_(scale)
        model.update(force=True)
        paths[quality] = save_checkpoint(model, directory / f"cls_q{quality}.pth")
    return paths


@pytest.fixture(scope="session")
def make_settings(
    make_encoder_settings: Callable[..., EncoderSettings], checkpoints: dict[int, Path]
) -> Callable[..., EncoderSettings]:
    return functools.partial(
        make_encoder_settings,
        checkpoints={"classification": checkpoints, "detection": {1: checkpoints[1]}},
        use_shipped_weights=False,
    )


@pytest.fixture(scope="session")
def bank(make_settings: Callable[..., EncoderSettings]) -> CodecBank:
    return CodecBank.load(make_settings(max_pixels=100_000, max_image_bytes=300_000))
