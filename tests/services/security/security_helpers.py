"""Test-time PKI and small servers for the security tests (no key is ever committed)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent import futures
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from service_fakes import TinyDetection, analytics_grpc

from services.analytics.grpc_service import GrpcFrontEnd
from services.analytics.runtime import Runtime
from services.analytics.settings import Settings
from services.common.devcerts import Issued, issue, make_ca
from services.common.tls import ClientTLS
from services.encoder.codecs import CodecBank, LoadedModel
from services.encoder.server import EncoderServer
from services.encoder.settings import EncoderSettings
from services.generated.transtic.v1 import api_pb2_grpc
from transtic.weights import load_codec

GOOD_KEY = "k-good-0123456789abcdef"
OTHER_KEY = "k-other-0123456789abcdef"
WRONG_KEY = "k-wrong-0123456789abcdef"
TIMEOUT = 10  # seconds for any one test RPC


@dataclass(frozen=True)
class Pki:
    """Server certificate for 127.0.0.1/localhost, a client of the same CA ("edge-1"),
    and a client certificate from another CA that merely claims the same name."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    rogue_ca: Path
    rogue_cert: Path
    rogue_key: Path

    def client(self, *, cert: bool = True, rogue: bool = False) -> ClientTLS:
        if rogue:
            return ClientTLS(self.ca, self.rogue_cert, self.rogue_key)
        if cert:
            return ClientTLS(self.ca, self.client_cert, self.client_key)
        return ClientTLS(self.ca)

    def server_settings(self, *, mutual: bool) -> dict[str, Any]:
        values: dict[str, Any] = {
            "tls_cert_file": self.server_cert,
            "tls_key_file": self.server_key,
        }
        if mutual:
            values["tls_client_ca_file"] = self.ca
        return values


def make_pki(directory: Path) -> Pki:
    def write(name: str, issued: Issued) -> tuple[Path, Path]:
        cert, key = directory / f"{name}.crt", directory / f"{name}.key"
        cert.write_bytes(issued.cert_pem)
        key.write_bytes(issued.key_pem)
        return cert, key

    ca, rogue_ca = make_ca("test CA"), make_ca("rogue CA")
    ca_file, _ = write("ca", ca)
    rogue_ca_file, _ = write("rogue-ca", rogue_ca)
    server_cert, server_key = write("server", issue(ca, "server", hosts=["127.0.0.1", "localhost"]))
    client_cert, client_key = write("edge-1", issue(ca, "edge-1", client=True))
    rogue_cert, rogue_key = write("rogue", issue(rogue_ca, "edge-1", client=True))
    return Pki(
        ca_file,
        server_cert,
        server_key,
        client_cert,
        client_key,
        rogue_ca_file,
        rogue_cert,
        rogue_key,
    )


# -- a generic gRPC service (raw bytes) to test the interceptor by itself -------------
ECHO_SERVICE = "test.Echo"


def _identity(data: bytes) -> bytes:
    return data


def echo_server(
    interceptors: list[grpc.ServerInterceptor],
    credentials: grpc.ServerCredentials | None = None,
    who: Callable[[grpc.ServicerContext], str] | None = None,
) -> tuple[grpc.Server, int]:
    """Unary ``Who`` (answers ``who(context)``) and stream-stream ``Echo``, started."""

    def who_handler(request: bytes, context: grpc.ServicerContext) -> bytes:
        return (who(context) if who else "").encode()

    def echo_handler(requests: Iterator[bytes], context: grpc.ServicerContext) -> Iterator[bytes]:
        yield from requests

    handlers = {
        "Who": grpc.unary_unary_rpc_method_handler(who_handler, _identity, _identity),
        "Echo": grpc.stream_stream_rpc_method_handler(echo_handler, _identity, _identity),
    }
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4), interceptors=interceptors)
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(ECHO_SERVICE, handlers)])
    if credentials is None:
        port = server.add_insecure_port("127.0.0.1:0")
    else:
        port = server.add_secure_port("127.0.0.1:0", credentials)
    server.start()
    return server, port


def echo_calls(channel: grpc.Channel) -> tuple[Any, Any]:
    who = channel.unary_unary(
        f"/{ECHO_SERVICE}/Who", request_serializer=_identity, response_deserializer=_identity
    )
    echo = channel.stream_stream(
        f"/{ECHO_SERVICE}/Echo", request_serializer=_identity, response_deserializer=_identity
    )
    return who, echo


# -- the real servers, in process ----------------------------------------------------
@contextmanager
def analytics_front(settings: Settings, *, start: bool = False) -> Iterator[GrpcFrontEnd]:
    """The real gRPC front end (and its health-only port when configured), serving; the
    runtime (models) is started only when asked."""
    with analytics_grpc(settings, [TinyDetection()], start=start) as served:
        yield served.front


@contextmanager
def analytics_server(settings: Settings, *, start: bool = False) -> Iterator[tuple[int, Runtime]]:
    with analytics_front(settings, start=start) as front:
        yield front.port, front.runtime


def service_stub(service: str, channel: grpc.Channel) -> Any:
    """The stub of ``service`` ("analytics" or "encoder") on ``channel``."""
    if service == "analytics":
        return api_pb2_grpc.AnalyticsStub(channel)
    return api_pb2_grpc.EncoderStub(channel)


def tiny_bank(checkpoint: Path) -> CodecBank:
    """One codec (detection, quality 1), without looking at the weights catalog."""
    model = load_codec(checkpoint).model
    loaded = LoadedModel("detection", 1, checkpoint, model, threading.Lock())
    return CodecBank({("detection", 1): loaded}, EncoderSettings(device="cpu", task="detection"))


@contextmanager
def encoder_server(settings: EncoderSettings, bank: CodecBank) -> Iterator[int]:
    server = EncoderServer(settings, bank).start()
    try:
        yield server.port
    finally:
        server.stop(0)


def refused(call: Callable[[], Any]) -> grpc.StatusCode:
    """The status code ``call`` fails with (it must fail)."""
    with pytest.raises(grpc.RpcError) as info:
        call()
    code: grpc.StatusCode = info.value.code()
    return code
