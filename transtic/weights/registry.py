"""Weights registry: what a weights file is, where it comes from, how to check it."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from transtic.weights.errors import DuplicateWeightsError, UnknownWeightsError

WeightsKind = Literal["codec", "task"]

_HEX64 = re.compile(r"[0-9a-f]{64}")
_HEX_PREFIX = re.compile(r"[0-9a-f]{6,63}")


@dataclass(frozen=True)
class WeightsEntry:
    """One downloadable (or package-shipped) weights file.

    ``sha256`` is the full digest when it is known. Where it is not (upstream
    publishes none and the file cannot be fetched offline) it is ``None`` and
    ``notes`` must say so; ``sha256_prefix`` then carries any partial digest the
    publisher embeds in the file name (torchvision's ``-258fb6c6`` convention),
    which :func:`transtic.weights.pull` still checks.
    """

    name: str
    kind: WeightsKind
    task: str | None
    quality: int | None
    url: str | None
    sha256: str | None
    license: str
    filename: str
    metadata: Mapping[str, Any] = field(default_factory=dict, hash=False)
    notes: str = ""
    sha256_prefix: str | None = None
    # (top-level import name, path inside it): the file ships in an installed package.
    package_resource: tuple[str, str] | None = None

    def __post_init__(self) -> None:
        if not self.name or any(c.isspace() for c in self.name):
            raise ValueError(f"weights name must be non-empty without spaces: {self.name!r}")
        if self.kind not in ("codec", "task"):
            raise ValueError(f"{self.name}: kind must be 'codec' or 'task', not {self.kind!r}")
        # The file name is joined onto the caller's cache dir; a separator could escape it.
        if not self.filename or "/" in self.filename or "\\" in self.filename:
            raise ValueError(f"{self.name}: filename must be a bare file name: {self.filename!r}")
        if self.filename in (".", ".."):
            raise ValueError(f"{self.name}: invalid filename {self.filename!r}")
        if self.sha256 is not None and not _HEX64.fullmatch(self.sha256):
            raise ValueError(f"{self.name}: sha256 must be 64 lowercase hex digits")
        if self.sha256_prefix is not None and not _HEX_PREFIX.fullmatch(self.sha256_prefix):
            raise ValueError(f"{self.name}: sha256_prefix must be 6-63 lowercase hex digits")
        if self.sha256 is None and not self.notes:
            raise ValueError(f"{self.name}: an unknown sha256 must be explained in notes")
        if self.url is None and self.package_resource is None:
            raise ValueError(f"{self.name}: needs a url or a package_resource")
        if self.url is not None and not self.url.startswith(("https://", "http://")):
            raise ValueError(f"{self.name}: url must be http(s): {self.url!r}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly view, for ``weights list --json`` and service status pages."""
        return {
            "name": self.name,
            "kind": self.kind,
            "task": self.task,
            "quality": self.quality,
            "url": self.url,
            "sha256": self.sha256,
            "sha256_prefix": self.sha256_prefix,
            "license": self.license,
            "filename": self.filename,
            "package_resource": list(self.package_resource) if self.package_resource else None,
            "notes": self.notes,
            "metadata": _jsonable(self.metadata),
        }


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


class WeightsRegistry:
    """An ordered set of :class:`WeightsEntry`, unique by name."""

    def __init__(self, entries: Iterable[WeightsEntry] = ()) -> None:
        self._entries: dict[str, WeightsEntry] = {}
        for entry in entries:
            self.register(entry)

    def register(self, entry: WeightsEntry) -> WeightsEntry:
        if entry.name in self._entries:
            raise DuplicateWeightsError(f"weights {entry.name!r} are already registered")
        self._entries[entry.name] = entry
        return entry

    def get(self, name: str) -> WeightsEntry:
        try:
            return self._entries[name]
        except KeyError:
            raise UnknownWeightsError(name, list(self._entries)) from None

    def names(self) -> list[str]:
        return list(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[WeightsEntry]:
        return iter(list(self._entries.values()))

    def __len__(self) -> int:
        return len(self._entries)
