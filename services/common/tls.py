"""TLS and mutual TLS for the gRPC servers and clients of the services.

Certificate files are read when a server starts or a client connects, so a missing or
unreadable file stops the service at start with its path in the message (not at the
first handshake), and a client picks up rotated files at its next reconnect.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from services.common.settings import ServiceSettings

log = logging.getLogger(__name__)


def read_pem(path: Path, what: str) -> bytes:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise OSError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    if b"-----BEGIN " not in data:
        raise ValueError(f"{what} {path} is not a PEM file")
    return data


def server_credentials(settings: ServiceSettings) -> grpc.ServerCredentials | None:
    """TLS credentials from the settings, or None for plaintext (TLS not configured)."""
    if settings.tls_cert_file is None or settings.tls_key_file is None:
        return None
    cert = read_pem(settings.tls_cert_file, "TLS certificate")
    key = read_pem(settings.tls_key_file, "TLS private key")
    client_ca = None
    if settings.tls_client_ca_file is not None:
        client_ca = read_pem(settings.tls_client_ca_file, "client CA bundle")
    return grpc.ssl_server_credentials(
        [(key, cert)], root_certificates=client_ca, require_client_auth=client_ca is not None
    )


def describe_server(settings: ServiceSettings) -> str:
    """'plaintext', 'TLS' or 'mutual TLS', for the start-up log line."""
    if settings.tls_cert_file is None:
        return "plaintext"
    return "mutual TLS" if settings.tls_client_ca_file is not None else "TLS"


def add_port(server: grpc.Server, address: str, credentials: grpc.ServerCredentials | None) -> int:
    """Bind ``address`` (secure when credentials are given); 0 means the bind failed."""
    try:
        if credentials is None:
            return int(server.add_insecure_port(address))
        return int(server.add_secure_port(address, credentials))
    except RuntimeError as exc:  # grpc reports a taken port this way
        raise OSError(f"cannot listen for gRPC on {address}: {exc}") from None


@dataclass(frozen=True)
class ClientTLS:
    """How a client verifies the server (``ca_file``; None = the system's roots) and, for
    mutual TLS, proves who it is (``cert_file`` + ``key_file``)."""

    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    server_name: str | None = None  # expected name in the server certificate, if not the host

    def __post_init__(self) -> None:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("a client certificate needs both its cert and key file")

    def credentials(self) -> grpc.ChannelCredentials:
        root = read_pem(self.ca_file, "CA bundle") if self.ca_file is not None else None
        cert = key = None
        if self.cert_file is not None and self.key_file is not None:
            cert = read_pem(self.cert_file, "client certificate")
            key = read_pem(self.key_file, "client private key")
        return grpc.ssl_channel_credentials(
            root_certificates=root, private_key=key, certificate_chain=cert
        )

    def options(self) -> list[tuple[str, Any]]:
        if self.server_name:
            return [("grpc.ssl_target_name_override", self.server_name)]
        return []


def open_channel(
    target: str, tls: ClientTLS | None = None, options: Sequence[tuple[str, Any]] = ()
) -> grpc.Channel:
    """A secure channel when ``tls`` is given, else a plaintext one."""
    if tls is None:
        return grpc.insecure_channel(target, options=list(options))
    return grpc.secure_channel(target, tls.credentials(), options=[*options, *tls.options()])
