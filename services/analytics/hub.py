"""The models the service holds: codecs (by weights fingerprint) and task backends.

Loading problems are recorded, not raised: the service starts, reports what is
missing (GET /v1/models, GetInfo) and answers requests that need it with
UNAVAILABLE naming the file to install.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from services.analytics.settings import TASKS, Settings
from services.common.errors import ErrorCode, ServiceError, redact_paths
from transtic.bitstream import StreamHeader
from transtic.codec import ImageCodec
from transtic.tasks import TASK_BACKENDS, ClassificationBackend, TaskBackend
from transtic.weights import WeightsNotFoundError, default_registry, load_codec

log = logging.getLogger(__name__)


@dataclass
class CodecSlot:
    id: str
    codec: ImageCodec
    task: str | None  # the task its prompts were tuned for; None = general purpose
    quality: int
    source: str

    @property
    def fingerprint(self) -> str:
        return self.codec.fingerprint.hex()


@dataclass
class BackendSlot:
    backend: TaskBackend
    ready: bool = False
    detail: str = ""
    retryable: bool = True
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def task(self) -> str:
        return str(self.backend.task)

    @property
    def model_id(self) -> str:
        return f"{self.backend.name}:{','.join(self.backend.required_weights)}"


def _parse_key(key: str) -> tuple[str | None, int | None]:
    if key == "default":
        return None, None
    task, _, quality = key.partition(":")
    return task, int(quality) if quality else None


class ModelHub:
    def __init__(self, settings: Settings, *, backends: Sequence[TaskBackend] | None = None):
        self.settings = settings
        self.device = settings.resolved_device()
        self.codecs: list[CodecSlot] = []
        self.codec_problems: dict[str, str] = {}
        self._by_fingerprint: dict[bytes, CodecSlot] = {}
        if backends is None:
            backends = [self._create_backend(name) for name in settings.task_backends]
        self.backends: dict[str, BackendSlot] = {}
        for backend in backends:
            # The first backend named for a task serves it; later ones are alternatives.
            self.backends.setdefault(str(backend.task), BackendSlot(backend))

    def _create_backend(self, name: str) -> TaskBackend:
        cls = TASK_BACKENDS.get(name)  # unknown names are a configuration error: fail fast
        kwargs: dict[str, Any] = {"cache_dir": self.settings.weights_cache_dir}
        if issubclass(cls, ClassificationBackend):
            kwargs["top_k"] = self.settings.classification_top_k
        return cls(**kwargs)

    # -- loading --------------------------------------------------------------------
    def load(self) -> None:
        specs: list[tuple[str, str]] = []
        if self.settings.codec_checkpoint:
            specs.append(("default", self.settings.codec_checkpoint))
        specs.extend(self.settings.codec_checkpoints.items())
        if not specs:
            self.codec_problems["default"] = (
                "no codec configured: set TRANSTIC_ANALYTICS_CODEC_CHECKPOINT "
                "(or --codec-checkpoint) to a checkpoint file or weights name"
            )
        for key, spec in specs:
            try:
                self._load_codec(key, spec)
            except Exception as exc:
                self.codec_problems[key] = f"{spec}: {exc}"
                log.warning("codec %s not loaded: %s", key, self.codec_problems[key])
        for slot in self.backends.values():
            self._load_backend(slot)

    def _load_codec(self, key: str, spec: str) -> None:
        task, quality = _parse_key(key)
        # A catalog file is checked against its published digest before it is parsed.
        loaded = load_codec(
            spec,
            cache_dir=self.settings.weights_cache_dir,
            device=self.device,
            registry=default_registry(),
        )
        task = task or loaded.task
        quality = quality if quality is not None else loaded.quality
        codec = ImageCodec(
            loaded.model,
            device=self.device,
            quality=quality or 0,
            task=task,
            max_pixels=self.settings.max_pixels,
            max_aspect_ratio=self.settings.max_aspect_ratio,
            precision=self.settings.precision,
        )
        codec_id, path = loaded.name, loaded.path
        if any(s.id == codec_id for s in self.codecs):
            codec_id = f"{codec_id}#{len(self.codecs)}"
        slot = CodecSlot(codec_id, codec, task, quality or 0, str(path))
        self.codecs.append(slot)
        self._by_fingerprint.setdefault(codec.fingerprint, slot)
        log.info("codec %s loaded from %s (weights %s)", codec_id, path, slot.fingerprint)

    def _load_backend(self, slot: BackendSlot) -> None:
        with slot.lock:
            if slot.ready or not slot.retryable:
                return
            try:
                slot.backend.load(self.device)
            except WeightsNotFoundError as exc:
                # Cheap to retry (it fails before building the model), so a file
                # installed later is picked up without a restart.
                detail = f"{exc}{self._cache_hint()}"
                if detail != slot.detail:
                    log.warning("task %s unavailable: %s", slot.task, detail)
                slot.detail = detail
                return
            except Exception as exc:
                slot.detail = f"{type(exc).__name__}: {exc}"
                slot.retryable = False
                log.exception("task %s failed to load", slot.task)
                return
            slot.ready, slot.detail = True, ""
            log.info("task %s ready (%s)", slot.task, slot.model_id)

    def _cache_hint(self) -> str:
        # With a cache dir the library's message already names it; without one,
        # say which setting provides it.
        if self.settings.weights_cache_dir is not None:
            return ""
        return (
            "; this service has no weights cache directory: set "
            "TRANSTIC_ANALYTICS_WEIGHTS_CACHE_DIR (or --weights-cache-dir)"
        )

    # -- lookups --------------------------------------------------------------------
    @property
    def ready(self) -> bool:
        return bool(self.codecs)

    def tasks(self) -> list[str]:
        return [t for t in TASKS if t in self.backends]

    def ready_tasks(self) -> list[str]:
        """Known tasks whose backend is loaded (a codec must be too)."""
        if not self.codecs:
            return []
        return [t for t in self.tasks() if self.backends[t].ready]

    def _no_codec(self) -> ServiceError:
        reasons = "; ".join(self.codec_problems.values()) or "no codec configured"
        return ServiceError(ErrorCode.UNAVAILABLE, f"no codec is loaded: {reasons}")

    def check_task(self, task: str) -> str:
        if task not in self.backends:
            raise ServiceError(
                ErrorCode.INVALID_ARGUMENT,
                f"unknown task {task[:64]!r}; this service offers: {', '.join(self.tasks())}",
            )
        return task

    def resolve_task(self, requested: str | None, header_task: str | None = None) -> str:
        """The request's task, else the one the stream was coded for, else the default."""
        if requested:
            return self.check_task(requested)
        if header_task in self.backends:
            return str(header_task)
        return self.check_task(self.settings.default_task)

    def codec_for_stream(self, header: StreamHeader) -> CodecSlot:
        slot = self._by_fingerprint.get(header.weights_fingerprint)
        if slot is not None:
            return slot
        if not self.codecs:
            raise self._no_codec()
        # The inventory goes to the log; a client only learns that its weights are not here.
        held = ", ".join(f"{s.id}={s.fingerprint}" for s in self.codecs)
        log.info("no codec for weights %s (held: %s)", header.weights_fingerprint.hex(), held)
        raise ServiceError(
            ErrorCode.FAILED_PRECONDITION,
            f"bitstream was coded with codec weights {header.weights_fingerprint.hex()} "
            f"({header.codec}, task {header.task}, quality {header.quality}), which this "
            "service does not hold; re-encode with a codec listed by GetInfo (gRPC) or the "
            "REST model list",
        )

    def codec_for_image(self, task: str, quality: int | None) -> CodecSlot:
        if not self.codecs:
            raise self._no_codec()

        def pick(slots: list[CodecSlot]) -> list[CodecSlot]:
            return [s for s in slots if quality is None or s.quality == quality]

        for group in ([s for s in self.codecs if s.task == task], self.codecs):
            found = pick(group)
            if found:
                return found[0]
        offered = sorted({s.quality for s in self.codecs})
        raise ServiceError(
            ErrorCode.INVALID_ARGUMENT,
            f"no codec with quality {quality}; available qualities: {offered}",
        )

    def backend(self, task: str) -> BackendSlot:
        slot = self.backends[self.check_task(task)]
        if not slot.ready:
            self._load_backend(slot)
        if not slot.ready:
            raise ServiceError(
                ErrorCode.UNAVAILABLE, f"task {task!r} is not available: {slot.detail}"
            )
        return slot

    def describe(self) -> list[dict[str, Any]]:
        models: list[dict[str, Any]] = [
            {
                "id": s.id,
                "kind": "codec",
                "task": s.task or "",
                "quality": s.quality,
                "fingerprint": s.fingerprint,
                "ready": True,
                "detail": f"weights file {Path(s.source).name}",
                "codec": s.codec.codec_name,
                "precision": s.codec.precision,
            }
            for s in self.codecs
        ]
        models += [
            {
                "id": key,
                "kind": "codec",
                "task": _parse_key(key)[0] or "",
                "quality": 0,
                "fingerprint": "",
                "ready": False,
                "detail": redact_paths(reason),
            }
            for key, reason in self.codec_problems.items()
        ]
        models += [
            {
                "id": slot.model_id,
                "kind": "task",
                "task": task,
                "quality": 0,
                "fingerprint": "",
                "ready": slot.ready,
                "detail": redact_paths(slot.detail),
                "backend": slot.backend.name,
                "required_weights": slot.backend.required_weights,
            }
            for task, slot in self.backends.items()
        ]
        return models
