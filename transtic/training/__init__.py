"""Training: base codecs (rate-distortion) and TransTIC prompts (task losses)."""

from .cli import QUALITY_LAMBDA, prompted_from_base, train_main
from .data import CropDataset, build_dataset
from .export import export_weights
from .loop import LoopConfig, Trainer

__all__ = [
    "QUALITY_LAMBDA",
    "CropDataset",
    "LoopConfig",
    "Trainer",
    "build_dataset",
    "export_weights",
    "prompted_from_base",
    "train_main",
]
