"""The paper's task networks: torchvision ResNet-50 (whole-image classification) and the
detectron2 R-CNNs' COCO category numbering, checked without detectron2 installed."""

from __future__ import annotations

import sys
import types
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch

from transtic.tasks import BackendRegistry, register_defaults
from transtic.weights import default_registry


@pytest.fixture(scope="module")
def resnet50_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Random torchvision ResNet-50 weights saved as torchvision writes them (float16 to
    halve the temp file; loading casts back)."""
    import torchvision

    torch.manual_seed(0)
    state = torchvision.models.resnet50().state_dict()
    path = tmp_path_factory.mktemp("resnet") / "resnet50.pth"
    torch.save({k: v.half() if v.is_floating_point() else v for k, v in state.items()}, path)
    return path


def test_resnet50_entry_loads_torchvision_weights_and_matches_torchvision(
    resnet50_file: Path,
) -> None:
    import torchvision

    from transtic.tasks import ClassificationBackend

    backend = ClassificationBackend(
        weights="resnet50_imagenet1k_v1", weights_path=resnet50_file, whole_image=True
    )
    backend.load("cpu")
    assert backend.normalization.resize == "none"
    reference = torchvision.models.resnet50()
    reference.load_state_dict(torch.load(resnet50_file, weights_only=True))
    reference.eval()
    images = [torch.rand(3, 256, 256) for _ in range(2)]
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        expected = reference((torch.stack(images) - mean) / std).softmax(-1)
    answers = backend.predict(images)
    for answer, probs in zip(answers, expected, strict=True):
        top = answer["predictions"][0]
        assert top["index"] == int(probs.argmax())
        assert top["score"] == pytest.approx(float(probs.max()), rel=1e-4)
    # Whole images of different sizes are classified one by one, same answers.
    mixed = backend.predict([images[0], torch.rand(3, 200, 300)])
    assert mixed[0]["predictions"][0]["index"] == answers[0]["predictions"][0]["index"]


def test_detectron2_contiguous_classes_map_to_coco_ids() -> None:
    meta = default_registry().get("detectron2_faster_rcnn_R_50_FPN_3x").metadata
    ids, names = meta["category_ids"], meta["categories"]
    coco91 = default_registry().get("fasterrcnn_resnet50_fpn_coco").metadata["categories"]
    assert len(ids) == len(names) == 80 and list(ids) == sorted(set(ids))
    assert (ids[0], ids[11], ids[12], ids[79]) == (1, 13, 14, 90)  # person, stop sign, ...
    assert [coco91[i] for i in ids] == list(names)
    assert (names[0], names[11], names[79]) == ("person", "stop sign", "toothbrush")


def test_detectron2_answers_carry_coco_category_ids(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "detectron2", types.ModuleType("detectron2"))
    backend: Any = register_defaults(BackendRegistry()).create("detectron2")

    class FakeModel:
        """Stands in for a detectron2 model: Instances with contiguous class indices."""

        def __call__(self, inputs: list[dict[str, Any]]) -> list[dict[str, Any]]:
            instances = SimpleNamespace(
                pred_classes=torch.tensor([0, 11, 79]),
                pred_boxes=SimpleNamespace(tensor=torch.tensor([[1.0, 2, 3, 4]] * 3)),
                scores=torch.tensor([0.9, 0.5, 0.06]),
            )
            instances.to = lambda device: instances
            return [{"instances": instances} for _ in inputs]

    backend.model = FakeModel()
    backend._loaded = True
    (answer,) = backend.predict([torch.rand(3, 40, 60)])
    dets = answer["detections"]
    assert [d["category_id"] for d in dets] == [1, 13, 90]
    assert [d["label"] for d in dets] == ["person", "stop sign", "toothbrush"]
    with pytest.raises(ValueError, match="class index 80"):
        backend.coco_id(80)
