"""Detectron2 R-CNNs, the downstream networks TransTIC's det/seg prompts were tuned for.

Detectron2 has no wheels on PyPI, so this module is only registered when
``import detectron2`` works; nothing here runs in environments without it.
"""

from __future__ import annotations

import importlib
import os
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from transtic.tasks.base import Normalization, TaskBackend, TaskName
from transtic.tasks.detection import encode_masks
from transtic.weights import WeightsRegistry, default_registry


def detectron2_available() -> bool:
    try:
        importlib.import_module("detectron2")
    except Exception:  # a broken install raises more than ImportError; treat it as absent
        return False
    return True


class Detectron2Backend(TaskBackend):
    """Faster R-CNN R50-FPN 3x from the detectron2 model zoo.

    Detectron2 numbers the 80 COCO classes 0..79; answers carry the COCO json
    ``category_id`` (1..90, with gaps) like the torchvision backends, so COCO mAP
    and clients see one numbering.
    """

    name: ClassVar[str] = "detectron2"
    task: ClassVar[TaskName] = "detection"
    default_weights: ClassVar[str] = "detectron2_faster_rcnn_R_50_FPN_3x"
    with_masks: ClassVar[bool] = False
    fpn_levels: ClassVar[tuple[str, ...]] = ("p2", "p3", "p4", "p5", "p6")
    bgr_input: ClassVar[bool] = True

    def __init__(
        self,
        *,
        weights: str | None = None,
        score_threshold: float = 0.5,
        min_size: int = 800,
        max_size: int = 1333,
        cache_dir: str | os.PathLike[str] | None = None,
        weights_registry: WeightsRegistry | None = None,
        weights_path: str | os.PathLike[str] | None = None,
    ) -> None:
        super().__init__(
            cache_dir=cache_dir, weights_registry=weights_registry, weights_path=weights_path
        )
        self.weights = weights or self.default_weights
        self.score_threshold = score_threshold
        self.min_size = min_size
        self.max_size = max_size
        registry = weights_registry if weights_registry is not None else default_registry()
        meta = registry.get(self.weights).metadata
        self.config_name = str(meta["config"])
        self.categories: tuple[str, ...] = tuple(meta.get("categories", ()))
        self.category_ids: tuple[int, ...] = tuple(meta.get("category_ids", ()))
        self.model: Any = None

    @property
    def required_weights(self) -> list[str]:
        return [self.weights]

    @property
    def normalization(self) -> Normalization:
        # Detectron2 model-zoo R50 models take BGR 0..255 and subtract these (std 1).
        return Normalization(
            mean=(103.53 / 255, 116.28 / 255, 123.675 / 255),
            std=(1 / 255, 1 / 255, 1 / 255),
            resize="shortest_edge",
            min_size=self.min_size,
            max_size=self.max_size,
        )

    def _load(self) -> None:
        from detectron2 import model_zoo
        from detectron2.checkpoint import DetectionCheckpointer
        from detectron2.config import get_cfg
        from detectron2.modeling import build_model

        path = self.weights_file(self.weights)
        cfg = get_cfg()
        cfg.merge_from_file(model_zoo.get_config_file(self.config_name))
        cfg.MODEL.DEVICE = str(self.device)
        cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = self.score_threshold
        model = build_model(cfg)
        DetectionCheckpointer(model).load(str(path))
        self.model = model.eval()

    def _resize(self, image: torch.Tensor) -> torch.Tensor:
        # Same rule as detectron2's ResizeShortestEdge at test time.
        h, w = image.shape[-2:]
        scale = self.min_size / min(h, w)
        if max(h, w) * scale > self.max_size:
            scale = self.max_size / max(h, w)
        size = (round(h * scale), round(w * scale))
        return F.interpolate(image[None], size=size, mode="bilinear", align_corners=False)[0]

    def coco_id(self, contiguous: int) -> int:
        """Detectron2's class index -> the COCO json category id."""
        if not 0 <= contiguous < len(self.category_ids):
            raise ValueError(f"class index {contiguous} outside the {len(self.category_ids)} known")
        return self.category_ids[contiguous]

    def _predict(self, images: list[torch.Tensor]) -> list[dict[str, Any]]:
        inputs = [
            {
                "image": (self._resize(img).flip(0) * 255.0).clamp(0, 255),  # RGB -> BGR
                "height": int(img.shape[-2]),
                "width": int(img.shape[-1]),
            }
            for img in images
        ]
        results = []
        for img, out in zip(images, self.model(inputs), strict=True):
            inst = out["instances"].to("cpu")
            labels = inst.pred_classes.tolist()
            detections: list[dict[str, Any]] = [
                {
                    "box": [float(v) for v in box],
                    "score": float(score),
                    "category_id": self.coco_id(label),
                    "label": self.categories[label] if label < len(self.categories) else str(label),
                }
                for box, score, label in zip(
                    inst.pred_boxes.tensor.tolist(), inst.scores.tolist(), labels, strict=True
                )
            ]
            if self.with_masks:
                masks = inst.pred_masks.float()[:, None]
                for det, rle in zip(detections, encode_masks(masks), strict=True):
                    det["mask"] = rle
            results.append(
                {"image_size": [int(img.shape[-2]), int(img.shape[-1])], "detections": detections}
            )
        return results


class Detectron2SegmentationBackend(Detectron2Backend):
    name: ClassVar[str] = "detectron2_segmentation"
    task: ClassVar[TaskName] = "segmentation"
    default_weights: ClassVar[str] = "detectron2_mask_rcnn_R_50_FPN_3x"
    with_masks: ClassVar[bool] = True
