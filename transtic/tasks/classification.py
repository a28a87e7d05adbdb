"""ImageNet-style classification through any timm architecture."""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any, ClassVar

import torch

from transtic.tasks.base import Normalization, TaskBackend, TaskName
from transtic.tasks.preprocess import normalize_batch, standardize
from transtic.weights import WeightsRegistry, default_registry

DEFAULT_CLASSIFIER_WEIGHTS = "efficientnet_lite0_imagenet"


def load_state_dict_file(path: os.PathLike[str] | str) -> dict[str, torch.Tensor]:
    """Load a checkpoint's tensors, unwrapping the usual ``state_dict``/``model`` nesting."""
    obj = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model"):
        if isinstance(obj, Mapping) and key in obj and isinstance(obj[key], Mapping):
            obj = obj[key]
    if not isinstance(obj, Mapping):
        raise ValueError(f"{path}: not a state dict (got {type(obj).__name__})")
    return dict(obj)


def map_by_position(
    source: Mapping[str, torch.Tensor], target: Mapping[str, torch.Tensor]
) -> OrderedDict[str, torch.Tensor]:
    """Rename ``source`` tensors to ``target``'s keys, pairing them in order.

    Only valid when both were written in the same module order; every shape and
    the tensor count must agree, so a mismatched architecture fails loudly
    instead of loading garbage.
    """
    if len(source) != len(target):
        raise ValueError(
            f"tensor count differs: checkpoint has {len(source)}, model has {len(target)}"
        )
    mapped: OrderedDict[str, torch.Tensor] = OrderedDict()
    for i, ((src_key, src), (dst_key, dst)) in enumerate(
        zip(source.items(), target.items(), strict=True)
    ):
        if tuple(src.shape) != tuple(dst.shape):
            raise ValueError(
                f"tensor {i}: checkpoint {src_key!r} {tuple(src.shape)} does not fit "
                f"model {dst_key!r} {tuple(dst.shape)}"
            )
        mapped[dst_key] = src
    return mapped


def _label_lookup(num_classes: int, model: torch.nn.Module) -> list[str]:
    from timm.data import ImageNetInfo, infer_imagenet_subset

    subset = infer_imagenet_subset(model) if num_classes != 1000 else "imagenet-1k"
    if subset is None:
        return [str(i) for i in range(num_classes)]
    info = ImageNetInfo(subset)
    return [info.index_to_description(i) for i in range(num_classes)]


def _triple(values: Any) -> tuple[float, float, float]:
    a, b, c = (float(v) for v in values)
    return (a, b, c)


class ClassificationBackend(TaskBackend):
    """Top-k ImageNet classes from a timm model.

    The weights entry's metadata chooses the architecture, the input
    normalisation and how keys map (``key_mapping: positional`` for checkpoints
    written under another naming scheme, otherwise strict by name).
    ``whole_image`` classifies each image as given, without the resize and centre
    crop (the paper's protocol classifies its 256x256 coded image whole).
    """

    name: ClassVar[str] = "classification"
    task: ClassVar[TaskName] = "classification"

    def __init__(
        self,
        *,
        weights: str = DEFAULT_CLASSIFIER_WEIGHTS,
        model_name: str | None = None,
        top_k: int = 5,
        whole_image: bool = False,
        cache_dir: str | os.PathLike[str] | None = None,
        weights_registry: WeightsRegistry | None = None,
        weights_path: str | os.PathLike[str] | None = None,
    ) -> None:
        super().__init__(
            cache_dir=cache_dir, weights_registry=weights_registry, weights_path=weights_path
        )
        if top_k < 1:
            raise ValueError("top_k must be >= 1")
        self.weights = weights
        self.top_k = top_k
        self.whole_image = whole_image
        registry = weights_registry if weights_registry is not None else default_registry()
        self._meta: Mapping[str, Any] = registry.get(weights).metadata
        self.model_name = model_name or str(self._meta.get("architecture", ""))
        if not self.model_name:
            raise ValueError(f"weights {weights!r} name no architecture; pass model_name")
        self.model: torch.nn.Module | None = None
        self.labels: list[str] = []

    @property
    def required_weights(self) -> list[str]:
        return [self.weights]

    @property
    def normalization(self) -> Normalization:
        meta = self._meta
        size = tuple(meta.get("input_size", (3, 224, 224)))[-2:]
        return Normalization(
            mean=_triple(meta.get("mean", (0.485, 0.456, 0.406))),
            std=_triple(meta.get("std", (0.229, 0.224, 0.225))),
            resize="none" if self.whole_image else "shorter_side_center_crop",
            input_size=(int(size[0]), int(size[1])),
            crop_pct=float(meta.get("crop_pct", 0.875)),
            interpolation=str(meta.get("interpolation", "bicubic")),
        )

    def _load(self) -> None:
        import timm

        path = self.weights_file(self.weights)
        source = load_state_dict_file(path)
        num_classes = int(self._meta.get("num_classes", 1000))
        model = timm.create_model(self.model_name, pretrained=False, num_classes=num_classes)
        if self._meta.get("key_mapping") == "positional":
            state = map_by_position(source, model.state_dict())
        else:
            state = OrderedDict(source)
        model.load_state_dict(state, strict=True)
        self.model = model.eval().to(self.device)
        self.labels = _label_lookup(num_classes, model)

    def timm_model(self) -> torch.nn.Module:
        """The underlying timm network (loaded on first use), e.g. to read stage features
        with ``forward_intermediates`` when training prompts against it."""
        if not self.loaded:
            self.load(self.device)
        assert self.model is not None
        return self.model

    def _predict(self, images: list[torch.Tensor]) -> list[dict[str, Any]]:
        assert self.model is not None
        norm = self.normalization
        if not self.whole_image:
            logits = self.model(normalize_batch(images, norm))
        elif len({tuple(i.shape) for i in images}) == 1:
            logits = self.model(standardize(torch.stack(images), norm))
        else:  # whole images of different sizes cannot share a batch
            logits = torch.cat([self.model(standardize(i[None], norm)) for i in images])
        probs = logits.float().softmax(dim=-1)
        k = min(self.top_k, probs.shape[-1])
        scores, indices = probs.topk(k, dim=-1)
        return [
            {
                "predictions": [
                    {"label": self.labels[int(i)], "index": int(i), "score": float(s)}
                    for s, i in zip(row_s.tolist(), row_i.tolist(), strict=True)
                ]
            }
            for row_s, row_i in zip(scores.cpu(), indices.cpu(), strict=True)
        ]
