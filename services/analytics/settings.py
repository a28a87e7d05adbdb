"""The analytics service's one settings class (env prefix ``TRANSTIC_ANALYTICS_``)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from services.common.settings import ServiceSettings, check_api_key

ENV_PREFIX = "TRANSTIC_ANALYTICS_"
TASKS = ("classification", "detection", "segmentation")


class Settings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid")

    grpc_port: int = Field(default=50051, ge=0, le=65535, description="gRPC port (0 = ephemeral)")
    http_port: int = Field(default=8080, ge=0, le=65535, description="HTTP port (0 = ephemeral)")

    codec_checkpoint: str | None = Field(
        default=None,
        description="default codec: a checkpoint path or a weights-registry name "
        "(e.g. transtic_cls_q1, looked up in weights_cache_dir)",
    )
    codec_checkpoints: dict[str, str] = Field(
        default_factory=dict,
        description="codecs per task: {'classification': path, 'detection:2': name, ...}; "
        "a 'task:quality' key selects by quality too",
    )
    use_shipped_weights: bool = Field(
        default=True,
        description="when neither codec_checkpoint nor codec_checkpoints is set, serve the "
        "codecs shipped inside the transtic package (transtic_small_cls_q1..q3, offline; "
        "uploads without a quality are coded at q3)",
    )
    precision: Literal["auto", "float32", "bfloat16", "int8"] = Field(
        default="auto",
        description="synthesis transforms: auto = bf16 where the CPU/GPU has native bf16, "
        "else float32; int8 = quantised (CPU, lossy)",
    )
    default_task: str = Field(
        default="classification", description="task when neither request nor stream names one"
    )
    task_backends: list[str] = Field(
        default_factory=lambda: list(TASKS),
        description="task backends to offer (names in transtic.tasks); first one per task wins",
    )
    classification_top_k: int = Field(
        default=5, ge=1, le=1000, description="labels per classified image"
    )

    db_url: str | None = Field(
        default=None,
        description="PostgreSQL database shared by replicas (postgresql://user@host:5432/db; "
        "password from PGPASSWORD or PGPASSFILE); unset = the SQLite file db_path",
    )
    db_path: Path = Field(
        default=Path("var/analytics/frames.db"),
        description="SQLite file for streamed frame results (when db_url is unset)",
    )
    db_synchronous: str = Field(
        default="FULL",
        pattern="^(NORMAL|FULL)$",
        description="SQLite synchronous mode (FULL survives power loss)",
    )
    retention_max_frames: int = Field(
        default=10_000, ge=1, description="frames kept per stream (oldest dropped first)"
    )
    retention_max_age_s: float = Field(
        default=7 * 24 * 3600.0, gt=0, description="frames older than this are dropped"
    )
    admin_api_keys: list[SecretStr] = Field(
        default_factory=list,
        description="keys that may also delete stored results (DELETE /v1/streams/{id}); "
        "needs api_keys or api_keys_file; empty = nobody may delete (retention only)",
    )

    max_batch_size: int = Field(
        default=8, ge=1, le=1024, description="frames decoded and analysed together"
    )
    max_batch_delay_ms: float = Field(
        default=5.0, ge=0, description="how long the first frame of a batch waits for more"
    )
    max_queue: int = Field(
        default=64, ge=1, description="queued frames before requests are refused (429)"
    )
    v2_max_images: int = Field(
        default=16,
        ge=1,
        description="images in one V2 (/v2/models/.../infer) request, at most max_queue (a "
        "request is queued whole or refused whole); more get 413",
    )
    v2_max_request_pixels: int = Field(
        default=2**24,
        ge=64,
        description="predicted cost of one V2 request: the coded pixels of all its images "
        "together (each side rounded up to a multiple of 256), read from their headers "
        "before any work; more get 413 (default: one image of max_pixels)",
    )
    request_timeout_s: float = Field(default=60.0, gt=0, description="longest wait for one result")
    max_upload_bytes: int = Field(
        default=32 * 2**20, ge=1024, description="largest accepted request body (413 above)"
    )
    max_pixels: int = Field(
        default=2**24,
        ge=64,
        description="largest coded image (each side rounded up to a multiple of 256), in "
        "pixels (16 MP); applies to uploads and to the sizes a bitstream header claims",
    )
    max_aspect_ratio: float = Field(
        default=16.0,
        ge=1.0,
        description="longest over shortest side of an image or coded stream; slivers above "
        "it are refused (their padding and task resize would cost far more than their pixels)",
    )
    stream_thumbnail_px: int = Field(
        default=96,
        ge=0,
        le=512,
        description="height in pixels of the JPEG thumbnail of each decoded stream frame, "
        "stored with its result for the web page; 0 = no thumbnails",
    )
    grpc_max_workers: int = Field(
        default=48,
        ge=2,
        description="gRPC handler threads; every call holds one, streams for their whole life",
    )
    grpc_max_streams: int = Field(
        default=32,
        ge=1,
        description="open AnalyzeStream calls in total (RESOURCE_EXHAUSTED beyond); lowered "
        "if needed to leave min(4, grpc_max_workers / 2) handler threads to unary calls",
    )
    grpc_max_streams_per_client: int = Field(
        default=8, ge=1, description="open AnalyzeStream calls per client (key, cert or IP)"
    )
    grpc_stream_idle_timeout_s: float = Field(
        default=120.0,
        gt=0,
        description="an AnalyzeStream with no frame in flight and none received for this "
        "long is closed (DEADLINE_EXCEEDED); the edge client reconnects when it has frames",
    )
    http_max_connections: int = Field(
        default=256, ge=1, description="open HTTP connections; more are closed at once"
    )
    http_header_timeout_s: float = Field(
        default=10.0, gt=0, description="a connection whose request headers take longer is closed"
    )
    http_body_timeout_s: float = Field(
        default=30.0, gt=0, description="a request body that takes longer to arrive is 408"
    )
    http_max_buffered_bytes: int = Field(
        default=256 * 2**20,
        ge=1024,
        description="request bodies held in memory at once across all requests; beyond it "
        "new uploads get 429 with Retry-After (bounds memory under many large uploads)",
    )
    http_tls: bool = Field(
        default=False,
        description="serve REST over HTTPS with tls_cert_file/tls_key_file (no client "
        "certificates: browsers); off when an ingress or proxy terminates TLS",
    )
    metrics_require_auth: bool = Field(
        default=False, description="GET /metrics needs an API key too (when keys are set)"
    )
    cors_origins: list[str] = Field(
        default_factory=list,
        description="origins allowed to call the REST API from browsers "
        "(e.g. https://ops.example.com); empty = no CORS headers at all",
    )

    @field_validator("default_task")
    @classmethod
    def _known_task(cls, value: str) -> str:
        if value not in TASKS:
            raise ValueError(f"unknown task {value!r}; expected one of {', '.join(TASKS)}")
        return value

    @field_validator("db_url", mode="before")
    @classmethod
    def _postgres_url(cls, value: object) -> object:
        if value == "":
            return None  # an empty env value (compose's ${TRANSTIC_DB_URL:-}) means SQLite
        if isinstance(value, str) and not value.startswith(("postgresql://", "postgres://")):
            # The message leaves the URL out: it may carry a password.
            raise ValueError("db_url must be a postgresql:// URL (unset it for SQLite)")
        return value

    @field_validator("cors_origins")
    @classmethod
    def _origins(cls, value: list[str]) -> list[str]:
        for origin in value:
            # A wildcard would let any web page use a browser's network position.
            if origin == "*" or not origin.startswith(("https://", "http://")):
                raise ValueError(f"cors_origins: {origin!r} must be an http(s):// origin, not *")
        return [origin.rstrip("/") for origin in value]

    @property
    def v2_image_cap(self) -> int:
        """Images one V2 request may hold: v2_max_images, and never more than the queue
        holds (such a request could never be admitted)."""
        return min(self.v2_max_images, self.max_queue)

    @property
    def stream_cap(self) -> int:
        """Open streams allowed in total: grpc_max_streams, lowered if needed so that some
        handler threads always stay free for unary calls and health checks."""
        from services.common.grpc_limits import reserved_unary_threads

        free = self.grpc_max_workers - reserved_unary_threads(self.grpc_max_workers)
        return max(1, min(self.grpc_max_streams, free))

    @field_validator("admin_api_keys")
    @classmethod
    def _strong_admin_keys(cls, value: list[SecretStr]) -> list[SecretStr]:
        for key in value:
            check_api_key(key.get_secret_value())
        return value

    @model_validator(mode="after")
    def _admin_keys_need_keys(self) -> Settings:
        # Without ordinary keys the guard lets everyone in; an admin key alone would
        # silently turn authentication on for every route.
        if self.admin_api_keys and not (self.api_keys or self.api_keys_file):
            raise ValueError("admin_api_keys needs api_keys or api_keys_file")
        return self

    @model_validator(mode="after")
    def _https_needs_a_certificate(self) -> Settings:
        if self.http_tls and self.tls_cert_file is None:
            raise ValueError("http_tls needs tls_cert_file and tls_key_file")
        return self

    @field_validator("codec_checkpoints")
    @classmethod
    def _codec_keys(cls, value: dict[str, str]) -> dict[str, str]:
        for key in value:
            task, _, quality = key.partition(":")
            if task not in TASKS:
                raise ValueError(f"codec_checkpoints key {key!r}: unknown task {task!r}")
            if quality and not quality.isdigit():
                raise ValueError(f"codec_checkpoints key {key!r}: quality must be an integer")
        return value
