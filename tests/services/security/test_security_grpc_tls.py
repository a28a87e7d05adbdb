"""TLS and mutual TLS on both gRPC servers: who gets in and who is refused."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from security_helpers import (
    TIMEOUT,
    Pki,
    analytics_server,
    encoder_server,
    refused,
    service_stub,
)

from services.analytics.settings import Settings
from services.common.tls import ClientTLS, open_channel
from services.encoder.codecs import CodecBank
from services.encoder.settings import EncoderSettings
from services.generated.transtic.v1 import api_pb2, api_pb2_grpc

pytestmark = pytest.mark.integration


def get_info(port: int, tls: ClientTLS | None, service: str, **kwargs: Any) -> Any:
    with open_channel(f"127.0.0.1:{port}", tls) as channel:
        return service_stub(service, channel).GetInfo(
            api_pb2.GetInfoRequest(), timeout=TIMEOUT, **kwargs
        )


def health(port: int, tls: ClientTLS | None) -> int:
    with open_channel(f"127.0.0.1:{port}", tls) as channel:
        request = health_pb2.HealthCheckRequest(service="")
        reply = health_pb2_grpc.HealthStub(channel).Check(request, timeout=TIMEOUT)
        return int(reply.status)


def test_tls_client_with_the_ca_is_served_and_plaintext_is_refused(
    serve: Callable[..., Any], pki: Pki
) -> None:
    with serve(**pki.server_settings(mutual=False)) as (service, port):
        info = get_info(port, pki.client(cert=False), service)
        assert info.service == service
        assert health(port, pki.client(cert=False)) == health_pb2.HealthCheckResponse.SERVING
        # A plaintext client cannot even complete the HTTP/2 preface.
        assert refused(lambda: get_info(port, None, service)) == grpc.StatusCode.UNAVAILABLE
        # A client that trusts another CA refuses the server's certificate.
        other = ClientTLS(pki.rogue_ca)
        assert refused(lambda: get_info(port, other, service)) == grpc.StatusCode.UNAVAILABLE


def test_mutual_tls_refuses_clients_without_a_certificate_from_the_ca(
    serve: Callable[..., Any], pki: Pki
) -> None:
    with serve(**pki.server_settings(mutual=True)) as (service, port):
        assert get_info(port, pki.client(), service).service == service
        no_cert = pki.client(cert=False)
        assert refused(lambda: get_info(port, no_cert, service)) == grpc.StatusCode.UNAVAILABLE
        # Same CN ("edge-1"), but signed by another CA: refused in the handshake.
        rogue = pki.client(rogue=True)
        assert refused(lambda: get_info(port, rogue, service)) == grpc.StatusCode.UNAVAILABLE
        assert refused(lambda: get_info(port, None, service)) == grpc.StatusCode.UNAVAILABLE
        # Probes get through too, but only with a certificate.
        assert health(port, pki.client()) == health_pb2.HealthCheckResponse.SERVING
        assert refused(lambda: health(port, no_cert)) == grpc.StatusCode.UNAVAILABLE


def test_plaintext_stays_the_default(serve: Callable[..., Any], pki: Pki) -> None:
    with serve() as (service, port):
        assert get_info(port, None, service).service == service
        tls = pki.client()
        assert refused(lambda: get_info(port, tls, service)) == grpc.StatusCode.UNAVAILABLE


def test_unreadable_tls_files_stop_the_server_at_start(
    analytics_settings: Callable[..., Settings], pki: Pki, tmp_path: Path
) -> None:
    missing = analytics_settings(tls_cert_file=tmp_path / "nope.crt", tls_key_file=pki.server_key)
    with pytest.raises(OSError, match="nope.crt"), analytics_server(missing):
        pass
    (tmp_path / "garbage.crt").write_text("not a certificate")
    garbage = analytics_settings(
        tls_cert_file=tmp_path / "garbage.crt", tls_key_file=pki.server_key
    )
    with pytest.raises(ValueError, match="PEM"), analytics_server(garbage):
        pass


@pytest.mark.parametrize("service", ["analytics", "encoder"])
def test_grpc_message_size_limits(
    service: str,
    analytics_settings: Callable[..., Settings],
    encoder_settings: Callable[..., EncoderSettings],
    encoder_bank: CodecBank,
) -> None:
    """Oversized messages are refused by grpc before the servicer sees them."""
    if service == "analytics":
        with (
            analytics_server(analytics_settings(max_upload_bytes=4096)) as (port, runtime),
            open_channel(f"127.0.0.1:{port}") as channel,
        ):
            stub = api_pb2_grpc.AnalyticsStub(channel)
            request = api_pb2.AnalyzeRequest(bitstream=b"\0" * 8192)
            code = refused(lambda: stub.Analyze(request, timeout=TIMEOUT))
    else:
        settings = encoder_settings(max_image_bytes=1024)
        with (
            encoder_server(settings, encoder_bank) as port,
            open_channel(f"127.0.0.1:{port}") as channel,
        ):
            # The limit is max_image_bytes plus 64 KiB of protobuf framing.
            request = api_pb2.EncodeRequest(image=b"\0" * (1024 + 65 * 1024))
            enc = api_pb2_grpc.EncoderStub(channel)
            code = refused(lambda: enc.Encode(request, timeout=TIMEOUT))
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
