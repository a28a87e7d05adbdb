"""Fixtures of the security tests: a throwaway PKI, settings factories for both services."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from security_helpers import Pki, make_pki, tiny_bank

from services.analytics.settings import ENV_PREFIX as ANALYTICS_PREFIX
from services.analytics.settings import Settings
from services.encoder.codecs import CodecBank
from services.encoder.settings import ENV_PREFIX as ENCODER_PREFIX
from services.encoder.settings import EncoderSettings


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith((ANALYTICS_PREFIX, ENCODER_PREFIX)):
            monkeypatch.delenv(name)


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """Generated per test session with `cryptography`; nothing is read from the repo."""
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def analytics_settings(
    codec_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory
) -> Callable[..., Settings]:
    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "codec_checkpoint": str(codec_checkpoint),
            "host": "127.0.0.1",
            "grpc_port": 0,
            "http_port": 0,
            "device": "cpu",
            "default_task": "detection",
            "db_path": tmp_path_factory.mktemp("db") / "frames.db",
            "weights_cache_dir": tmp_path_factory.mktemp("weights"),
            "max_batch_delay_ms": 1.0,
        }
        values.update(overrides)
        return Settings(**values)

    return make


@pytest.fixture
def encoder_settings(codec_checkpoint: Path) -> Callable[..., EncoderSettings]:
    def make(**overrides: Any) -> EncoderSettings:
        values: dict[str, Any] = {
            "checkpoints": {"detection": {1: codec_checkpoint}},
            "task": "detection",
            "host": "127.0.0.1",
            "grpc_port": 0,
            "http_port": 0,
            "device": "cpu",
        }
        values.update(overrides)
        return EncoderSettings(**values)

    return make


@pytest.fixture(scope="session")
def encoder_bank(codec_checkpoint: Path) -> CodecBank:
    return tiny_bank(codec_checkpoint)
