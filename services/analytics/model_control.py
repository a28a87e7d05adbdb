"""Model control: load, unload and list codecs and task models while frames keep flowing.

Names only: codecs come from the weights catalog or the operator's model repository
(``services.common.model_catalog``), task models from the task-backend registry, and
every weights file is checked against its sha256 before it is parsed. Loads run one at
a time on their own thread, so neither the event loop nor a gRPC thread serving frames
waits for them (nor do two big models fill the memory at once). The hub swaps a model
in or out whole; each queued request holds the model it was given, so frames already
accepted finish on it, and an unloaded model is freed when the last of them is done.
"""

from __future__ import annotations

import logging
from concurrent.futures import Future
from typing import Any

from services.analytics.hub import BackendSlot, CodecSlot, ModelHub
from services.common.errors import ErrorCode, ServiceError, redact_paths
from services.common.model_catalog import CodecSource, check_model_name
from services.common.model_loader import SerialLoader

log = logging.getLogger(__name__)

READY, UNAVAILABLE, LOADING, UNLOADING = "READY", "UNAVAILABLE", "LOADING", "UNLOADING"


def codec_entry(slot: CodecSlot, state: str = READY) -> dict[str, Any]:
    return {
        "name": slot.id,
        "kind": "codec",
        "version": slot.fingerprint,
        "state": state,
        "reason": "",
        "task": slot.task or "",
        "quality": slot.quality,
        "source": slot.origin,
        "in_flight": slot.in_flight.count,
    }


def task_entry(slot: BackendSlot, state: str, reason: str = "") -> dict[str, Any]:
    return {
        "name": slot.backend.name,
        "kind": "task",
        "version": ",".join(slot.backend.required_weights),
        "state": state,
        "reason": redact_paths(reason),  # a load error may name the weights cache
        "task": slot.task,
        "quality": 0,
        "source": "backends",
        "in_flight": slot.in_flight.count,
    }


class ModelControl:
    def __init__(self, hub: ModelHub) -> None:
        self.hub = hub
        self.catalog = hub.catalog
        self.loader = SerialLoader()

    def close(self) -> None:
        self.loader.close()

    # -- load -------------------------------------------------------------------------
    def submit_load(self, name: str) -> Future[tuple[dict[str, Any], bool]]:
        """Start loading ``name``; the future gives (the model's entry, already_loaded)."""
        return self.loader.submit(name, self._load)

    def _load(self, name: str) -> tuple[dict[str, Any], bool]:
        if self._is_task_model(name):
            return self._load_task(name)
        return self._load_codec(self.catalog.find(name))

    def _load_codec(self, source: CodecSource) -> tuple[dict[str, Any], bool]:
        for slot in self.hub.codecs:
            if slot.id == source.name and slot.sha256 == source.sha256:
                return codec_entry(slot), True
        assert source.path is not None  # a loadable source has a file
        codec = self.hub.build_codec(
            source.path, sha256=source.sha256, task=source.task, quality=source.quality
        )
        slot = CodecSlot(
            source.name,
            codec,
            source.task,
            source.quality,
            str(source.path),
            origin=source.origin,
            sha256=source.sha256,
        )
        self.hub.install_codec(slot, preferred=True)
        self.hub.codec_problems = {
            key: reason
            for key, reason in self.hub.codec_problems.items()
            if not reason.startswith(f"{source.name}:")
        }
        log.info("model control: codec %s loaded (weights %s)", slot.id, slot.fingerprint)
        return codec_entry(slot), False

    def _load_task(self, name: str) -> tuple[dict[str, Any], bool]:
        current = self._serving_backend(name)
        if current is not None and current.ready:
            return task_entry(current, READY), True
        backend = self.hub.create_backend(name)
        backend.load(self.hub.device)
        slot = BackendSlot(backend, ready=True)
        self.hub.swap_backend(slot)
        log.info("model control: task model %s loaded for %s", name, slot.task)
        return task_entry(slot, READY), False

    # -- unload -----------------------------------------------------------------------
    def unload(self, name: str, version: str | None = None, *, force: bool = False) -> list[dict]:
        """Unload ``name`` (one version, or all): new requests no longer get it, those
        holding it finish on it. Unloading what is not loaded changes nothing."""
        check_model_name(name)
        if self._is_task_model(name):
            return self._unload_task(name)
        gone = self.hub.retire_codecs(name, version or None, force=force)
        if not gone and not self._is_known_codec(name, version):
            raise ServiceError(ErrorCode.NOT_FOUND, _not_loaded(name, version))
        for slot in gone:
            log.info("model control: codec %s (weights %s) unloaded", slot.id, slot.fingerprint)
        return [codec_entry(s, UNLOADING if s.in_flight.count else UNAVAILABLE) for s in gone]

    def _unload_task(self, name: str) -> list[dict]:
        current = self._serving_backend(name)
        if current is None or not current.ready:
            return []
        try:
            fresh = self.hub.create_backend(name)  # unloaded stand-in: it holds no weights
        except LookupError:
            raise ServiceError(
                ErrorCode.FAILED_PRECONDITION,
                f"task model {name!r} is not in the task-backend registry, so it could not "
                "be loaded again; not unloaded",
            ) from None
        detail = f"task model {name!r} was unloaded; load one for this task to serve it again"
        self.hub.swap_backend(BackendSlot(fresh, ready=False, detail=detail, retryable=False))
        log.info("model control: task model %s unloaded", name)
        state = UNLOADING if current.in_flight.count else UNAVAILABLE
        return [task_entry(current, state)]

    # -- list -------------------------------------------------------------------------
    def index(self, *, ready_only: bool = False) -> list[dict[str, Any]]:
        """Every model: loaded ones, those being (un)loaded, and those that could be."""
        entries = [codec_entry(s) for s in self.hub.codecs]
        for slot in self.hub.unloading():
            if isinstance(slot, CodecSlot):
                entries.append(codec_entry(slot, UNLOADING))
            else:
                entries.append(task_entry(slot, UNLOADING))
        # One entry per name: what is (un)loading is not listed again as loadable.
        listed = {e["name"] for e in entries}
        loading = self.loader.loading()
        entries += self.catalog.unloaded_entries(listed, loading)
        entries += self._task_entries(loading, listed)
        if ready_only:
            entries = [e for e in entries if e["state"] == READY]
        return entries

    def _task_entries(self, loading: set[str], listed: set[str]) -> list[dict[str, Any]]:
        entries = []
        serving = {slot.backend.name: slot for slot in self.hub.backends.values()}
        for name in dict.fromkeys([*self.hub.backend_registry.names(), *serving]):
            slot = serving.get(name)
            if name in listed and not (slot is not None and slot.ready):
                continue
            if slot is not None and slot.ready:
                entries.append(task_entry(slot, READY))
                continue
            if slot is None:
                slot = BackendSlot(self.hub.create_backend(name))
            state = LOADING if name in loading else UNAVAILABLE
            reason = "" if state == LOADING else (slot.detail or "not loaded")
            entries.append(task_entry(slot, state, reason))
        return entries

    # -- names ------------------------------------------------------------------------
    def _is_task_model(self, name: str) -> bool:
        return name in self.hub.backend_registry or self._serving_backend(name) is not None

    def _serving_backend(self, name: str) -> BackendSlot | None:
        for slot in self.hub.backends.values():
            if slot.backend.name == name:
                return slot
        return None

    def _is_known_codec(self, name: str, version: str | None) -> bool:
        if version:
            return False  # a version that is not loaded is nothing to unload
        return any(source.name == name for source in self.catalog.listing())


def _not_loaded(name: str, version: str | None) -> str:
    if version:
        return f"no version {version!r} of model {name!r} is loaded"
    return f"no model {name!r}: neither loaded nor in the catalog or the model repository"
