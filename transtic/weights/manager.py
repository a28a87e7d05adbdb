"""Find weights files locally and download them safely.

The library never reads environment variables: every function takes the cache
directory from its caller, so services and the CLI own their settings.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import os
import tempfile
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from tqdm import tqdm

from transtic.weights.catalog import default_registry
from transtic.weights.errors import ChecksumError, WeightsError, WeightsNotFoundError
from transtic.weights.registry import WeightsEntry, WeightsRegistry

PathLike = str | os.PathLike[str]
_CHUNK = 1 << 20


def _registry(registry: WeightsRegistry | None) -> WeightsRegistry:
    return default_registry() if registry is None else registry


def list_weights(*, registry: WeightsRegistry | None = None) -> list[WeightsEntry]:
    return list(_registry(registry))


def sha256_file(path: PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def package_file(entry: WeightsEntry) -> Path | None:
    """Path of a file shipped inside an installed package, if that package is present."""
    if entry.package_resource is None:
        return None
    module, relative = entry.package_resource
    # find_spec locates the package without executing its __init__.
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / relative
        if candidate.is_file():
            return candidate
    return None


def _not_found(entry: WeightsEntry, directory: Path | None) -> WeightsNotFoundError:
    hint = ""
    if entry.package_resource is not None:
        hint = f"or install the Python package that ships it ({entry.notes})"
    return WeightsNotFoundError(entry.name, entry.filename, directory, entry.url, hint)


def _digest_ok(entry: WeightsEntry, digest: str) -> bool:
    if entry.sha256 is not None:
        return digest == entry.sha256
    if entry.sha256_prefix is not None:
        return digest.startswith(entry.sha256_prefix)
    return True


def _expected(entry: WeightsEntry) -> str:
    return entry.sha256 or f"{entry.sha256_prefix}..."


def _verify(entry: WeightsEntry, path: Path) -> None:
    digest = sha256_file(path)
    if not _digest_ok(entry, digest):
        raise ChecksumError(entry.name, _expected(entry), digest, str(path))


def local_weights(
    *, cache_dir: PathLike | None, registry: WeightsRegistry | None = None
) -> list[tuple[WeightsEntry, Path | None]]:
    """Every registered entry with its local file (cache or package), None where absent."""
    found: list[tuple[WeightsEntry, Path | None]] = []
    for entry in _registry(registry):
        try:
            found.append((entry, resolve(entry.name, cache_dir=cache_dir, registry=registry)))
        except WeightsError:
            found.append((entry, None))
    return found


def resolve(
    name: str,
    *,
    cache_dir: PathLike | None,
    path: PathLike | None = None,
    registry: WeightsRegistry | None = None,
    verify: bool = False,
) -> Path:
    """Return the local file for ``name`` without touching the network.

    Looks at, in order: an explicit ``path`` (then nothing else, so a typo in a
    configured path is reported rather than silently replaced), ``cache_dir /
    filename``, and a copy shipped inside an installed package. ``verify`` hashes
    the file against the registered digest (slow for big files, so opt-in).
    """
    entry = _registry(registry).get(name)
    directory = Path(cache_dir) if cache_dir is not None else None
    if path is not None:
        explicit = Path(path)
        if not explicit.is_file():
            raise _not_found(entry, explicit.parent)
        candidates = [explicit]
    else:
        candidates = [directory / entry.filename] if directory is not None else []
        shipped = package_file(entry)
        if shipped is not None:
            candidates.append(shipped)
    for candidate in candidates:
        if candidate.is_file():
            if verify:
                _verify(entry, candidate)
            return candidate
    raise _not_found(entry, directory)


@contextlib.contextmanager
def _temp_beside(target: Path) -> Iterator[tuple[IO[bytes], Path]]:
    # Same directory as the target so os.replace is an atomic rename, never a copy.
    fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    tmp = Path(name)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f, tmp
    finally:
        tmp.unlink(missing_ok=True)


def pull(
    name: str,
    *,
    cache_dir: PathLike,
    progress: bool = True,
    registry: WeightsRegistry | None = None,
    timeout: float = 60.0,
) -> Path:
    """Make ``name`` available locally, downloading it into ``cache_dir`` if needed.

    A file already in the cache (or shipped in a package) is reused when its
    digest matches; a stale cached copy is replaced. The download streams into a
    temporary file next to the target and is renamed into place only after its
    checksum passed, so readers never see a partial or corrupt file.
    """
    entry = _registry(registry).get(name)
    directory = Path(cache_dir)
    target = directory / entry.filename
    if target.is_file() and _digest_ok(entry, sha256_file(target)):
        return target
    shipped = package_file(entry)
    if shipped is not None:
        return shipped
    if entry.url is None:
        raise _not_found(entry, directory)

    directory.mkdir(parents=True, exist_ok=True)
    with _temp_beside(target) as (out, tmp):
        digest = _download(entry.url, out, progress=progress, timeout=timeout, label=entry.filename)
        out.flush()
        os.fsync(out.fileno())
        if not _digest_ok(entry, digest):
            raise ChecksumError(entry.name, _expected(entry), digest, entry.url)
        out.close()
        os.replace(tmp, target)
    return target


def _download(url: str, out: IO[bytes], *, progress: bool, timeout: float, label: str) -> str:
    digest = hashlib.sha256()
    request = urllib.request.Request(url, headers={"User-Agent": "transtic-weights"})
    with (
        urllib.request.urlopen(request, timeout=timeout) as response,
        tqdm(
            total=int(response.headers.get("Content-Length") or 0) or None,
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            desc=label,
            disable=not progress,
        ) as bar,
    ):
        for block in iter(lambda: response.read(_CHUNK), b""):
            out.write(block)
            digest.update(block)
            bar.update(len(block))
    return digest.hexdigest()
