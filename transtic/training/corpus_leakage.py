"""Leakage check: no validation photo may be a twin of a photo any weights trained on.

Twins are near-duplicates (difference hashes within ``NEAR_DUPLICATE_BITS``,
chained, as corpus selection groups them) and the hand-listed ``same_photo``
groups of ``corpus_sources.json`` (stereo pairs, crops, two views of one scene,
which the hash cannot see). "Trained on" covers the manifest's training split and
every photo that any shipped weights ever saw, earlier releases included, as
listed in ``docs/eval/training_photos*.csv`` (hashes stored, so the check needs
no image files)::

    python -m transtic.training.corpus_leakage      # exit status 1 when a leak is found
"""

from __future__ import annotations

import csv
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields
from pathlib import Path

from .corpus import (
    NEAR_DUPLICATE_BITS,
    ManifestRow,
    hamming,
    near_duplicate_groups,
    read_manifest,
    write_records,
)

ROOT = Path(__file__).resolve().parents[2]
MANIFEST = Path(__file__).with_name("corpus_manifest.csv")
TRAINED_PHOTO_LISTS = (
    ROOT / "docs" / "eval" / "training_photos.csv",  # the shipped weights of today
    ROOT / "docs" / "eval" / "training_photos_first_release.csv",
)


@dataclass(frozen=True)
class TrainedPhoto:
    """A photo that shipped weights were trained on; ``release``: the commit adding them."""

    release: str
    package: str
    version: str
    path: str
    sha256: str
    dhash: str  # hex, as in the manifest

    @property
    def key(self) -> str:
        return f"{self.package}:{self.path}"


TRAINED_PHOTO_FIELDS = [f.name for f in fields(TrainedPhoto)]


def read_trained_photos(path: Path) -> list[TrainedPhoto]:
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        if reader.fieldnames != TRAINED_PHOTO_FIELDS:
            raise ValueError(
                f"{path}: columns {reader.fieldnames}, expected {TRAINED_PHOTO_FIELDS}"
            )
        return [TrainedPhoto(**row) for row in reader]


def write_trained_photos(photos: Iterable[TrainedPhoto], path: Path) -> None:
    write_records(photos, TRAINED_PHOTO_FIELDS, path)


@dataclass(frozen=True)
class Leak:
    val: str  # package:path of the validation photo
    trained: str  # the trained-on photo nearest to it in its group
    bits: int  # their hash distance
    hand_listed: bool  # joined by a same_photo group (else by hashes alone)

    def __str__(self) -> str:
        if self.val == self.trained:
            return f"{self.val} (trained on itself)"
        how = "same_photo group" if self.hand_listed else f"near-duplicate, {self.bits} bits"
        return f"{self.val} <- {self.trained} ({how})"


def find_leaks(
    val: Sequence[tuple[str, int]],
    trained: Sequence[tuple[str, int]],
    same_photo: Iterable[Iterable[str]] = (),
    max_bits: int = NEAR_DUPLICATE_BITS,
) -> list[Leak]:
    """Validation items (key, hash) grouped with a trained item (key, hash).

    Groups chain, so a validation photo near an unlisted photo that is near a
    trained one is caught as well. A key in both lists counts as trained (a
    photo trained on can never be unseen).
    """
    trained_keys = {key for key, _ in trained}
    items = [*trained, *((k, h) for k, h in val if k not in trained_keys)]
    index = {key: i for i, (key, _) in enumerate(items)}
    links: list[tuple[int, int]] = []
    hand_groups: list[set[str]] = []
    for listed in same_photo:
        present = [key for key in listed if key in index]
        hand_groups.append(set(present))
        links += [(index[present[0]], index[other]) for other in present[1:]]
    groups = near_duplicate_groups([h for _, h in items], max_bits, links)
    trained_by_group: dict[int, list[int]] = {}
    for i, (key, _) in enumerate(items):
        if key in trained_keys:
            trained_by_group.setdefault(groups[i], []).append(i)
    leaks = []
    for key, dhash in val:
        if key in trained_keys:
            leaks.append(Leak(key, key, 0, False))
            continue
        i = index[key]
        members = trained_by_group.get(groups[i], [])
        if not members:
            continue
        nearest = min(members, key=lambda j: hamming(items[j][1], dhash))
        twin = items[nearest][0]
        by_hand = any({key, twin} <= group for group in hand_groups)
        leaks.append(Leak(key, twin, hamming(items[nearest][1], dhash), by_hand))
    return leaks


def corpus_leaks(
    manifest: Sequence[ManifestRow],
    trained_photos: Sequence[TrainedPhoto],
    same_photo: Iterable[Iterable[str]] = (),
) -> list[Leak]:
    """Validation photos of ``manifest`` that its training split or any release saw."""
    trained = {f"{r.package}:{r.path}": int(r.dhash, 16) for r in manifest if r.split == "train"}
    trained |= {p.key: int(p.dhash, 16) for p in trained_photos}
    val = [(f"{r.package}:{r.path}", int(r.dhash, 16)) for r in manifest if r.split == "val"]
    return find_leaks(val, list(trained.items()), same_photo)


def committed_leaks() -> list[Leak]:
    """The check on this repository's manifest, sources and trained-photo lists."""
    from .corpus_packages import SOURCES_FILE, load_same_photo

    photos = [p for path in TRAINED_PHOTO_LISTS for p in read_trained_photos(path)]
    return corpus_leaks(read_manifest(MANIFEST), photos, load_same_photo(SOURCES_FILE))


def main() -> int:
    leaks = committed_leaks()
    for leak in leaks:
        print(leak)
    print(f"{len(leaks)} validation photo(s) leaked", file=sys.stderr)
    return 1 if leaks else 0


if __name__ == "__main__":
    sys.exit(main())
