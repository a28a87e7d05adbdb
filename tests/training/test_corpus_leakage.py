"""Leakage check: planted twins are caught; the committed validation split has none."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from transtic.training.corpus import NEAR_DUPLICATE_BITS, ManifestRow, hash_hex, read_manifest
from transtic.training.corpus_leakage import (
    MANIFEST,
    TRAINED_PHOTO_FIELDS,
    TRAINED_PHOTO_LISTS,
    TrainedPhoto,
    committed_leaks,
    corpus_leaks,
    find_leaks,
    read_trained_photos,
)

CURRENT_RELEASE, FIRST_RELEASE = TRAINED_PHOTO_LISTS
FAR = (1 << 256) - 1  # every bit differs from 0


def flip(bits: int, count: int) -> int:
    return bits ^ ((1 << count) - 1)


def test_a_planted_near_duplicate_is_caught_and_a_distinct_photo_is_not() -> None:
    trained = [("pkg:a.jpg", 0)]
    val = [("pkg:copy.jpg", flip(0, NEAR_DUPLICATE_BITS - 2)), ("pkg:other.jpg", FAR)]
    leaks = find_leaks(val, trained)
    assert [(leak.val, leak.trained, leak.bits) for leak in leaks] == [
        ("pkg:copy.jpg", "pkg:a.jpg", NEAR_DUPLICATE_BITS - 2)
    ]
    assert not leaks[0].hand_listed


def test_a_same_scene_twin_the_hash_cannot_see_is_caught_through_its_group() -> None:
    trained = [("pkg:left.jpg", 0)]
    val = [("pkg:right.jpg", FAR)]
    assert find_leaks(val, trained) == []
    (leak,) = find_leaks(val, trained, same_photo=[["pkg:left.jpg", "pkg:right.jpg"]])
    assert leak.hand_listed and leak.trained == "pkg:left.jpg"


def test_a_chain_through_another_validation_photo_counts() -> None:
    step = NEAR_DUPLICATE_BITS - 4
    middle = flip(0, step)
    end = middle ^ (((1 << step) - 1) << 100)  # step bits from middle, 2 * step from a.jpg
    trained = [("pkg:a.jpg", 0)]
    assert find_leaks([("pkg:end.jpg", end)], trained) == []
    leaks = find_leaks([("pkg:middle.jpg", middle), ("pkg:end.jpg", end)], trained)
    assert {leak.val for leak in leaks} == {"pkg:middle.jpg", "pkg:end.jpg"}


def test_a_validation_photo_that_was_itself_trained_on_is_a_leak() -> None:
    (leak,) = find_leaks([("pkg:a.jpg", 5)], [("pkg:a.jpg", 5)])
    assert leak.val == leak.trained and "itself" in str(leak)


def test_corpus_leaks_covers_the_training_split_and_every_release() -> None:
    def row(split: str, path: str, dhash: int) -> ManifestRow:
        return ManifestRow(split, "pkg", "1", path, "MIT", path.ljust(64, "0"), 300, 300,
                           hash_hex(dhash))  # fmt: skip

    manifest = [
        row("train", "t.jpg", 0),
        row("val", "v1.jpg", flip(0, 3)),
        row("val", "v2.jpg", FAR),
    ]
    released = TrainedPhoto("abc1234", "pkg", "1", "old.jpg", "f" * 64, hash_hex(flip(FAR, 1)))
    assert {leak.val for leak in corpus_leaks(manifest, [])} == {"pkg:v1.jpg"}
    assert {leak.val for leak in corpus_leaks(manifest, [released])} == {"pkg:v1.jpg", "pkg:v2.jpg"}


def test_no_validation_photo_is_a_twin_of_anything_any_weights_trained_on() -> None:
    leaks = committed_leaks()
    assert leaks == [], "\n".join(str(leak) for leak in leaks)


def test_trained_photo_lists_are_well_formed() -> None:
    manifest = {r.sha256: r for r in read_manifest(MANIFEST)}
    current = read_trained_photos(CURRENT_RELEASE)
    assert CURRENT_RELEASE.read_text().splitlines()[0] == ",".join(TRAINED_PHOTO_FIELDS)
    assert len(current) == 114 and len({p.sha256 for p in current}) == 114
    for photo in current:
        assert re.fullmatch(r"[0-9a-f]{64}", photo.sha256), photo
        row = manifest.get(photo.sha256)
        assert row is not None, f"{photo.key} is not in the manifest"
        assert (row.package, row.version, row.path, row.dhash) == (
            photo.package, photo.version, photo.path, photo.dhash
        )  # fmt: skip
        assert row.split == "train", f"{photo.key} was trained on but is in {row.split}"
    first = read_trained_photos(FIRST_RELEASE)
    assert len(first) == 19
    for photo in [*current, *first]:
        assert re.fullmatch(r"[0-9a-f]{64}", photo.dhash) and re.fullmatch(
            r"[0-9a-f]{7}", photo.release
        )


def test_reading_a_list_with_wrong_columns_fails(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("package,version,path,sha256\npkg,1,a.jpg,mostly LPPL\n")
    with pytest.raises(ValueError, match="columns"):
        read_trained_photos(bad)
