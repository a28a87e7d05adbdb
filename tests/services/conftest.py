"""Fixtures shared by the service tests: a clean environment, settings factories for both
services, tiny codecs, sample images, streams (fake backends: ``service_fakes``)."""

from __future__ import annotations

import io
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest
from PIL import Image

from transtic.codec import ImageCodec
from transtic.models import HyperpriorCodec, create_model, save_checkpoint

REPO = Path(__file__).resolve().parents[2]
# The services are top-level packages of the repository, not installed ones.
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from postgres_server import PostgresServer, find_bindir  # noqa: E402

if TYPE_CHECKING:
    from services.analytics.settings import Settings
    from services.encoder.settings import EncoderSettings

# Both services' settings read these from the environment.
SERVICE_ENV_PREFIXES = ("TRANSTIC_ANALYTICS_", "TRANSTIC_ENCODER_")


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    # Settings read the environment: a developer's exports must not leak into tests.
    for name in list(os.environ):
        if name.startswith(SERVICE_ENV_PREFIXES):
            monkeypatch.delenv(name)


@pytest.fixture(scope="session")
def make_analytics_settings(
    codec_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory
) -> Callable[..., Settings]:
    """``make_analytics_settings(**overrides)``: an in-process analytics service on
    127.0.0.1 (ephemeral ports, CPU, the tiny codec, a fresh database and weights dir)."""
    from services.analytics.settings import Settings

    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "codec_checkpoint": str(codec_checkpoint),
            "host": "127.0.0.1",
            "grpc_port": 0,
            "http_port": 0,
            "device": "cpu",
            "db_path": tmp_path_factory.mktemp("db") / "frames.db",
            "weights_cache_dir": tmp_path_factory.mktemp("weights"),
        }
        return Settings(**{**values, **overrides})

    return make


@pytest.fixture(scope="session")
def make_encoder_settings() -> Callable[..., EncoderSettings]:
    """``make_encoder_settings(**overrides)``: an in-process encoder on 127.0.0.1
    (ephemeral ports, CPU); pass the codecs as ``checkpoints``."""
    from services.encoder.settings import EncoderSettings

    def make(**overrides: Any) -> EncoderSettings:
        values: dict[str, Any] = {"host": "127.0.0.1", "grpc_port": 0, "http_port": 0}
        values["device"] = "cpu"
        return EncoderSettings(**{**values, **overrides})

    return make


def png_bytes(height: int = 64, width: int = 64, seed: int = 0) -> bytes:
    """A smooth synthetic picture (gradients and a disc), PNG-encoded."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    r = (x * 255 // max(1, width - 1)).astype(np.uint8)
    g = (y * 255 // max(1, height - 1)).astype(np.uint8)
    disc = (x - width / 2) ** 2 + (y - height / 2) ** 2 < (min(height, width) / 4) ** 2
    b = np.where(disc, 220, 40).astype(np.uint8)
    pixels = np.stack([r, g, b], axis=-1)
    pixels = np.clip(pixels + rng.integers(-8, 9, pixels.shape), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="session")
def make_png() -> Callable[..., bytes]:
    """``make_png(height, width, seed)``: a small synthetic PNG."""
    return png_bytes


@pytest.fixture(scope="session")
def codec_checkpoint(
    tiny_transtic: HyperpriorCodec, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """The service's codec: the session's tiny random-weight TransTIC."""
    return save_checkpoint(tiny_transtic, tmp_path_factory.mktemp("codec") / "tiny.pth")


@pytest.fixture(scope="session")
def other_codec_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A codec with other random weights, hence another weights fingerprint."""
    import torch

    torch.manual_seed(12345)
    model = create_model("transtic-tiny")
    model.update(force=True)
    return save_checkpoint(model, tmp_path_factory.mktemp("codec") / "other.pth")


@pytest.fixture(scope="session")
def sample_png() -> bytes:
    return png_bytes(64, 64)


@pytest.fixture(scope="session")
def bitstream(codec_checkpoint: Path, sample_png: bytes) -> bytes:
    """``sample_png`` coded by the service's codec."""
    from transtic.images import decode_image_bytes

    codec = ImageCodec.from_checkpoint(str(codec_checkpoint))
    return codec.encode(decode_image_bytes(sample_png)).data


@pytest.fixture(scope="session")
def foreign_bitstream(other_codec_checkpoint: Path, sample_png: bytes) -> bytes:
    """``sample_png`` coded with weights the service does not hold."""
    from transtic.images import decode_image_bytes

    codec = ImageCodec.from_checkpoint(str(other_codec_checkpoint))
    return codec.encode(decode_image_bytes(sample_png)).data


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A real PostgreSQL server for this test session (skipped if it is not installed)."""
    bindir = find_bindir()
    if bindir is None:
        pytest.skip("PostgreSQL server programs not installed (scripts/setup_env.sh adds them)")
    server = PostgresServer(bindir).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def stored_result() -> dict[str, object]:
    """A complete stored detection result (the form the frame store keeps), no model run."""
    from service_fakes import sample_result

    return sample_result().to_json()
