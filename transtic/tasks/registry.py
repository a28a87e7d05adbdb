"""One registry of task backends, keyed by backend name."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from transtic.tasks.base import TaskBackend
from transtic.tasks.classification import ClassificationBackend
from transtic.tasks.detection import DetectionBackend, SegmentationBackend
from transtic.tasks.detectron2_backend import (
    Detectron2Backend,
    Detectron2SegmentationBackend,
    detectron2_available,
)

_OPTIONAL = {
    "detectron2": "detectron2 is not installed (it has no PyPI wheels; build it from source)",
    "detectron2_segmentation": "detectron2 is not installed (it has no PyPI wheels)",
}


class DuplicateBackendError(ValueError):
    pass


class UnknownBackendError(LookupError):
    def __str__(self) -> str:
        return str(self.args[0])


class BackendRegistry:
    def __init__(self) -> None:
        self._backends: dict[str, type[TaskBackend]] = {}

    def register(self, backend: type[TaskBackend]) -> type[TaskBackend]:
        """Add a backend class under its ``name``; usable as a class decorator."""
        if backend.name in self._backends:
            raise DuplicateBackendError(f"task backend {backend.name!r} is already registered")
        self._backends[backend.name] = backend
        return backend

    def get(self, name: str) -> type[TaskBackend]:
        try:
            return self._backends[name]
        except KeyError:
            why = _OPTIONAL.get(name)
            detail = f": {why}" if why else f"; available: {', '.join(self._backends)}"
            raise UnknownBackendError(f"no task backend {name!r}{detail}") from None

    def create(self, name: str, **kwargs: Any) -> TaskBackend:
        """Instantiate (without loading) the backend ``name``."""
        return self.get(name)(**kwargs)

    def names(self) -> list[str]:
        return list(self._backends)

    def by_task(self, task: str) -> list[str]:
        return [n for n, b in self._backends.items() if b.task == task]

    def __contains__(self, name: object) -> bool:
        return name in self._backends

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._backends))


def register_defaults(registry: BackendRegistry) -> BackendRegistry:
    registry.register(ClassificationBackend)
    registry.register(DetectionBackend)
    registry.register(SegmentationBackend)
    if detectron2_available():
        registry.register(Detectron2Backend)
        registry.register(Detectron2SegmentationBackend)
    return registry


TASK_BACKENDS = register_defaults(BackendRegistry())


def create_backend(name: str, **kwargs: Any) -> TaskBackend:
    return TASK_BACKENDS.create(name, **kwargs)


def available_backends() -> list[str]:
    return TASK_BACKENDS.names()
