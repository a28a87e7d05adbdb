"""One registry of codec architectures, timm style: ``create_model("transtic")``.

The built-in architectures are the presets of :mod:`transtic.presets` (data).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..presets import ARCHITECTURES, ArchitecturePreset
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


def _factory(preset: ArchitecturePreset) -> ModelFactory:
    if preset.prompted:

        def prompted(prompts: PromptConfig | None = None, **overrides: Any) -> HyperpriorCodec:
            return TransTIC(CodecConfig(**{**preset.config, **overrides}), prompts)

        return prompted

    def plain(**overrides: Any) -> HyperpriorCodec:
        return TIC(CodecConfig(**{**preset.config, **overrides}))

    return plain


# Every preset of the table is a registered architecture, and nothing else is built in.
for _preset in ARCHITECTURES.values():
    register_model(_preset.name)(_factory(_preset))
