"""End to end: the edge stream client sends real bitstreams to the real analytics gRPC
front end over mutual TLS with an API key; without the right credentials it is refused."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import torch
from pydantic import SecretStr
from security_helpers import GOOD_KEY, WRONG_KEY, Pki, analytics_server

from services.analytics.settings import Settings
from services.encoder.codecs import CodecBank
from services.encoder.settings import EncoderSettings
from services.encoder.sources import SourceFrame
from services.encoder.streamer import EXIT_ERROR, EXIT_OK, EncodedFrame, StreamRun

pytestmark = pytest.mark.integration
FRAMES = 3


def frames(n: int) -> Iterator[SourceFrame]:
    generator = torch.Generator().manual_seed(0)
    for i in range(n):
        image = torch.rand(3, 32, 48, generator=generator)
        yield SourceFrame(i, f"f{i}", image, 1_700_000_000_000 + i)


def stream(
    encoder_settings: Callable[..., EncoderSettings], bank: CodecBank, port: int, **overrides: Any
) -> tuple[StreamRun, dict[str, Any]]:
    values: dict[str, Any] = {
        "target": f"127.0.0.1:{port}",
        "stream_id": "cam-secure",
        "reconnect_initial_s": 0.05,
        "reconnect_max_s": 0.1,
        "reconnect_max_attempts": 2,
        "drain_timeout_s": 10.0,
        "ack_timeout_s": 30.0,
    }
    values.update(overrides)

    def encode(image: Any, quality: int) -> EncodedFrame:
        start = time.perf_counter()
        data = bank.encode(image, "detection", quality).data
        return EncodedFrame(data, (time.perf_counter() - start) * 1e3)

    run = StreamRun(encoder_settings(**values), encode=encode, qualities=[1], frames=frames(FRAMES))
    summary = run.run()
    return run, summary


def client_tls(pki: Pki, *, rogue: bool = False) -> dict[str, Any]:
    return {
        "client_ca_file": pki.ca,
        "client_cert_file": pki.rogue_cert if rogue else pki.client_cert,
        "client_key_file": pki.rogue_key if rogue else pki.client_key,
    }


@pytest.fixture(scope="module")
def secure_analytics(
    pki: Pki, codec_checkpoint: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[int, Any]]:
    settings = Settings(
        codec_checkpoint=str(codec_checkpoint),
        host="127.0.0.1",
        device="cpu",
        default_task="detection",
        db_path=tmp_path_factory.mktemp("db") / "frames.db",
        max_batch_delay_ms=1.0,
        api_keys=[SecretStr(GOOD_KEY)],
        **pki.server_settings(mutual=True),
    )
    with analytics_server(settings, start=True) as (port, runtime):
        assert runtime.ready
        yield port, runtime


def test_stream_over_mutual_tls_with_an_api_key(
    secure_analytics: tuple[int, Any],
    encoder_settings: Callable[..., EncoderSettings],
    encoder_bank: CodecBank,
    pki: Pki,
) -> None:
    port, runtime = secure_analytics
    run, summary = stream(
        encoder_settings, encoder_bank, port, client_api_key=GOOD_KEY, **client_tls(pki)
    )
    assert summary["error"] is None, summary
    assert summary["frames"]["acked"] == FRAMES and summary["frames"]["unacked"] == 0
    assert summary["frames"]["errors"] == 0
    assert run.exit_code(summary) == EXIT_OK
    stored = runtime.store.frames("cam-secure", -1, 10)
    assert [f.sequence for f in stored] == list(range(FRAMES))
    assert stored[0].result["detections"][0]["label"] == "thing"


def test_stream_with_a_wrong_api_key_is_refused_for_good(
    secure_analytics: tuple[int, Any],
    encoder_settings: Callable[..., EncoderSettings],
    encoder_bank: CodecBank,
    pki: Pki,
) -> None:
    port, _ = secure_analytics
    run, summary = stream(
        encoder_settings,
        encoder_bank,
        port,
        stream_id="cam-wrong-key",
        client_api_key=WRONG_KEY,
        **client_tls(pki),
    )
    # UNAUTHENTICATED is final: no reconnect loop, the run ends with an error.
    assert "UNAUTHENTICATED" in summary["error"]
    assert summary["connections"] == 1 and summary["frames"]["acked"] == 0
    assert run.exit_code(summary) == EXIT_ERROR


@pytest.mark.parametrize("case", ["no_cert", "rogue_cert", "plaintext"])
def test_stream_without_a_valid_client_certificate_never_connects(
    case: str,
    secure_analytics: tuple[int, Any],
    encoder_settings: Callable[..., EncoderSettings],
    encoder_bank: CodecBank,
    pki: Pki,
) -> None:
    port, runtime = secure_analytics
    tls = {
        "no_cert": {"client_ca_file": pki.ca},
        "rogue_cert": client_tls(pki, rogue=True),
        "plaintext": {},
    }[case]
    stream_id = f"cam-{case}"
    run, summary = stream(
        encoder_settings, encoder_bank, port, stream_id=stream_id, client_api_key=GOOD_KEY, **tls
    )
    assert "gave up" in summary["error"]
    assert summary["frames"]["acked"] == 0 and run.exit_code(summary) == EXIT_ERROR
    assert not runtime.store.has_stream(stream_id)


def test_unreadable_client_files_stop_the_run_at_start(
    encoder_settings: Callable[..., EncoderSettings], pki: Pki, tmp_path: Any
) -> None:
    missing = encoder_settings(client_ca_file=tmp_path / "no-ca.crt")

    def encode(image: Any, quality: int) -> EncodedFrame:
        raise AssertionError("never reached")

    with pytest.raises(OSError, match="no-ca.crt"):
        StreamRun(missing, encode=encode, qualities=[1])
    empty = tmp_path / "key"
    empty.write_text("# no key here\n")
    with pytest.raises(ValueError, match="holds no key"):
        StreamRun(encoder_settings(client_api_key_file=empty), encode=encode, qualities=[1])
