"""Client SDK of the TransTIC services.

- ``AnalyticsClient`` / ``AsyncAnalyticsClient``: the analytics REST API (typed answers);
- ``AnalyticsGrpcClient`` / ``EncoderGrpcClient``: both gRPC APIs;
- every client takes an API key, TLS settings and a ``RetryPolicy`` (429/503 and gRPC
  RESOURCE_EXHAUSTED/UNAVAILABLE are retried with backoff, honouring Retry-After), and
  raises ``ClientError`` carrying the service's stable error code.

Needs the ``client`` extra (``pip install "transtic[client]"``).
"""

from transtic.client.errors import NO_RETRY, ClientError, RetryPolicy
from transtic.client.grpc_clients import (
    AnalyticsGrpcClient,
    ClientTLS,
    EncodeResult,
    EncoderGrpcClient,
)
from transtic.client.rest import AnalyticsClient, AsyncAnalyticsClient

__all__ = [
    "NO_RETRY",
    "AnalyticsClient",
    "AnalyticsGrpcClient",
    "AsyncAnalyticsClient",
    "ClientError",
    "ClientTLS",
    "EncodeResult",
    "EncoderGrpcClient",
    "RetryPolicy",
]
