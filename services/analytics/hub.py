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
from services.common.model_catalog import CodecCatalog
from services.common.model_ids import codec_model_id
from services.common.model_loader import InFlight
from transtic.bitstream import StreamHeader
from transtic.codec import ImageCodec
from transtic.tasks import TASK_BACKENDS, ClassificationBackend, TaskBackend
from transtic.tasks.registry import BackendRegistry
from transtic.weights import WeightsNotFoundError, default_registry, load_codec, resolve
from transtic.weights.shipped import shipped_codec_names

log = logging.getLogger(__name__)


@dataclass(eq=False)  # slots are compared by identity: two versions may look alike
class CodecSlot:
    id: str
    codec: ImageCodec
    task: str | None  # the task its prompts were tuned for; None = general purpose
    quality: int
    source: str
    origin: str = "config"  # "config" (set at start), "catalog" or "repository"
    sha256: str | None = None  # of the weights file, when it was checked on load
    in_flight: InFlight = field(default_factory=InFlight)

    @property
    def fingerprint(self) -> str:
        return self.codec.fingerprint.hex()


@dataclass(eq=False)
class BackendSlot:
    backend: TaskBackend
    ready: bool = False
    detail: str = ""
    retryable: bool = True
    lock: threading.Lock = field(default_factory=threading.Lock)
    in_flight: InFlight = field(default_factory=InFlight)

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
    """Readers take ``codecs``, ``backends`` and the fingerprint map without a lock: a
    change (model control) builds new ones and swaps them in whole, under ``_lock``, so a
    request sees either the old set or the new one, never half of each."""

    def __init__(
        self,
        settings: Settings,
        *,
        backends: Sequence[TaskBackend] | None = None,
        backend_registry: BackendRegistry | None = None,
    ):
        self.settings = settings
        self.device = settings.resolved_device()
        self.backend_registry = backend_registry if backend_registry is not None else TASK_BACKENDS
        # What model control (and the settings) may name: weights catalog, model repository.
        self.catalog = CodecCatalog(
            cache_dir=settings.weights_cache_dir, repository=settings.model_repository
        )
        self.codecs: list[CodecSlot] = []
        self.codec_problems: dict[str, str] = {}
        self._by_fingerprint: dict[bytes, CodecSlot] = {}
        self._lock = threading.Lock()
        # Unloaded models that requests still hold (listed as UNLOADING until released).
        self.retired: list[CodecSlot | BackendSlot] = []
        if backends is None:
            backends = [self.create_backend(name) for name in settings.task_backends]
        self.backends: dict[str, BackendSlot] = {}
        for backend in backends:
            # The first backend named for a task serves it; later ones are alternatives.
            self.backends.setdefault(str(backend.task), BackendSlot(backend))

    def create_backend(self, name: str) -> TaskBackend:
        cls = self.backend_registry.get(name)  # unknown names are a configuration error
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
        if not specs and self.settings.use_shipped_weights:
            specs = self.shipped_codec_specs()
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

    def shipped_codec_specs(self) -> list[tuple[str, str]]:
        """The package's codecs for every offered task that has some, as ``task:quality``
        settings keys; the default quality's first, so that uploads get it by default."""
        registry = default_registry()
        return [
            (f"{task}:{registry.get(name).quality}", name)
            for task in self.tasks()
            for name in shipped_codec_names(task)
        ]

    def _load_codec(self, key: str, spec: str) -> None:
        task, quality = _parse_key(key)
        registry = default_registry()
        sha256 = None
        origin = "config"
        if Path(spec).is_file():
            path = Path(spec)
        elif spec in registry:
            entry = registry.get(spec)
            path = resolve(spec, cache_dir=self.settings.weights_cache_dir, registry=registry)
            task = task or entry.task
            quality = quality if quality is not None else entry.quality
            # A registry file is checked against its published digest before it is parsed.
            sha256 = entry.sha256
            origin = "catalog"
        else:
            # A model repository name (its manifest pins the digest), else an error.
            source = self.catalog.find(spec)
            assert source.path is not None  # find() returns loadable sources only
            path, sha256, origin = source.path, source.sha256, source.origin
            task = task or source.task
            quality = quality if quality is not None else source.quality
        # Files go by the id scheme both services share; a repository model by its name.
        codec_id = spec if origin == "repository" else codec_model_id(path)
        if self._holds(path, task, quality or 0):
            # e.g. the default codec named again for its task and quality: one model, listed once
            log.info("codec %s (%s) is already loaded for that task and quality", codec_id, key)
            return
        codec = self.build_codec(path, sha256=sha256, task=task, quality=quality or 0)
        slot = CodecSlot(codec_id, codec, task, quality or 0, str(path), origin, sha256)
        self.install_codec(slot)
        log.info("codec %s loaded from %s (weights %s)", codec_id, path, slot.fingerprint)

    def build_codec(
        self, path: Path, *, sha256: str | None, task: str | None, quality: int
    ) -> ImageCodec:
        """A codec from a weights file, checked against ``sha256`` (or, for a catalog
        file, its published digest) before it is parsed."""
        loaded = load_codec(
            path, cache_dir=self.settings.weights_cache_dir, device=self.device, sha256=sha256
        )
        return ImageCodec(
            loaded.model,
            device=self.device,
            quality=quality,
            task=task,
            max_pixels=self.settings.max_pixels,
            max_aspect_ratio=self.settings.max_aspect_ratio,
            precision=self.settings.precision,
        )

    # -- changes while serving (model control) ------------------------------------------
    def _publish_codecs(self, codecs: list[CodecSlot]) -> None:
        by_fingerprint: dict[bytes, CodecSlot] = {}
        for slot in codecs:
            by_fingerprint.setdefault(slot.codec.fingerprint, slot)
        # Either order is safe for a reader: every slot in either map is a live codec.
        self._by_fingerprint = by_fingerprint
        self.codecs = codecs

    def install_codec(self, slot: CodecSlot, *, preferred: bool = False) -> None:
        """Add a codec; ``preferred`` puts it first, so images are coded with it from now
        on where it competes with older codecs of the same task and quality."""
        with self._lock:
            self._publish_codecs([slot, *self.codecs] if preferred else [*self.codecs, slot])

    def retire_codecs(self, name: str, version: str | None, *, force: bool) -> list[CodecSlot]:
        """Stop routing new requests to codec ``name`` (one version or all); requests
        that hold it finish on it. Refuses to remove the last codec unless ``force``."""
        with self._lock:
            gone = [s for s in self.codecs if s.id == name and version in (None, s.fingerprint)]
            kept = [s for s in self.codecs if s not in gone]
            if gone and not kept and not force:
                raise ServiceError(
                    ErrorCode.FAILED_PRECONDITION,
                    f"codec {name!r} is the last one loaded: without it the service takes "
                    "no work; load another first, or unload with force",
                )
            self._publish_codecs(kept)
            self._retire(gone)
        return gone

    def swap_backend(self, slot: BackendSlot) -> None:
        """Serve ``slot``'s task with it from now on; requests holding the previous
        backend finish on that one."""
        with self._lock:
            old = self.backends.get(slot.task)
            self.backends = {**self.backends, slot.task: slot}
            if old is not None and old.ready:
                self._retire([old])

    def _retire(self, slots: list[CodecSlot] | list[BackendSlot]) -> None:
        # Kept (and listed as UNLOADING) only while requests hold them; a release after
        # the last one calls unloading(), which lets them go.
        self.retired = [s for s in [*self.retired, *slots] if s.in_flight.count > 0]

    def unloading(self) -> list[CodecSlot | BackendSlot]:
        """Unloaded models still in use; the rest are forgotten (and freed) here."""
        with self._lock:
            self._retire([])
            return list(self.retired)

    def _holds(self, path: Path, task: str | None, quality: int) -> bool:
        return any(
            Path(s.source).resolve() == path.resolve() and (s.task, s.quality) == (task, quality)
            for s in self.codecs
        )

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
