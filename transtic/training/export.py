"""Release weights from training runs: float16 parameters, compact buffers, metadata."""

from __future__ import annotations

import argparse
import copy
import json
from pathlib import Path
from typing import Any

import torch

from ..models import HyperpriorCodec
from .loop import BEST_NAME, CHECKPOINT_NAME, atomic_save

# Entropy-coder tables the loader rebuilds from the weights; never stored.
CDF_BUFFERS = ("_quantized_cdf", "_offset", "_cdf_length", "scale_table")


def _compact(key: str, value: torch.Tensor) -> torch.Tensor:
    """Smallest exact dtype for the structural buffers (loading casts them back).

    Shift masks hold only 0 and -100 and index tables small integers; stored as
    float16/int64 they would be ~80% of a small model's file.
    """
    leaf = key.rsplit(".", 1)[-1]
    if leaf == "attn_mask":
        small = value.to(torch.int8)
        if torch.equal(small.to(value.dtype), value):
            return small
    if leaf == "relative_position_index" and value.numel() and int(value.abs().max()) < 2**15:
        return value.to(torch.int16)
    return value


def export_weights(model: HyperpriorCodec, path: Path, metadata: dict[str, Any]) -> Path:
    """Float16 parameters without CDF tables, in ``save_checkpoint``'s layout.

    The loader rebuilds the tables from the rounded weights, so encoder and
    decoder always agree on them; structural buffers are stored compactly.
    """
    clone = copy.deepcopy(model).cpu()
    for module in (clone.entropy_bottleneck, clone.gaussian_conditional):
        for name in CDF_BUFFERS:
            buf = getattr(module, name, None)
            if isinstance(buf, torch.Tensor):
                setattr(module, name, torch.empty(0, dtype=buf.dtype))
    # Only parameters go to float16: float buffers such as the 1e-9 likelihood
    # lower bound would underflow to 0 and make rate estimates infinite.
    params = {name for name, _ in clone.named_parameters()}
    state = {}
    for key, value in clone.state_dict().items():
        value = value.detach()
        if key in params and value.is_floating_point():
            value = value.half()
        state[key] = _compact(key, value)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_save({"state_dict": state, "metadata": dict(metadata)}, path)
    return path


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
