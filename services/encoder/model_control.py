"""Model control of the edge encoder: load, unload and list its codecs by name.

The encoder serves one codec per (task, quality). Loading a name puts its codec in that
place (a new version of the codec the camera streams with, say); an encode already
running finishes on the model it started with. Names come from the same places as the
analytics service's: the weights catalog and the model repository, each file checked
against its sha256 before it is parsed (services.common.model_catalog).
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import Future
from typing import Any

from services.common.errors import ErrorCode, ServiceError
from services.common.model_catalog import CodecCatalog, CodecSource
from services.common.model_loader import SerialLoader
from transtic.weights import load_codec

from .codecs import HUMAN_TASK, CodecBank, LoadedModel
from .settings import EncoderSettings

log = logging.getLogger(__name__)


def loaded_entry(model: LoadedModel, state: str = "READY") -> dict[str, Any]:
    return {
        "name": model.model_name,
        "kind": "codec",
        "version": model.fingerprint,
        "state": state,
        "reason": "",
        "task": model.task,
        "quality": model.quality,
        "source": model.origin,
        "in_flight": 0,
    }


class EncoderModelControl:
    def __init__(self, bank: CodecBank, settings: EncoderSettings) -> None:
        self.bank = bank
        self.settings = settings
        self.catalog = CodecCatalog(
            cache_dir=settings.weights_cache_dir,
            repository=settings.model_repository,
            include_shipped=settings.use_shipped_weights,
        )
        self.loader = SerialLoader()
        self._lock = threading.Lock()  # one install or removal at a time

    def close(self) -> None:
        self.loader.close()

    def submit_load(self, name: str) -> Future[tuple[dict[str, Any], bool]]:
        return self.loader.submit(name, self._load)

    def _load(self, name: str) -> tuple[dict[str, Any], bool]:
        source = self.catalog.find(name)
        task = source.task or HUMAN_TASK
        if source.quality < 1:
            # Requests pick a codec by (task, quality); quality 0 means "the default".
            raise ServiceError(
                ErrorCode.FAILED_PRECONDITION,
                f"codec model {name!r} has no quality (>= 1), which the encoder serves by",
            )
        for model in self.bank.models():
            if model.model_name == name and model.sha256 == source.sha256:
                return loaded_entry(model), True
        loaded = self._build(source, task)
        with self._lock:
            replaced = self.bank.install(loaded)
        if replaced is not None:
            log.info(
                "model control: %s (weights %s) replaces %s for %s q%d",
                name,
                loaded.fingerprint,
                replaced.model_name,
                task,
                source.quality,
            )
        return loaded_entry(loaded), False

    def _build(self, source: CodecSource, task: str) -> LoadedModel:
        assert source.path is not None  # find() returns loadable sources only
        model = load_codec(
            source.path,
            cache_dir=self.settings.weights_cache_dir,
            device=self.bank.device,
            sha256=source.sha256,
        ).model
        return LoadedModel(
            task,
            source.quality,
            source.path,
            model,
            threading.Lock(),
            name=source.name,
            sha256=source.sha256,
            origin=source.origin,
        )

    def unload(
        self, name: str, version: str | None = None, *, force: bool = False
    ) -> list[dict[str, Any]]:
        with self._lock:
            gone = self.bank.remove(name, version or None, force=force)
        if not gone and (version or not any(s.name == name for s in self.catalog.listing())):
            detail = f"version {version!r} of " if version else ""
            raise ServiceError(ErrorCode.NOT_FOUND, f"no {detail}codec {name!r} is loaded")
        for model in gone:
            log.info("model control: codec %s (weights %s) unloaded", name, model.fingerprint)
        return [loaded_entry(m, "UNAVAILABLE") for m in gone]

    def index(self, *, ready_only: bool = False) -> list[dict[str, Any]]:
        entries = [loaded_entry(m) for m in self.bank.models()]
        if ready_only:
            return entries
        listed = {e["name"] for e in entries}
        loading = self.loader.loading()
        entries += self.catalog.unloaded_entries(listed, loading)
        return entries
