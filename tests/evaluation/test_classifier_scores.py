"""Smooth classifier scores: zero or perfect for identical outputs, worse with distortion."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from transtic.evaluation.classifier_scores import (
    ClassifierOutputs,
    classify,
    exposes_network,
    feature_cosine,
    kl_divergence,
    per_image_scores,
    reference_in_top_k,
)
from transtic.tasks import create_backend

from .conftest import smooth_image


def outputs(logits: list[list[float]], features: list[list[float]]) -> ClassifierOutputs:
    return ClassifierOutputs(
        torch.tensor(logits, dtype=torch.float64).log_softmax(-1),
        torch.tensor(features, dtype=torch.float64),
    )


def test_kl_of_identical_distributions_is_zero_and_matches_a_hand_value() -> None:
    p = torch.tensor([[0.5, 0.25, 0.25]], dtype=torch.float64).log()
    q = torch.tensor([[0.25, 0.5, 0.25]], dtype=torch.float64).log()
    assert kl_divergence(p, p).item() == 0.0
    # 0.5 ln 2 + 0.25 ln 0.5 = 0.25 ln 2
    assert kl_divergence(p, q).item() == pytest.approx(0.25 * torch.log(torch.tensor(2.0)).item())


def test_top5_and_cosine_by_hand() -> None:
    reference = torch.tensor([[0.0, 9, 0, 0, 0, 0, 0]]).log_softmax(-1)
    pushed_down = torch.tensor([[6.0, 0, 5, 4, 3, 2, 1]]).log_softmax(-1)  # class 1 sixth
    nearly = torch.tensor([[6.0, 2.5, 5, 4, 3, 2, 1]]).log_softmax(-1)  # class 1 fifth
    assert not reference_in_top_k(reference, pushed_down).item()
    assert reference_in_top_k(reference, nearly).item()
    a, b = torch.tensor([[1.0, 0.0]]), torch.tensor([[1.0, 1.0]])
    assert feature_cosine(a, a).item() == pytest.approx(1.0)
    assert feature_cosine(a, b).item() == pytest.approx(2**-0.5)


def test_per_image_scores_are_percent_hits_and_means_are_the_scores() -> None:
    ref = outputs([[3.0, 0, 0], [0, 3.0, 0]], [[1.0, 0], [0, 1.0]])
    dec = outputs([[3.0, 0, 0], [3.0, 0, 0]], [[1.0, 0], [1.0, 0]])
    scores = per_image_scores(ref, dec, labels=[0, 0])
    assert scores["top1_agreement"] == [100.0, 0.0]
    assert scores["top1_accuracy"] == [100.0, 100.0]
    assert scores["top5_agreement"] == [100.0, 100.0]  # three classes: always in the top 5
    assert scores["kl_divergence"][0] == 0.0 < scores["kl_divergence"][1]
    assert scores["feature_cosine"] == pytest.approx([1.0, 0.0])


def to_tensor(image: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1).float() / 255


def _jpeg(image: torch.Tensor, quality: int) -> torch.Tensor:
    buffer = io.BytesIO()
    Image.fromarray((image.permute(1, 2, 0) * 255).round().byte().numpy()).save(
        buffer, format="JPEG", quality=quality
    )
    return to_tensor(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))


def test_scores_of_the_real_classifier_worsen_as_jpeg_quality_falls() -> None:
    backend = create_backend("classification", whole_image=True)
    backend.load("cpu")
    assert exposes_network(backend)
    images = [to_tensor(smooth_image(seed, 256, 256)) for seed in range(3)]
    reference = classify(backend, images)
    # The network's own top-1 is the backend's answer: same preprocessing.
    answers = [p["predictions"][0]["index"] for p in backend.predict(images)]
    assert reference.top1.tolist() == answers
    same = per_image_scores(reference, classify(backend, images))
    assert same["kl_divergence"] == [0.0] * 3 and same["top1_agreement"] == [100.0] * 3
    kl = []
    for quality in (90, 30, 3):
        decoded = classify(backend, [_jpeg(i, quality) for i in images])
        scores = per_image_scores(reference, decoded)
        kl.append(sum(scores["kl_divergence"]) / 3)
    assert 0 < kl[0] < kl[1] < kl[2]
