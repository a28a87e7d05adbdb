"""Evaluate codecs and anchors on one task: rate (real bitstreams) versus task quality."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from ..alignment import align
from ..bitstream import AlignMode, decode_container
from ..codec import ImageCodec
from ..images import read_rgb_file, to_tensor
from ..models import HyperpriorCodec
from ..training.data import imagenet_folder, list_images
from ..training.losses import bpp_from_likelihoods
from . import classifier_scores, metrics
from .anchors import DEFAULT_TARGET_BPP, AnchorCodec


@dataclass
class EvalSet:
    """Images (3, H, W) in [0, 1] with optional class labels or COCO ground truth."""

    names: list[str]
    images: list[torch.Tensor]
    labels: list[int] | None = None
    coco_gt: Any = None
    image_ids: list[int] | None = None
    # (H, W) the task predictions are mapped back to when ``images`` were resized
    # before coding (the paper protocol for detection); None: the images' own sizes.
    original_sizes: list[tuple[int, int]] | None = None

    @property
    def pixels(self) -> list[int]:
        return [int(i.shape[-2] * i.shape[-1]) for i in self.images]


def _read(path: Path) -> torch.Tensor:
    # one bad file stops the run (ImageError): skipping it would silently change the set
    return to_tensor(read_rgb_file(path))


def _imagenet_index(class_names: Sequence[str]) -> list[int]:
    """Folder names -> classifier indices: WordNet ids via timm's table, or integers."""
    if all(n.isdigit() for n in class_names):
        return [int(n) for n in class_names]
    from timm.data import ImageNetInfo

    synsets = {s: i for i, s in enumerate(ImageNetInfo("imagenet-1k").label_names())}
    unknown = [n for n in class_names if n not in synsets]
    if unknown:
        raise ValueError(f"class folders are not ImageNet-1k WordNet ids: {unknown[:3]}")
    return [synsets[n] for n in class_names]


def load_eval_set(
    kind: str,
    path: str | Path,
    *,
    annotations: str | Path | None = None,
    max_images: int | None = None,
) -> EvalSet:
    """``folder`` (unlabelled), ``imagenet`` (class folders) or ``coco`` (needs annotations)."""
    path = Path(path)
    if kind == "imagenet":
        files, labels, classes = imagenet_folder(path)
        index = _imagenet_index(classes)
        picked = list(zip(files, labels, strict=True))[:max_images]
        return EvalSet(
            [str(f.relative_to(path)) for f, _ in picked],
            [_read(f) for f, _ in picked],
            labels=[index[label] for _, label in picked],
        )
    if kind == "coco":
        if annotations is None:
            raise ValueError("coco evaluation needs --annotations")
        from pycocotools.coco import COCO

        with metrics._quiet():
            gt = COCO(str(annotations))
        ids = sorted(gt.getImgIds())[:max_images]
        files = [path / gt.imgs[i]["file_name"] for i in ids]
        return EvalSet(
            [f.name for f in files], [_read(f) for f in files], coco_gt=gt, image_ids=ids
        )
    if kind != "folder":
        raise ValueError(f"unknown eval data kind {kind!r}")
    files = list_images(path)[:max_images]
    return EvalSet([str(f.relative_to(path)) for f in files], [_read(f) for f in files])


@dataclass
class Point:
    """One rate point of one method."""

    method: str
    point: str
    bpp: float  # from the real bytes (container header included) or the anchor file
    psnr: float
    scores: dict[str, float]
    bpp_likelihood: float | None = None
    # the entropy-coded strings alone, container header and checksum excluded (the
    # paper's bpp); anchors: the whole file, as the paper counts JPEG/WebP
    bpp_payload: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    # The same quantities photo by photo (rates, psnr and the scores that are means
    # over photos), in ``EvalSet.names`` order, for bootstrap intervals and subsets.
    per_image: dict[str, list[float]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class TaskScorer:
    """Scores decoded images on a task against labels, COCO GT or the originals' answers.

    A timm classifier backend also gets the smooth per-photo scores of
    ``classifier_scores`` (KL divergence, top-5, feature cosine).
    """

    def __init__(
        self, task: str, backend: Any, data: EvalSet, batch: int = 8, min_score: float = 0.0
    ) -> None:
        self.task, self.backend, self.data, self.batch = task, backend, data, batch
        self.segm = task == "segmentation"
        self.min_score = min_score
        self.sizes = data.original_sizes or [
            (int(i.shape[-2]), int(i.shape[-1])) for i in data.images
        ]
        self.outputs: classifier_scores.ClassifierOutputs | None = None
        if task == "classification" and classifier_scores.exposes_network(backend):
            self.outputs = classifier_scores.classify(backend, data.images, batch)
            self.reference: list[dict[str, Any]] = []  # the outputs hold more than answers
        else:
            self.reference = self.predict(data.images)

    def predict(self, images: Sequence[torch.Tensor]) -> list[dict[str, Any]]:
        """Backend answers, in the original images' coordinates."""
        out: list[dict[str, Any]] = []
        for i in range(0, len(images), self.batch):
            out += self.backend.predict(list(images[i : i + self.batch]))
        if self.data.original_sizes is None or self.task == "classification":
            return out
        return [
            metrics.rescale_detections(pred, (int(img.shape[-2]), int(img.shape[-1])), size)
            for pred, img, size in zip(out, images, self.data.original_sizes, strict=True)
        ]

    @property
    def primary(self) -> str:
        """The metric BD-rates use."""
        if self.task == "classification":
            return "top1_accuracy" if self.data.labels is not None else "top1_agreement"
        return "mAP" if self.data.coco_gt is not None else "mAP_agreement"

    def score(
        self,
        images: Sequence[torch.Tensor],
        predictions: list[dict[str, Any]] | None = None,
    ) -> dict[str, float]:
        return self.score_per_image(images, predictions)[0]

    def score_per_image(
        self,
        images: Sequence[torch.Tensor],
        predictions: list[dict[str, Any]] | None = None,
    ) -> tuple[dict[str, float], dict[str, list[float]]]:
        """Scores, and per photo those that are means over photos (mAP is not)."""
        if self.outputs is not None:
            decoded = classifier_scores.classify(self.backend, images, self.batch)
            per_image = classifier_scores.per_image_scores(self.outputs, decoded, self.data.labels)
            return {k: _mean(v) for k, v in per_image.items()}, per_image
        preds = self.predict(images) if predictions is None else predictions
        if self.task == "classification":
            found = metrics.top1(preds)
            per_image = {"top1_agreement": _hits(found, metrics.top1(self.reference))}
            if self.data.labels is not None:
                per_image["top1_accuracy"] = _hits(found, self.data.labels)
            return {k: _mean(v) for k, v in per_image.items()}, per_image
        return self._detection_scores(preds), {}

    def _detection_scores(self, preds: list[dict[str, Any]]) -> dict[str, float]:
        scores = {
            "mAP_agreement": metrics.detections_agreement(
                self.sizes, self.reference, preds, self.segm, self.min_score
            )
        }
        if self.data.coco_gt is not None:
            assert self.data.image_ids is not None
            results = metrics.coco_results(self.data.image_ids, preds, self.segm, self.min_score)
            scores["mAP"] = metrics.coco_map(
                self.data.coco_gt,
                results,
                "segm" if self.segm else "bbox",
                image_ids=self.data.image_ids,
            )
        return scores

    def reference_scores(self) -> dict[str, float]:
        """The uncompressed images' scores (the ceiling of every curve)."""
        if self.outputs is not None:
            per_image = classifier_scores.per_image_scores(
                self.outputs, self.outputs, self.data.labels
            )
            return {k: _mean(v) for k, v in per_image.items()}
        return self.score(self.data.images, self.reference)

    def reference_per_image(self) -> dict[str, list[float]]:
        """What subsets are chosen by: the classifier's top-1 probability per photo."""
        if self.outputs is None:
            return {}
        return {"top1_probability": self.outputs.top1_probability}


def _hits(found: Sequence[int], reference: Sequence[int]) -> list[float]:
    return [100.0 * (f == r) for f, r in zip(found, reference, strict=True)]


@torch.no_grad()
def likelihood_bits(
    model: HyperpriorCodec,
    image: torch.Tensor,
    device: torch.device,
    align_mode: AlignMode = AlignMode.PAD,
) -> float:
    """Bits the entropy models estimate for the (aligned) image, eval-mode rounding."""
    x = align(image[None].to(device), model.config.alignment, align_mode)
    out = model.eval()(x)
    return float(bpp_from_likelihoods(out["likelihoods"], 1))


def evaluate_codec(
    method: str,
    name: str,
    model: HyperpriorCodec,
    data: EvalSet,
    scorer: TaskScorer,
    *,
    device: str = "cpu",
    progress: bool = True,
    align_mode: AlignMode = AlignMode.PAD,
    precision: str = "auto",
) -> tuple[Point, list[torch.Tensor]]:
    """Encode every image to real bytes, decode, score; also the likelihood estimate.

    Rates are per pixel of the image given to the codec (``data.images``), before
    its alignment to multiples of 256. ``precision`` is the codec's (``ImageCodec``).
    """
    codec = ImageCodec(model, device=device, align_mode=align_mode, precision=precision)
    decoded: list[torch.Tensor] = []
    bits: list[float] = []
    payload: list[float] = []
    est: list[float] = []
    for image in tqdm(data.images, desc=f"{method}:{name}", leave=False, disable=not progress):
        result = codec.encode(image)
        decoded.append(codec.decode(result.data).image)
        bits.append(len(result.data) * 8)
        container = decode_container(result.data)
        payload.append((len(container.y_string) + len(container.z_string)) * 8)
        est.append(likelihood_bits(model, image, codec.device, align_mode))
    rates = {"bpp": bits, "bpp_payload": payload, "bpp_likelihood": est}
    return _point(method, name, rates, decoded, data, scorer), decoded


def _point(
    method: str,
    name: str,
    bits: Mapping[str, Sequence[float]],
    decoded: Sequence[torch.Tensor],
    data: EvalSet,
    scorer: TaskScorer,
    extra: dict[str, Any] | None = None,
) -> Point:
    """A rate point from per-photo bits (by rate name) and decoded images."""
    per_image = {
        rate: [b / p for b, p in zip(values, data.pixels, strict=True)]
        for rate, values in bits.items()
    }
    per_image["psnr"] = [metrics.psnr(d, o) for d, o in zip(decoded, data.images, strict=True)]
    scores, per_image_scores = scorer.score_per_image(decoded)
    shifts = [metrics.colour_shift(d, o) for d, o in zip(decoded, data.images, strict=True)]
    extra = {**(extra or {}), "colour_shift_rgb": [_mean(c) for c in zip(*shifts, strict=True)]}
    return Point(
        method=method,
        point=name,
        bpp=_mean(per_image["bpp"]),
        bpp_payload=_mean(per_image["bpp_payload"]),
        bpp_likelihood=_mean(per_image["bpp_likelihood"]) if "bpp_likelihood" in bits else None,
        psnr=_mean(per_image["psnr"]),
        scores=scores,
        extra=extra,
        per_image={**per_image, **per_image_scores},
    )


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else math.nan


def evaluate_anchors(
    methods: Sequence[str],
    data: EvalSet,
    scorer: TaskScorer,
    *,
    targets: Sequence[float] = (),
    qualities: Sequence[int] = (),
) -> list[Point]:
    """Pillow anchors at the qualities nearest each target bpp, plus explicit qualities.

    ``bpp`` counts whole files, ``bpp_payload`` JPEG without its header (``anchors``).
    """
    points = []
    for method in methods:
        anchor = AnchorCodec(method, data.images)
        chosen = {anchor.match(t).quality for t in targets} | set(qualities)
        for q in sorted(chosen):
            ap = anchor.at(q)
            rates: dict[str, Sequence[float]] = {"bpp": ap.bits, "bpp_payload": ap.payload_bits}
            points.append(_point(method, f"q{q}", rates, ap.images, data, scorer, {"quality": q}))
    return points


Loader = Callable[[str], HyperpriorCodec]


def evaluate(
    task: str,
    data: EvalSet,
    backend: Any,
    methods: Mapping[str, Sequence[str]],
    *,
    load: Loader,
    anchors: Sequence[str] = ("jpeg", "webp"),
    anchor_qualities: Sequence[int] = (),
    anchor_targets: Sequence[float] = DEFAULT_TARGET_BPP,
    device: str = "cpu",
    progress: bool = True,
    align_mode: AlignMode = AlignMode.PAD,
    min_score: float = 0.0,
) -> dict[str, Any]:
    """All methods' rate points plus anchors matched to their rates and ``anchor_targets``.

    ``methods`` maps a method name (e.g. ``transtic``, ``tic``) to its rate points
    (checkpoint paths or registry names, resolved by ``load``). ``min_score`` drops
    weaker detections before COCO mAP.
    """
    scorer = TaskScorer(task, backend, data, min_score=min_score)
    points: list[Point] = []
    for method, sources in methods.items():
        for source in sources:
            model = load(source)
            point, _ = evaluate_codec(
                method,
                Path(source).name,
                model,
                data,
                scorer,
                device=device,
                progress=progress,
                align_mode=align_mode,
            )
            points.append(point)
    targets = [p.bpp for p in points] + list(anchor_targets)
    points += evaluate_anchors(anchors, data, scorer, targets=targets, qualities=anchor_qualities)
    return {
        "task": task,
        "primary_metric": scorer.primary,
        "num_images": len(data.images),
        "images": data.names,
        "reference": scorer.reference_scores(),
        "reference_per_image": scorer.reference_per_image(),
        "points": [p.to_dict() for p in points],
    }
