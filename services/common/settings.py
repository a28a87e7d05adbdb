"""A settings base for the services, and command-line flags derived from its fields.

Every service has exactly one pydantic-settings class (subclass of
:class:`ServiceSettings`): values come from CLI flags, then environment
variables with the service's prefix, then the defaults.
"""

from __future__ import annotations

import argparse
import json
import types
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

S = TypeVar("S", bound="ServiceSettings")
# Shorter keys are guessable; the generated ones (secrets.token_urlsafe(32)) have 43 chars.
MIN_API_KEY_LENGTH = 16


class ServiceSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TRANSTIC_", extra="forbid")

    host: str = Field(default="127.0.0.1", description="interface both servers bind to")
    grpc_port: int = Field(default=50051, ge=0, le=65535, description="gRPC port (0 = ephemeral)")
    http_port: int = Field(default=8080, ge=0, le=65535, description="HTTP port (0 = ephemeral)")
    grpc_health_port: int | None = Field(
        default=None,
        ge=0,
        le=65535,
        description="plaintext gRPC port that serves grpc.health.v1 Check and nothing else, "
        "for probes that cannot do TLS (the kubelet's gRPC probe); unset = none, 0 = ephemeral",
    )
    device: str = Field(
        default="auto", description="'auto' (CUDA when available), 'cpu', 'cuda:0', ..."
    )
    log_level: str = Field(default="INFO", description="Python logging level")
    log_format: Literal["text", "json"] = Field(
        default="text",
        description="log lines as text, or json: one object per line (timestamp, level, "
        "logger, message, and request_id / stream_id / sequence when known)",
    )
    weights_cache_dir: Path | None = Field(
        default=None, description="directory holding downloaded weights files"
    )
    kernel_cache_dir: Path | None = Field(
        default=None,
        description="directory of the native CPU kernels (built there on first use with a C++ "
        "compiler, or ahead of time by `python -m transtic.kernels build`); unset = "
        "~/.cache/transtic/kernels. Without a kernel the codec runs PyTorch's operators",
    )
    model_repository: Path | None = Field(
        default=None,
        description="directory of codec weights that model control may load by name: "
        "NAME.json ({'file', 'sha256', 'task', 'quality'}) beside each weights file "
        "(docs/model-control.md); read again at every load, so new files need no restart",
    )
    shutdown_grace_s: float = Field(
        default=10.0, ge=0, description="how long in-flight requests may finish after SIGTERM"
    )

    # -- security of the servers (docs/security.md); all off unless set, except rate limits
    tls_cert_file: Path | None = Field(
        default=None,
        description="PEM server certificate (chain) for gRPC; with tls_key_file turns TLS on",
    )
    tls_key_file: Path | None = Field(default=None, description="PEM private key of tls_cert_file")
    tls_client_ca_file: Path | None = Field(
        default=None,
        description="PEM CA bundle: when set, gRPC clients must present a certificate it signed "
        "(mutual TLS)",
    )
    api_keys: list[SecretStr] = Field(
        default_factory=list,
        description="accepted API keys (Authorization: Bearer KEY or X-API-Key; gRPC metadata "
        "authorization); empty together with api_keys_file = no authentication",
    )
    api_keys_file: Path | None = Field(
        default=None, description="file with more API keys, one per line ('#' comments)"
    )
    rate_limit_per_s: float = Field(
        default=200.0,
        ge=0,
        description="requests (and streamed frames) per second per client (API key, client "
        "certificate or IP); 0 = no limit",
    )
    rate_limit_burst: int = Field(
        default=400, ge=1, description="requests a client may send at once above the rate"
    )
    grpc_keepalive_s: float = Field(
        default=60.0, gt=0, description="gRPC: seconds between the server's keepalive pings"
    )
    grpc_max_connection_idle_s: float = Field(
        default=300.0, gt=0, description="gRPC: connections without calls this long are closed"
    )
    grpc_max_calls_per_connection: int = Field(
        default=64, ge=1, description="gRPC: concurrent calls (HTTP/2 streams) per connection"
    )

    @field_validator("api_keys")
    @classmethod
    def _strong_keys(cls, value: list[SecretStr]) -> list[SecretStr]:
        for key in value:
            check_api_key(key.get_secret_value())
        return value

    @model_validator(mode="after")
    def _health_port_apart(self) -> ServiceSettings:
        if self.grpc_health_port and self.grpc_health_port in (self.grpc_port, self.http_port):
            raise ValueError("grpc_health_port must differ from grpc_port and http_port")
        return self

    @model_validator(mode="after")
    def _tls_pairs(self) -> ServiceSettings:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("set tls_cert_file and tls_key_file together")
        if self.tls_client_ca_file is not None and self.tls_cert_file is None:
            raise ValueError("tls_client_ca_file (mutual TLS) needs tls_cert_file and tls_key_file")
        return self

    def resolved_device(self) -> str:
        if self.device != "auto":
            return self.device
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"


def check_api_key(key: str) -> str:
    """Refuse keys that are short or would not survive an HTTP header (the message never
    contains the key itself: settings errors end up in logs)."""
    if len(key) < MIN_API_KEY_LENGTH:
        raise ValueError(f"API keys need at least {MIN_API_KEY_LENGTH} characters")
    if not key.isascii() or not key.isprintable() or any(c.isspace() for c in key):
        raise ValueError("API keys must be printable ASCII without spaces")
    return key


def is_secret(annotation: Any) -> bool:
    """True for SecretStr fields (possibly optional or in a list)."""
    if annotation is SecretStr:
        return True
    return any(is_secret(a) for a in typing.get_args(annotation))


def _list_items(text: str) -> list[Any]:
    # A JSON list, or a comma list (friendlier for lists of names); flags may repeat values.
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        value = None
    if isinstance(value, list):
        return value
    return [item.strip() for item in text.split(",") if item.strip()]


def _json_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON ({exc.msg})") from None


class _ListFlag(argparse.Action):
    """``--tasks a b``, ``--tasks a,b`` and ``--tasks '["a", "b"]'`` all give ``[a, b]``."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        setattr(namespace, self.dest, [item for items in values for item in items])


def _flag_options(annotation: Any) -> dict[str, Any]:
    """argparse options for a field. Scalars stay strings: pydantic converts and validates
    them exactly as it does environment values, with the same messages."""
    members = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType) and len(members) == 1:
        annotation = members[0]
    origin = typing.get_origin(annotation) or annotation
    if annotation is bool:
        return {"action": argparse.BooleanOptionalAction}
    if origin is typing.Literal:
        return {"choices": [str(choice) for choice in typing.get_args(annotation)]}
    if origin in (list, tuple, set):
        suffix = " (values, a comma list or a JSON list)"
        return {"nargs": "+", "type": _list_items, "action": _ListFlag, "suffix": suffix}
    if origin is dict:
        return {"type": _json_value, "metavar": "JSON", "suffix": " (JSON)"}
    return {}


def add_settings_arguments(
    parser: argparse.ArgumentParser,
    cls: type[ServiceSettings],
    names: Sequence[str] | None = None,
) -> None:
    """One ``--field-name`` flag per settings field (all, or ``names``); unset flags keep
    the environment's value or the default.

    Secrets get no flag: command lines are visible to every user of the machine (ps,
    /proc); they come from the environment or their ``*_file`` setting only.
    """
    prefix = str(cls.model_config.get("env_prefix", ""))
    for name in cls.model_fields if names is None else names:
        field = cls.model_fields[name]
        if is_secret(field.annotation):
            continue
        options = _flag_options(field.annotation)
        suffix = options.pop("suffix", "")
        default = field.get_default(call_default_factory=True)
        about = field.description or name.replace("_", " ")
        help_text = f"{about}{suffix} [env {prefix}{name.upper()}, default {default!r}]"
        parser.add_argument(
            "--" + name.replace("_", "-"), dest=name, default=None, help=help_text, **options
        )


def given_settings(namespace: argparse.Namespace, cls: type[ServiceSettings]) -> dict[str, Any]:
    """The settings fields that flags set (``None`` = not given)."""
    return {k: v for k, v in vars(namespace).items() if k in cls.model_fields and v is not None}


def settings_from_args(cls: type[S], argv: Sequence[str] | None = None, **kwargs: Any) -> S:
    # No abbreviations: "--api-keys KEY" must not be taken for "--api-keys-file KEY".
    parser = argparse.ArgumentParser(**{"allow_abbrev": False, **kwargs})
    add_settings_arguments(parser, cls)
    return cls(**given_settings(parser.parse_args(argv), cls))
