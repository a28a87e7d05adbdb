"""Per-photo classifier scores that move smoothly with distortion.

Top-1 agreement is a coin flip on photos the classifier is unsure of (most of the
validation photos: median top-1 probability 0.18), so at 135 photos it cannot
resolve the differences between codecs. These scores compare the classifier's
whole answer on the decoded image with its answer on the uncompressed one:

- ``kl_divergence``: KL(reference || decoded) of the softmax, in nats (0 when the
  two distributions are equal, growing with the damage);
- ``top5_agreement``: 100 when the reference top-1 class is among the decoded
  image's five most probable classes, else 0;
- ``feature_cosine``: cosine similarity of the pooled features the classifier's
  last layer reads (timm's ``pre_logits``), 1 when unchanged;
- ``top1_agreement`` (and ``top1_accuracy`` against labels): 100 or 0 per photo.

Every score is per photo so that an aggregate is a plain mean and the bootstrap
can resample photos (``transtic.evaluation.bootstrap``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ..tasks.preprocess import normalize_batch, standardize

TOP_K = 5
#: Scores for which smaller is better; curves and BD-rates flip their sign.
LOWER_IS_BETTER = frozenset({"kl_divergence"})


@dataclass
class ClassifierOutputs:
    """The classifier's log-probabilities (N, classes) and pooled features (N, D)."""

    log_probs: torch.Tensor
    features: torch.Tensor

    @property
    def top1(self) -> torch.Tensor:
        return self.log_probs.argmax(dim=-1)

    @property
    def top1_probability(self) -> list[float]:
        return self.log_probs.max(dim=-1).values.exp().tolist()


def exposes_network(backend: Any) -> bool:
    """Whether the smooth scores can be computed (a timm classifier backend)."""
    return callable(getattr(backend, "timm_model", None)) and hasattr(backend, "normalization")


def _network_input(backend: Any, images: list[torch.Tensor]) -> list[torch.Tensor]:
    # The same preprocessing as the backend's own predictions, so top-1 here is the
    # answer the service gives.
    norm = backend.normalization
    if not getattr(backend, "whole_image", False):
        return [normalize_batch(images, norm)]
    if len({tuple(i.shape) for i in images}) == 1:
        return [standardize(torch.stack(images), norm)]
    return [standardize(i[None], norm) for i in images]  # sizes differ: one by one


@torch.no_grad()
def classify(backend: Any, images: Sequence[torch.Tensor], batch: int = 8) -> ClassifierOutputs:
    """Log-softmax and pre-logits features of the backend's timm network."""
    model = backend.timm_model()
    device = next(model.parameters()).device
    log_probs, features = [], []
    for start in range(0, len(images), batch):
        chunk = [i.to(device) for i in images[start : start + batch]]
        for x in _network_input(backend, chunk):
            pooled = model.forward_head(model.forward_features(x), pre_logits=True)
            logits = model.get_classifier()(pooled)
            # float64 so that identical inputs give a KL of exactly 0 and tiny
            # probabilities do not underflow
            log_probs.append(logits.double().log_softmax(dim=-1).cpu())
            features.append(pooled.double().flatten(1).cpu())
    return ClassifierOutputs(torch.cat(log_probs), torch.cat(features))


def kl_divergence(reference: torch.Tensor, decoded: torch.Tensor) -> torch.Tensor:
    """Per-row KL(reference || decoded) in nats from log-probabilities (N, classes)."""
    return (reference.exp() * (reference - decoded)).sum(dim=-1).clamp_min(0.0)


def reference_in_top_k(
    reference: torch.Tensor, decoded: torch.Tensor, k: int = TOP_K
) -> torch.Tensor:
    """Per row: is the reference's most probable class among the decoded top ``k``."""
    top = decoded.topk(min(k, decoded.shape[-1]), dim=-1).indices
    return (top == reference.argmax(dim=-1, keepdim=True)).any(dim=-1)


def feature_cosine(reference: torch.Tensor, decoded: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.cosine_similarity(reference, decoded, dim=-1)


def per_image_scores(
    reference: ClassifierOutputs,
    decoded: ClassifierOutputs,
    labels: Sequence[int] | None = None,
) -> dict[str, list[float]]:
    """Every classification score per photo; their means are the reported scores."""
    found = decoded.top1
    scores = {
        "top1_agreement": (100.0 * (found == reference.top1)).tolist(),
        "top5_agreement": (
            100.0 * reference_in_top_k(reference.log_probs, decoded.log_probs)
        ).tolist(),
        "kl_divergence": kl_divergence(reference.log_probs, decoded.log_probs).tolist(),
        "feature_cosine": feature_cosine(reference.features, decoded.features).tolist(),
    }
    if labels is not None:
        scores["top1_accuracy"] = (100.0 * (found == torch.tensor(list(labels)))).tolist()
    return scores
