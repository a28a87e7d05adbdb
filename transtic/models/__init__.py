"""Codec models, their registry, and checkpoint I/O."""

from .base import CodecConfig, HyperpriorCodec, PromptConfig
from .checkpoint import (
    CheckpointError,
    infer_architecture,
    load_checkpoint,
    normalize_state_dict,
    save_checkpoint,
    weights_fingerprint,
)
from .registry import create_model, list_models, register_model
from .tic import TIC, TransTIC

__all__ = [
    "TIC",
    "CheckpointError",
    "CodecConfig",
    "HyperpriorCodec",
    "PromptConfig",
    "TransTIC",
    "create_model",
    "infer_architecture",
    "list_models",
    "load_checkpoint",
    "normalize_state_dict",
    "register_model",
    "save_checkpoint",
    "weights_fingerprint",
]
