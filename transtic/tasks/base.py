"""The contract every vision-task backend of the cloud service fulfils."""

from __future__ import annotations

import abc
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch

from transtic.weights import WeightsRegistry, resolve

TaskName = Literal["classification", "detection", "segmentation"]


@dataclass(frozen=True)
class Normalization:
    """How a backend turns 0..1 RGB into network input, for clients and docs.

    ``resize`` names the geometry step: ``"shorter_side_center_crop"`` (resize so
    the crop covers ``crop_pct`` of the shorter side, then centre-crop
    ``input_size``), ``"internal"`` (the model resizes itself, e.g. R-CNNs keep
    aspect ratio between ``min_size`` and ``max_size``) or ``"none"`` (the image is
    taken whole, at its own size).
    """

    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    resize: str
    input_size: tuple[int, int] | None = None
    crop_pct: float | None = None
    interpolation: str | None = None
    min_size: int | None = None
    max_size: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "mean": list(self.mean),
            "std": list(self.std),
            "resize": self.resize,
            "input_size": list(self.input_size) if self.input_size else None,
            "crop_pct": self.crop_pct,
            "interpolation": self.interpolation,
            "min_size": self.min_size,
            "max_size": self.max_size,
        }


class TaskBackend(abc.ABC):
    """A loaded-on-demand model answering one vision task.

    Construction is cheap and never touches weights, so a service can list all
    backends and load each independently: one task's missing weights (``load``
    raises :class:`~transtic.weights.WeightsNotFoundError`) leave the others usable.
    """

    name: ClassVar[str]
    task: ClassVar[TaskName]

    def __init__(
        self,
        *,
        cache_dir: str | os.PathLike[str] | None = None,
        weights_registry: WeightsRegistry | None = None,
        weights_path: str | os.PathLike[str] | None = None,
    ) -> None:
        self.cache_dir = cache_dir
        self.weights_registry = weights_registry
        self.weights_path = weights_path
        self.device = torch.device("cpu")
        self._loaded = False

    @property
    @abc.abstractmethod
    def required_weights(self) -> list[str]:
        """Registry names of the weights :meth:`load` needs."""

    @property
    @abc.abstractmethod
    def normalization(self) -> Normalization: ...

    @property
    def loaded(self) -> bool:
        return self._loaded

    def weights_file(self, name: str) -> Path:
        # An explicit path only makes sense for single-weights backends.
        path = self.weights_path if len(self.required_weights) == 1 else None
        return resolve(name, cache_dir=self.cache_dir, path=path, registry=self.weights_registry)

    def load(self, device: str | torch.device = "cpu") -> None:
        """Build the model and load its weights onto ``device``."""
        self.device = torch.device(device)
        self._load()
        self._loaded = True

    @abc.abstractmethod
    def _load(self) -> None: ...

    def predict(self, images: Sequence[torch.Tensor]) -> list[dict[str, Any]]:
        """Run one batch: float RGB tensors in [0, 1] of shape [3, H, W], any sizes.

        Returns one JSON-serialisable dict per image, in input order.
        """
        if not self._loaded:
            raise RuntimeError(f"backend {self.name!r} is not loaded; call load() first")
        checked = [_check_image(i, img) for i, img in enumerate(images)]
        if not checked:
            return []
        with torch.inference_mode():
            return self._predict([img.to(self.device) for img in checked])

    @abc.abstractmethod
    def _predict(self, images: list[torch.Tensor]) -> list[dict[str, Any]]: ...

    def describe(self) -> dict[str, Any]:
        """Static facts for a service's task listing."""
        return {
            "name": self.name,
            "task": self.task,
            "required_weights": self.required_weights,
            "normalization": self.normalization.to_dict(),
            "loaded": self.loaded,
        }


def _check_image(index: int, image: torch.Tensor) -> torch.Tensor:
    if not isinstance(image, torch.Tensor):
        raise TypeError(f"image {index}: expected a torch.Tensor, got {type(image).__name__}")
    if image.ndim != 3 or image.shape[0] != 3:
        raise ValueError(f"image {index}: expected shape [3, H, W], got {list(image.shape)}")
    if image.shape[1] < 1 or image.shape[2] < 1:
        raise ValueError(f"image {index}: empty image {list(image.shape)}")
    if not image.is_floating_point():
        raise ValueError(f"image {index}: expected float values in [0, 1], got {image.dtype}")
    return image.float()
