"""Prompt training's pieces: a TransTIC around a frozen base codec, and the task loss."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..models import TransTIC
from ..models.checkpoint import CDF_BUFFERS


def _codec_state(source: str | Path) -> dict[str, torch.Tensor]:
    """The normalized state dict of a codec file or catalog name, checked like any codec."""
    from ..models import normalize_state_dict
    from ..models.checkpoint import read_checkpoint
    from ..weights import locate_codec

    return normalize_state_dict(read_checkpoint(locate_codec(source).path))


def prompted_from_base(base: str | Path, prompts: Any = None) -> TransTIC:
    """A TransTIC whose frozen part is ``base`` (a TIC or TransTIC file).

    Only prompt tensors may be missing from the base; anything else missing or
    unexpected means the base does not fit and is an error.
    """
    from ..models import PromptConfig, infer_architecture

    state = _codec_state(base)
    config, found = infer_architecture(state)
    model = TransTIC(config, found or prompts or PromptConfig())
    state = {
        k: v
        for k, v in state.items()
        if not (k.rsplit(".", 1)[-1] in CDF_BUFFERS and v.numel() == 0)
    }
    result = model.load_state_dict(state, strict=False)
    missing = [
        k
        for k in result.missing_keys
        if "prompt" not in k and k.rsplit(".", 1)[-1] not in CDF_BUFFERS
    ]
    if missing or result.unexpected_keys:
        raise ValueError(
            f"base codec does not fit: missing {missing}, unexpected {result.unexpected_keys}"
        )
    return model


def load_prompts(model: TransTIC, source: str | Path) -> None:
    """Copy every prompt tensor of another TransTIC (e.g. tuned at a neighbouring rate)."""
    state = _codec_state(source)
    wanted = {k for k, _ in model.named_parameters() if "prompt" in k}
    found = {k: v for k, v in state.items() if k in wanted}
    if set(found) != wanted:
        raise ValueError(f"{source} lacks prompt tensors: {sorted(wanted - set(found))[:3]}")
    model.load_state_dict(found, strict=False)


def task_loss(args: argparse.Namespace, lmbda: float) -> nn.Module:
    from ..tasks import create_backend
    from ..weights import default_cache_dir
    from .losses import FPN_LEVELS, ClassificationFeatureLoss, FPNFeatureLoss

    random_weights = args.task_weights == "random"
    cache = args.cache_dir or default_cache_dir()
    kwargs: dict[str, Any] = {"cache_dir": cache}
    if args.task_weights and not random_weights:
        path = Path(args.task_weights)
        kwargs["weights_path" if path.is_file() else "weights"] = args.task_weights
    name = args.task_backend or args.task
    if args.task == "classification":
        backend = create_backend(name, **kwargs)
        norm = backend.normalization
        if random_weights:
            import timm

            classifier = timm.create_model(backend.model_name, pretrained=False)  # type: ignore[attr-defined]
        else:
            classifier = backend.timm_model()  # type: ignore[attr-defined]
        return ClassificationFeatureLoss(
            classifier, lmbda, mean=norm.mean, std=norm.std, colour_weight=args.colour_weight
        )
    if random_weights:
        from torchvision.models.detection import fasterrcnn_resnet50_fpn, maskrcnn_resnet50_fpn

        build = fasterrcnn_resnet50_fpn if args.task == "detection" else maskrcnn_resnet50_fpn
        backbone = build(weights=None, weights_backbone=None).backbone
        return FPNFeatureLoss(backbone, lmbda)
    backend = create_backend(name, **kwargs)
    if backend.task != args.task:
        raise SystemExit(f"error: task backend {name!r} does not do {args.task}")
    backend.load("cpu")
    norm = backend.normalization
    return FPNFeatureLoss(
        backend.model.backbone,  # type: ignore[attr-defined]
        lmbda,
        mean=norm.mean,
        std=norm.std,
        levels=getattr(backend, "fpn_levels", FPN_LEVELS),
        bgr=getattr(backend, "bgr_input", False),
    )
