"""``python -m services.encoder serve|stream|probe|info``: flags override TRANSTIC_ENCODER_* env."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
from collections.abc import Sequence
from types import FrameType
from typing import Any

from pydantic import ValidationError

from services.common.logs import configure_logging
from services.common.settings import add_settings_arguments, given_settings
from transtic.dependency_warnings import quiet_dependency_warnings

from .settings import EncoderSettings

log = logging.getLogger("services.encoder")

_CODEC_FLAGS = (
    "weights_cache_dir",
    "kernel_cache_dir",
    "tasks",
    "task",
    "quality",
    "device",
    "precision",
    "align_mode",
    "torch_threads",
    "max_pixels",
    "max_aspect_ratio",
    "max_image_bytes",
    "log_level",
    "log_format",
)
_SERVE_FLAGS = (
    "host",
    "grpc_port",
    "http_port",
    "grpc_health_port",
    "model_repository",
    "max_workers",
    "max_concurrent_rpcs",
    "shutdown_grace_s",
    "tls_cert_file",
    "tls_key_file",
    "tls_client_ca_file",
    "api_keys_file",
    "rate_limit_per_s",
    "rate_limit_burst",
    "grpc_keepalive_s",
    "grpc_max_connection_idle_s",
    "grpc_max_calls_per_connection",
)
# Outgoing calls (stream, probe, info). The keys themselves have no flags (ps shows
# command lines): TRANSTIC_ENCODER_CLIENT_API_KEY or client_api_key_file.
_CLIENT_FLAGS = (
    "client_tls",
    "client_ca_file",
    "client_cert_file",
    "client_key_file",
    "client_server_name",
    "client_api_key_file",
)
_STREAM_FLAGS = (
    "source",
    "source_reconnect_attempts",
    "source_skip_stale",
    "target",
    "stream_id",
    "target_bpp",
    "target_kbps",
    "fps",
    "pace",
    "max_frames",
    "buffer_size",
    "reconnect_initial_s",
    "reconnect_max_s",
    "reconnect_max_attempts",
    "ack_timeout_s",
    "drain_timeout_s",
    "frame_max_retries",
    "refused_frames_limit",
    "stream_metrics_port",
    "summary_json",
)


def _add_checkpoint_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--checkpoint",
        action="append",
        default=[],
        metavar="[TASK:]Q=PATH",
        help="codec checkpoint for a quality (task defaults to --task); repeatable",
    )


def build_parser() -> argparse.ArgumentParser:
    # No abbreviations: "--client-api-key KEY" must not be taken for "--client-api-key-file".
    parser = argparse.ArgumentParser(
        prog="python -m services.encoder", description=__doc__, allow_abbrev=False
    )
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the gRPC Encoder service", allow_abbrev=False)
    add_settings_arguments(serve, EncoderSettings, _CODEC_FLAGS + _SERVE_FLAGS)
    _add_checkpoint_flag(serve)
    stream = sub.add_parser(
        "stream", help="stream frames from a folder/video/camera to Analytics", allow_abbrev=False
    )
    add_settings_arguments(
        stream, EncoderSettings, _CODEC_FLAGS + _STREAM_FLAGS + _CLIENT_FLAGS + ("host",)
    )
    _add_checkpoint_flag(stream)
    for name, what in (
        ("probe", "gRPC health check (exit 0 when SERVING)"),
        ("info", "print the encoder's GetInfo as JSON"),
    ):
        cmd = sub.add_parser(name, help=what, allow_abbrev=False)
        cmd.add_argument("--address", default=None, help="host:port (default localhost:grpc_port)")
        cmd.add_argument(
            "--timeout", type=float, default=3.0, help="seconds to wait for the answer"
        )
        add_settings_arguments(cmd, EncoderSettings, _CLIENT_FLAGS)
    return parser


def parse_checkpoints(specs: Sequence[str], default_task: str) -> dict[str, dict[int, str]]:
    table: dict[str, dict[int, str]] = {}
    for spec in specs:
        key, sep, path = spec.partition("=")
        task, _, quality = key.rpartition(":")
        if not sep or not path or not quality.isdigit():
            raise ValueError(f"--checkpoint {spec!r}: expected [TASK:]QUALITY=PATH")
        table.setdefault(task or default_task, {})[int(quality)] = path
    return table


def settings_from_args(args: argparse.Namespace) -> EncoderSettings:
    overrides = given_settings(args, EncoderSettings)
    settings = EncoderSettings(**overrides)
    extra = parse_checkpoints(getattr(args, "checkpoint", []), settings.task)
    if extra:
        merged: dict[str, dict[int, Any]] = {t: dict(q) for t, q in settings.checkpoints.items()}
        for task, qualities in extra.items():
            merged.setdefault(task, {}).update(qualities)
        settings = EncoderSettings(**overrides, checkpoints=merged)
    return settings


def _configure(settings: EncoderSettings) -> None:
    configure_logging(settings.log_level.upper(), settings.log_format)
    from transtic.allocator import retain_freed_memory
    from transtic.kernels import set_cache_dir

    set_cache_dir(settings.kernel_cache_dir)
    retain_freed_memory()  # before any server thread gets an arena of its own
    if settings.torch_threads:
        import torch

        torch.set_num_threads(settings.torch_threads)


def _run_stream(settings: EncoderSettings) -> int:
    from .streamer import StreamRun, start_metrics

    run = StreamRun(settings)
    http = start_metrics(settings, run.metrics)

    def on_signal(signum: int, frame: FrameType | None) -> None:
        # Only sets events: safe whatever the main thread was doing when the signal came.
        run.stop()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)
    try:
        summary = run.run()
    finally:
        if http is not None:
            http.stop()
    return run.exit_code(summary)


def _probe(args: argparse.Namespace, settings: EncoderSettings, info: bool) -> int:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from services.common.auth import auth_metadata
    from services.common.tls import open_channel
    from services.generated.transtic.v1 import api_pb2, api_pb2_grpc

    address = args.address or f"localhost:{settings.grpc_port}"
    try:
        channel = open_channel(address, settings.client_tls_config())
        metadata = auth_metadata(settings.client_key())
    except (OSError, ValueError) as exc:
        print(f"{address}: {exc}", file=sys.stderr)
        return 2
    with channel:
        try:
            if info:
                from google.protobuf import json_format

                reply = api_pb2_grpc.EncoderStub(channel).GetInfo(
                    api_pb2.GetInfoRequest(), timeout=args.timeout, metadata=metadata
                )
                print(json.dumps(json_format.MessageToDict(reply), indent=2))
                return 0
            status = (
                health_pb2_grpc.HealthStub(channel)
                .Check(health_pb2.HealthCheckRequest(service=""), timeout=args.timeout)
                .status
            )
        except grpc.RpcError as exc:
            print(f"{address}: {exc.code().name}", file=sys.stderr)
            return 1
    print(f"{address}: {health_pb2.HealthCheckResponse.ServingStatus.Name(status)}")
    return 0 if status == health_pb2.HealthCheckResponse.SERVING else 1


def main(argv: Sequence[str] | None = None) -> int:
    quiet_dependency_warnings()
    args = build_parser().parse_args(argv)
    try:
        settings = settings_from_args(args)
    except ValidationError as exc:
        # Messages only: pydantic's full text repeats the input, which may be a secret.
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'settings'}: {e['msg']}" for e in exc.errors()
        )
        print(f"invalid settings: {problems}", file=sys.stderr)
        return 2
    except ValueError as exc:
        print(f"invalid settings: {exc}", file=sys.stderr)
        return 2
    if args.command in ("probe", "info"):
        return _probe(args, settings, info=args.command == "info")
    _configure(settings)
    try:
        if args.command == "serve":
            from .server import serve

            return serve(settings)
        return _run_stream(settings)
    except (ValueError, OSError) as exc:
        log.error("%s", exc)
        return 2
