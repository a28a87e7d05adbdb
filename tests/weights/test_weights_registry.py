from __future__ import annotations

import dataclasses
import json

import pytest

from transtic.weights import (
    DuplicateWeightsError,
    UnknownWeightsError,
    WeightsEntry,
    WeightsRegistry,
    default_registry,
    list_weights,
)


def _entry(**overrides: object) -> WeightsEntry:
    fields: dict[str, object] = {
        "name": "demo",
        "kind": "task",
        "task": "classification",
        "quality": None,
        "url": "https://example.invalid/demo.pth",
        "sha256": "0" * 64,
        "license": "MIT",
        "filename": "demo.pth",
    }
    fields.update(overrides)
    return WeightsEntry(**fields)  # type: ignore[arg-type]


def test_duplicate_registration_raises() -> None:
    registry = WeightsRegistry([_entry()])
    with pytest.raises(DuplicateWeightsError, match="demo"):
        registry.register(_entry(url="https://example.invalid/other.pth"))
    with pytest.raises(DuplicateWeightsError):
        WeightsRegistry([_entry(), _entry()])


def test_unknown_name_lists_known() -> None:
    registry = WeightsRegistry([_entry()])
    with pytest.raises(UnknownWeightsError, match="unknown weights 'nope'; known: demo"):
        registry.get("nope")


@pytest.mark.parametrize(
    "overrides",
    [
        {"filename": "../escape.pth"},
        {"filename": "a/b.pth"},
        {"sha256": "ABC"},
        {"sha256": None},  # unknown digest without a note
        {"url": None},  # neither url nor package resource
        {"url": "ftp://example.invalid/x"},
        {"kind": "model"},
        {"name": "has space"},
        {"sha256_prefix": "xyz"},
    ],
)
def test_entry_validation(overrides: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        _entry(**overrides)


def test_builtin_catalog_contents() -> None:
    registry = default_registry()
    names = set(registry.names())
    for q in (1, 2, 3, 4):
        for stem in ("base_codec", "cls", "det"):
            entry = registry.get(f"transtic_{stem}_q{q}")
            assert entry.url == (
                f"https://github.com/NYCU-MAPL/TransTIC/releases/download/v1.0/{stem}_{q}.pth.tar"
            )
            assert entry.quality == q
            assert entry.sha256 is None and "unknown" in entry.notes
            assert (entry.metadata["N"], entry.metadata["M"]) == (128, 192)
    assert {"fasterrcnn_resnet50_fpn_coco", "maskrcnn_resnet50_fpn_coco"} <= names
    assert "efficientnet_lite0_imagenet" in names
    for entry in registry:
        assert entry.sha256 is not None or entry.notes


def test_torchvision_entries_come_from_torchvision_enums() -> None:
    from torchvision.models.detection import (
        FasterRCNN_ResNet50_FPN_Weights,
        MaskRCNN_ResNet50_FPN_Weights,
    )

    registry = default_registry()
    for name, enum in [
        ("fasterrcnn_resnet50_fpn_coco", FasterRCNN_ResNet50_FPN_Weights.COCO_V1),
        ("maskrcnn_resnet50_fpn_coco", MaskRCNN_ResNet50_FPN_Weights.COCO_V1),
    ]:
        entry = registry.get(name)
        assert entry.url == enum.url
        assert entry.filename == enum.url.rsplit("/", 1)[-1]
        assert entry.sha256_prefix and entry.filename.endswith(f"-{entry.sha256_prefix}.pth")
        assert list(entry.metadata["categories"]) == list(enum.meta["categories"])
        assert entry.metadata["categories"][1] == "person"


def test_detectron2_categories_are_contiguous_coco80() -> None:
    entry = default_registry().get("detectron2_faster_rcnn_R_50_FPN_3x")
    cats = entry.metadata["categories"]
    assert len(cats) == 80 and cats[0] == "person" and cats[-1] == "toothbrush"
    assert "N/A" not in cats


def test_list_weights_is_json_serialisable() -> None:
    rows = [e.to_dict() for e in list_weights()]
    assert json.loads(json.dumps(rows))[0]["name"] == rows[0]["name"]


def test_entries_are_frozen() -> None:
    entry = _entry()
    with pytest.raises(dataclasses.FrozenInstanceError):
        entry.name = "other"  # type: ignore[misc]
