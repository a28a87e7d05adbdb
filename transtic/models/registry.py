"""One registry of codec architectures, timm style: ``create_model("transtic")``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .base import CodecConfig, HyperpriorCodec, PromptConfig
from .tic import TIC, TransTIC

ModelFactory = Callable[..., HyperpriorCodec]
_REGISTRY: dict[str, ModelFactory] = {}


def register_model(name: str) -> Callable[[ModelFactory], ModelFactory]:
    def wrap(factory: ModelFactory) -> ModelFactory:
        if name in _REGISTRY:
            raise ValueError(f"codec model {name!r} is already registered")
        _REGISTRY[name] = factory
        return factory

    return wrap


def list_models() -> list[str]:
    return sorted(_REGISTRY)


def create_model(name: str, **kwargs: Any) -> HyperpriorCodec:
    """Build a registered architecture with fresh weights (load weights separately)."""
    try:
        factory = _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown codec model {name!r}; known: {', '.join(list_models())}") from None
    return factory(**kwargs)


# The paper uses N=128, M=192 for qualities 1-4 and N=192, M=320 for 5-8.
_HIGH_RATE = {"N": 192, "M": 320}
# Small enough to run in unit tests, with every structural feature of the real model.
_TINY = {"N": 32, "M": 48, "num_heads": (2, 2, 2, 4, 4, 4)}


@register_model("tic")
def tic(**overrides: Any) -> HyperpriorCodec:
    return TIC(CodecConfig(**overrides))


@register_model("tic-hq")
def tic_hq(**overrides: Any) -> HyperpriorCodec:
    return TIC(CodecConfig(**{**_HIGH_RATE, **overrides}))


@register_model("tic-tiny")
def tic_tiny(**overrides: Any) -> HyperpriorCodec:
    return TIC(CodecConfig(**{**_TINY, **overrides}))


@register_model("transtic")
def transtic(prompts: PromptConfig | None = None, **overrides: Any) -> HyperpriorCodec:
    return TransTIC(CodecConfig(**overrides), prompts)


@register_model("transtic-tiny")
def transtic_tiny(prompts: PromptConfig | None = None, **overrides: Any) -> HyperpriorCodec:
    return TransTIC(CodecConfig(**{**_TINY, **overrides}), prompts)


# CPU-trainable default: same block structure, two blocks per stage and narrower
# channels, so a usable codec trains in well under an hour on two CPU cores
# (~0.9 s per 2x256x256 step versus ~1.6 s for N=64/M=96 at full depth).
_SMALL = {"N": 48, "M": 64, "depths": (2, 2, 2, 2, 2, 2), "num_heads": (4, 4, 4, 4, 4, 4)}


@register_model("tic-small")
def tic_small(**overrides: Any) -> HyperpriorCodec:
    return TIC(CodecConfig(**{**_SMALL, **overrides}))


@register_model("transtic-small")
def transtic_small(prompts: PromptConfig | None = None, **overrides: Any) -> HyperpriorCodec:
    return TransTIC(CodecConfig(**{**_SMALL, **overrides}), prompts)
