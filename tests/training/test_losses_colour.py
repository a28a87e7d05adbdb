"""The prompts' optional colour term: the squared per-channel mean shift, in levels."""

from __future__ import annotations

import pytest
import timm
import torch

from transtic.training.losses import ClassificationFeatureLoss


@pytest.fixture(scope="module")
def classifier() -> torch.nn.Module:
    torch.manual_seed(0)
    return timm.create_model("efficientnet_lite0", pretrained=False)


def output_for(x_hat: torch.Tensor) -> dict:
    return {"x_hat": x_hat, "likelihoods": {"y": torch.full((1, 4, 4, 4), 0.5)}}


def test_a_uniform_cast_costs_its_squared_levels(classifier: torch.nn.Module) -> None:
    norm = {"mean": (0.5, 0.5, 0.5), "std": (0.25, 0.25, 0.25)}
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1)) * 0.8 + 0.1
    cast = x.clone()
    cast[:, 0] += 8 / 255  # 8 levels redder
    cast[:, 2] -= 3 / 255  # 3 levels less blue
    plain = ClassificationFeatureLoss(classifier, 1e-4, **norm)
    coloured = ClassificationFeatureLoss(classifier, 1e-4, **norm, colour_weight=0.01)
    without = plain(output_for(cast), x)
    with_term = coloured(output_for(cast), x)
    assert "colour" not in without
    assert float(with_term["colour"]) == pytest.approx(8**2 + 3**2, rel=1e-4)
    assert float(with_term["loss"] - without["loss"]) == pytest.approx(0.01 * 73, rel=1e-4)
    # its gradient pulls every pixel of a cast channel the same way, against the cast
    x_hat = cast.clone().requires_grad_(True)
    colour_only = coloured(output_for(x_hat), x)["loss"] - plain(output_for(x_hat), x)["loss"]
    colour_only.backward()
    assert x_hat.grad is not None
    assert (x_hat.grad[:, 0] > 0).all() and (x_hat.grad[:, 2] < 0).all()
    assert x_hat.grad[:, 1].abs().max() < 1e-6
