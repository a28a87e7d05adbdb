"""``transtic train codec|prompts``: the paper's two training stages.

``codec``   rate-distortion training of a base TIC (``lambda*255^2*MSE + bpp``).
``prompts`` freezes a trained base codec and learns only TransTIC's prompts
            against a frozen task network (classification, detection, segmentation).

Single process by default; under ``torchrun`` (WORLD_SIZE > 1) every rank trains a
DistributedDataParallel replica on its share of each batch (``--batch-size`` is the
global batch, split evenly over the ranks).

Defaults follow the paper: global batch 12 for the codec, 16 for classification
prompts and 8 for detection/segmentation prompts, Adam at 1e-4 halved at 80 % and 95 %
of the steps. With validation (``--val-path``/``--val-heldout`` and ``--val-every``),
the exported weights are the step with the lowest validation loss; the last step stays
in ``checkpoint.pth.tar`` for resuming.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from ..images import ImageError
from ..layers.swin import set_drop_path
from ..models import HyperpriorCodec, create_model
from ..presets import DETECTION_LAMBDA, QUALITY_LAMBDA
from .data import CropDataset, datasets_for
from .export import export_weights, run_export
from .loop import LoopConfig, Trainer, log
from .prompts import load_prompts, prompted_from_base, task_loss

# The paper's (global) batch sizes per training stage.
DEFAULT_BATCH = {"codec": 12, "classification": 16, "detection": 8, "segmentation": 8}
# Runs are step-counted; these make the README's commands complete (a GPU-scale
# schedule) and every run resumable, so a shorter budget just stops earlier.
DEFAULT_STEPS = {"codec": 300_000, "prompts": 60_000}
DEFAULT_LR_MILESTONES = (0.8, 0.95)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", type=Path, required=True, help="run directory (checkpoints, logs)")
    p.add_argument(
        "--quality",
        type=int,
        choices=sorted(QUALITY_LAMBDA),
        default=None,
        help="paper quality index 1-4: picks lambda from the paper's table",
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
    p.add_argument(
        "--max-short-side",
        type=int,
        default=None,
        help="downscale training images whose shorter side is longer (before jitter and crop)",
    )
    p.add_argument("--cache-images", action="store_true", help="keep decoded images in memory")
    p.add_argument(
        "--val-patch-size",
        type=int,
        default=None,
        help="validation view: shorter side resized to this, centre square (default: patch size)",
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
    p.add_argument(
        "--steps",
        type=int,
        default=None,
        help=f"optimisation steps (default: codec {DEFAULT_STEPS['codec']}, "
        f"prompts {DEFAULT_STEPS['prompts']})",
    )
    p.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help="global batch (default: the paper's, 12 codec, 16 classification, 8 det/seg)",
    )
    p.add_argument("--lr", type=float, default=1e-4, help="Adam learning rate")
    p.add_argument(
        "--lr-milestones",
        type=float,
        nargs="*",
        default=list(DEFAULT_LR_MILESTONES),
        help="fractions of --steps where the learning rate is multiplied by --lr-gamma",
    )
    p.add_argument(
        "--lr-gamma", type=float, default=0.5, help="learning-rate factor at each milestone"
    )
    p.add_argument(
        "--drop-path",
        type=float,
        default=0.0,
        help="stochastic depth of the Swin blocks, rising to this rate (paper's TIC: 0.1)",
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
    p.add_argument(
        "--state",
        type=Path,
        default=None,
        help="also keep the run's portable state (trained tensors and optimizer only) in this "
        "file at every checkpoint; --resume starts from it when OUT has no checkpoint",
    )
    p.add_argument("--export", type=Path, default=None, help="final float16 weights file")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="transtic train", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    codec = sub.add_parser("codec", help="rate-distortion training of a base codec")
    _common(codec)
    codec.add_argument("--model", default="tic", help="registered architecture, e.g. tic-small")
    codec.add_argument(
        "--init",
        type=Path,
        default=None,
        help="start from these codec weights (a file or a catalog name)",
    )
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
    prompts.add_argument(
        "--base",
        type=Path,
        required=True,
        help="base codec (or TransTIC): a file or a catalog name",
    )
    prompts.add_argument(
        "--init-prompts", type=Path, default=None, help="start from the prompts of this TransTIC"
    )
    prompts.add_argument(
        "--num-tokens", type=int, default=16, help="task prompt tokens per decoder block"
    )
    prompts.add_argument(
        "--generator-channels", type=int, default=32, help="width of the instance prompt generator"
    )
    prompts.add_argument(
        "--colour-weight",
        type=float,
        default=0.0,
        help="classification: weight of the squared per-channel mean shift of the decoded "
        "crop, in 8-bit levels (a departure from the paper, against colour casts; 0 = none)",
    )
    # The official prompt scripts step Adam without clipping.
    prompts.add_argument(
        "--clip-max-norm", type=float, default=0.0, help="gradient-norm clipping; 0 = none"
    )
    prompts.add_argument(
        "--task-backend",
        default=None,
        help="task network backend (default: the --task name; detectron2 backends when installed)",
    )
    prompts.add_argument(
        "--task-weights",
        default=None,
        help="registry name (e.g. resnet50_imagenet1k_v1) or file; 'random'",
    )
    prompts.add_argument("--cache-dir", type=Path, default=None, help="weights cache directory")
    export = sub.add_parser("export", help="training checkpoint -> float16 release weights")
    export.add_argument("run", type=Path, help="run directory (or its checkpoint file)")
    export.add_argument("--out", type=Path, required=True, help="weights file to write")
    export.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="metadata")
    export.add_argument(
        "--last", action="store_true", help="the last step even when a best checkpoint exists"
    )
    return parser


def _lambda(args: argparse.Namespace, table: Mapping[int, float]) -> float:
    if args.lmbda is not None:
        return float(args.lmbda)
    if args.quality is None:
        raise SystemExit("error: give --quality or --lambda")
    return table[args.quality]


def _datasets(
    args: argparse.Namespace, vflip: bool, model: HyperpriorCodec
) -> tuple[CropDataset, CropDataset | None]:
    try:
        return datasets_for(args, vflip=vflip, alignment=model.config.alignment)
    except (OSError, ValueError) as exc:  # a crop size, a missing folder, unreadable files
        raise SystemExit(f"error: {exc}") from None


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
        state_path=args.state,
        progress=not args.no_progress,
    )


def _data_description(args: argparse.Namespace) -> str:
    if args.data == "photos":
        return "shipped natural photos (transtic.training.photos.TRAIN)"
    return f"{args.data}:{args.data_path}"


def _finish(
    trainer: Trainer, model: HyperpriorCodec, args: argparse.Namespace, meta: dict[str, Any]
) -> int:
    try:
        result = trainer.run()
        final = trainer.validate()
    except ImageError as exc:
        # from a loader worker the message carries its traceback: its last line says it
        lines = [line for line in str(exc).splitlines() if line.strip()]
        raise SystemExit(f"error: {lines[-1] if lines else exc}") from None
    if final:
        log.info("final validation %s", json.dumps(final))
        trainer.consider_best(final)
    if not trainer.dist.main:
        return 0
    # With validation the lowest-loss step is exported, with its own figures.
    best = trainer.load_best() if final else None
    chosen = {k: v for k, v in (best or final).items() if k.startswith("val_")}
    metadata = {
        **meta,
        "steps": result["step"],
        "exported_step": int(best["step"]) if best else result["step"],
        "batch_size": args.batch_size,
        "patch_size": args.patch_size,
        "train_seconds": round(result["elapsed"], 1),
        "train_cpu_seconds": round(trainer.cpu_seconds, 1),
        "samples_seen": result["step"] * args.batch_size,
        "data": _data_description(args),
        "seed": args.seed,
        **{k: round(v, 5) for k, v in chosen.items()},
    }
    if args.drop_path:
        metadata["drop_path"] = args.drop_path
    path = export_weights(model, args.export or args.out / "final.pth.tar", metadata)
    (args.out / "final.json").write_text(json.dumps(metadata, indent=2) + "\n")
    log.info("exported %s (step %d)", path, metadata["exported_step"])
    return 0


def run_codec(args: argparse.Namespace) -> int:
    from .losses import RateDistortionLoss

    lmbda = _lambda(args, QUALITY_LAMBDA)
    torch.manual_seed(args.seed)  # the weights' random initialisation
    model = create_model(args.model)
    set_drop_path(model, args.drop_path)
    if args.init is not None:
        from ..weights import load_codec

        model.load_state_dict(load_codec(args.init).model.state_dict())
    # The entropy bottleneck's quantiles are trained by the aux loss only (CompressAI).
    aux = [p for n, p in model.named_parameters() if n.endswith("quantiles")]
    main = [p for n, p in model.named_parameters() if not n.endswith("quantiles")]
    train, val = _datasets(args, args.vflip, model)
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


def run_prompts(args: argparse.Namespace) -> int:
    from ..models import PromptConfig

    table = QUALITY_LAMBDA if args.task == "classification" else DETECTION_LAMBDA
    lmbda = _lambda(args, table)
    prompts = PromptConfig(num_tokens=args.num_tokens, generator_channels=args.generator_channels)
    torch.manual_seed(args.seed)  # the prompts' random initialisation
    model = prompted_from_base(args.base, prompts)
    if args.init_prompts is not None:
        load_prompts(model, args.init_prompts)
    set_drop_path(model, args.drop_path)
    for name, p in model.named_parameters():
        p.requires_grad_("prompt" in name)
    params = model.prompt_parameters()
    criterion = task_loss(args, lmbda)
    train, val = _datasets(args, False, model)
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


def _fill_defaults(args: argparse.Namespace) -> None:
    """Defaults that depend on the command and task."""
    if args.command not in DEFAULT_STEPS:
        return
    if args.steps is None:
        args.steps = DEFAULT_STEPS[args.command]
    if args.batch_size is None:
        args.batch_size = DEFAULT_BATCH["codec" if args.command == "codec" else args.task]


def train_main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _fill_defaults(args)
    if getattr(args, "threads", None):
        torch.set_num_threads(args.threads)
    if args.command == "codec":
        return run_codec(args)
    if args.command == "export":
        return run_export(args)
    return run_prompts(args)
