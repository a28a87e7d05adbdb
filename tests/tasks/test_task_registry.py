from __future__ import annotations

import json
import sys
import types

import pytest

from transtic.tasks import (
    TASK_BACKENDS,
    BackendRegistry,
    ClassificationBackend,
    DuplicateBackendError,
    UnknownBackendError,
    available_backends,
    create_backend,
    detectron2_available,
    register_defaults,
)
from transtic.weights import default_registry


def test_default_backends_by_task() -> None:
    assert {"classification", "detection", "segmentation"} <= set(available_backends())
    assert "classification" in TASK_BACKENDS.by_task("classification")
    assert "segmentation" in TASK_BACKENDS.by_task("segmentation")


def test_duplicate_backend_raises() -> None:
    registry = BackendRegistry()
    registry.register(ClassificationBackend)
    with pytest.raises(DuplicateBackendError, match="classification"):
        registry.register(ClassificationBackend)


def test_unknown_backend_lists_available() -> None:
    with pytest.raises(UnknownBackendError, match="available: classification"):
        create_backend("nope")


@pytest.mark.skipif(detectron2_available(), reason="detectron2 is installed here")
def test_detectron2_absent_gracefully() -> None:
    assert "detectron2" not in available_backends()
    with pytest.raises(UnknownBackendError, match="detectron2 is not installed"):
        create_backend("detectron2")


def test_detectron2_registered_when_importable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "detectron2", types.ModuleType("detectron2"))
    registry = register_defaults(BackendRegistry())
    assert {"detectron2", "detectron2_segmentation"} <= set(registry.names())
    # Construction needs no detectron2 code; only load() imports it.
    backend = registry.create("detectron2_segmentation")
    assert backend.task == "segmentation"
    assert backend.required_weights == ["detectron2_mask_rcnn_R_50_FPN_3x"]


@pytest.mark.parametrize("name", ["classification", "detection", "segmentation"])
def test_describe_is_json_and_names_registered_weights(name: str) -> None:
    backend = create_backend(name)
    info = json.loads(json.dumps(backend.describe()))
    assert info["name"] == name and info["loaded"] is False
    for weights in info["required_weights"]:
        assert weights in default_registry()
    assert len(info["normalization"]["mean"]) == 3
