"""``transtic train codec|prompts``: the paper's two training stages.

``codec``   rate-distortion training of a base TIC (``lambda*255^2*MSE + bpp``).
``prompts`` freezes a trained base codec and learns only TransTIC's prompts
            against a frozen task network (classification, detection, segmentation).

Single process by default; under ``torchrun`` (WORLD_SIZE > 1) every rank trains a
DistributedDataParallel replica on its share of each batch order.
"""

from __future__ import annotations

import argparse
import copy
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..models import HyperpriorCodec, TransTIC, create_model
from .data import CropDataset, build_dataset
from .loop import LoopConfig, Trainer, atomic_save, log

# The paper's lambda per quality (codec and classification prompts), and the
# detection/segmentation prompt lambdas (weight of the rate term) per quality.
QUALITY_LAMBDA = {1: 0.0018, 2: 0.0035, 3: 0.0067, 4: 0.013}
DETECTION_LAMBDA = {1: 2.0, 2: 1.0, 3: 0.5, 4: 0.2}
_CDF_BUFFERS = ("_quantized_cdf", "_offset", "_cdf_length", "scale_table")


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", type=Path, required=True, help="run directory (checkpoints, logs)")
    p.add_argument(
        "--quality",
        type=int,
        choices=sorted(QUALITY_LAMBDA),
        default=None,
        help="paper quality index 1-8: picks lambda from the paper's table",
    )
    p.add_argument("--lambda", dest="lmbda", type=float, default=None, help="overrides --quality")
    p.add_argument(
        "--data",
        default="photos",
        choices=["photos", "folder", "imagenet", "coco"],
        help="training images: the bundled photos, a folder, ImageNet or COCO",
    )
    p.add_argument(
        "--data-path",
        type=Path,
        default=None,
        help="where the --data images are (folder, ImageNet train dir or COCO root)",
    )
    p.add_argument("--annotations", type=Path, default=None, help="COCO instances json")
    p.add_argument("--val-path", type=Path, default=None, help="folder of validation images")
    p.add_argument("--val-heldout", action="store_true", help="validate on the held-out photos")
    p.add_argument(
        "--patch-size", type=int, default=256, help="side of the random training crops, pixels"
    )
    p.add_argument("--repeats", type=int, default=1, help="crops per image per epoch")
    p.add_argument(
        "--scale-jitter",
        type=float,
        nargs=2,
        default=(1.0, 1.0),
        metavar=("LO", "HI"),
        help="random rescale range applied before cropping",
    )
    p.add_argument("--steps", type=int, required=True, help="optimiser steps to run")
    p.add_argument("--batch-size", type=int, default=8, help="crops per step")
    p.add_argument("--lr", type=float, default=1e-4, help="Adam learning rate")
    p.add_argument(
        "--lr-milestones",
        type=float,
        nargs="*",
        default=[],
        help="fractions of --steps at which the learning rate is multiplied by --lr-gamma",
    )
    p.add_argument(
        "--lr-gamma", type=float, default=0.5, help="learning-rate factor at each milestone"
    )
    p.add_argument("--seed", type=int, default=42, help="random seed (crops, initialisation)")
    p.add_argument("--num-workers", type=int, default=0, help="data-loader worker processes")
    p.add_argument("--bf16", action="store_true", help="bfloat16 autocast for the forward pass")
    p.add_argument(
        "--device", default="auto", help="torch device; auto = cuda when available, else cpu"
    )
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--log-every", type=int, default=10, help="steps between log lines")
    p.add_argument(
        "--checkpoint-every", type=int, default=100, help="steps between checkpoints (for --resume)"
    )
    p.add_argument(
        "--val-every", type=int, default=0, help="steps between validations; 0 = only at the end"
    )
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pth.tar")
    p.add_argument("--export", type=Path, default=None, help="final float16 weights file")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="transtic train", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    codec = sub.add_parser("codec", help="rate-distortion training of a base codec")
    _common(codec)
    codec.add_argument("--model", default="tic", help="registered architecture, e.g. tic-small")
    codec.add_argument("--init", type=Path, default=None, help="start from these codec weights")
    codec.add_argument(
        "--aux-lr",
        type=float,
        default=1e-3,
        help="learning rate of the entropy bottleneck's auxiliary loss",
    )
    codec.add_argument(
        "--clip-max-norm", type=float, default=1.0, help="gradient-norm clipping; 0 = none"
    )
    codec.add_argument(
        "--no-vflip", dest="vflip", action="store_false", help="no vertical flips (paper: on)"
    )

    prompts = sub.add_parser("prompts", help="train TransTIC prompts on a frozen base codec")
    _common(prompts)
    prompts.add_argument(
        "--task",
        required=True,
        choices=["classification", "detection", "segmentation"],
        help="the machine task the prompts are trained for",
    )
    prompts.add_argument("--base", type=Path, required=True, help="base codec (or TransTIC) file")
    prompts.add_argument(
        "--init-prompts", type=Path, default=None, help="start from the prompts of this TransTIC"
    )
    prompts.add_argument(
        "--num-tokens", type=int, default=16, help="task prompt tokens per decoder block"
    )
    prompts.add_argument(
        "--generator-channels", type=int, default=32, help="width of the instance prompt generator"
    )
    # The official prompt scripts step Adam without clipping.
    prompts.add_argument(
        "--clip-max-norm", type=float, default=0.0, help="gradient-norm clipping; 0 = none"
    )
    prompts.add_argument("--task-weights", default=None, help="registry name or file; 'random'")
    prompts.add_argument("--cache-dir", type=Path, default=None, help="weights cache directory")
    export = sub.add_parser("export", help="training checkpoint -> float16 release weights")
    export.add_argument("run", type=Path, help="run directory (or its checkpoint file)")
    export.add_argument("--out", type=Path, required=True, help="weights file to write")
    export.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="metadata")
    return parser


def run_export(args: argparse.Namespace) -> int:
    """Re-export a run's last checkpoint, with the metadata of its ``final.json``."""
    from ..models import load_checkpoint

    ckpt_path = args.run / "checkpoint.pth.tar" if args.run.is_dir() else args.run
    ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    model = load_checkpoint(ckpt["state_dict"])
    final = ckpt_path.parent / "final.json"
    metadata: dict[str, Any] = json.loads(final.read_text()) if final.is_file() else {}
    metadata.setdefault("steps", int(ckpt["step"]))
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


def _lambda(args: argparse.Namespace, table: dict[int, float]) -> float:
    if args.lmbda is not None:
        return float(args.lmbda)
    if args.quality is None:
        raise SystemExit("error: give --quality or --lambda")
    return table[args.quality]


def _datasets(args: argparse.Namespace, vflip: bool) -> tuple[CropDataset, CropDataset | None]:
    train = build_dataset(
        args.data,
        args.data_path,
        annotations=args.annotations,
        patch_size=args.patch_size,
        repeats=args.repeats,
        scale=tuple(args.scale_jitter),
        vflip=vflip,
        seed=args.seed,
    )
    val: CropDataset | None = None
    if args.val_path is not None:
        val = build_dataset("folder", args.val_path, patch_size=args.patch_size, train=False)
    elif args.val_heldout:
        from .data import CropDataset as _CD
        from .photos import photo_paths

        val = _CD(photo_paths("heldout"), patch_size=args.patch_size, train=False, cache=True)
    return train, val


def _loop_config(args: argparse.Namespace, aux_lr: float) -> LoopConfig:
    return LoopConfig(
        out_dir=args.out,
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        aux_lr=aux_lr,
        clip_max_norm=args.clip_max_norm,
        lr_milestones=tuple(args.lr_milestones),
        lr_gamma=args.lr_gamma,
        seed=args.seed,
        num_workers=args.num_workers,
        bf16=args.bf16,
        log_every=args.log_every,
        checkpoint_every=args.checkpoint_every,
        val_every=args.val_every,
        device=args.device,
        resume=args.resume,
        progress=not args.no_progress,
    )


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
        for name in _CDF_BUFFERS:
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


def _data_description(args: argparse.Namespace) -> str:
    if args.data == "photos":
        return "shipped natural photos (transtic.training.photos.TRAIN)"
    return f"{args.data}:{args.data_path}"


def _finish(
    trainer: Trainer, model: HyperpriorCodec, args: argparse.Namespace, meta: dict[str, Any]
) -> int:
    result = trainer.run()
    final = trainer.validate()
    if final:
        log.info("final validation %s", json.dumps(final))
    if not trainer.dist.main:
        return 0
    metadata = {
        **meta,
        "steps": result["step"],
        "batch_size": args.batch_size,
        "patch_size": args.patch_size,
        "train_seconds": round(result["elapsed"], 1),
        "data": _data_description(args),
        "seed": args.seed,
        **{k: round(v, 5) for k, v in final.items()},
    }
    path = export_weights(model, args.export or args.out / "final.pth.tar", metadata)
    (args.out / "final.json").write_text(json.dumps(metadata, indent=2) + "\n")
    log.info("exported %s", path)
    return 0


def run_codec(args: argparse.Namespace) -> int:
    from .losses import RateDistortionLoss

    lmbda = _lambda(args, QUALITY_LAMBDA)
    torch.manual_seed(args.seed)  # the weights' random initialisation
    model = create_model(args.model)
    if args.init is not None:
        from ..models import load_checkpoint

        model.load_state_dict(load_checkpoint(args.init).state_dict())
    # The entropy bottleneck's quantiles are trained by the aux loss only (CompressAI).
    aux = [p for n, p in model.named_parameters() if n.endswith("quantiles")]
    main = [p for n, p in model.named_parameters() if not n.endswith("quantiles")]
    train, val = _datasets(args, vflip=args.vflip)
    trainer = Trainer(
        model,
        RateDistortionLoss(lmbda),
        train,
        _loop_config(args, args.aux_lr),
        params=main,
        aux_params=aux,
        val_set=val,
    )
    log.info("codec %s lambda=%g, %d parameters", args.model, lmbda, sum(p.numel() for p in main))
    meta = {"kind": "codec", "architecture": args.model, "lambda": lmbda, "quality": args.quality}
    if args.init is not None:
        meta["init"] = str(args.init)
    return _finish(trainer, model, args, meta)


def prompted_from_base(base: str | Path, prompts: Any = None) -> TransTIC:
    """A TransTIC whose frozen part is ``base`` (a TIC or TransTIC file).

    Only prompt tensors may be missing from the base; anything else missing or
    unexpected means the base does not fit and is an error.
    """
    from ..models import PromptConfig, infer_architecture, normalize_state_dict

    raw = torch.load(base, map_location="cpu", weights_only=True)
    state = normalize_state_dict(raw)
    config, found = infer_architecture(state)
    model = TransTIC(config, found or prompts or PromptConfig())
    state = {
        k: v
        for k, v in state.items()
        if not (k.rsplit(".", 1)[-1] in _CDF_BUFFERS and v.numel() == 0)
    }
    result = model.load_state_dict(state, strict=False)
    missing = [
        k
        for k in result.missing_keys
        if "prompt" not in k and k.rsplit(".", 1)[-1] not in _CDF_BUFFERS
    ]
    if missing or result.unexpected_keys:
        raise ValueError(
            f"base codec does not fit: missing {missing}, unexpected {result.unexpected_keys}"
        )
    return model


def load_prompts(model: TransTIC, source: Path) -> None:
    """Copy every prompt tensor of another TransTIC (e.g. tuned at a neighbouring rate)."""
    from ..models import normalize_state_dict

    state = normalize_state_dict(torch.load(source, map_location="cpu", weights_only=True))
    wanted = {k for k, _ in model.named_parameters() if "prompt" in k}
    found = {k: v for k, v in state.items() if k in wanted}
    if set(found) != wanted:
        raise ValueError(f"{source} lacks prompt tensors: {sorted(wanted - set(found))[:3]}")
    model.load_state_dict(found, strict=False)


def _task_loss(args: argparse.Namespace, lmbda: float) -> nn.Module:
    from ..tasks import create_backend
    from ..weights import default_cache_dir
    from .losses import ClassificationFeatureLoss, FPNFeatureLoss

    random_weights = args.task_weights == "random"
    cache = args.cache_dir or default_cache_dir()
    if args.task == "classification":
        kwargs: dict[str, Any] = {"cache_dir": cache}
        if args.task_weights and not random_weights:
            path = Path(args.task_weights)
            kwargs["weights_path" if path.is_file() else "weights"] = args.task_weights
        backend = create_backend("classification", **kwargs)
        norm = backend.normalization
        if random_weights:
            import timm

            classifier = timm.create_model(backend.model_name, pretrained=False)  # type: ignore[attr-defined]
        else:
            classifier = backend.timm_model()  # type: ignore[attr-defined]
        return ClassificationFeatureLoss(classifier, lmbda, mean=norm.mean, std=norm.std)
    if random_weights:
        from torchvision.models.detection import fasterrcnn_resnet50_fpn, maskrcnn_resnet50_fpn

        build = fasterrcnn_resnet50_fpn if args.task == "detection" else maskrcnn_resnet50_fpn
        backbone = build(weights=None, weights_backbone=None).backbone
    else:
        kwargs = {"cache_dir": cache}
        if args.task_weights:
            path = Path(args.task_weights)
            kwargs["weights_path" if path.is_file() else "weights"] = args.task_weights
        backend = create_backend(args.task, **kwargs)
        backend.load("cpu")
        backbone = backend.model.backbone  # type: ignore[attr-defined]
    return FPNFeatureLoss(backbone, lmbda)


def run_prompts(args: argparse.Namespace) -> int:
    from ..models import PromptConfig

    table = QUALITY_LAMBDA if args.task == "classification" else DETECTION_LAMBDA
    lmbda = _lambda(args, table)
    prompts = PromptConfig(num_tokens=args.num_tokens, generator_channels=args.generator_channels)
    torch.manual_seed(args.seed)  # the prompts' random initialisation
    model = prompted_from_base(args.base, prompts)
    if args.init_prompts is not None:
        load_prompts(model, args.init_prompts)
    for name, p in model.named_parameters():
        p.requires_grad_("prompt" in name)
    params = model.prompt_parameters()
    criterion = _task_loss(args, lmbda)
    train, val = _datasets(args, vflip=False)
    trainer = Trainer(model, criterion, train, _loop_config(args, 0.0), params=params, val_set=val)
    log.info(
        "prompts for %s lambda=%g: %d trainable of %d parameters",
        args.task,
        lmbda,
        sum(p.numel() for p in params),
        sum(p.numel() for p in model.parameters()),
    )
    meta = {
        "kind": "prompts",
        "task": args.task,
        "lambda": lmbda,
        "quality": args.quality,
        "base": str(args.base),
        "task_weights": args.task_weights or "default",
    }
    if args.init_prompts is not None:
        meta["init_prompts"] = str(args.init_prompts)
    return _finish(trainer, model, args, meta)


def train_main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "threads", None):
        torch.set_num_threads(args.threads)
    if args.command == "codec":
        return run_codec(args)
    if args.command == "export":
        return run_export(args)
    return run_prompts(args)
