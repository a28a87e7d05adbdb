"""Selecting a photo corpus: photo heuristics, near-duplicate groups, a stable split.

The pieces here are pure functions over image files and small records, so they
are tested on synthetic images; fetching packages lives in ``corpus_packages``.

Which files are considered at all is decided per package by allow rules in
``corpus_sources.json`` (chosen after looking at samples); the measurements
below are a second, mechanical guard against screenshots, diagrams and icons
slipping through those rules.
"""

from __future__ import annotations

import csv
import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

Image.MAX_IMAGE_PIXELS = 400_000_000  # large panoramas are wanted, not a bomb

MIN_SHORT_SIDE = 256
# Mean |R-G| + |G-B| on a 128x128 thumbnail; greyscale and near-greyscale sit below.
MIN_COLOURFULNESS = 4.0
# Share of distinct colours in a 256x256 centre crop: drawings and UI reuse few.
MIN_DISTINCT_COLOURS = 0.08
# Share of horizontally adjacent pixels that are exactly equal: flat fills of UI.
MAX_FLAT_SHARE = 0.35
# Difference hashes on a 16x16 grid: 256 bits. Measured on the candidate pool,
# re-encodings, resizes and video neighbours sit at <= 35 bits, while distinct
# photos start at 41, so 32 separates them with chaining covering sequences.
HASH_SIDE = 16
NEAR_DUPLICATE_BITS = 32
VAL_PERCENT = 15
FORBIDDEN_PACKAGES = (
    "gcompris-qt-data",
    "palapeli-data",
    "lomiri-wallpapers",
    "plasma-workspace-wallpapers",
    "ultralytics",
)


@dataclass(frozen=True)
class Measures:
    width: int
    height: int
    colourfulness: float
    distinct_colours: float
    flat_share: float


@dataclass(frozen=True)
class Candidate:
    """One image file found inside a package, with what selection needs to know."""

    package: str
    version: str
    path: str  # inside the package
    licence: str
    sha256: str
    measures: Measures
    dhash: int
    file: Path  # where the bytes are on this machine


@dataclass(frozen=True)
class ManifestRow:
    split: str
    package: str
    version: str
    path: str
    licence: str
    sha256: str
    width: int
    height: int
    dhash: str  # hex difference hash, so near-duplicates can be checked without the files

    @property
    def file_name(self) -> str:
        return corpus_file_name(self.sha256, self.path)


MANIFEST_FIELDS = [f.name for f in fields(ManifestRow)]


def is_forbidden(package: str) -> bool:
    """Packages reserved for independent evaluation (prefix match covers versions)."""
    return any(package == name or package.startswith(name) for name in FORBIDDEN_PACKAGES)


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def corpus_file_name(sha256: str, path: str) -> str:
    suffix = Path(path).suffix.lower()
    suffix = ".jpg" if suffix == ".jpeg" else suffix
    return f"{sha256[:16]}{suffix}"


def measure(image: Image.Image) -> Measures:
    rgb = image.convert("RGB")
    width, height = rgb.size
    thumb = np.asarray(rgb.resize((128, 128), Image.Resampling.BILINEAR)).astype(np.int16)
    colourfulness = float(
        np.abs(thumb[..., 0] - thumb[..., 1]).mean() + np.abs(thumb[..., 1] - thumb[..., 2]).mean()
    )
    # Statistics on the whole picture brought to a 256-pixel short side, so a smooth
    # 4K wallpaper and a small photo are judged alike.
    scale = 256 / min(width, height)
    small = rgb.resize(
        (max(1, round(width * scale)), max(1, round(height * scale))), Image.Resampling.BOX
    )
    pixels = np.asarray(small).astype(np.int32)
    packed = pixels[..., 0] * 65536 + pixels[..., 1] * 256 + pixels[..., 2]
    distinct = len(np.unique(packed)) / packed.size
    # Clipped white or black (studio backdrops, night sky) is flat in photos too;
    # UI and drawings are flat in mid-tones.
    same = np.diff(packed, axis=1) == 0
    clipped = (packed[:, 1:] == 0xFFFFFF) | (packed[:, 1:] == 0)
    flat = float((same & ~clipped).mean()) if same.size else 1.0
    return Measures(width, height, round(colourfulness, 3), round(distinct, 4), round(flat, 4))


def photo_rejection(m: Measures) -> str | None:
    """Why an image is not taken as a photograph, or None when it passes."""
    if min(m.width, m.height) < MIN_SHORT_SIDE:
        return "small"
    if m.colourfulness < MIN_COLOURFULNESS:
        return "grey"
    if m.distinct_colours < MIN_DISTINCT_COLOURS:
        return "few colours"
    if m.flat_share > MAX_FLAT_SHARE:
        return "flat"
    return None


def difference_hash(image: Image.Image, side: int = HASH_SIDE) -> int:
    """Gradient-sign hash of a small grey thumbnail; robust to scale and re-encoding."""
    size = (side + 1, side)
    grey = np.asarray(image.convert("L").resize(size, Image.Resampling.BILINEAR), dtype=np.int16)
    bits = (grey[:, 1:] > grey[:, :-1]).flatten()
    return int(sum(1 << i for i, bit in enumerate(bits) if bit))


def hamming(a: int, b: int) -> int:
    return (a ^ b).bit_count()


def near_duplicate_groups(
    hashes: Sequence[int],
    max_bits: int = NEAR_DUPLICATE_BITS,
    links: Iterable[tuple[int, int]] = (),
) -> list[int]:
    """Group index per item; items linked by a chain of near-equal hashes share a group.

    ``links`` joins items that hashes cannot see as one photo (stereo pairs, two
    views of one scene), as listed by hand in the sources file.
    """
    parent = list(range(len(hashes)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    pairs = [(i, j) for i in range(len(hashes)) for j in range(i)]
    close = [(i, j) for i, j in pairs if hamming(hashes[i], hashes[j]) <= max_bits]
    for i, j in [*close, *links]:
        a, b = root(i), root(j)
        if a != b:
            parent[max(a, b)] = min(a, b)
    return [root(i) for i in range(len(hashes))]


def hash_split(sha256: str, val_percent: int = VAL_PERCENT) -> str:
    """Deterministic split from the photo's own bytes, independent of the other photos."""
    return "val" if int(sha256[:8], 16) % 100 < val_percent else "train"


def select(
    candidates: Sequence[Candidate],
    previous: dict[str, str] | None = None,
    same_photo: Iterable[Iterable[str]] = (),
) -> list[ManifestRow]:
    """Photos kept (one per near-duplicate group, or its published members) with their split.

    ``previous`` maps sha256 to the split of an earlier manifest: a published photo
    keeps its side and is never dropped, and a new photo joining a group that has
    published members is not added (it would be a twin of a listed photo), so
    refining the corpus never moves a validation photo into training.
    ``same_photo`` lists groups of ``package:path`` that count as one photo.
    """
    previous = previous or {}
    photos = [c for c in candidates if not is_forbidden(c.package)]
    photos = [c for c in photos if photo_rejection(c.measures) is None]
    sha_of = {f"{c.package}:{c.path}": c.sha256 for c in photos}
    unique: dict[str, Candidate] = {}
    for c in sorted(photos, key=lambda c: (c.package, c.path)):
        unique.setdefault(c.sha256, c)
    photos = sorted(unique.values(), key=lambda c: c.sha256)
    position = {c.sha256: i for i, c in enumerate(photos)}
    index = {key: position[sha] for key, sha in sha_of.items()}
    links: list[tuple[int, int]] = []
    for listed in same_photo:
        present = [index[key] for key in listed if key in index]
        links += [(present[0], other) for other in present[1:]]
    groups = near_duplicate_groups([c.dhash for c in photos], links=links)
    members: dict[int, list[Candidate]] = {}
    for c, g in zip(photos, groups, strict=True):
        members.setdefault(g, []).append(c)
    rows = []
    for group in members.values():
        # Every already-published member stays where it is: a photo that weights were
        # trained on must stay listed, so the leakage check can see it. A group new
        # to the manifest keeps its largest photo.
        published = [c for c in group if c.sha256 in previous]
        if published:
            rows += [_row(c, previous[c.sha256]) for c in published]
            continue
        keep = max(group, key=lambda c: (c.measures.width * c.measures.height, c.sha256))
        rows.append(_row(keep, hash_split(keep.sha256)))
    return sorted(rows, key=lambda r: (r.split, r.package, r.path))


def hash_hex(dhash: int) -> str:
    return f"{dhash:0{HASH_SIDE * HASH_SIDE // 4}x}"


def _row(c: Candidate, split: str) -> ManifestRow:
    m = c.measures
    return ManifestRow(
        split,
        c.package,
        c.version,
        c.path,
        c.licence,
        c.sha256,
        m.width,
        m.height,
        hash_hex(c.dhash),
    )


def write_records(records: Iterable[Any], fields: Sequence[str], path: Path) -> None:
    """A CSV of ``fields`` read off each record (the manifest, the trained-photo lists)."""
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(fields)
        for record in records:
            writer.writerow([getattr(record, name) for name in fields])


def write_manifest(rows: Iterable[ManifestRow], path: Path) -> None:
    write_records(rows, MANIFEST_FIELDS, path)


def read_manifest(path: Path) -> list[ManifestRow]:
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        if reader.fieldnames != MANIFEST_FIELDS:
            raise ValueError(f"{path}: columns {reader.fieldnames}, expected {MANIFEST_FIELDS}")
        return [
            ManifestRow(**{**row, "width": int(row["width"]), "height": int(row["height"])})  # type: ignore[arg-type]
            for row in reader
        ]
