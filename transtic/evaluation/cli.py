"""``transtic eval``: rate versus task quality for codecs, prompts and JPEG/WebP anchors.

Example (the shipped weights on the held-out photos)::

    transtic eval --task classification --heldout-photos \\
        --codec transtic=transtic_small_cls_q1 \\
        --codec tic=transtic_small_base_q1,transtic_small_base_q3 --out docs/eval

``--protocol paper`` prepares images as the TransTIC paper evaluates (see
``transtic.evaluation.protocol`` and docs/evaluation.md).
"""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..models import HyperpriorCodec
from .anchors import DEFAULT_TARGET_BPP
from .bootstrap import RESAMPLES, SEED


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="transtic eval",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--task",
        required=True,
        choices=["classification", "detection", "segmentation"],
        help="the machine task to score",
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--data", type=Path, help="image folder, ImageNet class folders or COCO dir")
    src.add_argument(
        "--heldout-photos", action="store_true", help="the photos held out from training"
    )
    p.add_argument(
        "--data-kind",
        choices=["folder", "imagenet", "coco"],
        default="folder",
        help="layout of --data: plain folder, ImageNet class folders or COCO",
    )
    p.add_argument("--annotations", type=Path, default=None, help="COCO instances json")
    p.add_argument(
        "--codec",
        action="append",
        default=[],
        metavar="METHOD=SRC[,SRC...]",
        help="a method's rate points: checkpoint files or weights registry names",
    )
    p.add_argument(
        "--anchors",
        nargs="*",
        default=["jpeg", "webp"],
        choices=["jpeg", "webp"],
        help="classic codecs to compare against",
    )
    p.add_argument(
        "--anchor-qualities",
        type=int,
        nargs="*",
        default=[],
        help="extra anchor quality settings (the anchors are also matched to the codecs' rates)",
    )
    p.add_argument(
        "--anchor-target-bpp",
        type=float,
        nargs="*",
        default=list(DEFAULT_TARGET_BPP),
        help="mean rates the anchors are also matched to, so their curves overlap the "
        "codecs' (default: %(default)s)",
    )
    p.add_argument(
        "--bootstrap-resamples",
        type=int,
        default=RESAMPLES,
        help="paired bootstrap resamples of the photos for the 95%% intervals "
        "(0: none; default %(default)s)",
    )
    p.add_argument(
        "--bootstrap-seed", type=int, default=SEED, help="seed of the resamples (default 0)"
    )
    p.add_argument(
        "--protocol",
        choices=["native", "paper"],
        default="native",
        help="native: code images at their own size; paper: 256 crops (classification) "
        "or 800/1333 resizes (detection) as the paper evaluates",
    )
    p.add_argument(
        "--task-backend",
        default=None,
        help="task backend (default: the --task name; e.g. detectron2, detectron2_segmentation)",
    )
    p.add_argument("--task-weights", default=None, help="task network: registry name or file")
    p.add_argument(
        "--score-threshold",
        type=float,
        default=0.05,
        help="detections below this score are not counted in mAP (COCO evaluation: 0.05)",
    )
    p.add_argument("--cache-dir", type=Path, default=None, help="weights cache directory")
    p.add_argument(
        "--max-images", type=int, default=None, help="evaluate on at most this many images"
    )
    p.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda:0")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument(
        "--out",
        type=Path,
        default=Path("eval_out"),
        help="directory for tables, CSV, JSON and plots (default: eval_out)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def parse_methods(specs: Sequence[str]) -> dict[str, list[str]]:
    methods: dict[str, list[str]] = {}
    for spec in specs:
        name, sep, sources = spec.partition("=")
        if not sep or not name or not sources:
            raise SystemExit(f"error: --codec expects METHOD=SRC[,SRC...], got {spec!r}")
        methods.setdefault(name, []).extend(s for s in sources.split(",") if s)
    return methods


def codec_loader(cache_dir: Path | None, device: str) -> Any:
    from ..weights import default_cache_dir, load_codec

    def load(source: str) -> HyperpriorCodec:
        return load_codec(source, cache_dir=cache_dir or default_cache_dir(), device=device).model

    return load


def task_backend(
    task: str,
    weights: str | None,
    cache_dir: Path | None,
    device: str,
    *,
    name: str | None = None,
    options: dict[str, Any] | None = None,
) -> Any:
    """The loaded backend ``name`` (default: the task's own) with constructor ``options``."""
    from ..tasks import TASK_BACKENDS, create_backend
    from ..weights import default_cache_dir

    name = name or task
    try:
        backend_class = TASK_BACKENDS.get(name)
    except LookupError as exc:
        raise SystemExit(f"error: {exc}") from None
    if backend_class.task != task:
        raise SystemExit(f"error: task backend {name!r} does not do {task}")
    kwargs: dict[str, Any] = {"cache_dir": cache_dir or default_cache_dir(), **(options or {})}
    if weights:
        kwargs["weights_path" if Path(weights).is_file() else "weights"] = weights
    backend = create_backend(name, **kwargs)
    backend.load(device)
    return backend


def eval_main(argv: Sequence[str] | None = None) -> int:
    import torch

    from .protocol import align_mode, prepare
    from .report import write_all
    from .runner import evaluate, load_eval_set

    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    methods = parse_methods(args.codec)
    if not methods and not args.anchors:
        raise SystemExit("error: nothing to evaluate (give --codec and/or --anchors)")
    if args.heldout_photos:
        import tempfile

        from ..training.photos import export

        # Images are read into memory, so the PNG copies need not outlive loading.
        with tempfile.TemporaryDirectory() as folder:
            export("heldout", folder)
            data = load_eval_set("folder", folder, max_images=args.max_images)
    else:
        try:
            data = load_eval_set(
                args.data_kind, args.data, annotations=args.annotations, max_images=args.max_images
            )
        except (OSError, ValueError) as exc:  # a missing folder, an unreadable image
            raise SystemExit(f"error: {exc}") from None
    data = prepare(data, args.task, args.protocol)
    options: dict[str, Any] = {}
    if args.task == "classification":
        options["whole_image"] = args.protocol == "paper"
    else:
        options["score_threshold"] = args.score_threshold
    backend = task_backend(
        args.task,
        args.task_weights,
        args.cache_dir,
        args.device,
        name=args.task_backend,
        options=options,
    )
    result = evaluate(
        args.task,
        data,
        backend,
        methods,
        load=codec_loader(args.cache_dir, args.device),
        anchors=args.anchors,
        anchor_qualities=args.anchor_qualities,
        anchor_targets=args.anchor_target_bpp,
        device=args.device,
        progress=not args.no_progress,
        align_mode=align_mode(args.protocol),
        min_score=args.score_threshold,
    )
    result["protocol"] = args.protocol
    command = "transtic eval " + shlex.join(argv)
    paths = write_all(result, args.out, command, args.bootstrap_resamples, args.bootstrap_seed)
    print(paths["markdown"].read_text(), end="")
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0
