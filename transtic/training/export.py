"""Release weights from training runs: float16 parameters, compact buffers, metadata."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch

from ..models import HyperpriorCodec, save_checkpoint
from .loop import BEST_NAME, CHECKPOINT_NAME


def export_weights(model: HyperpriorCodec, path: Path, metadata: dict[str, Any]) -> Path:
    """Release weights: float16 parameters, no entropy-coder tables, compact buffers.

    The loader rebuilds the tables from the rounded weights, so encoder and decoder
    always agree on them; written by the library's one checkpoint writer.
    """
    return save_checkpoint(
        model, path, half=True, cdf_tables=False, compact=True, metadata=dict(metadata)
    )


def run_export(args: argparse.Namespace) -> int:
    """Re-export a run's best-validation checkpoint (else its last), with the metadata of
    its ``final.json``; ``--last`` forces the last step."""
    from ..models import load_checkpoint

    ckpt_path = args.run
    if args.run.is_dir():
        best = args.run / BEST_NAME
        ckpt_path = best if best.is_file() and not args.last else args.run / CHECKPOINT_NAME
    ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    model = load_checkpoint(ckpt["state_dict"])
    final = ckpt_path.parent / "final.json"
    metadata: dict[str, Any] = json.loads(final.read_text()) if final.is_file() else {}
    metadata.setdefault("steps", int(ckpt["step"]))
    metadata["exported_step"] = int(ckpt["step"])
    metadata.setdefault("train_seconds", round(float(ckpt.get("elapsed", 0.0)), 1))
    for item in args.set:
        key, _, value = item.partition("=")
        try:
            metadata[key] = json.loads(value)
        except json.JSONDecodeError:
            metadata[key] = value
    export_weights(model, args.out, metadata)
    print(f"exported step {ckpt['step']} of {ckpt_path} -> {args.out}")
    return 0
