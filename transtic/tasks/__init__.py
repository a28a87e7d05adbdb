"""Vision-task backends the cloud service runs on decoded images."""

from transtic.tasks.base import Normalization, TaskBackend, TaskName
from transtic.tasks.classification import ClassificationBackend, map_by_position
from transtic.tasks.detection import DetectionBackend, SegmentationBackend, encode_masks
from transtic.tasks.detectron2_backend import detectron2_available
from transtic.tasks.registry import (
    TASK_BACKENDS,
    BackendRegistry,
    DuplicateBackendError,
    UnknownBackendError,
    available_backends,
    create_backend,
    register_defaults,
)

__all__ = [
    "TASK_BACKENDS",
    "BackendRegistry",
    "ClassificationBackend",
    "DetectionBackend",
    "DuplicateBackendError",
    "Normalization",
    "SegmentationBackend",
    "TaskBackend",
    "TaskName",
    "UnknownBackendError",
    "available_backends",
    "create_backend",
    "detectron2_available",
    "encode_masks",
    "map_by_position",
    "register_defaults",
]
