"""The paper's training objectives.

- codec (``examples/train.py``): ``lambda * 255^2 * MSE + bpp``;
- classification prompts (``examples/classification.py``):
  ``1000 * lambda * mean_stages(feature MSE) + bpp``, features of the frozen
  classifier on the clamped decoded image versus the original;
- detection / segmentation prompts (``examples/detection.py``, ``segmentation.py``):
  ``mean_{p2..p6}(FPN feature MSE) + lambda * bpp`` with a frozen R-CNN backbone.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def bpp_from_likelihoods(likelihoods: Mapping[str, Tensor], num_pixels: int) -> Tensor:
    """Estimated bits per pixel: -sum(log2 p) over all latents / pixels (float32)."""
    total = sum((lk.float().log().sum() for lk in likelihoods.values()), torch.zeros(()))
    return total / (-math.log(2) * num_pixels)


def psnr(x_hat: Tensor, x: Tensor) -> float:
    mse = float(F.mse_loss(x_hat.detach().float().clamp(0, 1), x.float()))
    return 100.0 if mse == 0 else 10 * math.log10(1.0 / mse)


class RateDistortionLoss(nn.Module):
    """``lambda * 255^2 * MSE(x_hat, x) + bpp``, MSE on the unclamped output as the paper."""

    def __init__(self, lmbda: float) -> None:
        super().__init__()
        self.lmbda = lmbda

    def forward(self, output: Mapping[str, Any], target: Tensor) -> dict[str, Tensor]:
        n, _, h, w = target.shape
        bpp = bpp_from_likelihoods(output["likelihoods"], n * h * w)
        mse = F.mse_loss(output["x_hat"].float(), target.float())
        loss = self.lmbda * 255**2 * mse + bpp
        return {"loss": loss, "bpp": bpp, "mse": mse}


def _stage_mse(decoded: Sequence[Tensor], original: Sequence[Tensor]) -> Tensor:
    # Per-image MSE of each stage, then the mean over stages and images (as the paper).
    per_stage = [
        F.mse_loss(d.float(), o.float(), reduction="none").flatten(1).mean(1)
        for d, o in zip(decoded, original, strict=True)
    ]
    return torch.stack(per_stage).mean()


class ClassificationFeatureLoss(nn.Module):
    """``1000 * lambda * feature MSE + bpp`` against a frozen timm classifier.

    The paper hooks ResNet-50's layer1-4 (strides 4-32). For a timm model the
    same strides are the last four entries of ``feature_info``; they are read with
    ``forward_intermediates``. Images go in at the crop size (no resize), normalised
    with the classifier's own mean/std, as the official script feeds 256 crops.
    """

    mean: Tensor
    std: Tensor

    def __init__(
        self,
        classifier: nn.Module,
        lmbda: float,
        *,
        mean: Sequence[float],
        std: Sequence[float],
        stages: Sequence[int] | None = None,
        colour_weight: float = 0.0,
    ) -> None:
        super().__init__()
        self.classifier = classifier.eval().requires_grad_(False)
        self.lmbda = lmbda
        self.colour_weight = colour_weight
        self.register_buffer("mean", torch.tensor(list(mean)).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(list(std)).view(1, 3, 1, 1), persistent=False)
        info = getattr(classifier, "feature_info", None)
        count = len(info) if info is not None else 5
        self.stages = list(stages) if stages is not None else list(range(max(0, count - 4), count))

    def train(self, mode: bool = True) -> ClassificationFeatureLoss:
        # The classifier stays in eval mode (frozen BatchNorm statistics) whatever happens.
        super().train(mode)
        self.classifier.eval()
        return self

    def features(self, x: Tensor) -> list[Tensor]:
        x = (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)
        return list(
            self.classifier.forward_intermediates(  # type: ignore[operator]
                x, indices=self.stages, intermediates_only=True
            )
        )

    def forward(self, output: Mapping[str, Any], target: Tensor) -> dict[str, Tensor]:
        n, _, h, w = target.shape
        with torch.no_grad():
            original = self.features(target)
        decoded = self.features(output["x_hat"].clamp(0, 1))
        perceptual = _stage_mse(decoded, original)
        bpp = bpp_from_likelihoods(output["likelihoods"], n * h * w)
        loss = 1000 * self.lmbda * perceptual + bpp
        mse = F.mse_loss(output["x_hat"].detach().float(), target.float())
        terms = {"loss": loss, "bpp": bpp, "perceptual": perceptual.detach(), "mse": mse}
        if self.colour_weight:
            # The classifier's features hardly see a uniform colour cast, so prompts trained
            # on them alone drift darker (levels**2 of each crop's per-channel mean shift).
            shift = 255 * (output["x_hat"].clamp(0, 1) - target).float().mean((-2, -1))
            colour = shift.pow(2).sum(1).mean()
            terms["loss"] = loss + self.colour_weight * colour
            terms["colour"] = colour.detach()
        return terms


FPN_LEVELS = ("0", "1", "2", "3", "pool")  # torchvision's names for p2, p3, p4, p5, p6


class FPNFeatureLoss(nn.Module):
    """``mean_{p2..p6} MSE + lambda * bpp`` against a frozen R-CNN FPN backbone.

    The paper uses Detectron2's backbone on BGR 0..255 inputs minus the pixel mean
    (``bgr=True``, its ``levels`` named p2..p6, mean/std from the backend);
    torchvision's weights expect RGB normalised by ImageNet mean and std. The loss
    form is the same, the scale of the features (and so the useful lambda) differs.
    """

    mean: Tensor
    std: Tensor

    def __init__(
        self,
        backbone: nn.Module,
        lmbda: float,
        *,
        mean: Sequence[float] = (0.485, 0.456, 0.406),
        std: Sequence[float] = (0.229, 0.224, 0.225),
        levels: Sequence[str] = FPN_LEVELS,
        bgr: bool = False,
    ) -> None:
        super().__init__()
        self.backbone = backbone.eval().requires_grad_(False)
        self.lmbda = lmbda
        self.levels, self.bgr = tuple(levels), bgr
        self.register_buffer("mean", torch.tensor(list(mean)).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(list(std)).view(1, 3, 1, 1), persistent=False)

    def train(self, mode: bool = True) -> FPNFeatureLoss:
        super().train(mode)
        self.backbone.eval()
        return self

    def features(self, x: Tensor) -> list[Tensor]:
        if self.bgr:
            x = x.flip(1)
        out = self.backbone((x - self.mean.to(x.dtype)) / self.std.to(x.dtype))
        return [out[k] for k in self.levels]

    def forward(self, output: Mapping[str, Any], target: Tensor) -> dict[str, Tensor]:
        n, _, h, w = target.shape
        with torch.no_grad():
            original = self.features(target)
        decoded = self.features(output["x_hat"].clamp(0, 1))
        # The official code averages each level over everything, then over levels.
        perceptual = torch.stack(
            [F.mse_loss(d.float(), o.float()) for d, o in zip(decoded, original, strict=True)]
        ).mean()
        bpp = bpp_from_likelihoods(output["likelihoods"], n * h * w)
        loss = perceptual + self.lmbda * bpp
        mse = F.mse_loss(output["x_hat"].detach().float(), target.float())
        return {"loss": loss, "bpp": bpp, "perceptual": perceptual.detach(), "mse": mse}
