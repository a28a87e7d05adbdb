"""Task quality of decoded images: top-1 (labels or agreement) and COCO mAP."""

from __future__ import annotations

import contextlib
import io
import math
from collections.abc import Sequence
from typing import Any

import torch


def psnr(decoded: torch.Tensor, original: torch.Tensor) -> float:
    """PSNR in dB after 8-bit rounding of both images (what files store)."""
    a = (decoded.clamp(0, 1) * 255).round()
    b = (original.clamp(0, 1) * 255).round()
    mse = float((a - b).pow(2).mean())
    return 100.0 if mse == 0 else 10 * math.log10(255**2 / mse)


def colour_shift(decoded: torch.Tensor, original: torch.Tensor) -> list[float]:
    """Per-channel mean of decoded minus original, in 8-bit levels (a colour cast that
    PSNR and a classifier may hardly see, but a person does)."""
    a = (decoded.clamp(0, 1) * 255).round().flatten(1).mean(1)
    b = (original.clamp(0, 1) * 255).round().flatten(1).mean(1)
    return (a - b).tolist()


def top1(predictions: Sequence[dict[str, Any]]) -> list[int]:
    return [int(p["predictions"][0]["index"]) for p in predictions]


def top1_score(predicted: Sequence[int], reference: Sequence[int]) -> float:
    """Fraction of images whose top-1 class equals the reference (label or original's)."""
    if not predicted:
        return math.nan
    hits = sum(int(p == r) for p, r in zip(predicted, reference, strict=True))
    return hits / len(predicted)


def _quiet() -> contextlib.AbstractContextManager[Any]:
    # pycocotools prints its progress and summary tables to stdout.
    return contextlib.redirect_stdout(io.StringIO())


def _xywh(box: Sequence[float]) -> list[float]:
    x1, y1, x2, y2 = (float(v) for v in box)
    return [x1, y1, x2 - x1, y2 - y1]


def coco_results(
    image_ids: Sequence[int],
    predictions: Sequence[dict[str, Any]],
    segm: bool = False,
    min_score: float = 0.0,
) -> list[dict[str, Any]]:
    """Backend detections -> COCO result entries (bbox xywh; RLE masks for segm).

    Detections scoring below ``min_score`` are dropped (COCO evaluations use 0.05).
    """
    results = []
    for image_id, pred in zip(image_ids, predictions, strict=True):
        for det in pred["detections"]:
            if float(det["score"]) < min_score:
                continue
            entry: dict[str, Any] = {
                "image_id": int(image_id),
                "category_id": int(det["category_id"]),
                "bbox": _xywh(det["box"]),
                "score": float(det["score"]),
            }
            if segm:
                if "mask" not in det:
                    continue
                entry["segmentation"] = det["mask"]
            results.append(entry)
    return results


def coco_map(
    coco_gt: Any,
    results: list[dict[str, Any]],
    iou_type: str = "bbox",
    image_ids: Sequence[int] | None = None,
) -> float:
    """AP@[.5:.95] in percent from pycocotools over ``image_ids`` (default: all of the GT).

    Pass the images actually evaluated: ground truth of images that were never run
    would otherwise count as misses (1 of 2 images perfect scored 50.5, not 100).
    """
    from pycocotools.cocoeval import COCOeval

    if not results:
        return 0.0
    evaluated = sorted(set(coco_gt.getImgIds() if image_ids is None else image_ids))
    unknown = {int(r["image_id"]) for r in results} - set(evaluated)
    if unknown:
        raise ValueError(f"detections for images outside the evaluated set: {sorted(unknown)[:5]}")
    with _quiet():
        dt = coco_gt.loadRes(results)
        ev = COCOeval(coco_gt, dt, iou_type)
        ev.params.imgIds = evaluated
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return float(ev.stats[0]) * 100.0


def pseudo_ground_truth(
    image_sizes: Sequence[tuple[int, int]],
    predictions: Sequence[dict[str, Any]],
    min_score: float = 0.5,
    segm: bool = False,
) -> Any:
    """A COCO ground truth made of the detections on the uncompressed images.

    Without annotations, mAP against it measures how well decoded images keep the
    detector's own answer (the detection analogue of top-1 agreement).
    """
    from pycocotools.coco import COCO

    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    categories: set[int] = set()
    for image_id, ((h, w), pred) in enumerate(zip(image_sizes, predictions, strict=True)):
        images.append({"id": image_id, "height": int(h), "width": int(w)})
        for det in pred["detections"]:
            if det["score"] < min_score:
                continue
            box = _xywh(det["box"])
            ann: dict[str, Any] = {
                "id": len(annotations) + 1,
                "image_id": image_id,
                "category_id": int(det["category_id"]),
                "bbox": box,
                "area": box[2] * box[3],
                "iscrowd": 0,
            }
            if segm and "mask" in det:
                ann["segmentation"] = det["mask"]
                ann["area"] = _mask_area(det["mask"])
                if ann["area"] == 0:
                    continue  # an empty mask matches nothing, not even itself
            annotations.append(ann)
            categories.add(int(det["category_id"]))
    coco = COCO()
    coco.dataset = {
        "images": images,
        "annotations": annotations,
        "categories": [{"id": c, "name": str(c)} for c in sorted(categories)],
    }
    with _quiet():
        coco.createIndex()
    return coco


def detections_agreement(
    image_sizes: Sequence[tuple[int, int]],
    reference: Sequence[dict[str, Any]],
    decoded: Sequence[dict[str, Any]],
    segm: bool = False,
    min_score: float = 0.0,
) -> float:
    gt = pseudo_ground_truth(image_sizes, reference, segm=segm)
    if not gt.dataset["annotations"]:
        return math.nan
    results = coco_results(range(len(decoded)), decoded, segm, min_score)
    if segm:
        # Empty masks are left out of the pseudo ground truth, so they are no answer
        # on the decoded side either (else the reference would not agree with itself).
        results = [r for r in results if _mask_area(r["segmentation"]) > 0]
    return coco_map(gt, results, "segm" if segm else "bbox", image_ids=range(len(decoded)))


def _mask_area(rle: dict[str, Any]) -> float:
    from pycocotools import mask as mask_utils

    return float(mask_utils.area({"size": rle["size"], "counts": rle["counts"].encode()}))


def rescale_detections(
    prediction: dict[str, Any], size: tuple[int, int], original: tuple[int, int]
) -> dict[str, Any]:
    """A detection answer on an image of ``size`` moved to the ``original`` (H, W) image.

    Boxes are scaled per axis; RLE masks are decoded, resized (nearest) and re-encoded.
    """
    if tuple(size) == tuple(original):
        return prediction
    sy, sx = original[0] / size[0], original[1] / size[1]
    detections = []
    for det in prediction["detections"]:
        x1, y1, x2, y2 = (float(v) for v in det["box"])
        moved = {**det, "box": [x1 * sx, y1 * sy, x2 * sx, y2 * sy]}
        if "mask" in det:
            moved["mask"] = _rescale_mask(det["mask"], original)
        detections.append(moved)
    return {
        **prediction,
        "image_size": [int(original[0]), int(original[1])],
        "detections": detections,
    }


def _rescale_mask(rle: dict[str, Any], original: tuple[int, int]) -> dict[str, Any]:
    from pycocotools import mask as mask_utils

    from ..tasks.detection import encode_masks

    binary = mask_utils.decode({"size": rle["size"], "counts": rle["counts"].encode()})
    resized = torch.nn.functional.interpolate(
        torch.from_numpy(binary).float()[None, None], size=tuple(original), mode="nearest"
    )
    return encode_masks(resized)[0]
