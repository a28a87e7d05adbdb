"""The codec weights a service may load by name while it runs (model control).

Two sources, both chosen by the operator, never by a client: the built-in weights
catalog (files in the weights cache directory or shipped in a package) and the model
repository, a directory where each ``NAME.json`` manifest names a weights file beside
it and pins its sha256. A client sends only a name; it is looked up in what these two
list, so no request can point the service at a file of its choosing. The repository
is read again on every call, so a model dropped into it needs no restart.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from services.common.errors import ErrorCode, ServiceError, redact_paths
from transtic.weights import WeightsError, WeightsRegistry, default_registry, resolve

log = logging.getLogger(__name__)

MODEL_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
_MODEL_NAME = re.compile(MODEL_NAME_PATTERN)
_MANIFEST_SUFFIX = ".json"

Origin = Literal["catalog", "repository"]


class Manifest(BaseModel):
    """``NAME.json`` in the model repository: which file, its digest, what it serves."""

    model_config = ConfigDict(extra="forbid")

    file: str = Field(pattern=r"^[^/\\]+$", description="weights file beside the manifest")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="its sha256, checked on load")
    task: str | None = Field(default=None, description="task its prompts serve; null = general")
    quality: int = Field(default=0, ge=0, le=255)


@dataclass(frozen=True)
class CodecSource:
    """A loadable codec (``problem`` empty) or a known name that cannot be loaded now."""

    name: str
    origin: Origin
    task: str | None
    quality: int
    path: Path | None = None
    sha256: str | None = None
    problem: str = ""


def unloaded_entry(source: CodecSource, loading: bool) -> dict[str, Any]:
    """The model-control entry (RepositoryModel fields) of a codec that is not loaded."""
    # Problems may quote a library's message naming the weights cache: no server path.
    reason = "" if loading else redact_paths(source.problem) or "not loaded"
    return {
        "name": source.name,
        "kind": "codec",
        "version": "",
        "state": "LOADING" if loading else "UNAVAILABLE",
        "reason": reason,
        "task": source.task or "",
        "quality": source.quality,
        "source": source.origin,
        "in_flight": 0,
    }


def check_model_name(name: str) -> str:
    if not _MODEL_NAME.fullmatch(name):
        raise ServiceError(
            ErrorCode.INVALID_ARGUMENT,
            "a model name is 1 to 128 characters of A-Z a-z 0-9 . _ - (not starting with . _ -)",
        )
    return name


class CodecCatalog:
    def __init__(
        self,
        *,
        cache_dir: Path | None,
        repository: Path | None,
        registry: WeightsRegistry | None = None,
        include_shipped: bool = True,
    ) -> None:
        self.cache_dir = cache_dir
        self.repository = repository
        self.registry = registry if registry is not None else default_registry()
        self.include_shipped = include_shipped

    def listing(self) -> list[CodecSource]:
        """Every codec name known now; a repository manifest may not reuse a catalog name."""
        found = list(self._catalog())
        taken = {source.name for source in found}
        for source in self._repository():
            if source.name in taken:
                source = _with_problem(
                    source, "the built-in weights catalog has this name already; rename it"
                )
            found.append(source)
        return found

    def unloaded_entries(self, listed: set[str], loading: set[str]) -> list[dict[str, Any]]:
        """Entries of the codecs not already ``listed`` (loaded or unloading)."""
        return [
            unloaded_entry(source, source.name in loading)
            for source in self.listing()
            if source.name not in listed
        ]

    def find(self, name: str) -> CodecSource:
        """The loadable source of ``name``: NOT_FOUND if unknown, FAILED_PRECONDITION if
        known but not loadable (file missing, no digest, bad manifest)."""
        check_model_name(name)
        source = next((s for s in self.listing() if s.name == name), None)
        if source is None:
            where = "the weights catalog" + (
                " or the model repository" if self.repository is not None else ""
            )
            raise ServiceError(ErrorCode.NOT_FOUND, f"no codec model {name!r} in {where}")
        if source.problem:
            raise ServiceError(
                ErrorCode.FAILED_PRECONDITION, f"codec model {name!r}: {source.problem}"
            )
        return source

    def _catalog(self) -> Iterator[CodecSource]:
        for entry in self.registry:
            if entry.kind != "codec":
                continue
            if entry.package_resource is not None and not self.include_shipped:
                continue
            base = CodecSource(entry.name, "catalog", entry.task, entry.quality or 0)
            try:
                path = resolve(entry.name, cache_dir=self.cache_dir, registry=self.registry)
            except WeightsError:
                yield _with_problem(base, f"weights file {entry.filename} is not installed")
                continue
            if entry.sha256 is None:
                # Loading at run time is for files whose integrity can be checked.
                yield _with_problem(
                    base,
                    "the catalog has no sha256 for it; pin it with a manifest in the model "
                    "repository",
                )
                continue
            yield CodecSource(
                entry.name, "catalog", entry.task, entry.quality or 0, path, entry.sha256
            )

    def _repository(self) -> Iterator[CodecSource]:
        if self.repository is None or not self.repository.is_dir():
            return
        root = self.repository.resolve()
        for manifest in sorted(self.repository.glob(f"*{_MANIFEST_SUFFIX}")):
            name = manifest.name[: -len(_MANIFEST_SUFFIX)]
            if not _MODEL_NAME.fullmatch(name):
                log.warning("model repository: %s is no valid model name; skipped", manifest.name)
                continue
            if not _inside(manifest, root):
                yield CodecSource(name, "repository", None, 0, problem=_OUTSIDE)
                continue
            try:
                spec = Manifest.model_validate(json.loads(manifest.read_text(encoding="utf-8")))
            except (OSError, ValueError, ValidationError) as exc:
                problem = f"manifest {manifest.name} is invalid: {_first_line(exc)}"
                yield CodecSource(name, "repository", None, 0, problem=problem)
                continue
            path = self.repository / spec.file
            source = CodecSource(name, "repository", spec.task, spec.quality, path, spec.sha256)
            if not _inside(path, root):
                source = _with_problem(source, f"weights file {spec.file}: {_OUTSIDE}")
            elif not path.is_file():
                source = _with_problem(source, f"weights file {spec.file} is not in the repository")
            yield source


_OUTSIDE = "a link to a file outside the model repository; copy the file in instead"


def _inside(path: Path, root: Path) -> bool:
    """Whether ``path``, links followed, stays in the repository ``root`` (resolved):
    the operator chose that directory, not whatever a link in it points at."""
    return path.resolve().is_relative_to(root)


def _with_problem(source: CodecSource, problem: str) -> CodecSource:
    return CodecSource(source.name, source.origin, source.task, source.quality, problem=problem)


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
