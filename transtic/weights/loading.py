"""The one way to load a codec: by catalog name or by file, always with the same checks.

``load_codec("transtic_small_cls_q1")`` and ``load_codec("runs/cls1/final.pth.tar")``
both return a ready model (eval mode, entropy-coder tables present) together with
where it came from and its metadata. Integrity is the same for every caller: a
catalog file, whether named or addressed by its path in the cache directory or the
package, is hashed against its published sha256 (or the published prefix) before it
is parsed; a file of one's own is checked when the caller passes its ``sha256``.
Model code is imported only when a codec is loaded, so listing the catalog stays cheap.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from transtic.weights.errors import ChecksumError, UnknownWeightsError, WeightsError
from transtic.weights.manager import PathLike, _registry, package_file, resolve, sha256_file
from transtic.weights.registry import WeightsEntry, WeightsRegistry

if TYPE_CHECKING:
    import torch

    from transtic.models import HyperpriorCodec

log = logging.getLogger(__name__)


class UnknownCodecError(UnknownWeightsError):
    """Neither an existing checkpoint file nor the name of codec weights in the catalog."""

    def __init__(self, name: str, known: list[str], detail: str = "") -> None:
        super().__init__(name, known)
        shown = ", ".join(known[:12]) + (" ..." if len(known) > 12 else "")
        what = detail or "is neither a checkpoint file nor the name of codec weights"
        self.args = (f"{name!r} {what}; known codec weights: {shown}",)


class CodecFileNotFoundError(WeightsError, FileNotFoundError):
    """A path (it has a directory part or a file suffix) that names no file."""

    def __init__(self, path: str) -> None:
        self.path = path
        super().__init__(f"checkpoint file not found: {path}")

    def __str__(self) -> str:
        return str(self.args[0])


@dataclass(frozen=True)
class CodecFile:
    """A codec checkpoint on disk, with its catalog entry when it has one."""

    path: Path
    name: str  # the catalog name, else the file's stem
    entry: WeightsEntry | None = None
    sha256: str | None = None  # the digest it was checked against (None: nothing published)


@dataclass(frozen=True)
class LoadedCodec:
    """A codec ready to code, and what is known about it."""

    model: HyperpriorCodec
    file: CodecFile
    # The catalog's description over what the checkpoint itself recorded when written.
    metadata: Mapping[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.file.name

    @property
    def path(self) -> Path:
        return self.file.path

    @property
    def task(self) -> str | None:
        """The catalog's task for it (None: a base codec, or not a catalog file)."""
        return self.file.entry.task if self.file.entry is not None else None

    @property
    def quality(self) -> int | None:
        """The catalog's quality level (None when it is not a catalog file)."""
        return self.file.entry.quality if self.file.entry is not None else None


def _catalog_entry_of(
    path: Path, cache_dir: PathLike | None, registry: WeightsRegistry
) -> WeightsEntry | None:
    """The codec entry whose file ``path`` is (in the cache directory or the package)."""
    target = path.resolve()
    for entry in registry:
        if entry.kind != "codec":
            continue
        homes = [package_file(entry)]
        if cache_dir is not None:
            homes.append(Path(cache_dir) / entry.filename)
        if any(home is not None and home.resolve() == target for home in homes):
            return entry
    return None


def _check(name: str, path: Path, entry: WeightsEntry | None, sha256: str | None) -> str | None:
    expected = sha256.lower() if sha256 else (entry.sha256 if entry is not None else None)
    prefix = entry.sha256_prefix if entry is not None and not sha256 else None
    if expected is None and prefix is None:
        return None
    actual = sha256_file(path)
    if (expected is not None and actual != expected) or (
        prefix is not None and not actual.startswith(prefix)
    ):
        raise ChecksumError(name, expected or f"{prefix}...", actual, str(path))
    return actual


def locate_codec(
    name_or_path: PathLike,
    *,
    cache_dir: PathLike | None = None,
    verify: bool = True,
    sha256: str | None = None,
    registry: WeightsRegistry | None = None,
) -> CodecFile:
    """Find a codec checkpoint by file or catalog name and check it, without loading it.

    An existing file wins over a catalog name. ``verify=False`` skips every digest
    check (for files one has just written and trusts).
    """
    registry = _registry(registry)
    spec = str(name_or_path)
    path = Path(spec)
    if path.is_file():
        entry = _catalog_entry_of(path, cache_dir, registry)
        name = entry.name if entry is not None else path.stem
    else:
        known = [e.name for e in registry if e.kind == "codec"]
        if spec not in registry:
            if path.suffix or len(path.parts) > 1:
                raise CodecFileNotFoundError(spec)
            raise UnknownCodecError(spec, known)
        entry = registry.get(spec)
        if entry.kind != "codec":
            raise UnknownCodecError(spec, known, f"names {entry.task or entry.kind} weights")
        path, name = resolve(spec, cache_dir=cache_dir, registry=registry), spec
    checked = _check(name, path, entry, sha256) if verify else None
    if verify and checked is None and entry is not None:
        log.info("codec %s: no published sha256 to check %s against (%s)", name, path, entry.notes)
    return CodecFile(path, name, entry, checked)


def load_codec(
    name_or_path: PathLike,
    *,
    cache_dir: PathLike | None = None,
    device: str | torch.device = "cpu",
    verify: bool = True,
    sha256: str | None = None,
    registry: WeightsRegistry | None = None,
) -> LoadedCodec:
    """Locate (see :func:`locate_codec`), check and load a codec, ready to encode and decode.

    ``cache_dir`` is where downloaded weights are (``transtic weights pull``); files
    shipped inside the package are found without it. Raises :class:`UnknownCodecError`,
    :class:`CodecFileNotFoundError`, :class:`~transtic.weights.WeightsNotFoundError`,
    :class:`~transtic.weights.ChecksumError` or :class:`~transtic.models.CheckpointError`.
    """
    from transtic.models.checkpoint import checkpoint_metadata, load_checkpoint, read_checkpoint

    found = locate_codec(
        name_or_path, cache_dir=cache_dir, verify=verify, sha256=sha256, registry=registry
    )
    raw = read_checkpoint(found.path)
    model = load_checkpoint(raw, device=device)
    metadata = checkpoint_metadata(raw)
    if found.entry is not None:
        metadata.update(found.entry.metadata)
    return LoadedCodec(model, found, metadata)
