"""Fixtures of the security tests: a throwaway PKI, settings factories for both services."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from security_helpers import Pki, analytics_server, encoder_server, make_pki, tiny_bank

from services.analytics.settings import Settings
from services.encoder.codecs import CodecBank
from services.encoder.settings import EncoderSettings


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """Generated per test session with `cryptography`; nothing is read from the repo."""
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def analytics_settings(
    make_analytics_settings: Callable[..., Settings],
) -> Callable[..., Settings]:
    return functools.partial(
        make_analytics_settings, default_task="detection", max_batch_delay_ms=1.0
    )


@pytest.fixture
def encoder_settings(
    make_encoder_settings: Callable[..., EncoderSettings], codec_checkpoint: Path
) -> Callable[..., EncoderSettings]:
    return functools.partial(
        make_encoder_settings, checkpoints={"detection": {1: codec_checkpoint}}, task="detection"
    )


@pytest.fixture(params=["analytics", "encoder"])
def serve(
    request: pytest.FixtureRequest,
    analytics_settings: Callable[..., Settings],
    encoder_settings: Callable[..., EncoderSettings],
    encoder_bank: CodecBank,
) -> Callable[..., Any]:
    """``serve(**settings)``: each real gRPC server in turn, as a context manager
    yielding (service name, port)."""

    @contextmanager
    def start(**overrides: Any) -> Iterator[tuple[str, int]]:
        if request.param == "analytics":
            with analytics_server(analytics_settings(**overrides)) as (port, _):
                yield "analytics", port
        else:
            with encoder_server(encoder_settings(**overrides), encoder_bank) as port:
                yield "encoder", port

    return start


@pytest.fixture(scope="session")
def encoder_bank(codec_checkpoint: Path) -> CodecBank:
    return tiny_bank(codec_checkpoint)
