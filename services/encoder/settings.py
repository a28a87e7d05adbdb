"""The one settings object of the edge encoder: environment (TRANSTIC_ENCODER_*) < CLI flags.

The same object configures both commands: ``serve`` (the gRPC Encoder service) and ``stream``
(the camera/folder/video client that streams to Analytics). Fields only one command reads are
grouped below; keeping them in one object means one env namespace and one place to document.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from services.common.auth import client_key
from services.common.settings import ServiceSettings, check_api_key
from services.common.tls import ClientTLS

ENV_PREFIX = "TRANSTIC_ENCODER_"
DEFAULT_GRPC_PORT = 50052
DEFAULT_HTTP_PORT = 9102
DEFAULT_ANALYTICS_TARGET = "localhost:50051"


class EncoderSettings(ServiceSettings):
    """Inherits host, device, log_level, weights_cache_dir (catalog codec files such as
    cls_1.pth.tar are found there) and shutdown_grace_s from the shared service base."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid", validate_default=True)

    # ---------------------------------------------------------------- codec (both commands)
    checkpoints: dict[str, dict[int, Path]] = Field(
        default_factory=dict,
        description='task -> quality -> path; env JSON {"classification": {"1": "/w/a.pth"}}',
    )
    tasks: list[str] = Field(
        default_factory=list, description="restrict the loaded tasks (empty: all found)"
    )
    use_shipped_weights: bool = Field(
        default=True,
        description="also offer the codecs shipped inside the transtic package (offline defaults)",
    )
    task: str = Field(
        default="classification", description="default task (serve) / the task (stream)"
    )
    quality: int = Field(
        default=0,
        ge=0,
        description="default quality (serve) / fixed quality (stream, without a rate target); "
        "0 = q3 where loaded (the default of every entry point), else the lowest",
    )
    precision: Literal["auto", "float32", "bfloat16", "int8"] = Field(
        default="auto",
        description="auto: bf16 where the CPU/GPU has native bf16, else float32; "
        "int8: quantised transforms (CPU, lossy)",
    )
    align_mode: Literal["pad", "resize"] = "pad"
    torch_threads: int = Field(
        default=0, ge=0, description="torch intra-op threads; 0 = torch default"
    )
    max_pixels: int = Field(
        default=16 * 2**20,
        gt=0,
        description="largest coded image (each side rounded up to a multiple of 256), in "
        "pixels; larger ones are RESOURCE_EXHAUSTED",
    )
    max_aspect_ratio: float = Field(
        default=16.0,
        ge=1.0,
        description="longest over shortest image side; slivers above it are INVALID_ARGUMENT",
    )
    max_image_bytes: int = Field(
        default=32 * 2**20, gt=0, description="larger uploads are RESOURCE_EXHAUSTED"
    )

    # ---------------------------------------------------------------- serve
    grpc_port: int = Field(default=DEFAULT_GRPC_PORT, ge=0, le=65535, description="0 = ephemeral")
    http_port: int = Field(
        default=DEFAULT_HTTP_PORT,
        ge=0,
        le=65535,
        description="/metrics, /healthz, /readyz; 0 = off",
    )
    max_workers: int = Field(default=4, ge=1)
    max_concurrent_rpcs: int = Field(
        default=32, ge=1, description="beyond this, RESOURCE_EXHAUSTED"
    )

    # ---------------------------------------------------------------- stream
    source: str | None = Field(
        default=None,
        description="image folder, video file, /dev/videoN, camera:N, rtsp:// or http(s):// "
        "(MJPEG) camera stream, or gst:<GStreamer pipeline>",
    )
    source_reconnect_attempts: int = Field(
        default=20,
        ge=0,
        description="network sources: failed reopenings in a row before the stream ends "
        "(waits as for reconnect_initial_s / reconnect_max_s); 0 = forever",
    )
    source_skip_stale: bool = Field(
        default=True,
        description="live sources (cameras, streams): when coding is slower than the camera, "
        "code the newest frame and skip older ones; false = every frame, in order",
    )
    target: str = Field(
        default=DEFAULT_ANALYTICS_TARGET, description="Analytics gRPC address host:port"
    )
    stream_id: str | None = Field(
        default=None, description="stable id of this run; default host-random"
    )
    target_bpp: float | None = Field(default=None, gt=0, description="rate control: bits per pixel")
    target_kbps: float | None = Field(default=None, gt=0, description="rate control: kbit/s at fps")
    fps: float = Field(default=10.0, gt=0, description="nominal frame rate (kbps targets, pacing)")
    pace: bool = Field(default=False, description="read folders/videos at fps instead of flat out")
    max_frames: int = Field(default=0, ge=0, description="stop after this many frames; 0 = all")
    buffer_size: int = Field(
        default=32, ge=1, description="unacknowledged frames kept; full = backpressure"
    )
    reconnect_initial_s: float = Field(default=0.2, gt=0)
    reconnect_max_s: float = Field(default=10.0, gt=0)
    reconnect_max_attempts: int = Field(
        default=0, ge=0, description="consecutive failures; 0 = forever"
    )
    ack_timeout_s: float = Field(
        default=30.0, gt=0, description="no ack this long with frames out: reconnect"
    )
    drain_timeout_s: float = Field(
        default=15.0, ge=0, description="on stop: wait this long for acks"
    )
    frame_max_retries: int = Field(
        default=3, ge=0, description="resends of a frame after transient errors"
    )
    refused_frames_limit: int = Field(
        default=10,
        ge=0,
        description="frames the analytics refuses in a row (not transient errors) before "
        "the stream stops; any refused frame makes the exit code 4; 0 = never stop",
    )
    stream_metrics_port: int = Field(
        default=0, ge=0, le=65535, description="stream: metrics port; 0 = off"
    )
    summary_json: Path | None = Field(
        default=None, description="write the run summary here ('-' = stdout)"
    )

    # ---------------------------------------------------------------- outgoing gRPC calls
    # (stream -> Analytics, probe/info -> this Encoder); docs/security.md
    client_tls: bool = Field(
        default=False, description="use TLS (implied by client_ca_file / client_cert_file)"
    )
    client_ca_file: Path | None = Field(
        default=None, description="PEM CA bundle to verify the server; default: system roots"
    )
    client_cert_file: Path | None = Field(
        default=None, description="PEM client certificate for mutual TLS (with client_key_file)"
    )
    client_key_file: Path | None = Field(default=None, description="PEM key of client_cert_file")
    client_server_name: str | None = Field(
        default=None, description="name expected in the server certificate, if not the host"
    )
    client_api_key: SecretStr | None = Field(
        default=None, description="API key sent as 'authorization: Bearer <key>'"
    )
    client_api_key_file: Path | None = Field(
        default=None, description="file holding the API key to send (first line)"
    )

    @field_validator("client_api_key")
    @classmethod
    def _client_key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            check_api_key(value.get_secret_value())
        return value

    @model_validator(mode="after")
    def _check(self) -> EncoderSettings:
        if self.target_bpp is not None and self.target_kbps is not None:
            raise ValueError("set target_bpp or target_kbps, not both")
        if self.reconnect_max_s < self.reconnect_initial_s:
            raise ValueError("reconnect_max_s must be >= reconnect_initial_s")
        for task, qualities in self.checkpoints.items():
            if any(q < 1 for q in qualities):
                raise ValueError(f"checkpoints[{task!r}]: qualities start at 1")
        if (self.client_cert_file is None) != (self.client_key_file is None):
            raise ValueError("set client_cert_file and client_key_file together")
        return self

    def client_tls_config(self) -> ClientTLS | None:
        """How outgoing gRPC calls use TLS; None = plaintext."""
        if not (self.client_tls or self.client_ca_file or self.client_cert_file):
            return None
        return ClientTLS(
            ca_file=self.client_ca_file,
            cert_file=self.client_cert_file,
            key_file=self.client_key_file,
            server_name=self.client_server_name,
        )

    def client_key(self) -> str | None:
        return client_key(self.client_api_key, self.client_api_key_file)


def env_names() -> dict[str, str]:
    """Field name -> environment variable; the deploy files are checked against this."""
    return {name: f"{ENV_PREFIX}{name.upper()}" for name in EncoderSettings.model_fields}
