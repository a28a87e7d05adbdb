"""Codec models, their registry, and checkpoint I/O."""

from .base import CodecConfig, HyperpriorCodec, PromptConfig
from .tic import TIC, TransTIC

__all__ = ["TIC", "CodecConfig", "HyperpriorCodec", "PromptConfig", "TransTIC"]
