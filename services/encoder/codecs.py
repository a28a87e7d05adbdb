"""The encoder's loaded codecs: one TransTIC model per (task, quality), thread-safe encoding."""

from __future__ import annotations

import io
import logging
import threading
import time
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from services.common.errors import ErrorCode, ServiceError
from services.common.model_ids import codec_model_id
from transtic.bitstream import AlignMode
from transtic.codec import EncodeResult, ImageCodec
from transtic.images import (
    DEFAULT_ALIGNMENT,
    ImageError,
    ImageTooLargeError,
    check_size_budget,
    decode_image_bytes,
    to_tensor,
)
from transtic.models import HyperpriorCodec
from transtic.precision import log_choice, resolve_precision
from transtic.weights import WeightsEntry, WeightsError, default_registry, load_codec, resolve
from transtic.weights.shipped import preferred_quality

from .settings import EncoderSettings

log = logging.getLogger(__name__)

ALIGN_MODES = {"pad": AlignMode.PAD, "resize": AlignMode.RESIZE}
# Base (non-prompted) codecs in the catalog have no task; their streams say "human".
HUMAN_TASK = "human"


def _invalid(message: str) -> ServiceError:
    return ServiceError(ErrorCode.INVALID_ARGUMENT, message)


def _too_large(message: str) -> ServiceError:
    return ServiceError(ErrorCode.RESOURCE_EXHAUSTED, message)


@dataclass(frozen=True, eq=False)  # by identity: two versions of a name may look alike
class LoadedModel:
    task: str
    quality: int
    path: Path
    model: HyperpriorCodec
    lock: threading.Lock
    name: str = ""  # the catalog or model-repository name; "" = named by its file
    sha256: str | None = None  # of the file, when it was checked on load
    origin: str = "config"  # "catalog", "repository" or "config" (an explicit path)
    # The model's codec wrapper per align mode, built on first use (under the bank's lock).
    codecs: dict[AlignMode, ImageCodec] = field(default_factory=dict)

    @property
    def model_name(self) -> str:
        """Its id in the scheme both services share (services/common/model_ids.py)."""
        return self.name or codec_model_id(self.path)

    @property
    def fingerprint(self) -> str:
        """Hex, first 16 bytes of the weights' sha256, as the bitstream header carries."""
        return bytes(getattr(self.model, "fingerprint", b""))[:16].hex()


def _catalog_files(settings: EncoderSettings) -> Iterator[tuple[WeightsEntry, Path]]:
    """Codec entries of the weights catalog that have a local file."""
    registry = default_registry()
    for entry in registry:
        if entry.kind != "codec" or entry.quality is None:
            continue
        if entry.package_resource is not None and not settings.use_shipped_weights:
            continue
        try:
            # the cache dir first, then weights shipped inside the package
            path = resolve(entry.name, cache_dir=settings.weights_cache_dir, registry=registry)
        except WeightsError:
            continue
        yield entry, path


def discover_checkpoints(settings: EncoderSettings) -> dict[str, dict[int, Path]]:
    """task -> quality -> file: catalog files (cache dir or shipped), then explicit paths."""
    found: dict[str, dict[int, Path]] = {}
    for entry, path in _catalog_files(settings):
        found.setdefault(entry.task or HUMAN_TASK, {})[entry.quality or 0] = path
    for task, qualities in settings.checkpoints.items():
        found.setdefault(task, {}).update(qualities)
    if settings.tasks:
        found = {t: q for t, q in found.items() if t in settings.tasks}
    return {t: dict(sorted(q.items())) for t, q in sorted(found.items()) if q}


class CodecBank:
    """Every configured codec, loaded once; ``encode`` picks one per request."""

    def __init__(self, models: Mapping[tuple[str, int], LoadedModel], settings: EncoderSettings):
        if not models:
            raise ValueError(
                "no codec checkpoints configured: set weights_cache_dir (catalog file names) or "
                "checkpoints (task -> quality -> path)"
            )
        self._models = dict(models)
        self._settings = settings
        self.device = settings.resolved_device()
        choice = resolve_precision(settings.precision, self.device)
        log_choice(choice, "encoder codecs")
        self.precision: str = choice.precision
        self._codecs_lock = threading.Lock()
        self._swap_lock = threading.Lock()

    @classmethod
    def load(cls, settings: EncoderSettings, *, only_task: str | None = None) -> CodecBank:
        table = discover_checkpoints(settings)
        if only_task is not None:
            table = {t: q for t, q in table.items() if t == only_task}
        registry = default_registry()
        models: dict[tuple[str, int], LoadedModel] = {}
        for task, qualities in table.items():
            for quality, path in qualities.items():
                start = time.perf_counter()
                # Catalog files are checked against their published digest before parsing.
                loaded = load_codec(
                    path,
                    cache_dir=settings.weights_cache_dir,
                    device=settings.resolved_device(),
                    registry=registry,
                )
                entry = loaded.file.entry
                models[(task, quality)] = LoadedModel(
                    task,
                    quality,
                    loaded.path,
                    loaded.model,
                    threading.Lock(),
                    name=entry.name if entry is not None else "",
                    sha256=loaded.file.sha256,
                    origin="catalog" if entry is not None else "config",
                )
                log.info(
                    "loaded codec task=%s quality=%d from %s in %.2fs",
                    task,
                    quality,
                    path,
                    time.perf_counter() - start,
                )
        return cls(models, settings)

    # -- what is available -----------------------------------------------------------
    def tasks(self) -> list[str]:
        return sorted({task for task, _ in self._models})

    def qualities(self, task: str) -> list[int]:
        return sorted(q for t, q in self._models if t == task)

    def models(self) -> list[LoadedModel]:
        return [self._models[key] for key in sorted(self._models)]

    def fingerprint(self, task: str, quality: int) -> str:
        """Hex, first 16 bytes of the weights' sha256, as the bitstream header carries."""
        return self._models[(task, quality)].fingerprint

    # -- changes while serving (model control) ------------------------------------------
    def install(self, loaded: LoadedModel) -> LoadedModel | None:
        """Serve (task, quality) with ``loaded`` from now on; returns the model it replaced.
        An encode already running keeps the model it started with."""
        key = (loaded.task, loaded.quality)
        with self._swap_lock:
            old = self._models.get(key)
            self._models = {**self._models, key: loaded}
        return old

    def remove(self, name: str, version: str | None, *, force: bool) -> list[LoadedModel]:
        """Stop serving the models called ``name`` (one version, or all); the last one
        goes only with ``force`` (the encoder then has nothing to code with)."""
        with self._swap_lock:
            gone = {
                key: m
                for key, m in self._models.items()
                if m.model_name == name and version in (None, m.fingerprint)
            }
            if gone and len(gone) == len(self._models) and not force:
                raise ServiceError(
                    ErrorCode.FAILED_PRECONDITION,
                    f"codec {name!r} is the last one loaded; load another first, or unload "
                    "with force",
                )
            self._models = {k: m for k, m in self._models.items() if k not in gone}
        return list(gone.values())

    def default_quality(self, task: str) -> int:
        """The quality a request with quality 0 gets (0 when the task is not loaded)."""
        available = self.qualities(task)
        if not available:
            return 0
        return self._settings.quality or preferred_quality(available)

    def codec_id(self, task: str, quality: int) -> str:
        return self._models[(task, quality)].model_name

    def resolve(self, task: str | None, quality: int | None) -> tuple[str, int]:
        """Apply the defaults and check the pair exists (INVALID_ARGUMENT if not)."""
        task = task or self._settings.task
        if task not in self.tasks():
            raise _invalid(f"unknown task {task!r}; available: {', '.join(self.tasks())}")
        available = self.qualities(task)
        if not quality:
            quality = self.default_quality(task)
        if quality not in available:
            raise _invalid(
                f"quality {quality} is not available for task {task!r}; available: "
                f"{', '.join(map(str, available))}",
            )
        return task, quality

    # -- encoding --------------------------------------------------------------------
    def _codec(self, loaded: LoadedModel, align: AlignMode) -> ImageCodec:
        with self._codecs_lock:
            codec = loaded.codecs.get(align)
            if codec is None:
                # Codecs per align mode share one model: the wrapper holds no weights.
                codec = ImageCodec(
                    loaded.model,
                    quality=loaded.quality,
                    task=loaded.task,
                    align_mode=align,
                    precision=self.precision,
                    device=self.device,
                    max_pixels=self._settings.max_pixels,
                    max_aspect_ratio=self._settings.max_aspect_ratio,
                )
                loaded.codecs[align] = codec
            return codec

    def encode(self, image: Any, task: str, quality: int, align_mode: str = "") -> EncodeResult:
        """Encode an image (tensor / array / PIL) with a resolved (task, quality)."""
        mode = align_mode or self._settings.align_mode
        if mode not in ALIGN_MODES:
            raise _invalid(f"align_mode must be 'pad' or 'resize', not {mode!r}")
        x = to_tensor(image)
        # Taken once: a model swapped or unloaded meanwhile still finishes this request.
        loaded = self._models.get((task, quality))
        if loaded is None:
            raise ServiceError(
                ErrorCode.UNAVAILABLE, f"codec {task} q{quality} was just unloaded; retry"
            )
        codec = self._codec(loaded, ALIGN_MODES[mode])
        self._check_size(int(x.shape[-2]), int(x.shape[-1]), codec.divisor)
        # One model is not safe to run from two threads at once (entropy coder state);
        # different models still run in parallel.
        with loaded.lock:
            return codec.encode(x)

    def decode_upload(self, data: bytes) -> Any:
        """Image file bytes -> (3, H, W) tensor, refusing oversize uploads before decoding."""
        limit = self._settings.max_image_bytes
        if len(data) > limit:
            raise _too_large(f"image upload is {len(data)} bytes; the limit is {limit}")
        if not data:
            raise _invalid("empty image")
        size = _peek_size(data)
        if size is not None:
            self._check_size(size[1], size[0], DEFAULT_ALIGNMENT)
        try:
            return decode_image_bytes(
                data,
                max_pixels=self._settings.max_pixels,
                max_aspect_ratio=self._settings.max_aspect_ratio,
            )
        except ImageError as exc:
            raise _invalid(str(exc)) from None

    def _check_size(self, height: int, width: int, alignment: int) -> None:
        """The per-request budget, before any decoding or coding work is spent."""
        settings = self._settings
        try:
            check_size_budget(
                height,
                width,
                max_pixels=settings.max_pixels,
                max_aspect_ratio=settings.max_aspect_ratio,
                alignment=alignment,
            )
        except ImageTooLargeError as exc:
            raise _too_large(str(exc)) from None
        except ImageError as exc:
            raise _invalid(str(exc)) from None


def _peek_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from the image header alone, or None when the header is unreadable.

    decode_image_bytes reports both corrupt and oversized images as ImageError; reading the
    header first is what lets oversized ones get RESOURCE_EXHAUSTED instead.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(io.BytesIO(data)) as img:
                return img.size
    except Image.DecompressionBombError as exc:
        raise _too_large(str(exc)) from None
    except Exception:  # any parse failure is reported by the real decode that follows
        return None
