"""COCO detection and instance segmentation with torchvision's R-CNNs."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np
import torch

from transtic.tasks.base import Normalization, TaskBackend, TaskName
from transtic.tasks.classification import load_state_dict_file
from transtic.weights import WeightsRegistry, default_registry


class DetectionBackend(TaskBackend):
    """Faster R-CNN R50-FPN on COCO: boxes in input pixel coordinates (x1, y1, x2, y2).

    ``min_size``/``max_size`` bound the internal resize (800/1333 is what the COCO
    weights were trained at; smaller values trade accuracy for speed).
    """

    name: ClassVar[str] = "detection"
    task: ClassVar[TaskName] = "detection"
    default_weights: ClassVar[str] = "fasterrcnn_resnet50_fpn_coco"
    # How training reads the backbone: its FPN outputs for p2..p6, RGB input.
    fpn_levels: ClassVar[tuple[str, ...]] = ("0", "1", "2", "3", "pool")
    bgr_input: ClassVar[bool] = False

    def __init__(
        self,
        *,
        weights: str | None = None,
        score_threshold: float = 0.5,
        max_detections: int = 100,
        min_size: int = 800,
        max_size: int = 1333,
        cache_dir: str | os.PathLike[str] | None = None,
        weights_registry: WeightsRegistry | None = None,
        weights_path: str | os.PathLike[str] | None = None,
    ) -> None:
        super().__init__(
            cache_dir=cache_dir, weights_registry=weights_registry, weights_path=weights_path
        )
        if not 0.0 <= score_threshold <= 1.0:
            raise ValueError("score_threshold must be within [0, 1]")
        self.weights = weights or self.default_weights
        self.score_threshold = score_threshold
        self.max_detections = max_detections
        self.min_size = min_size
        self.max_size = max_size
        registry = weights_registry if weights_registry is not None else default_registry()
        self.categories: tuple[str, ...] = tuple(
            registry.get(self.weights).metadata.get("categories", ())
        )
        self.model: torch.nn.Module | None = None

    @property
    def required_weights(self) -> list[str]:
        return [self.weights]

    @property
    def normalization(self) -> Normalization:
        # GeneralizedRCNNTransform normalises and resizes inside the model.
        return Normalization(
            mean=(0.485, 0.456, 0.406),
            std=(0.229, 0.224, 0.225),
            resize="internal",
            min_size=self.min_size,
            max_size=self.max_size,
        )

    def _builder(self) -> Callable[..., torch.nn.Module]:
        from torchvision.models.detection import fasterrcnn_resnet50_fpn

        return fasterrcnn_resnet50_fpn

    def _load(self) -> None:
        # Resolve first: a missing file must fail before the costly model build.
        path = self.weights_file(self.weights)
        state = load_state_dict_file(path)
        num_classes = len(self.categories) or 91
        model = self._builder()(
            weights=None,
            weights_backbone=None,
            num_classes=num_classes,
            min_size=self.min_size,
            max_size=self.max_size,
            box_score_thresh=self.score_threshold,
            box_detections_per_img=self.max_detections,
        )
        model.load_state_dict(state, strict=True)
        self.model = model.eval().to(self.device)

    def _category(self, index: int) -> str:
        return self.categories[index] if 0 <= index < len(self.categories) else str(index)

    def _predict(self, images: list[torch.Tensor]) -> list[dict[str, Any]]:
        assert self.model is not None
        outputs = self.model(images)
        results = []
        for image, out in zip(images, outputs, strict=True):
            boxes = out["boxes"].float().cpu().tolist()
            scores = out["scores"].float().cpu().tolist()
            labels = out["labels"].cpu().tolist()
            detections = [
                {
                    "box": [float(v) for v in box],
                    "score": float(score),
                    "category_id": int(label),
                    "label": self._category(int(label)),
                }
                for box, score, label in zip(boxes, scores, labels, strict=True)
            ]
            self._add_extras(detections, out)
            results.append(
                {
                    "image_size": [int(image.shape[-2]), int(image.shape[-1])],
                    "detections": detections,
                }
            )
        return results

    def _add_extras(self, detections: list[dict[str, Any]], output: dict[str, Any]) -> None:
        """Hook for subclasses that return more than boxes."""


def encode_masks(masks: torch.Tensor, threshold: float = 0.5) -> list[dict[str, Any]]:
    """Binary-threshold [N, 1, H, W] mask probabilities into COCO RLE dicts."""
    from pycocotools import mask as mask_utils

    if masks.numel() == 0:
        return []
    binary = (masks[:, 0] >= threshold).to(torch.uint8).cpu().numpy()
    # pycocotools wants [H, W, N] uint8 in Fortran order.
    rles = mask_utils.encode(np.asfortranarray(binary.transpose(1, 2, 0)))
    return [
        {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")}
        for rle in rles
    ]


class SegmentationBackend(DetectionBackend):
    """Mask R-CNN R50-FPN on COCO: detection plus one COCO-RLE mask per instance."""

    name: ClassVar[str] = "segmentation"
    task: ClassVar[TaskName] = "segmentation"
    default_weights: ClassVar[str] = "maskrcnn_resnet50_fpn_coco"
    mask_threshold: ClassVar[float] = 0.5

    def _builder(self) -> Callable[..., torch.nn.Module]:
        from torchvision.models.detection import maskrcnn_resnet50_fpn

        return maskrcnn_resnet50_fpn

    def _load(self) -> None:
        # Fail at load time, not on the first request, when the RLE encoder is absent.
        try:
            import pycocotools.mask  # noqa: F401
        except ImportError as exc:
            raise RuntimeError("segmentation needs pycocotools (pip install pycocotools)") from exc
        super()._load()

    def _add_extras(self, detections: list[dict[str, Any]], output: dict[str, Any]) -> None:
        for det, rle in zip(
            detections, encode_masks(output["masks"], self.mask_threshold), strict=True
        ):
            det["mask"] = rle
