from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from services.encoder.codecs import CodecBank
from services.encoder.settings import ENV_PREFIX, EncoderSettings
from transtic.models import create_model, save_checkpoint

# Scaling the last analysis convolution scales the latent, so these tiny random-weight codecs
# differ in rate the way real quality levels do (q1 cheapest).
QUALITY_SCALE = {1: 0.25, 2: 0.5, 3: 1.0}


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith(ENV_PREFIX):
            monkeypatch.delenv(name)


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
def make_settings(checkpoints: dict[int, Path]) -> Callable[..., EncoderSettings]:
    def make(**overrides: Any) -> EncoderSettings:
        values: dict[str, Any] = {
            "checkpoints": {"classification": checkpoints, "detection": {1: checkpoints[1]}},
            "host": "127.0.0.1",
            "grpc_port": 0,
            "http_port": 0,
            "device": "cpu",
            "use_shipped_weights": False,
        }
        values.update(overrides)
        return EncoderSettings(**values)

    return make


@pytest.fixture(scope="session")
def bank(make_settings: Callable[..., EncoderSettings]) -> CodecBank:
    return CodecBank.load(make_settings(max_pixels=100_000, max_image_bytes=300_000))
