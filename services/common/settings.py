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
from typing import Any, TypeVar

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

S = TypeVar("S", bound="ServiceSettings")


class ServiceSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TRANSTIC_", extra="forbid")

    host: str = Field(default="127.0.0.1", description="interface both servers bind to")
    grpc_port: int = Field(default=50051, ge=0, le=65535, description="gRPC port (0 = ephemeral)")
    http_port: int = Field(default=8080, ge=0, le=65535, description="HTTP port (0 = ephemeral)")
    device: str = Field(
        default="auto", description="'auto' (CUDA when available), 'cpu', 'cuda:0', ..."
    )
    log_level: str = Field(default="INFO", description="Python logging level")
    weights_cache_dir: Path | None = Field(
        default=None, description="directory holding downloaded weights files"
    )
    shutdown_grace_s: float = Field(
        default=10.0, ge=0, description="how long in-flight requests may finish after SIGTERM"
    )

    def resolved_device(self) -> str:
        if self.device != "auto":
            return self.device
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"


def _is_structured(annotation: Any) -> bool:
    """True for list/dict fields (possibly optional), which flags take as JSON."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return any(_is_structured(a) for a in typing.get_args(annotation) if a is not type(None))
    return origin in (list, dict, tuple, set) or annotation in (list, dict, tuple, set)


def _structured(text: str) -> Any:
    # JSON for maps and lists; a bare comma list is friendlier for lists of names.
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return [item.strip() for item in text.split(",") if item.strip()]


def add_settings_arguments(parser: argparse.ArgumentParser, cls: type[ServiceSettings]) -> None:
    """One ``--field-name`` flag per settings field (unset flags keep env/defaults)."""
    prefix = str(cls.model_config.get("env_prefix", ""))
    for name, field in cls.model_fields.items():
        flag = "--" + name.replace("_", "-")
        env = f"{prefix}{name}".upper()
        default = field.get_default(call_default_factory=True)
        help_text = f"{field.description or ''} [env {env}, default {default!r}]"
        if field.annotation is bool:
            parser.add_argument(
                flag, dest=name, default=None, action=argparse.BooleanOptionalAction, help=help_text
            )
        elif _is_structured(field.annotation):
            parser.add_argument(
                flag, dest=name, default=None, type=_structured, help=help_text + " (JSON)"
            )
        else:
            # Strings go to pydantic, which converts and validates them like env values.
            parser.add_argument(flag, dest=name, default=None, help=help_text)


def settings_from_args(cls: type[S], argv: Sequence[str] | None = None, **kwargs: Any) -> S:
    parser = argparse.ArgumentParser(**kwargs)
    add_settings_arguments(parser, cls)
    ns = parser.parse_args(argv)
    given = {k: v for k, v in vars(ns).items() if v is not None}
    return cls(**given)
